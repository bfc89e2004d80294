//! CHECK: verifies the rules of each container address of `prevResult`.

use crate::config::{self, Backend};
use crate::error::PortmapError;
use crate::{iptables, nftables};
use cni_spec::Request;

use super::Result;

/// CHECK.
///
/// # Errors
/// No `prevResult` (code 7), or a missing chain or rule (code 999).
pub fn check(req: &Request) -> Result<()> {
    let conf = config::load(req)?;
    if conf.prev_result.is_none() {
        return Err(PortmapError::Config("Required prevResult missing".into()));
    }
    if conf.mappings.is_empty() {
        return Ok(());
    }
    let ips = conf.container_ips(&req.ifname)?;
    for ip in ips.iter() {
        let fam = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
        match conf.backend {
            Backend::Iptables => iptables::check(&conf, &req.container_id, ip)
                .map_err(PortmapError::tool(format!("could not check {fam} dnat")))?,
            Backend::Nftables => nftables::check(&conf, &req.container_id, ip).map_err(
                PortmapError::tool(format!("could not check {fam} nftables rules")),
            )?,
        }
    }
    Ok(())
}
