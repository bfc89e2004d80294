//! DEL: removes the attachment's rules by name.

use crate::error::PortmapError;
use crate::{config, iptables};
use cni_spec::Request;

use super::Result;

/// DEL. Unlike the reference it also cleans up when the runtime sends no
/// `runtimeConfig.portMappings` on DEL: the chain name needs only the
/// network name and container ID.
///
/// # Errors
/// Invalid configuration, or iptables failing in every family.
pub fn del(req: &Request) -> Result<()> {
    let conf = config::load(req)?;
    iptables::teardown(&conf.name, &req.container_id)
        .map_err(PortmapError::tool("could not teardown dnat"))
}
