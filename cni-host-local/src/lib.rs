//! host-local: an IPAM plugin that hands out addresses from configured ranges
//! and records them in a directory on the node, a drop-in replacement for the
//! reference plugin (same configuration, results, store format and lock).
//!
//! Layout: [`config`] reads and validates, [`range`] and [`allocator`] are
//! pure address logic, [`store`] owns every file, [`cmd`] runs the commands.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod cmd;
pub mod config;
pub mod dns;
pub mod error;
pub mod range;
pub mod store;

use cni_spec::{CniError, CniResult, Plugin, PluginInfo, Request};

/// What `host-local` says about itself.
pub const INFO: PluginInfo = PluginInfo {
    name: "host-local",
    version: env!("CARGO_PKG_VERSION"),
};

/// What `--help` prints.
pub const HELP: &str = "\
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

/// The plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostLocal;

impl Plugin for HostLocal {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        Ok(cmd::add(req)?)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        Ok(cmd::del(req)?)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        Ok(cmd::check(req)?)
    }
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        Ok(cmd::gc(req)?)
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        Ok(cmd::status(req)?)
    }
}
