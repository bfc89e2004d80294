//! GC and STATUS.

use crate::config;
use crate::error::BridgeError;
use crate::masq;
use crate::spoofcheck;
use cni_spec::env::Command;
use cni_spec::{delegate, AttachmentsError, Request, ValidAttachments};
use std::collections::HashSet;

use super::Result;

fn valid_attachments(req: &Request) -> Result<ValidAttachments> {
    req.valid_attachments()
        .map_err(|e| match e {
            AttachmentsError::Type(t) => BridgeError::Decode(t.to_string()),
            other => BridgeError::Config(other.to_string()),
        })?
        .ok_or_else(|| {
            BridgeError::Config("GC needs cni.dev/valid-attachments in the configuration".into())
        })
}

/// GC: forwards GC to IPAM, then removes masquerade rules (both backends)
/// and our spoof-check chains of attachments not in the valid list. Keeps going past errors.
///
/// # Errors
/// Every failure met, joined.
pub fn gc(req: &Request) -> Result<()> {
    let conf = config::load(req)?;
    let valid = valid_attachments(req)?;
    let mut errors = Vec::new();
    if let Some(t) = &conf.ipam_type {
        if let Err(e) = delegate::call(t, Command::Gc, req) {
            errors.push(e.msg);
        }
    }
    let ids: HashSet<String> = valid.ids().map(str::to_string).collect();
    if let Err(e) = masq::iptables_gc(&req.name, &ids) {
        errors.push(e);
    }
    if let Err(e) = masq::nft_gc(&req.name, &valid) {
        errors.push(e);
    }
    if let Err(e) = spoofcheck::gc(&req.name, &valid) {
        errors.push(format!("mac spoof check: {e}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(BridgeError::Other(errors.join("; ")))
    }
}

/// STATUS: the IPAM plugin's.
///
/// # Errors
/// The IPAM plugin's error.
pub fn status(req: &Request) -> Result<()> {
    let conf = config::load(req)?;
    if let Some(t) = &conf.ipam_type {
        delegate::call(t, Command::Status, req).map_err(BridgeError::Delegate)?;
    }
    Ok(())
}
