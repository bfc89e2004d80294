//! loopback's errors and their CNI codes (the one place that maps them).

use cni_bridge::netlink::NetlinkError;
use cni_bridge::netns::NetnsError;
use cni_spec::{CniError, ErrorCode};
use thiserror::Error;

/// Everything the loopback plugin can fail with.
#[derive(Debug, Error)]
pub enum LoopbackError {
    /// A value that cannot be decoded (code 6).
    #[error("{0}")]
    Decode(String),
    /// The container namespace (code 4 when the path is wrong).
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A kernel operation failed, with what was being done (code 999).
    #[error("{context}: {source}")]
    Netlink {
        /// What was being done.
        context: String,
        /// The netlink error.
        #[source]
        source: NetlinkError,
    },
    /// Anything else (code 999), worded as the reference words it.
    #[error("{0}")]
    Other(String),
}

impl LoopbackError {
    /// Wraps a netlink error with context.
    pub fn netlink(context: &'static str) -> impl FnOnce(NetlinkError) -> LoopbackError {
        move |source| LoopbackError::Netlink {
            context: context.into(),
            source,
        }
    }
}

impl From<LoopbackError> for CniError {
    fn from(e: LoopbackError) -> Self {
        let code = match &e {
            LoopbackError::Decode(_) => ErrorCode::DECODING_FAILURE,
            LoopbackError::Netns(
                NetnsError::Missing { .. }
                | NetnsError::NotNetns { .. }
                | NetnsError::WrongKind { .. }
                | NetnsError::Host { .. },
            ) => ErrorCode::INVALID_ENV,
            _ => ErrorCode::INTERNAL,
        };
        CniError::new(code, e.to_string())
    }
}
