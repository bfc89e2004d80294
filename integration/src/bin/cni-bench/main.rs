//! `cni-bench`: compares our CNI plugins with the reference (Go) plugins, in one run.
//!
//! ```text
//! cargo run --release -p integration --bin cni-bench -- host-local \
//!     [--ours DIR] [--ref DIR] [--iterations N] [--full-iterations M]
//! cargo run --release -p integration --bin cni-bench -- bridge \
//!     [--ours DIR] [--ref DIR] [--iterations N] [--masq-iterations M]
//! cargo run --release -p integration --bin cni-bench -- portmap \
//!     [--ours DIR] [--ref DIR] [--iterations N] [--conntrack-entries E]
//! cargo run --release -p integration --bin cni-bench -- cri \
//!     [--ours DIR] [--iterations N] [--images N] [--clients C] [--seconds S]
//! ```
//!
//! The `bridge` subcommand (root only; everything in throwaway network namespaces) is described
//! in bridge.rs, the `portmap` subcommand (root only; in throwaway network namespaces) in
//! portmap.rs, and the `cri` subcommand (root only: `cri-adapter serve` in front of a
//! containerd it starts, against containerd directly) in cri.rs. Modules: one per subcommand
//! (host_local, bridge, portmap, cri, and the internal bridge_worker and rss_probe), report (timing,
//! statistics, the table and the targets line), plugin (driving a plugin) and netns.
//!
//! `--ours` defaults to `<workspace>/target/release`, `--ref` to `/usr/lib/cni` (Debian's
//! containernetworking-plugins, reference v1.1.1, so both sides are driven at cniVersion 1.0.0).
//! `--iterations` sets (a) (default 200); (b) defaults to 50, or a quarter of `--iterations`
//! when that is given, unless `--full-iterations` sets it.
//!
//! Measurements (host-local), each printed as ours / reference / ratio:
//! - (a) one ADD+DEL, exec to exit, median and p90, fresh /24 store, ours and ref interleaved;
//! - (b) one ADD in a /16 that is 99% full (store written directly), and in an empty /16;
//! - (c) 200 concurrent ADDs (distinct ids) on a fresh /16: wall time until all have exited,
//!   median of 5 rounds, with every result checked for success and distinct IPs;
//! - (d) peak RSS of one ADD, measured by a re-exec of this binary (`cni-bench rss-probe ...`)
//!   with `getrusage(RUSAGE_CHILDREN)`, median of 5.
//!
//! Every figure also has a floor, measured in the same run and printed in a closing table with
//! ours ÷ floor and reference ÷ floor (ADD, DEL and the pair separately; medians of rounds):
//! host-local, a static no-op exec'd the same way; bridge, the same kernel work through
//! cni-bridge's netlink code (its example bridge-floor; `ip -batch` without it) with as many
//! process starts; portmap, the static no-op and one `iptables-restore --noflush` of the same
//! rules per command (and an in-process conntrack dump for a UDP ADD); cri, containerd's
//! socket direct (and a bare relay in front of it, the floor of any user-space hop).
//!
//! The tool is a report, not a test: it exits 0 when targets are missed, but non-zero when any
//! plugin call failed or a result was wrong.
#![allow(clippy::print_stdout)]

mod bridge;
mod bridge_worker;
mod cri;
mod host_local;
mod netns;
mod plugin;
mod portmap;
mod report;
mod rss_probe;

use std::ffi::OsString;
use std::process::ExitCode;

pub(crate) type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let sub = args.first().and_then(|a| a.to_str()).unwrap_or("");
    let result = match sub {
        "host-local" => host_local::host_local(&args[1..]),
        "bridge" => bridge::bridge(&args[1..]),
        "portmap" => portmap::portmap(&args[1..]),
        "cri" => cri::cri(&args[1..]),
        "seed" => integration::seed_bench::run(&args[1..]),
        "bridge-worker" => bridge_worker::bridge_worker(&args[1..]),
        "rss-probe" => rss_probe::rss_probe(&args[1..]),
        "relay" => cri::relay::relay(&args[1..]),
        "-h" | "--help" | "help" => {
            println!("{}", usage());
            Ok(true)
        }
        _ => Err(format!("unknown or missing subcommand\n{}", usage())),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cni-bench: {e}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn usage() -> &'static str {
    "usage: cni-bench host-local [--ours DIR] [--ref DIR] [--iterations N] [--full-iterations M]\n\
     \x20      cni-bench bridge [--ours DIR] [--ref DIR] [--iterations N] [--masq-iterations M]\n\
     \x20      cni-bench portmap [--ours DIR] [--ref DIR] [--iterations N] [--conntrack-entries E]\n\
     \x20      cni-bench cri [--ours DIR] [--iterations N] [--images N] [--clients C] [--seconds S]\n\
     \x20      cni-bench seed [--size MIB]   (cri-adapter seed against ctr images import; CNI_BIN_DIR holds cri-adapter and the plugins)\n\
     \x20      cni-bench rss-probe PLUGIN CONFIG_FILE [NETNS]   (internal: one ADD, prints children maxrss KiB)\n\
     \x20      cni-bench bridge-worker   (internal: runs plugin batches read from stdin, in its netns)\n\
     \x20      cni-bench relay SOCKET UPSTREAM   (internal: the cri bench's bare relay, until killed)\n\
     host-local defaults: --ours <workspace>/target/release, --ref /usr/lib/cni, --iterations 200,\n\
     \x20         --full-iterations 50 (or iterations/4 when --iterations is given)\n\
     bridge defaults: --ours <workspace>/target/release, --ref /usr/lib/cni, --iterations 100,\n\
     \x20         --masq-iterations iterations/4 (0 skips the ipMasq row); DIR must hold both `bridge`\n\
     \x20         and `host-local`; needs root (network namespaces)\n\
     portmap defaults: --ours <workspace>/target/release, --ref /usr/lib/cni, --iterations 100,\n\
     \x20         --conntrack-entries 1000 (seeded per namespace); needs root, iptables, conntrack\n\
     host-local, bridge and portmap build their floor, a static no-op, once with `cc -static` (gcc,\n\
     \x20         libc6-dev) into <workspace>/target/cni-bench-floor\n\
     cri defaults: --ours <workspace>/target/release (falls back to it when DIR has no\n\
     \x20         `cri-adapter`), --iterations 2000 (ListImages: a quarter), --images 300,\n\
     \x20         --clients 8, --seconds 2; needs root and Debian's containerd"
}
