//! Spec versions and the rules that tie commands to them.

use std::fmt;

/// A CNI spec version this workspace speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// 0.1.0: `ip4`/`ip6` result.
    V0_1_0,
    /// 0.2.0: same result shape as 0.1.0.
    V0_2_0,
    /// 0.3.0: `interfaces`, `ips` with `version`, `routes`.
    V0_3_0,
    /// 0.3.1: typo fix of 0.3.0.
    V0_3_1,
    /// 0.4.0: adds CHECK.
    V0_4_0,
    /// 1.0.0: drops `ips[].version`.
    V1_0_0,
    /// 1.1.0: adds GC and STATUS.
    V1_1_0,
}

/// Every version, oldest first, as printed by `VERSION`.
pub const SUPPORTED: [Version; 7] = [
    Version::V0_1_0,
    Version::V0_2_0,
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

impl Version {
    /// The newest version we speak.
    pub const LATEST: Version = Version::V1_1_0;

    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Exact-match lookup, as the reference's version reconciler does.
    pub fn from_exact(s: &str) -> Option<Version> {
        SUPPORTED.iter().copied().find(|v| v.as_str() == s)
    }

    /// Results use the 0.1.0/0.2.0 `ip4`/`ip6` shape.
    pub fn is_legacy_result(self) -> bool {
        self <= Version::V0_2_0
    }

    /// `ips[]` entries carry `"version"` (0.3.0 to 0.4.0).
    pub fn has_ip_version(self) -> bool {
        (Version::V0_3_0..=Version::V0_4_0).contains(&self)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a dotted version into (major, minor, patch) for ordering checks.
///
/// Mirrors the reference's rules: at most three numeric parts, missing parts
/// are zero.
///
/// # Errors
/// A message naming the version when it has too many or non-numeric parts.
pub fn parse_triple(s: &str) -> Result<(u64, u64, u64), String> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 3 {
        return Err(format!("invalid version {s:?}: too many parts"));
    }
    let mut out = [0u64; 3];
    for (i, p) in parts.iter().enumerate() {
        out[i] = p
            .parse::<u64>()
            .map_err(|_| format!("invalid version {s:?}: part {p:?} is not a number"))?;
    }
    Ok((out[0], out[1], out[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_match_only() {
        assert_eq!(Version::from_exact("0.3.1"), Some(Version::V0_3_1));
        assert_eq!(Version::from_exact("1.1"), None);
        assert_eq!(Version::from_exact(" 1.0.0"), None);
    }

    #[test]
    fn triples() {
        assert_eq!(parse_triple("1.1"), Ok((1, 1, 0)));
        assert!(parse_triple("1.2.3.4").is_err());
        assert!(parse_triple("1.x").is_err());
    }

    #[test]
    fn shapes() {
        assert!(Version::V0_2_0.is_legacy_result());
        assert!(!Version::V0_3_0.is_legacy_result());
        assert!(Version::V0_4_0.has_ip_version());
        assert!(!Version::V1_0_0.has_ip_version());
    }
}
