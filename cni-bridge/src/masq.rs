//! IP masquerade for pod addresses, with the reference's naming so either
//! implementation removes what the other created.
//!
//! iptables: chain `CNI-<sha512(name+id)[:24]>` in `nat`, holding
//! `-d <subnet> -j ACCEPT` and `! -d <multicast> -j MASQUERADE`, jumped to
//! from POSTROUTING by `-s <ip>`; every rule carries the comment
//! `name: "<net>" id: "<id>"`. We apply changes in one `iptables-restore
//! --noflush` transaction per family instead of one exec per rule.
//!
//! nftables: table `inet cni_plugins_masquerade`, per-address rules in
//! `masq_checks` whose comment starts with `<h(net)>-<h(ifname:id)>`.

use crate::tools::{restore_nat, run, sha512_hex, NatTable};
use cni_spec::ValidAttachments;
use ipnetwork::IpNetwork;
use std::collections::HashSet;

/// The iptables chain of an attachment (the reference's name).
pub fn chain_name(network: &str, container_id: &str) -> String {
    format!(
        "CNI-{}",
        sha512_hex(&format!("{network}{container_id}"), 24)
    )
}

/// The iptables rule comment (Go `%q` quoting, as the reference).
pub fn comment(network: &str, container_id: &str) -> String {
    format!("name: {network:?} id: {container_id:?}")
}

/// Quotes a comment the way iptables-save prints it.
fn quoted(c: &str) -> String {
    format!("\"{}\"", c.replace('\\', "\\\\").replace('"', "\\\""))
}

struct Family {
    save: &'static str,
    restore: &'static str,
    multicast: &'static str,
    host_prefix: u8,
}

const V4: Family = Family {
    save: "iptables-save",
    restore: "iptables-restore",
    multicast: "224.0.0.0/4",
    host_prefix: 32,
};
const V6: Family = Family {
    save: "ip6tables-save",
    restore: "ip6tables-restore",
    multicast: "ff00::/8",
    host_prefix: 128,
};

fn family_of(v4: bool) -> &'static Family {
    if v4 {
        &V4
    } else {
        &V6
    }
}

/// The rules an attachment needs for `ips`, as iptables-save lines.
fn wanted_rules(f: &Family, chain: &str, c: &str, ips: &[IpNetwork]) -> Vec<String> {
    let q = quoted(c);
    let mut rules = Vec::new();
    for ip in ips {
        let subnet = format!("{}/{}", ip.network(), ip.prefix());
        rules.push(format!(
            "-A {chain} -d {subnet} -m comment --comment {q} -j ACCEPT"
        ));
    }
    rules.push(format!(
        "-A {chain} ! -d {} -m comment --comment {q} -j MASQUERADE",
        f.multicast
    ));
    for ip in ips {
        rules.push(format!(
            "-A POSTROUTING -s {}/{} -m comment --comment {q} -j {chain}",
            ip.ip(),
            f.host_prefix
        ));
    }
    rules
}

/// Sets up iptables masquerade for `ips` (idempotent: only missing rules
/// are added).
///
/// # Errors
/// The tools fail.
pub fn iptables_setup(network: &str, container_id: &str, ips: &[IpNetwork]) -> Result<(), String> {
    let chain = chain_name(network, container_id);
    let c = comment(network, container_id);
    for v4 in [true, false] {
        let fam_ips: Vec<IpNetwork> = ips.iter().copied().filter(|i| i.is_ipv4() == v4).collect();
        if fam_ips.is_empty() {
            continue;
        }
        let f = family_of(v4);
        let table = NatTable::read(f.save)?;
        let mut body = String::new();
        if !table.chains.contains(&chain) {
            body.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for rule in wanted_rules(f, &chain, &c, &fam_ips) {
            if !table.rules.contains(&rule) {
                body.push_str(&rule);
                body.push('\n');
            }
        }
        if !body.is_empty() {
            restore_nat(f.restore, &body)?;
        }
    }
    Ok(())
}

/// Whether every rule for `ips` is present.
///
/// # Errors
/// The tools fail, or a rule is missing (named).
pub fn iptables_check(network: &str, container_id: &str, ips: &[IpNetwork]) -> Result<(), String> {
    let chain = chain_name(network, container_id);
    let c = comment(network, container_id);
    for v4 in [true, false] {
        let fam_ips: Vec<IpNetwork> = ips.iter().copied().filter(|i| i.is_ipv4() == v4).collect();
        if fam_ips.is_empty() {
            continue;
        }
        let f = family_of(v4);
        let table = NatTable::read(f.save)?;
        for rule in wanted_rules(f, &chain, &c, &fam_ips) {
            if !table.rules.contains(&rule) {
                return Err(format!("masquerade rule missing: {rule}"));
            }
        }
    }
    Ok(())
}

/// Removes an attachment's chain and every POSTROUTING rule jumping to it,
/// in both families. Needs no addresses, so it works when the netns is
/// gone. Nothing to remove is success.
///
/// # Errors
/// The tools fail (a missing tool counts as nothing to remove).
pub fn iptables_teardown(network: &str, container_id: &str) -> Result<(), String> {
    let chain = chain_name(network, container_id);
    let mut errors = Vec::new();
    for f in [&V4, &V6] {
        if crate::tools::find(f.save).is_none() {
            continue;
        }
        if let Err(e) = remove_chains(f, &HashSet::from([chain.clone()])) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn remove_chains(f: &Family, chains: &HashSet<String>) -> Result<(), String> {
    let table = NatTable::read(f.save)?;
    let mut body = String::new();
    for rule in &table.rules {
        let Some(spec) = rule.strip_prefix("-A POSTROUTING ") else {
            continue;
        };
        if chains.iter().any(|c| spec.ends_with(&format!("-j {c}"))) {
            body.push_str(&format!("-D POSTROUTING {spec}\n"));
        }
    }
    for c in chains {
        if table.chains.contains(c) {
            body.push_str(&format!("-F {c}\n-X {c}\n"));
        }
    }
    if body.is_empty() {
        return Ok(());
    }
    restore_nat(f.restore, &body)
}

/// GC: removes the chains of this network whose container is not valid.
/// Chains are attributed to the network by their rules' comment.
///
/// # Errors
/// The tools fail.
pub fn iptables_gc(network: &str, valid_ids: &HashSet<String>) -> Result<(), String> {
    let keep: HashSet<String> = valid_ids.iter().map(|id| chain_name(network, id)).collect();
    let marker = quoted(&format!("name: {network:?} id: "));
    let marker = marker.trim_end_matches('"').to_string();
    let mut errors = Vec::new();
    for f in [&V4, &V6] {
        if crate::tools::find(f.save).is_none() {
            continue;
        }
        let table = match NatTable::read(f.save) {
            Ok(t) => t,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let stale: HashSet<String> = table
            .rules
            .iter()
            .filter(|r| r.contains(&marker))
            .filter_map(|r| r.strip_prefix("-A ")?.split_whitespace().next())
            .filter(|c| c.starts_with("CNI-") && !keep.contains(*c))
            .map(str::to_string)
            .collect();
        if !stale.is_empty() {
            if let Err(e) = remove_chains(f, &stale) {
                errors.push(e);
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The nftables table.
pub const NFT_TABLE: &str = "cni_plugins_masquerade";

fn nft_hash(s: &str) -> String {
    sha512_hex(s, 16)
}

/// The comment prefix identifying an attachment's nft rules.
fn nft_instance(network: &str, ifname: &str, container_id: &str) -> String {
    format!(
        "{}-{}",
        nft_hash(network),
        nft_hash(&format!("{ifname}:{container_id}"))
    )
}

fn nft_comment(network: &str, ifname: &str, container_id: &str) -> String {
    let mut c = format!(
        "{}, net: {network}, if: {ifname}, id: {container_id}",
        nft_instance(network, ifname, container_id)
    )
    .replace('"', "");
    c.truncate(128);
    c
}

/// Handles and comments of the rules in `masq_checks`.
fn nft_rules() -> Result<Vec<(u64, String)>, String> {
    let rules = crate::tools::nft_rules(&["chain", "inet", NFT_TABLE, "masq_checks"])?;
    Ok(rules
        .iter()
        .filter_map(|r| Some((r["handle"].as_u64()?, r["comment"].as_str()?.to_string())))
        .collect())
}

/// Sets up nftables masquerade for `ips`, replacing stale rules of the
/// same attachment in the same transaction.
///
/// # Errors
/// nft fails.
pub fn nft_setup(
    network: &str,
    ifname: &str,
    container_id: &str,
    ips: &[IpNetwork],
) -> Result<(), String> {
    let instance = nft_instance(network, ifname, container_id);
    let c = nft_comment(network, ifname, container_id);
    let t = NFT_TABLE;
    let mut script = format!(
        "add table inet {t} {{ comment \"Masquerading for plugins from github.com/containernetworking/plugins\" ; }}\n\
         add chain inet {t} masq_checks\n\
         add chain inet {t} postrouting {{ type nat hook postrouting priority srcnat ; }}\n\
         flush chain inet {t} postrouting\n\
         add rule inet {t} postrouting ip daddr 224.0.0.0/4 return\n\
         add rule inet {t} postrouting ip6 daddr ff00::/8 return\n\
         add rule inet {t} postrouting goto masq_checks\n"
    );
    for (handle, comment) in nft_rules()? {
        if comment.starts_with(&instance) {
            script.push_str(&format!(
                "delete rule inet {t} masq_checks handle {handle}\n"
            ));
        }
    }
    for ip in ips {
        let (fam, subnet) = if ip.is_ipv4() {
            ("ip", ip.network().to_string())
        } else {
            ("ip6", ip.network().to_string())
        };
        script.push_str(&format!(
            "add rule inet {t} masq_checks {fam} saddr {} {fam} daddr != {subnet}/{} masquerade comment \"{c}\"\n",
            ip.ip(),
            ip.prefix()
        ));
    }
    run("nft", &["-f", "-"], Some(&script)).map(|_| ())
}

/// Whether the attachment has an nft rule per address.
///
/// # Errors
/// nft fails or rules are missing.
pub fn nft_check(
    network: &str,
    ifname: &str,
    container_id: &str,
    ips: &[IpNetwork],
) -> Result<(), String> {
    let instance = nft_instance(network, ifname, container_id);
    let n = nft_rules()?
        .iter()
        .filter(|(_, c)| c.starts_with(&instance))
        .count();
    if n < ips.len() {
        return Err(format!(
            "masquerade rules missing in nft table {NFT_TABLE}: found {n} of {}",
            ips.len()
        ));
    }
    Ok(())
}

/// Removes the attachment's nft rules; the table and chains stay.
///
/// # Errors
/// nft fails (a missing nft counts as nothing to remove).
pub fn nft_teardown(network: &str, ifname: &str, container_id: &str) -> Result<(), String> {
    if crate::tools::find("nft").is_none() {
        return Ok(());
    }
    let instance = nft_instance(network, ifname, container_id);
    nft_delete(|c| c.starts_with(&instance))
}

fn nft_delete(select: impl Fn(&str) -> bool) -> Result<(), String> {
    let mut script = String::new();
    for (handle, comment) in nft_rules()? {
        if select(&comment) {
            script.push_str(&format!(
                "delete rule inet {NFT_TABLE} masq_checks handle {handle}\n"
            ));
        }
    }
    if script.is_empty() {
        return Ok(());
    }
    run("nft", &["-f", "-"], Some(&script)).map(|_| ())
}

/// GC: removes this network's nft rules whose attachment is not valid.
///
/// # Errors
/// nft fails.
pub fn nft_gc(network: &str, valid: &ValidAttachments) -> Result<(), String> {
    if crate::tools::find("nft").is_none() {
        return Ok(());
    }
    let net = format!("{}-", nft_hash(network));
    let keep: HashSet<String> = valid
        .exact()
        .map(|(id, ifname)| nft_instance(network, ifname, id))
        .collect();
    let whole: Vec<&str> = valid.ids().filter(|id| valid.keeps_whole(id)).collect();
    nft_delete(|c| {
        c.starts_with(&net)
            && !keep.iter().any(|k| c.starts_with(k.as_str()))
            && !kept_whole(network, c, &whole)
    })
}

/// Whether an nft rule comment belongs to a container whose every interface
/// is kept. The instance hash covers the interface too, so the name is read
/// back from the comment; a comment cut short before it is kept.
fn kept_whole(network: &str, comment: &str, whole: &[&str]) -> bool {
    if whole.is_empty() {
        return false;
    }
    let ifname = comment
        .split_once(", if: ")
        .and_then(|(_, rest)| rest.split_once(", id: "))
        .map(|(ifname, _)| ifname);
    match ifname {
        Some(ifname) => whole
            .iter()
            .any(|id| comment.starts_with(&nft_instance(network, ifname, id))),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_reference() {
        assert_eq!(chain_name("brnet", "ctrA"), "CNI-cf7b292a3456547459e1c807");
        assert_eq!(comment("brnet", "ctrA"), "name: \"brnet\" id: \"ctrA\"");
        assert_eq!(
            quoted(&comment("n", "c")),
            "\"name: \\\"n\\\" id: \\\"c\\\"\""
        );
    }

    #[test]
    fn kept_whole_reads_the_interface_back() {
        let c = nft_comment("net", "eth1", "c1");
        assert!(kept_whole("net", &c, &["c1"]));
        assert!(!kept_whole("net", &c, &["c2"]));
        assert!(!kept_whole("net", &c, &[]));
        // Cut before the interface name: kept.
        let long = nft_comment(&"n".repeat(100), "eth0", "c2");
        assert!(kept_whole(&"n".repeat(100), &long, &["other"]));
    }

    #[test]
    fn nft_comment_is_bounded() {
        let c = nft_comment(&"n".repeat(100), "eth0", &"c".repeat(100));
        assert!(c.len() <= 128);
        assert!(c.starts_with(&nft_instance(&"n".repeat(100), "eth0", &"c".repeat(100))));
    }
}
