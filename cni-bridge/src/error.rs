//! The bridge plugin's errors and their CNI codes (the one place that maps
//! them).

use crate::netlink::NetlinkError;
use crate::netns::NetnsError;
use cni_spec::{CniError, ErrorCode};
use thiserror::Error;

/// Everything the bridge plugin can fail with.
#[derive(Debug, Error)]
pub enum BridgeError {
    /// An invalid setting (code 7).
    #[error("{0}")]
    Config(String),
    /// A value of the wrong type (code 6).
    #[error("{0}")]
    Decode(String),
    /// `CNI_ARGS` (code 4).
    #[error("{0}")]
    Args(String),
    /// The container namespace (code 4 when the path is wrong).
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A kernel operation failed, with what we were doing (code 999).
    #[error("{context}: {source}")]
    Netlink {
        /// What was being done.
        context: String,
        /// The netlink error.
        #[source]
        source: NetlinkError,
    },
    /// A delegated plugin's own error, passed through unchanged.
    #[error("{}", .0.msg)]
    Delegate(CniError),
    /// Anything else (code 999), message as the reference words it.
    #[error("{0}")]
    Other(String),
}

impl BridgeError {
    /// Wraps a netlink error with context.
    pub fn netlink(context: impl Into<String>) -> impl FnOnce(NetlinkError) -> BridgeError {
        let context = context.into();
        move |source| BridgeError::Netlink { context, source }
    }
}

impl From<BridgeError> for CniError {
    fn from(e: BridgeError) -> Self {
        let code = match &e {
            BridgeError::Config(_) => ErrorCode::INVALID_NETWORK_CONFIG,
            BridgeError::Decode(_) => ErrorCode::DECODING_FAILURE,
            BridgeError::Args(_) => ErrorCode::INVALID_ENV,
            BridgeError::Netns(
                NetnsError::Missing { .. }
                | NetnsError::NotNetns { .. }
                | NetnsError::WrongKind { .. }
                | NetnsError::Host { .. },
            ) => ErrorCode::INVALID_ENV,
            BridgeError::Delegate(inner) => return inner.clone(),
            _ => ErrorCode::INTERNAL,
        };
        CniError::new(code, e.to_string())
    }
}
