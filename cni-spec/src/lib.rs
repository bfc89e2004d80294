//! The CNI protocol, shared by every plugin of this workspace.
//!
//! Owns: the environment and stdin contract (`CNI_*` variables, the network
//! configuration), spec versions 0.1.0 through 1.1.0 and the conversion of a
//! result to the version a runtime asked for, the error reply, the plugin
//! skeleton that turns one process invocation into one reply, and delegation
//! to another plugin found on `CNI_PATH`. No netlink, no async, no files
//! beyond what delegation execs.
#![forbid(unsafe_code)]

pub mod args;
pub mod attachments;
pub mod delegate;
pub mod env;
pub mod error;
pub mod json;
pub mod result;
pub mod skel;
pub mod version;

pub use attachments::{AttachmentsError, ValidAttachments};
pub use error::{CniError, ErrorCode};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};

pub use skel::{Plugin, PluginInfo, Request};
pub use version::Version;
