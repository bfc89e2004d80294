//! ADD: forwards the host ports to the container addresses of `prevResult`
//! and passes `prevResult` through as the result.

use crate::config::{self, Backend, PortmapConf};
use crate::error::PortmapError;
use crate::{conntrack, iptables, localnet, nftables};
use cni_spec::{CniResult, Request};
use ipnetwork::IpNetwork;
use std::io::Write;

use super::Result;

/// ADD. Nothing is changed when validation fails; when a family's
/// transaction fails after another family's succeeded, the attachment's
/// rules are removed again before the error is returned.
///
/// # Errors
/// Invalid configuration (code 6/7), or iptables failing (code 999).
pub fn add(req: &Request) -> Result<CniResult> {
    let conf = config::load(req)?;
    let ips = conf.container_ips(&req.ifname)?;
    let prev = conf.prev_result.clone().unwrap_or_default();
    if conf.mappings.is_empty() {
        return Ok(prev);
    }
    for ip in ips.iter() {
        if let Err(e) = forward(&conf, &req.container_id, ip) {
            let _ = super::del::remove(&conf, &req.container_id);
            return Err(e);
        }
        for p in conntrack::flush_udp(&conf.mappings, ip.is_ipv4()) {
            let _ = writeln!(
                std::io::stderr(),
                "failed to delete stale UDP conntrack entries for {}: {p}",
                ip.ip()
            );
        }
    }
    Ok(prev)
}

fn forward(conf: &PortmapConf, container_id: &str, ip: IpNetwork) -> Result<()> {
    if let (true, IpNetwork::V4(v4)) = (conf.snat, ip) {
        if let Some(iface) = localnet::route_iface(v4.ip()) {
            localnet::enable(&iface).map_err(|m| PortmapError::Tool {
                context: "unable to enable route_localnet".into(),
                message: m,
            })?;
        }
    }
    match conf.backend {
        Backend::Iptables => iptables::setup(conf, container_id, ip)
            .map_err(PortmapError::tool("unable to setup DNAT")),
        Backend::Nftables => nftables::setup(conf, container_id, ip).map_err(PortmapError::tool(
            "unable to set up nftables rules for port mappings",
        )),
    }
}
