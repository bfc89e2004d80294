//! bridge: a CNI main plugin that attaches containers to a Linux bridge
//! through a veth pair, a drop-in replacement for the reference plugin.
//!
//! Layout: [`config`] reads and validates; [`netlink`] is the only module
//! that speaks rtnetlink; [`netns`] switches namespaces; [`sysctl`],
//! [`masq`] and [`spoofcheck`] own their kernel interfaces; [`cmd`] runs the
//! commands.
#![forbid(unsafe_code)]

pub mod cmd;
pub mod config;
pub mod error;
pub mod masq;
pub mod netlink;
pub mod netns;
pub mod spoofcheck;
pub mod sysctl;
pub mod tools;

use cni_spec::{CniError, CniResult, Plugin, PluginInfo, Request};
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// What `bridge` says about itself.
pub const INFO: PluginInfo = PluginInfo {
    name: "bridge",
    version: env!("CARGO_PKG_VERSION"),
};

/// What `--help` prints.
pub const HELP: &str = "\
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

/// The plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bridge;

impl Plugin for Bridge {
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

/// The first address of `net`'s subnet (network + 1), the conventional
/// gateway.
pub fn range_first(net: IpNetwork) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::from(u32::from(a).wrapping_add(1).to_be_bytes()),
        IpAddr::V6(a) => IpAddr::from(u128::from(a).wrapping_add(1).to_be_bytes()),
    }
}
