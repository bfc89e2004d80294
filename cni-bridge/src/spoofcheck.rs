//! MAC spoof check: nftables `bridge nat` rules that drop frames from the
//! host port whose source MAC is not the container's (the reference's
//! table, chains and comments, so either implementation removes them).
//!
//! The chain names say which attachment they serve but not which network,
//! so the chains we create carry a chain comment naming the network (by
//! hash): GC collects only those, and never another network's or the
//! reference's (which DEL still removes by name).

use crate::tools::{run, sha512_hex};
use cni_spec::ValidAttachments;

const TABLE: &str = "bridge nat";

fn ref_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

fn chain(container_id: &str, ifname: &str) -> String {
    format!("{CHAIN_PREFIX}{}", ref_id(container_id, ifname))
}

fn comment(container_id: &str, ifname: &str) -> String {
    format!("macspoofchk-{}", ref_id(container_id, ifname))
}

const CHAIN_PREFIX: &str = "cni-br-iface-";

/// The chain comment marking our chains of `network`.
fn network_marker(network: &str) -> String {
    format!("k8s-shims net {}", sha512_hex(network, 16))
}

/// One attachment's rules: installs them for the port `host_veth` of
/// container MAC `mac`.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    /// The network name.
    pub network: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
}

/// Installs the rules of `att` for the port `host_veth` of container MAC
/// `mac`.
///
/// # Errors
/// nft fails.
pub fn setup(att: Attachment<'_>, host_veth: &str, mac: &str) -> Result<(), String> {
    let ch = chain(att.container_id, att.ifname);
    let c = comment(att.container_id, att.ifname);
    let marker = network_marker(att.network);
    let script = format!(
        "add table {TABLE}\n\
         add chain {TABLE} PREROUTING {{ type filter hook prerouting priority -300 ; policy accept ; }}\n\
         add chain {TABLE} {ch} {{ comment \"{marker}\" ; }}\n\
         add chain {TABLE} {ch}-mac\n\
         flush chain {TABLE} {ch}\n\
         flush chain {TABLE} {ch}-mac\n\
         add rule {TABLE} {ch}-mac ether saddr {mac} return comment \"{c}\"\n\
         add rule {TABLE} {ch}-mac drop comment \"{c}\"\n\
         add rule {TABLE} {ch} jump {ch}-mac comment \"{c}\"\n\
         add rule {TABLE} PREROUTING iifname \"{host_veth}\" jump {ch} comment \"{c}\"\n"
    );
    run("nft", &["-f", "-"], Some(&script)).map(|_| ())
}

/// Whether the rules are present.
///
/// # Errors
/// nft fails or the chains are missing.
pub fn check(container_id: &str, ifname: &str) -> Result<(), String> {
    let ch = chain(container_id, ifname);
    run(
        "nft",
        &["list", "chain", "bridge", "nat", &format!("{ch}-mac")],
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("mac spoof check chain {ch}-mac missing: {e}"))
}

/// Removes the rules and chains; the table and base chain stay.
///
/// # Errors
/// nft fails (nothing to remove is success).
pub fn teardown(container_id: &str, ifname: &str) -> Result<(), String> {
    remove(&[ref_id(container_id, ifname)])
}

/// GC: removes this network's chains (those carrying its marker) whose
/// attachment is not valid.
///
/// # Errors
/// nft fails.
pub fn gc(network: &str, valid: &ValidAttachments) -> Result<(), String> {
    if crate::tools::find("nft").is_none() {
        return Ok(());
    }
    let Ok(table) = run("nft", &["list", "table", "bridge", "nat"], None) else {
        return Ok(());
    };
    let marker = network_marker(network);
    let keep: Vec<String> = valid.exact().map(|(id, f)| ref_id(id, f)).collect();
    let whole: Vec<String> = valid
        .ids()
        .filter(|id| valid.keeps_whole(id))
        .map(|id| format!("{id}-"))
        .collect();
    let stale: Vec<String> = marked_chains(&table, &marker)
        .into_iter()
        .filter_map(|name| name.strip_prefix(CHAIN_PREFIX).map(str::to_string))
        .filter(|r| !keep.contains(r) && !whole.iter().any(|w| r.starts_with(w.as_str())))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    remove(&stale)
}

/// Names of the chains of an `nft list table` listing whose chain comment
/// is `marker`.
fn marked_chains(listing: &str, marker: &str) -> Vec<String> {
    let want = format!("comment \"{marker}\"");
    let mut current: Option<&str> = None;
    let mut out = Vec::new();
    for line in listing.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("chain ") {
            current = rest.strip_suffix(" {");
        } else if line == want {
            if let Some(c) = current.take() {
                out.push(c.to_string());
            }
        } else if line == "}" {
            current = None;
        }
    }
    out
}

/// Removes the jump rules and both chains of each attachment `refs`
/// (`<id>-<ifname>`), in one nft transaction.
fn remove(refs: &[String]) -> Result<(), String> {
    if crate::tools::find("nft").is_none() {
        return Ok(());
    }
    let listing = match run(
        "nft",
        &["-j", "list", "chain", "bridge", "nat", "PREROUTING"],
        None,
    ) {
        Ok(t) => t,
        Err(_) => return Ok(()),
    };
    let v: serde_json::Value =
        serde_json::from_str(&listing).map_err(|e| format!("nft -j output: {e}"))?;
    let comments: Vec<String> = refs.iter().map(|r| format!("macspoofchk-{r}")).collect();
    let mut script = String::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let r = &item["rule"];
        if r["comment"]
            .as_str()
            .is_some_and(|c| comments.iter().any(|x| x == c))
        {
            if let Some(h) = r["handle"].as_u64() {
                script.push_str(&format!("delete rule {TABLE} PREROUTING handle {h}\n"));
            }
        }
    }
    let chains = run("nft", &["list", "table", "bridge", "nat"], None).unwrap_or_default();
    let names: Vec<String> = refs
        .iter()
        .flat_map(|r| {
            [
                format!("{CHAIN_PREFIX}{r}"),
                format!("{CHAIN_PREFIX}{r}-mac"),
            ]
        })
        .filter(|name| chains.contains(&format!("chain {name} ")))
        .collect();
    for verb in ["flush", "delete"] {
        for name in &names {
            script.push_str(&format!("{verb} chain {TABLE} {name}\n"));
        }
    }
    if script.is_empty() {
        return Ok(());
    }
    run("nft", &["-f", "-"], Some(&script)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_chains_are_read_from_the_listing() {
        let m = network_marker("net1");
        let listing = format!(
            "table bridge nat {{\n\tchain PREROUTING {{\n\t\ttype filter hook prerouting priority -300; policy accept;\n\t}}\n\
             \tchain cni-br-iface-c1-eth0 {{\n\t\tcomment \"{m}\"\n\t\tjump cni-br-iface-c1-eth0-mac comment \"macspoofchk-c1-eth0\"\n\t}}\n\
             \tchain cni-br-iface-c2-eth0 {{\n\t\tcomment \"{}\"\n\t}}\n\
             \tchain cni-br-iface-c3-eth0 {{\n\t\tjump x comment \"{m}\"\n\t}}\n}}\n",
            network_marker("net2")
        );
        assert_eq!(marked_chains(&listing, &m), vec!["cni-br-iface-c1-eth0"]);
    }
}
