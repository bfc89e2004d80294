//! GC: removes the rules of attachments not in `cni.dev/valid-attachments`.

use crate::error::PortmapError;
use crate::{config, iptables};
use cni_spec::{AttachmentsError, Request};

use super::Result;

/// GC. The iptables chains are per container ID (the interface is not part
/// of their name), so a container named in the list keeps its chain. The
/// nftables rules carry only the container ID, not the network, so another
/// network's attachments cannot be told apart: GC leaves them to DEL.
///
/// # Errors
/// A list of the wrong shape or missing, or iptables failing.
pub fn gc(req: &Request) -> Result<()> {
    let conf = config::load(req)?;
    let valid = req
        .valid_attachments()
        .map_err(|e| match e {
            AttachmentsError::Type(t) => PortmapError::Decode(t.to_string()),
            other => PortmapError::Config(other.to_string()),
        })?
        .ok_or_else(|| {
            PortmapError::Config("GC needs cni.dev/valid-attachments in the configuration".into())
        })?;
    iptables::gc(&conf.name, &valid).map_err(PortmapError::tool("could not collect dnat chains"))
}
