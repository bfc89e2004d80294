//! host-local: an IPAM plugin that hands out addresses from configured ranges
//! and records them in a directory on the node, a drop-in replacement for the
//! reference plugin (same configuration, results, store format and lock).
//!
//! Layout: [`config`] reads and validates, [`range`] and [`allocator`] are
//! pure address logic, [`store`] owns every file, [`cmd`] runs the commands.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod cmd;
pub mod config;
pub mod dns;
pub mod error;
pub mod range;
pub mod store;

use cni_spec::{CniError, CniResult, Plugin, PluginInfo, Request};

/// What `host-local` says about itself.
pub const INFO: PluginInfo = PluginInfo {
    name: "host-local",
    version: env!("CARGO_PKG_VERSION"),
};

/// The plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostLocal;

impl Plugin for HostLocal {
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
    fn status(&self, req: &Request) -> Result<(), CniError> {
        Ok(cmd::status(req)?)
    }
}
