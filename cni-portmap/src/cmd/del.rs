//! DEL: removes the attachment's rules by name.

use crate::config::{self, Backend, PortmapConf};
use crate::error::PortmapError;
use crate::{iptables, nftables};
use cni_spec::Request;

use super::Result;

/// DEL. Unlike the reference it also cleans up when the runtime sends no
/// `runtimeConfig.portMappings` on DEL: iptables chains are named by the
/// network name and container ID, nftables rules are commented with the
/// container ID.
///
/// # Errors
/// Invalid configuration, or the firewall tools failing.
pub fn del(req: &Request) -> Result<()> {
    let conf = config::load(req)?;
    remove(&conf, &req.container_id)
}

/// Removes the attachment's rules of the configured backend.
pub(crate) fn remove(conf: &PortmapConf, container_id: &str) -> Result<()> {
    match conf.backend {
        Backend::Iptables => iptables::teardown(&conf.name, container_id)
            .map_err(PortmapError::tool("could not teardown dnat")),
        Backend::Nftables => nftables::teardown(container_id)
            .map_err(PortmapError::tool("error deleting nftables rules")),
    }
}
