//! The `CNI_*` environment: commands and the validation of identifiers.

use crate::error::{CniError, ErrorCode};
use std::fmt;

/// A CNI command (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach.
    Add,
    /// Detach; idempotent.
    Del,
    /// Verify an attachment (0.4.0+).
    Check,
    /// Report supported versions.
    Version,
    /// Release resources of attachments not in the valid list (1.1.0+).
    Gc,
    /// Can ADD be served (1.1.0+)?
    Status,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            _ => return None,
        })
    }

    /// The command's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }

    /// Whether `var` must be set for this command (the spec's table).
    pub fn requires(self, var: &str) -> bool {
        use Command::*;
        match var {
            "CNI_CONTAINERID" | "CNI_IFNAME" => matches!(self, Add | Del | Check),
            "CNI_NETNS" => matches!(self, Add | Check),
            "CNI_PATH" => matches!(self, Add | Del | Check | Gc | Status),
            _ => false,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identifier rule of the spec: an alphanumeric first character, then
/// alphanumerics, `_`, `.` or `-`.
fn is_valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Validates `CNI_CONTAINERID`.
///
/// # Errors
/// Code 3 when empty, code 4 when it has characters the spec forbids.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::new(
            ErrorCode::UNKNOWN_CONTAINER,
            "missing containerID",
        ));
    }
    if !is_valid_identifier(id) {
        return Err(
            CniError::new(ErrorCode::INVALID_ENV, "invalid characters in containerID")
                .with_details(id),
        );
    }
    Ok(())
}

/// Validates the network `name`; it also names a directory of the IPAM
/// store, so `..`, `/` and the like must never pass.
///
/// # Errors
/// Code 7 when empty or when it has characters the spec forbids.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::new(
            ErrorCode::INVALID_NETWORK_CONFIG,
            "missing network name",
        ));
    }
    if !is_valid_identifier(name) {
        return Err(CniError::new(
            ErrorCode::INVALID_NETWORK_CONFIG,
            "invalid characters found in network name",
        )
        .with_details(name));
    }
    Ok(())
}

/// Validates `CNI_IFNAME` as the kernel would accept it.
///
/// # Errors
/// Code 4 naming the problem.
pub fn validate_ifname(ifname: &str) -> Result<(), CniError> {
    let err = |msg: &str| CniError::new(ErrorCode::INVALID_ENV, msg);
    if ifname.is_empty() {
        return Err(err("interface name is empty"));
    }
    if ifname.len() > 15 {
        return Err(err("interface name is too long")
            .with_details("interface name should be less than 16 characters"));
    }
    if ifname == "." || ifname == ".." {
        return Err(err("interface name is . or .."));
    }
    if ifname
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(
            err("interface name contains / or : or whitespace characters").with_details(ifname),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        assert!(validate_container_id("abc-1.2_3").is_ok());
        assert_eq!(
            validate_container_id("").map_err(|e| e.code),
            Err(ErrorCode::UNKNOWN_CONTAINER)
        );
        let e = validate_container_id("bad/id").err();
        assert_eq!(e.as_ref().map(|e| e.code), Some(ErrorCode::INVALID_ENV));
        assert_eq!(e.map(|e| e.details), Some("bad/id".to_string()));
        assert!(validate_container_id("-x").is_err());
    }

    #[test]
    fn network_names_cannot_escape() {
        for bad in ["../x", "/", ".", "..", "a/b", ".hidden", ""] {
            assert!(validate_network_name(bad).is_err(), "{bad}");
        }
        assert!(validate_network_name("k8s-pod-network").is_ok());
    }

    #[test]
    fn ifnames() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("0123456789abcdef").is_err());
        assert!(validate_ifname("012345678901234").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b"] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requirements() {
        assert!(Command::Add.requires("CNI_NETNS"));
        assert!(!Command::Del.requires("CNI_NETNS"));
        assert!(Command::Gc.requires("CNI_PATH"));
        assert!(!Command::Gc.requires("CNI_CONTAINERID"));
        assert!(!Command::Version.requires("CNI_PATH"));
    }
}
