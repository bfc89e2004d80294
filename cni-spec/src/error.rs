//! The CNI error reply (`{cniVersion, code, msg, details}`) and its codes.

use serde_json::{Map, Value};
use std::fmt;

/// Error codes of the CNI spec, plus the plugin-specific codes we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// 1: incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: ErrorCode = ErrorCode(1);
    /// 2: unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: ErrorCode = ErrorCode(2);
    /// 3: container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: ErrorCode = ErrorCode(3);
    /// 4: invalid necessary environment variables.
    pub const INVALID_ENV: ErrorCode = ErrorCode(4);
    /// 5: I/O failure.
    pub const IO_FAILURE: ErrorCode = ErrorCode(5);
    /// 6: failed to decode content.
    pub const DECODING_FAILURE: ErrorCode = ErrorCode(6);
    /// 7: invalid network configuration.
    pub const INVALID_NETWORK_CONFIG: ErrorCode = ErrorCode(7);
    /// 11: try again later.
    pub const TRY_AGAIN_LATER: ErrorCode = ErrorCode(11);
    /// 50: STATUS, the plugin cannot serve ADD.
    pub const NOT_AVAILABLE: ErrorCode = ErrorCode(50);
    /// 51: STATUS, not available and existing containers may be affected.
    pub const NOT_AVAILABLE_LIMITED: ErrorCode = ErrorCode(51);
    /// 100: no address could be allocated (exhausted, requested address
    /// taken, duplicate allocation). Plugin-specific.
    pub const ADDRESS_UNAVAILABLE: ErrorCode = ErrorCode(100);
    /// 999: anything else (the reference library's `ErrInternal`).
    pub const INTERNAL: ErrorCode = ErrorCode(999);
}

/// A CNI error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The error code.
    pub code: ErrorCode,
    /// Short message; tools grep some of these, so texts follow the reference.
    pub msg: String,
    /// Longer details, omitted from the JSON when empty.
    pub details: String,
}

impl CniError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details.
    #[must_use]
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The reply object, with `cniVersion` first.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), Value::from(cni_version));
        m.insert("code".into(), Value::from(self.code.0));
        m.insert("msg".into(), Value::from(self.msg.clone()));
        if !self.details.is_empty() {
            m.insert("details".into(), Value::from(self.details.clone()));
        }
        Value::Object(m)
    }

    /// Decodes a reply printed by another plugin. Returns `None` when the
    /// object has no numeric `code`.
    pub fn from_json(v: &Value) -> Option<Self> {
        let code = v.get("code")?.as_u64()?;
        let code = u32::try_from(code).ok()?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Some(CniError {
            code: ErrorCode(code),
            msg: text("msg"),
            details: text("details"),
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}; {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let e = CniError::new(ErrorCode::INVALID_ENV, "bad").with_details("why");
        let j = e.to_json("1.0.0");
        assert_eq!(
            serde_json::to_string(&j).ok().as_deref(),
            Some(r#"{"cniVersion":"1.0.0","code":4,"msg":"bad","details":"why"}"#)
        );
        assert_eq!(CniError::from_json(&j), Some(e));
    }

    #[test]
    fn details_omitted_when_empty() {
        let j = CniError::new(ErrorCode(7), "x").to_json("0.4.0");
        assert!(j.get("details").is_none());
    }
}

/// An OS error number as the reference plugins print it: the C library's
/// text with its first letter lowered (`operation not supported`, `no such
/// file or directory`), as Go's error table is made. Tools grep for these.
pub fn errno_text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = text
        .rsplit_once(" (os error ")
        .map_or(text.as_str(), |(t, _)| t);
    let mut c = text.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => format!("errno {errno}"),
    }
}

#[cfg(test)]
mod errno_tests {
    use super::errno_text;

    #[test]
    fn texts_read_like_go() {
        assert_eq!(errno_text(95), "operation not supported");
        assert_eq!(errno_text(2), "no such file or directory");
        assert_eq!(errno_text(17), "file exists");
        assert_eq!(errno_text(19), "no such device");
    }
}
