//! The `host-local` binary: everything it needs arrives in `CNI_*` variables
//! and on stdin (see the README); `--help` and `--version` are for people.

fn main() -> std::process::ExitCode {
    cni_spec::skel::main(&cni_host_local::HostLocal, &cni_host_local::INFO, HELP)
}

const HELP: &str = "\
host-local: CNI IPAM plugin (k8s-shims), a drop-in replacement for the reference host-local.

It is run by a container runtime or a main plugin (such as bridge), not by hand:
  CNI_COMMAND      ADD, DEL, CHECK, GC, STATUS or VERSION
  CNI_CONTAINERID  container ID (ADD, DEL, CHECK)
  CNI_NETNS        network namespace path (ADD, CHECK)
  CNI_IFNAME       interface name (ADD, DEL, CHECK)
  CNI_ARGS         optional K=V;... (IP=<address>, IgnoreUnknown=1)
  CNI_PATH         plugin search path
and reads the network configuration (JSON) on stdin. The result or a CNI error
is printed as JSON on stdout; logs go to stderr.

Configuration (under \"ipam\"): ranges [[{subnet, rangeStart, rangeEnd, gateway}]],
or the legacy subnet/rangeStart/rangeEnd/gateway; routes; dataDir (default
/var/lib/cni/networks); resolvConf. Requested addresses: CNI_ARGS IP=,
args.cni.ips, runtimeConfig.ips; extra ranges: runtimeConfig.ipRanges.

Options:
  -h, --help     this text
  -V, --version  the version
";
