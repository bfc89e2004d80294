//! host-local's errors and their CNI codes (the one place that maps them).

use cni_spec::{CniError, ErrorCode};
use thiserror::Error;

/// Everything host-local can fail with. The texts are the reference's where
/// it has one.
#[derive(Debug, Error)]
pub enum HostLocalError {
    /// The configuration is not what it should be (code 7).
    #[error("{0}")]
    Config(String),
    /// A value could not be decoded (code 6).
    #[error("{0}")]
    Decode(String),
    /// `CNI_ARGS` problem (code 4).
    #[error("{0}")]
    Args(String),
    /// No address could be had (code 100).
    #[error("{0}")]
    Unavailable(String),
    /// CHECK found no reservation (code 3: the runtime's container is unknown
    /// to us).
    #[error("{0}")]
    NotFound(String),
    /// Reading or writing the store failed (code 5).
    #[error("{context}: {}", crate::store::os_text(source))]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// STATUS: an ADD would fail (code 50).
    #[error("{0}")]
    Exhausted(String),
}

impl HostLocalError {
    /// An I/O error with its context.
    pub fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        HostLocalError::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}

impl From<cni_spec::AttachmentsError> for HostLocalError {
    fn from(e: cni_spec::AttachmentsError) -> Self {
        match e {
            cni_spec::AttachmentsError::Type(t) => HostLocalError::Decode(t.to_string()),
            other => HostLocalError::Config(other.to_string()),
        }
    }
}

impl From<HostLocalError> for CniError {
    fn from(e: HostLocalError) -> Self {
        let code = match &e {
            HostLocalError::Config(_) => ErrorCode::INVALID_NETWORK_CONFIG,
            HostLocalError::Decode(_) => ErrorCode::DECODING_FAILURE,
            HostLocalError::Args(_) => ErrorCode::INVALID_ENV,
            HostLocalError::Unavailable(_) => ErrorCode::ADDRESS_UNAVAILABLE,
            HostLocalError::NotFound(_) => ErrorCode::UNKNOWN_CONTAINER,
            HostLocalError::Io { .. } => ErrorCode::IO_FAILURE,
            HostLocalError::Exhausted(_) => ErrorCode::NOT_AVAILABLE,
        };
        CniError::new(code, e.to_string())
    }
}
