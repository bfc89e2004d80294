//! portmap: a chained CNI plugin that forwards host ports to a container
//! (Kubernetes `hostPort`), a drop-in replacement for the reference plugin.
//!
//! Layout: [`config`] reads and validates; [`iptables`] (its
//! [`iptables::rules`] is pure) and [`nftables`] own the rules of the two
//! backends; [`conntrack`] and [`localnet`] own their kernel interfaces;
//! [`cmd`] runs the commands.
#![forbid(unsafe_code)]

pub mod cmd;
pub mod config;
pub mod conntrack;
pub mod error;
pub mod iptables;
pub mod localnet;
pub mod nftables;
pub use cni_bridge::tools;

use cni_spec::{CniError, CniResult, Plugin, PluginInfo, Request};

/// What `portmap` says about itself.
pub const INFO: PluginInfo = PluginInfo {
    name: "portmap",
    version: env!("CARGO_PKG_VERSION"),
};

/// What `--help` prints.
pub const HELP: &str = "\
portmap: CNI chained plugin (k8s-shims), a drop-in replacement for the reference portmap.

It is run by a container runtime, after the main plugin, not by hand:
  CNI_COMMAND      ADD, DEL, CHECK, GC, STATUS or VERSION
  CNI_CONTAINERID  container ID (ADD, DEL, CHECK)
  CNI_NETNS        network namespace path (unused; optional on DEL)
  CNI_IFNAME       interface name in the container (ADD, DEL, CHECK)
  CNI_PATH         plugin search path
and reads the network configuration (JSON, with prevResult) on stdin. The
result (prevResult, passed through) or a CNI error is printed as JSON on
stdout; logs go to stderr.

Configuration: runtimeConfig.portMappings [{hostPort, containerPort,
protocol (tcp|udp|sctp), hostIP}], snat (default true), markMasqBit (0-31,
default 13), externalSetMarkChain, conditionsV4, conditionsV6, backend
(iptables|nftables), masqAll (nftables).

Options:
  -h, --help     this text
  -V, --version  the version
";

/// The plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct Portmap;

impl Plugin for Portmap {
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
}
