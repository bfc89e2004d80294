//! The nftables backend of reference HEAD (`backend: "nftables"`), with its
//! table, chain and comment scheme so either implementation removes the
//! other's rules.
//!
//! Per family (`ip`, `ip6`), table `cni_hostport` (comment `CNI portmap
//! plugin`): base chains `prerouting` and `output` (nat, priority -100, dstnat)
//! hold `[conditions] fib daddr type local jump hostports_all`, which jumps
//! to `hostip_hostports` (kept empty, for upgrades) and `hostports`;
//! `hostports` holds one `[ip daddr H] <proto> dport P dnat to C:P` rule per
//! mapping; base chain `masquerading` (nat, priority 100, srcnat) masquerades
//! hairpin (`saddr <container>`) and IPv4 localhost (`saddr 127.0.0.1`)
//! connections to the container, or every one with `masqAll`. Every
//! attachment rule is commented with the container ID, which is how DEL
//! finds them. Everything of one family is one `nft -f` transaction.

use crate::config::PortmapConf;
use crate::tools::{find, nft_rules, run};
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// The table name (both families).
pub const TABLE: &str = "cni_hostport";
/// The chains holding attachment rules.
const RULE_CHAINS: [&str; 3] = ["hostports", "hostip_hostports", "masquerading"];

fn fam(v4: bool) -> &'static str {
    if v4 {
        "ip"
    } else {
        "ip6"
    }
}

/// Quotes an nft comment.
fn comment(id: &str) -> String {
    format!("\"{}\"", id.replace('"', ""))
}

/// The rules of the table's chains that carry a comment: (chain, handle,
/// comment). No table: none.
fn commented_rules(family: &str) -> Result<Vec<(String, u64, String)>, String> {
    let rules = nft_rules(&["table", family, TABLE])?;
    Ok(rules
        .iter()
        .filter_map(|r| {
            Some((
                r["chain"].as_str()?.to_string(),
                r["handle"].as_u64()?,
                r["comment"].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// The attachment rules for one container address, as `add rule` lines.
pub fn attachment_rules(
    conf: &PortmapConf,
    container_id: &str,
    container: IpNetwork,
) -> Vec<String> {
    let v4 = container.is_ipv4();
    let f = fam(v4);
    let c = comment(container_id);
    let ip = container.ip();
    let to = match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let mut out = Vec::new();
    for m in conf.mappings.iter().filter(|m| m.applies_to(v4)) {
        let dst = m
            .dst()
            .map(|d| format!("{f} daddr {d} "))
            .unwrap_or_default();
        out.push(format!(
            "add rule {f} {TABLE} hostports {dst}{} dport {} dnat to {to}:{} comment {c}",
            m.protocol, m.host_port, m.container_port
        ));
    }
    if conf.snat {
        let src = match (conf.masq_all, v4) {
            (true, true) => "0.0.0.0/0".to_string(),
            (true, false) => "::/0".to_string(),
            (false, _) => ip.to_string(),
        };
        out.push(format!(
            "add rule {f} {TABLE} masquerading {f} saddr {src} {f} daddr {ip} masquerade comment {c}"
        ));
        if v4 && !conf.masq_all {
            out.push(format!(
                "add rule {f} {TABLE} masquerading {f} saddr 127.0.0.1 {f} daddr {ip} masquerade comment {c}"
            ));
        }
    }
    out
}

/// ADD for one container address: (re)declares the table's structure,
/// replaces the container's earlier rules of this family, adds its rules.
///
/// # Errors
/// nft fails.
pub fn setup(conf: &PortmapConf, container_id: &str, container: IpNetwork) -> Result<(), String> {
    let v4 = container.is_ipv4();
    let f = fam(v4);
    let t = TABLE;
    let conditions = if v4 {
        &conf.conditions_v4
    } else {
        &conf.conditions_v6
    };
    let cond: String = conditions.iter().map(|c| format!("{c} ")).collect();
    let mut s = format!(
        "add table {f} {t} {{ comment \"CNI portmap plugin\" ; }}\n\
         add chain {f} {t} hostports\n\
         add chain {f} {t} hostip_hostports\n\
         add chain {f} {t} hostports_all\n\
         flush chain {f} {t} hostports_all\n\
         add rule {f} {t} hostports_all jump hostip_hostports\n\
         add rule {f} {t} hostports_all jump hostports\n"
    );
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        s.push_str(&format!(
            "add chain {f} {t} {chain} {{ type nat hook {hook} priority -100 ; }}\n\
             flush chain {f} {t} {chain}\n\
             add rule {f} {t} {chain} {cond}fib daddr type local jump hostports_all\n"
        ));
    }
    if conf.snat {
        s.push_str(&format!(
            "add chain {f} {t} masquerading {{ type nat hook postrouting priority 100 ; }}\n"
        ));
    }
    for (chain, handle, c) in commented_rules(f)? {
        if c == container_id && RULE_CHAINS.contains(&chain.as_str()) {
            s.push_str(&format!("delete rule {f} {t} {chain} handle {handle}\n"));
        }
    }
    for r in attachment_rules(conf, container_id, container) {
        s.push_str(&r);
        s.push('\n');
    }
    run("nft", &["-f", "-"], Some(&s)).map(|_| ())
}

/// CHECK for one container address: as many rules with the container's
/// comment as the mappings need, in `hostports` and `masquerading`.
///
/// # Errors
/// nft fails or rules are missing.
pub fn check(conf: &PortmapConf, container_id: &str, container: IpNetwork) -> Result<(), String> {
    let f = fam(container.is_ipv4());
    let rules = commented_rules(f)?;
    let want = attachment_rules(conf, container_id, container);
    for chain in ["hostports", "masquerading"] {
        let needle = format!(" {TABLE} {chain} ");
        let n_want = want.iter().filter(|r| r.contains(&needle)).count();
        let n_have = rules
            .iter()
            .filter(|(c, _, cm)| c == chain && cm == container_id)
            .count();
        if n_have < n_want {
            return Err(format!("missing hostport rules in {chain:?} chain"));
        }
    }
    Ok(())
}

/// DEL: removes the container's rules in both families' tables (the
/// structure stays). Nothing to remove, or no nft, is success.
///
/// # Errors
/// nft fails.
pub fn teardown(container_id: &str) -> Result<(), String> {
    if find("nft").is_none() {
        return Ok(());
    }
    let mut s = String::new();
    for f in ["ip", "ip6"] {
        for (chain, handle, c) in commented_rules(f)? {
            if c == container_id && RULE_CHAINS.contains(&chain.as_str()) {
                s.push_str(&format!(
                    "delete rule {f} {TABLE} {chain} handle {handle}\n"
                ));
            }
        }
    }
    if s.is_empty() {
        return Ok(());
    }
    run("nft", &["-f", "-"], Some(&s)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, MarkChain, PortMapping, Protocol};

    fn conf(masq_all: bool) -> PortmapConf {
        let pm = |h: u16, c: u16, p: Protocol, ip: Option<&str>| PortMapping {
            host_port: h,
            container_port: c,
            protocol: p,
            host_ip: ip.map(|s| s.parse().expect("test address")),
        };
        PortmapConf {
            name: "n".into(),
            backend: Backend::Nftables,
            masq_all,
            mappings: vec![
                pm(8080, 80, Protocol::Tcp, None),
                pm(8081, 81, Protocol::Udp, Some("10.0.0.1")),
                pm(8082, 82, Protocol::Sctp, Some("fd00::1")),
            ],
            snat: true,
            mark: MarkChain::Bit(13),
            conditions_v4: Vec::new(),
            conditions_v6: Vec::new(),
            prev_result: None,
        }
    }

    #[test]
    fn rules_per_family_as_reference_head() {
        let t = TABLE;
        let v4 = attachment_rules(&conf(false), "ctr", "10.1.0.5/24".parse().expect("net"));
        assert_eq!(
            v4,
            vec![
                format!("add rule ip {t} hostports tcp dport 8080 dnat to 10.1.0.5:80 comment \"ctr\""),
                format!("add rule ip {t} hostports ip daddr 10.0.0.1 udp dport 8081 dnat to 10.1.0.5:81 comment \"ctr\""),
                format!("add rule ip {t} masquerading ip saddr 10.1.0.5 ip daddr 10.1.0.5 masquerade comment \"ctr\""),
                format!("add rule ip {t} masquerading ip saddr 127.0.0.1 ip daddr 10.1.0.5 masquerade comment \"ctr\""),
            ]
        );
        let v6 = attachment_rules(&conf(true), "ctr", "fd01::5/64".parse().expect("net"));
        assert_eq!(
            v6,
            vec![
                format!("add rule ip6 {t} hostports tcp dport 8080 dnat to [fd01::5]:80 comment \"ctr\""),
                format!("add rule ip6 {t} hostports ip6 daddr fd00::1 sctp dport 8082 dnat to [fd01::5]:82 comment \"ctr\""),
                format!("add rule ip6 {t} masquerading ip6 saddr ::/0 ip6 daddr fd01::5 masquerade comment \"ctr\""),
            ]
        );
    }
}
