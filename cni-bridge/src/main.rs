//! The `host-local` binary: everything it needs arrives in `CNI_*` variables
//! and on stdin (see the README); `--help` and `--version` are for people.

fn main() -> std::process::ExitCode {
    cni_spec::skel::main(&cni_bridge::Bridge, &cni_bridge::INFO, HELP)
}

const HELP: &str = "\
bridge: CNI main plugin (k8s-shims), a drop-in replacement for the reference bridge.

It is run by a container runtime, not by hand:
  CNI_COMMAND      ADD, DEL, CHECK, GC, STATUS or VERSION
  CNI_CONTAINERID  container ID (ADD, DEL, CHECK)
  CNI_NETNS        network namespace path (ADD, CHECK; optional on DEL)
  CNI_IFNAME       interface name in the container (ADD, DEL, CHECK)
  CNI_ARGS         optional K=V;... (MAC=<address>, IgnoreUnknown=1)
  CNI_PATH         plugin search path (the IPAM plugin is found there)
and reads the network configuration (JSON) on stdin. The result or a CNI error
is printed as JSON on stdout; logs go to stderr.

Configuration: bridge (default cni0), isGateway, isDefaultGateway, forceAddress,
ipMasq, ipMasqBackend (iptables|nftables), mtu, hairpinMode, promiscMode, vlan,
vlanTrunk, preserveDefaultVlan, enabledad, macspoofchk, disableContainerInterface,
portIsolation, ipam {type, ...}, dns; runtimeConfig.mac / args.cni.mac.

Options:
  -h, --help     this text
  -V, --version  the version
";
