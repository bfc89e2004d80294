//! The portmap plugin's errors and their CNI codes (the one place that maps
//! them).

use cni_spec::{CniError, ErrorCode};
use thiserror::Error;

/// Everything the portmap plugin can fail with.
#[derive(Debug, Error)]
pub enum PortmapError {
    /// An invalid setting (code 7).
    #[error("{0}")]
    Config(String),
    /// A value of the wrong type, or a `prevResult` that cannot be read
    /// (code 6).
    #[error("{0}")]
    Decode(String),
    /// iptables (or another tool) failed, with what we were doing (code 999).
    #[error("{context}: {message}")]
    Tool {
        /// What was being done.
        context: String,
        /// The tool's complaint.
        message: String,
    },
}

impl PortmapError {
    /// Wraps a tool failure with context.
    pub fn tool(context: impl Into<String>) -> impl FnOnce(String) -> PortmapError {
        let context = context.into();
        move |message| PortmapError::Tool { context, message }
    }
}

impl From<PortmapError> for CniError {
    fn from(e: PortmapError) -> Self {
        let code = match &e {
            PortmapError::Config(_) => ErrorCode::INVALID_NETWORK_CONFIG,
            PortmapError::Decode(_) => ErrorCode::DECODING_FAILURE,
            PortmapError::Tool { .. } => ErrorCode::INTERNAL,
        };
        CniError::new(code, e.to_string())
    }
}
