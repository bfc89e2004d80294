//! DEL.

use crate::config;
use crate::error::BridgeError;
use crate::masq;
use crate::netlink::Netlink;
use crate::netns::{NetNs, NetnsError};
use crate::spoofcheck;
use cni_spec::env::Command;
use cni_spec::{delegate, Request};
use nix::errno::Errno;
use std::path::Path;

use super::{nl, Result};

/// DEL: removes the container interface (if the namespace still exists),
/// releases the IPAM lease, and removes masquerade and spoof-check rules by
/// name, so nothing leaks when the namespace is gone or `CNI_NETNS` is
/// empty (the reference leaks the rules there; plugins#810).
///
/// # Errors
/// The IPAM plugin's error, after every local cleanup; a `CNI_NETNS` that is
/// not a namespace.
pub fn del(req: &Request) -> Result<()> {
    let conf = config::load(req)?;
    if !req.netns.is_empty() {
        match NetNs::open(Path::new(&req.netns)) {
            Ok(ns) => {
                let home = NetNs::current()?;
                let mut ctr = ns
                    .run(&home, Netlink::open)?
                    .map_err(nl("open netlink in the container namespace"))?;
                if let Some(l) = ctr
                    .link_by_name(&req.ifname)
                    .map_err(nl("look up the container interface"))?
                {
                    match ctr.del_link(l.index) {
                        Err(e) if e.errno() != Some(Errno::ENODEV) => {
                            return Err(BridgeError::Other(format!(
                                "failed to delete {:?}: {e}",
                                req.ifname
                            )))
                        }
                        _ => {}
                    }
                }
            }
            Err(NetnsError::Missing { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut first_err = None;
    if let Some(t) = &conf.ipam_type {
        if let Err(e) = delegate::call(t, Command::Del, req) {
            first_err = Some(BridgeError::Delegate(e));
        }
    }
    if conf.mac_spoof_check {
        if let Err(e) = spoofcheck::teardown(&req.container_id, &req.ifname) {
            eprintln!("bridge: mac spoof check teardown: {e}");
        }
    }
    if conf.ipam_type.is_some() && conf.ip_masq {
        let a = masq::iptables_teardown(&req.name, &req.container_id);
        let b = masq::nft_teardown(&req.name, &req.ifname, &req.container_id);
        for e in [a.err(), b.err()].into_iter().flatten() {
            if first_err.is_none() {
                first_err = Some(BridgeError::Other(format!(
                    "failed to tear down IP masquerade: {e}"
                )));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}
