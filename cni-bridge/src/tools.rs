//! Running the firewall tools (`iptables-restore`, `iptables-save`, `nft`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where to look beyond `PATH` (runtimes often exec plugins with a small
/// environment; NixOS keeps tools under /run/current-system/sw).
const FALLBACK_DIRS: [&str; 5] = [
    "/usr/sbin",
    "/sbin",
    "/usr/bin",
    "/bin",
    "/run/current-system/sw/bin",
];

/// Finds an executable by name.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `name args...` with `input` on stdin; returns stdout, or a message
/// naming the command, its status and stderr.
///
/// # Errors
/// The tool is missing, cannot run, or exits non-zero.
pub fn run(name: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let bin = find(name).ok_or_else(|| format!("{name} not found in PATH"))?;
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(format!(
        "running [{} {}]: {}: {}",
        bin.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Lowercase hex of the SHA-512 of `s`, cut to `len` characters.
pub fn sha512_hex(s: &str, len: usize) -> String {
    use sha2::{Digest, Sha512};
    let digest = Sha512::digest(s.as_bytes());
    let mut out = String::with_capacity(128);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_hash_matches_reference_observation() {
        // Observed with the reference: name "brnet", id "ctrA".
        assert_eq!(sha512_hex("brnetctrA", 24), "cf7b292a3456547459e1c807");
    }
}

/// The nat table as `iptables-save` prints it: chain names and `-A` rule
/// lines.
#[derive(Debug, Default)]
pub struct NatTable {
    /// Every chain, built-in or not.
    pub chains: std::collections::HashSet<String>,
    /// The `-A <chain> ...` lines, in order.
    pub rules: Vec<String>,
}

impl NatTable {
    /// Reads the nat table with `save` (`iptables-save` or `ip6tables-save`).
    ///
    /// # Errors
    /// The tool fails.
    pub fn read(save: &str) -> Result<NatTable, String> {
        let text = run(save, &["-t", "nat"], None)?;
        let mut t = NatTable::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(':') {
                if let Some(name) = rest.split_whitespace().next() {
                    t.chains.insert(name.to_string());
                }
            } else if line.starts_with("-A ") {
                t.rules.push(line.to_string());
            }
        }
        Ok(t)
    }

    /// Whether the rule line `rule` is present.
    pub fn has(&self, rule: &str) -> bool {
        self.rules.iter().any(|r| r == rule)
    }
}

/// Applies `body` (rule and chain lines) to the nat table in one
/// `restore -w --noflush` transaction (`iptables-restore` or
/// `ip6tables-restore`).
///
/// # Errors
/// The tool fails; nothing of the transaction is applied then.
pub fn restore_nat(restore: &str, body: &str) -> Result<(), String> {
    let input = format!("*nat\n{body}COMMIT\n");
    run(restore, &["-w", "--noflush"], Some(&input)).map(|_| ())
}

/// The rules `nft -j list <what>` prints, as the JSON objects under their
/// `rule` keys; none when the table or chain does not exist (yet).
///
/// # Errors
/// `nft` fails otherwise, or prints something that is not JSON.
pub fn nft_rules(what: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let mut args = vec!["-j", "list"];
    args.extend_from_slice(what);
    let text = match run("nft", &args, None) {
        Ok(t) => t,
        Err(e) if e.contains("No such file or directory") || e.contains("does not exist") => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("nft -j output: {e}"))?;
    let items = match v["nftables"].as_array_mut() {
        Some(items) => std::mem::take(items),
        None => Vec::new(),
    };
    Ok(items
        .into_iter()
        .filter_map(|mut item| item.get_mut("rule").map(serde_json::Value::take))
        .collect())
}
