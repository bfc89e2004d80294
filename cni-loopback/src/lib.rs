//! loopback: brings `lo` up in the container's network namespace, a drop-in
//! replacement for the reference plugin (the same effect on `lo`, the same
//! result at 1.0.0). The namespace and netlink code are the bridge
//! plugin's.
//!
//! Where it differs from the reference: for versions before 1.0.0 the
//! result has the shape that version's spec defines (the reference prints
//! its 1.0.0 shape stamped with the older version); a missing or unusable `CNI_NETNS`
//! is code 4 (the reference says 999); the plugin's own network namespace
//! is refused by every command (the reference would take the node's `lo`
//! down on DEL); DEL succeeds when the path is no longer a network
//! namespace (unmounted, its file left behind), as it does when the path
//! is gone; GC and STATUS (1.1.0) succeed with nothing to do.
#![forbid(unsafe_code)]

mod error;

pub use error::LoopbackError;

use cni_bridge::netlink::Netlink;
use cni_bridge::netns::{NetNs, NetnsError};
use cni_spec::{CniError, CniResult, Interface, IpConfig, Plugin, PluginInfo, Request};
use ipnetwork::IpNetwork;
use std::path::Path;

/// What `loopback` says about itself.
pub const INFO: PluginInfo = PluginInfo {
    name: "loopback",
    version: env!("CARGO_PKG_VERSION"),
};

/// What `--help` prints.
pub const HELP: &str = "\
loopback: CNI plugin (k8s-shims), a drop-in replacement for the reference loopback.

It is run by a container runtime, not by hand:
  CNI_COMMAND      ADD, DEL, CHECK, GC, STATUS or VERSION
  CNI_CONTAINERID  container ID
  CNI_NETNS        network namespace path (ADD, CHECK; optional on DEL)
  CNI_IFNAME       ignored: the interface is always lo
  CNI_PATH         plugin search path
and reads the network configuration (JSON) on stdin. ADD brings lo up and
reports its addresses (or passes prevResult through); DEL takes it down; CHECK
verifies it is up. The result or a CNI error is printed as JSON on stdout.

Options:
  -h, --help     this text
  -V, --version  the version
";

/// The interface this plugin manages, whatever `CNI_IFNAME` says.
const LO: &str = "lo";

type Result<T, E = LoopbackError> = std::result::Result<T, E>;

/// The plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct Loopback;

impl Plugin for Loopback {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        Ok(add(req)?)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        Ok(del(req)?)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        Ok(check(req)?)
    }
}

/// The container's namespace (never the plugin's own) and the node's.
fn open(netns: &str) -> Result<(NetNs, NetNs)> {
    let home = NetNs::current()?;
    let ns = NetNs::open_container(Path::new(netns), &home)?;
    Ok((ns, home))
}

/// Runs `f` on a netlink socket inside `netns`.
fn in_netns<T>(netns: &str, f: impl FnOnce(&mut Netlink) -> Result<T>) -> Result<T> {
    let (ns, home) = open(netns)?;
    ns.run(&home, || {
        let mut nl = Netlink::open().map_err(LoopbackError::netlink("open netlink"))?;
        f(&mut nl)
    })?
}

/// The first address of `lo` in one family, after checking that every one
/// is a loopback address (as the reference does).
fn first_loopback(nl: &mut Netlink, index: u32, v4: bool) -> Result<Option<IpNetwork>> {
    let addrs = nl
        .addrs(index, Some(v4))
        .map_err(LoopbackError::netlink("list addresses of lo"))?;
    if let Some(a) = addrs.iter().find(|a| !a.net.ip().is_loopback()) {
        return Err(LoopbackError::Other(format!(
            "loopback interface found with non-loopback address {:?}",
            a.net.ip().to_string()
        )));
    }
    Ok(addrs.first().map(|a| a.net))
}

fn add(req: &Request) -> Result<CniResult> {
    let prev = match req.conf().get("prevResult") {
        Some(v) => Some(
            CniResult::decode(v, req.version)
                .map_err(|e| {
                    LoopbackError::Decode(format!("failed to parse prevResult: {}", e.msg))
                })?
                .0,
        ),
        None => None,
    };
    let (v4, v6) = in_netns(&req.netns, |nl| {
        let lo = nl
            .link_by_name(LO)
            .map_err(LoopbackError::netlink("look up lo"))?
            .ok_or_else(|| LoopbackError::Other("Link not found".into()))?;
        nl.set_up(lo.index)
            .map_err(LoopbackError::netlink("set lo up"))?;
        Ok((
            first_loopback(nl, lo.index, true)?,
            first_loopback(nl, lo.index, false)?,
        ))
    })?;
    if let Some(prev) = prev {
        return Ok(prev);
    }
    let ips = [v4, v6]
        .into_iter()
        .flatten()
        .map(|address| IpConfig {
            interface: Some(0),
            address,
            gateway: None,
        })
        .collect();
    Ok(CniResult {
        interfaces: vec![Interface {
            name: LO.into(),
            mac: "00:00:00:00:00:00".into(),
            sandbox: req.netns.clone(),
            ..Interface::default()
        }],
        ips,
        ..CniResult::default()
    })
}

fn del(req: &Request) -> Result<()> {
    if req.netns.is_empty() {
        return Ok(());
    }
    let outcome = in_netns(&req.netns, |nl| {
        if let Some(lo) = nl
            .link_by_name(LO)
            .map_err(LoopbackError::netlink("look up lo"))?
        {
            nl.set_down(lo.index)
                .map_err(LoopbackError::netlink("set lo down"))?;
        }
        Ok(())
    });
    match outcome {
        // The namespace is gone (or only its file is left): nothing to do
        // (kubernetes#43014).
        Err(LoopbackError::Netns(
            NetnsError::Missing { .. } | NetnsError::NotNetns { .. } | NetnsError::WrongKind { .. },
        )) => Ok(()),
        other => other,
    }
}

fn check(req: &Request) -> Result<()> {
    in_netns(&req.netns, |nl| {
        let lo = nl
            .link_by_name(LO)
            .map_err(LoopbackError::netlink("look up lo"))?
            .ok_or_else(|| LoopbackError::Other("Link not found".into()))?;
        if lo.up {
            Ok(())
        } else {
            Err(LoopbackError::Other("loopback interface is down".into()))
        }
    })
}
