//! `CNI_ARGS`: `K=V;K2=V2`, as the reference's `types.LoadArgs` reads it.
//!
//! Keys are case-sensitive. A pair that does not split into exactly two
//! parts is an error (so is the empty pair a trailing `;` makes). Unknown keys
//! are an error unless `IgnoreUnknown` is true. For a repeated key the last
//! one wins.

use thiserror::Error;

/// A `CNI_ARGS` problem; texts follow the reference so tools can grep them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ArgsError {
    /// A pair without exactly one `=`.
    #[error("ARGS: invalid pair {}", go_quote(.0))]
    InvalidPair(String),
    /// A value the key's type could not parse.
    #[error("ARGS: error parsing value of pair {}: {reason}", go_quote(.pair))]
    BadValue {
        /// The whole `K=V` pair.
        pair: String,
        /// Why the value was refused.
        reason: String,
    },
    /// Keys the plugin does not know, with `IgnoreUnknown` unset.
    #[error("ARGS: unknown args [{}]", .0.iter().map(|s| go_quote(s)).collect::<Vec<_>>().join(" "))]
    Unknown(Vec<String>),
}

/// Quotes like Go's `%q`: double quotes, with `"`, `\` and control characters
/// escaped.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parses the reference's boolean text (`1`, `true`, `0`, `false`, any case).
///
/// # Errors
/// Any other text.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("boolean unmarshal error: invalid input {s}")),
    }
}

/// Walks `raw` pair by pair, handing known keys (`known`, plus the always
/// known `IgnoreUnknown`) to `set` in order.
///
/// # Errors
/// The first invalid pair or refused value in order; otherwise the unknown
/// keys when `IgnoreUnknown` is not true.
pub fn load_args(
    raw: &str,
    known: &[&str],
    mut set: impl FnMut(&str, &str) -> Result<(), String>,
) -> Result<(), ArgsError> {
    if raw.is_empty() {
        return Ok(());
    }
    let mut unknown = Vec::new();
    let mut ignore_unknown = false;
    for pair in raw.split(';') {
        let mut parts = pair.split('=');
        let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ArgsError::InvalidPair(pair.to_string()));
        };
        let bad = |reason: String| ArgsError::BadValue {
            pair: pair.to_string(),
            reason,
        };
        if key == "IgnoreUnknown" {
            ignore_unknown = parse_go_bool(value).map_err(bad)?;
        } else if known.contains(&key) {
            set(key, value).map_err(bad)?;
        } else {
            unknown.push(pair.to_string());
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(ArgsError::Unknown(unknown));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(raw: &str) -> Result<Vec<(String, String)>, ArgsError> {
        let mut got = Vec::new();
        load_args(raw, &["IP"], |k, v| {
            if v == "bad" {
                return Err(format!("invalid IP address {v}"));
            }
            got.push((k.to_string(), v.to_string()));
            Ok(())
        })?;
        Ok(got)
    }

    #[test]
    fn messages_match_reference() {
        assert_eq!(
            collect("IP=1;").map_err(|e| e.to_string()),
            Err("ARGS: invalid pair \"\"".into())
        );
        assert_eq!(
            collect("FOO=bar").map_err(|e| e.to_string()),
            Err("ARGS: unknown args [\"FOO=bar\"]".into())
        );
        assert_eq!(
            collect("IP=bad").map_err(|e| e.to_string()),
            Err("ARGS: error parsing value of pair \"IP=bad\": invalid IP address bad".into())
        );
        assert_eq!(
            collect("a=b=c").map_err(|e| e.to_string()),
            Err("ARGS: invalid pair \"a=b=c\"".into())
        );
    }

    #[test]
    fn ignore_unknown() {
        let got = collect("IgnoreUnknown=TRUE;K8S_POD_NAME=x;IP=10.0.0.1");
        assert_eq!(got, Ok(vec![("IP".into(), "10.0.0.1".into())]));
        assert!(collect("IgnoreUnknown=0;X=1").is_err());
        assert!(matches!(
            collect("IgnoreUnknown=yes"),
            Err(ArgsError::BadValue { .. })
        ));
        // Keys are case-sensitive: lowercase `ip` is unknown.
        assert!(matches!(collect("ip=10.0.0.1"), Err(ArgsError::Unknown(_))));
    }

    #[test]
    fn empty_is_fine() {
        assert_eq!(collect(""), Ok(vec![]));
    }
}
