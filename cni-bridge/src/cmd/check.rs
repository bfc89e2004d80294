//! CHECK.

use crate::config::{self, MasqBackend};
use crate::error::BridgeError;
use crate::masq;
use crate::netlink::Netlink;
use crate::netns::NetNs;
use crate::spoofcheck;
use cni_spec::env::Command;
use cni_spec::{delegate, Request, Route};
use ipnetwork::IpNetwork;
use std::path::Path;

use super::{nl, Result};

/// CHECK (section 3.8 of our notes). An L2 network does not delegate to a
/// nonexistent IPAM plugin (the reference fails with `no plugin name
/// provided`), and masquerade rules are checked too.
///
/// # Errors
/// The first thing found wrong.
pub fn check(req: &Request) -> Result<()> {
    let conf = config::load(req)?;
    let home = NetNs::current()?;
    let ctr_ns = NetNs::open_container(Path::new(&req.netns), &home)?;
    if let Some(t) = &conf.ipam_type {
        delegate::call(t, Command::Check, req).map_err(BridgeError::Delegate)?;
    }
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| BridgeError::Other("Required prevResult missing".into()))?;
    let other = |m: String| BridgeError::Other(m);
    let mut host = Netlink::open().map_err(nl("open netlink"))?;
    let br_entry = prev
        .interfaces
        .iter()
        .find(|i| i.name == conf.bridge)
        .ok_or_else(|| {
            other(format!(
                "CNI created bridge {} in host namespace was not found",
                conf.bridge
            ))
        })?;
    let br = host
        .link_by_name(&br_entry.name)
        .map_err(nl("look up the bridge"))?
        .ok_or_else(|| other(format!("Interface name {} not found", br_entry.name)))?;
    if !br_entry.sandbox.is_empty() {
        return Err(other(format!(
            "Interface {} should not be in sandbox",
            br.name
        )));
    }
    if br.kind.as_deref() != Some("bridge") {
        return Err(other(format!(
            "Interface {} does not have link type of bridge",
            br.name
        )));
    }
    if !br_entry.mac.is_empty() && !br_entry.mac.eq_ignore_ascii_case(&br.mac_text()) {
        return Err(other(format!(
            "Bridge interface {} Mac doesn't match: {}",
            br.name, br_entry.mac
        )));
    }
    if (br.promiscuity > 0) != conf.promisc {
        return Err(other(format!(
            "Bridge interface {} configured Promisc Mode {} doesn't match current state: {} ",
            br.name,
            conf.promisc,
            br.promiscuity > 0
        )));
    }
    let ctr_entry = prev
        .interfaces
        .iter()
        .find(|i| i.name == req.ifname && i.sandbox == req.netns);
    let sandbox = ctr_entry.map(|i| i.sandbox.clone()).unwrap_or_default();
    if sandbox != req.netns {
        return Err(other(format!(
            "Sandbox in prevResult {sandbox} doesn't match configured netns: {}",
            req.netns
        )));
    }
    let ctr_entry = ctr_entry.ok_or_else(|| {
        other(format!(
            "CNI created interface in container {} not found",
            req.ifname
        ))
    })?;
    let mut ctr = ctr_ns
        .run(&home, Netlink::open)?
        .map_err(nl("open netlink in the container namespace"))?;
    let ci = ctr
        .link_by_name(&req.ifname)
        .map_err(nl("look up the container interface"))?
        .ok_or_else(|| {
            other(format!(
                "CNI created interface in container {} not found",
                req.ifname
            ))
        })?;
    if ci.kind.as_deref() != Some("veth") {
        return Err(other(format!(
            "Error: Container interface {} not of type veth",
            ci.name
        )));
    }
    let peer = ci.peer_index.ok_or_else(|| {
        other(format!(
            "Unable to obtain veth peer index for veth {}",
            ci.name
        ))
    })?;
    if !ctr_entry.mac.is_empty() && !ctr_entry.mac.eq_ignore_ascii_case(&ci.mac_text()) {
        return Err(other(format!(
            "Interface {} Mac {} doesn't match container Mac: {}",
            ci.name,
            ctr_entry.mac,
            ci.mac_text()
        )));
    }
    let mut found_veth = false;
    for entry in prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_empty() && i.name != conf.bridge)
    {
        let Some(l) = host
            .link_by_name(&entry.name)
            .map_err(nl("look up a host veth"))?
        else {
            continue;
        };
        if l.kind.as_deref() != Some("veth") || l.index != peer || l.master != Some(br.index) {
            continue;
        }
        found_veth = true;
        if !entry.mac.is_empty() && !entry.mac.eq_ignore_ascii_case(&l.mac_text()) {
            return Err(other(format!(
                "Interface {} Mac doesn't match: {} not found",
                entry.name, entry.mac
            )));
        }
    }
    if !found_veth {
        return Err(other(format!(
            "CNI veth created for bridge {} was not found",
            conf.bridge
        )));
    }
    let addrs = ctr
        .addrs(ci.index, None)
        .map_err(nl("list container addresses"))?;
    for ip in &prev.ips {
        if !addrs
            .iter()
            .any(|a| a.net.ip() == ip.address.ip() && a.net.prefix() == ip.address.prefix())
        {
            return Err(other(format!(
                "Failed to match addr {} on interface {}",
                ip.address, req.ifname
            )));
        }
    }
    for fam in [true, false] {
        let routes: Vec<&Route> = prev
            .routes
            .iter()
            .filter(|r| r.dst.is_ipv4() == fam)
            .collect();
        if routes.is_empty() {
            continue;
        }
        let installed = ctr.routes(fam).map_err(nl("list container routes"))?;
        for r in routes {
            let ok = installed.iter().any(|i| {
                i.dst.prefix() == r.dst.prefix()
                    && i.dst.network() == r.dst.network()
                    && r.gw.is_none_or(|g| i.gw == Some(g))
            });
            if !ok {
                let gw = r.gw.map(|g| format!(" GW:{g}")).unwrap_or_default();
                return Err(other(format!(
                    "Expected Route {{Dst:{}{gw}}} not found in routing table",
                    r.dst
                )));
            }
        }
    }
    if conf.ip_masq && !prev.ips.is_empty() {
        let ips: Vec<IpNetwork> = prev.ips.iter().map(|i| i.address).collect();
        let backend_nft = conf.ip_masq_backend == Some(MasqBackend::Nftables);
        let r = if backend_nft {
            masq::nft_check(&req.name, &req.ifname, &req.container_id, &ips)
        } else {
            masq::iptables_check(&req.name, &req.container_id, &ips)
        };
        r.map_err(other)?;
    }
    if conf.mac_spoof_check {
        spoofcheck::check(&req.container_id, &req.ifname).map_err(other)?;
    }
    Ok(())
}
