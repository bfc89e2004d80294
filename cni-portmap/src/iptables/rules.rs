//! The reference's rules, as `iptables-save` prints them (pure: no tools).
//!
//! Layout in table `nat` (every name, comment and match as the reference
//! v1.1.1 writes them, so either implementation removes the other's):
//! - `PREROUTING`, `OUTPUT`: `-m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT`
//! - `CNI-HOSTPORT-DNAT`: per protocol, up to 15 host ports per rule,
//!   `-p <proto> -m comment --comment "dnat name: \"<net>\" id: \"<id>\""
//!   -m multiport --dports <ports> [conditions] -j CNI-DN-<hash>`
//! - `CNI-DN-<hash>`: per mapping, the hairpin mark (`-s <pod subnet>`), the
//!   localhost mark (`-s 127.0.0.1/32`, IPv4 only), then the DNAT.
//! - `CNI-HOSTPORT-SETMARK`: sets the masquerade mark bit;
//!   `CNI-HOSTPORT-MASQ` (first rule of `POSTROUTING`) masquerades it.

use crate::config::{MarkChain, PortMapping, PortmapConf, Protocol};
use crate::tools::sha512_hex;
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// The shared chain jumped to for local destinations.
pub const DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";
/// The shared chain that sets the masquerade mark.
pub const SETMARK_CHAIN: &str = "CNI-HOSTPORT-SETMARK";
/// The shared chain that masquerades marked packets.
pub const MASQ_CHAIN: &str = "CNI-HOSTPORT-MASQ";
/// The shared chain of plugin versions before 0.7 (removed on DEL only).
pub const OLD_SNAT_CHAIN: &str = "CNI-HOSTPORT-SNAT";
/// multiport takes at most 15 ports per rule.
const MULTIPORT_MAX: usize = 15;

/// `CNI-<prefix><sha512(name + id)>`, 28 characters, as the reference.
fn hashed(prefix: &str, network: &str, container_id: &str) -> String {
    let head = format!("CNI-{prefix}");
    let hash = sha512_hex(&format!("{network}{container_id}"), 28 - head.len());
    format!("{head}{hash}")
}

/// The attachment's DNAT chain, `CNI-DN-<hash>`.
pub fn dn_chain(network: &str, container_id: &str) -> String {
    hashed("DN-", network, container_id)
}

/// The chain of plugin versions before 0.7, `CNI-SN-<hash>` (DEL only).
pub fn old_sn_chain(network: &str, container_id: &str) -> String {
    hashed("SN-", network, container_id)
}

/// The entry rules' comment, cut to iptables' 255 bytes as the reference.
pub fn dnat_comment(network: &str, container_id: &str) -> String {
    let c = format!("dnat name: \"{network}\" id: \"{container_id}\"");
    if c.len() <= 255 {
        return c;
    }
    let mut end = 253;
    while !c.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &c[..end])
}

/// Quotes a comment the way iptables-save prints it.
pub fn quoted(c: &str) -> String {
    format!("\"{}\"", c.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One argument for iptables-restore: quoted when it would otherwise split.
fn arg(a: &str) -> String {
    if a.is_empty()
        || a.chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        quoted(a)
    } else {
        a.to_string()
    }
}

fn mark_value(bit: u32) -> String {
    let v = 1u32 << bit;
    format!("{v:#x}/{v:#x}")
}

/// `--to-destination` text: `[v6]:port` for IPv6.
fn ip_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn host_cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// A shared chain and the rules it must hold, plus the jumps into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    /// The chain.
    pub chain: &'static str,
    /// Its rules (`-A <chain> ...`).
    pub rules: Vec<String>,
    /// Rules in built-in chains jumping to it (`-A <builtin> ...`); the
    /// `POSTROUTING` one goes first (the bridge's masquerade would
    /// otherwise take the packet).
    pub entries: Vec<String>,
}

/// The shared chains an ADD needs, in the order the reference sets them up.
pub fn shared(conf: &PortmapConf) -> Vec<Shared> {
    let mut out = Vec::new();
    if let (true, MarkChain::Bit(bit)) = (conf.snat, &conf.mark) {
        let m = mark_value(*bit);
        out.push(Shared {
            chain: SETMARK_CHAIN,
            rules: vec![format!(
                "-A {SETMARK_CHAIN} -m comment --comment {} -j MARK --set-xmark {m}",
                quoted("CNI portfwd masquerade mark")
            )],
            entries: Vec::new(),
        });
        out.push(Shared {
            chain: MASQ_CHAIN,
            rules: vec![format!("-A {MASQ_CHAIN} -m mark --mark {m} -j MASQUERADE")],
            entries: vec![format!(
                "-A POSTROUTING -m comment --comment {} -j {MASQ_CHAIN}",
                quoted("CNI portfwd requiring masquerade")
            )],
        });
    }
    out.push(Shared {
        chain: DNAT_CHAIN,
        rules: Vec::new(),
        entries: ["PREROUTING", "OUTPUT"]
            .iter()
            .map(|c| format!("-A {c} -m addrtype --dst-type LOCAL -j {DNAT_CHAIN}"))
            .collect(),
    });
    out
}

/// The attachment's rules for one container address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// `CNI-DN-<hash>`.
    pub chain: String,
    /// The chain's rules, as iptables-save prints them.
    pub rules: Vec<String>,
    /// The `CNI-HOSTPORT-DNAT` rules jumping to the chain, as restore input
    /// (exactly as iptables-save prints them when there are no conditions).
    pub entries: Vec<String>,
    /// Whether `entries` carry conditions (then iptables-save may reorder
    /// them, and only their presence can be checked).
    pub conditioned: bool,
}

fn mapping_rules(
    conf: &PortmapConf,
    chain: &str,
    m: &PortMapping,
    container: IpNetwork,
) -> Vec<String> {
    let p = m.protocol.as_str();
    let dst = m
        .dst()
        .map(|d| format!("-d {} ", host_cidr(d)))
        .unwrap_or_default();
    let tail = format!("{dst}-p {p} -m {p} --dport {}", m.host_port);
    let mut rules = Vec::with_capacity(3);
    if conf.snat {
        let mark = match &conf.mark {
            MarkChain::Bit(_) => SETMARK_CHAIN,
            MarkChain::External(c) => c.as_str(),
        };
        let subnet = format!("{}/{}", container.network(), container.prefix());
        rules.push(format!("-A {chain} -s {subnet} {tail} -j {mark}"));
        if container.is_ipv4() {
            rules.push(format!("-A {chain} -s 127.0.0.1/32 {tail} -j {mark}"));
        }
    }
    rules.push(format!(
        "-A {chain} {tail} -j DNAT --to-destination {}",
        ip_port(container.ip(), m.container_port)
    ));
    rules
}

/// The rules forwarding `conf`'s mappings to `container` (one family).
/// Entry rules list every mapping's host port, whatever its `hostIP`
/// family, as the reference does; the chain holds only this family's.
pub fn attachment(conf: &PortmapConf, container_id: &str, container: IpNetwork) -> Attachment {
    let chain = dn_chain(&conf.name, container_id);
    let v4 = container.is_ipv4();
    let comment = quoted(&dnat_comment(&conf.name, container_id));
    let conditions = if v4 {
        &conf.conditions_v4
    } else {
        &conf.conditions_v6
    };
    let cond: String = conditions.iter().map(|c| format!(" {}", arg(c))).collect();
    let mut protos: Vec<Protocol> = conf.mappings.iter().map(|m| m.protocol).collect();
    protos.sort();
    protos.dedup();
    let mut entries = Vec::new();
    for proto in protos {
        let ports: Vec<String> = conf
            .mappings
            .iter()
            .filter(|m| m.protocol == proto)
            .map(|m| m.host_port.to_string())
            .collect();
        for group in ports.chunks(MULTIPORT_MAX) {
            entries.push(format!(
                "-A {DNAT_CHAIN} -p {proto} -m comment --comment {comment} -m multiport --dports {}{cond} -j {chain}",
                group.join(",")
            ));
        }
    }
    let rules = conf
        .mappings
        .iter()
        .filter(|m| m.applies_to(v4))
        .flat_map(|m| mapping_rules(conf, &chain, m, container))
        .collect();
    Attachment {
        chain,
        rules,
        entries,
        conditioned: !conditions.is_empty(),
    }
}

/// The container ID a `CNI-HOSTPORT-DNAT` rule line of `network` names,
/// when its comment is intact.
pub fn entry_owner<'a>(network: &str, line: &'a str) -> Option<&'a str> {
    let marker = format!("dnat name: \\\"{network}\\\" id: \\\"");
    let rest = &line[line.find(&marker)? + marker.len()..];
    rest.find("\\\"\"").map(|end| &rest[..end])
}

/// The chain a rule line jumps to.
pub fn jump_target(line: &str) -> Option<&str> {
    line.rsplit_once(" -j ")?.1.split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_MARK_BIT;

    fn conf(mappings: Vec<PortMapping>) -> PortmapConf {
        PortmapConf {
            name: "pmnet".into(),
            backend: crate::config::Backend::Iptables,
            masq_all: false,
            mappings,
            snat: true,
            mark: MarkChain::Bit(DEFAULT_MARK_BIT),
            conditions_v4: Vec::new(),
            conditions_v6: Vec::new(),
            prev_result: None,
        }
    }

    fn pm(host: u16, cont: u16, protocol: Protocol, ip: Option<&str>) -> PortMapping {
        PortMapping {
            host_port: host,
            container_port: cont,
            protocol,
            host_ip: ip.map(|s| s.parse().expect("test address")),
        }
    }

    #[test]
    fn names_match_the_reference() {
        // Observed with the reference v1.1.1: network pmnet, container ctr1.
        assert_eq!(dn_chain("pmnet", "ctr1"), "CNI-DN-323d23e06ba2fdaccfbf7");
        assert_eq!(dn_chain("pmnet", "ctr1").len(), 28);
        assert_eq!(old_sn_chain("pmnet", "ctr1").len(), 28);
        assert_eq!(dnat_comment("n", "c"), "dnat name: \"n\" id: \"c\"");
        let long = dnat_comment("n", &"c".repeat(300));
        assert_eq!(long.len(), 256);
        assert!(long.ends_with("..."));
    }

    /// The lines the reference v1.1.1 printed (iptables-save) for these
    /// mappings.
    #[test]
    fn rules_match_reference_output() {
        let c = conf(vec![
            pm(8080, 80, Protocol::Tcp, None),
            pm(8081, 81, Protocol::Udp, Some("10.0.0.1")),
            pm(8082, 82, Protocol::Tcp, Some("fd00::1")),
        ]);
        let ch = "CNI-DN-323d23e06ba2fdaccfbf7";
        let a = attachment(&c, "ctr1", "10.1.0.5/24".parse().expect("net"));
        assert_eq!(
            a.rules,
            vec![
                format!("-A {ch} -s 10.1.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"),
                format!("-A {ch} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"),
                format!("-A {ch} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.5:80"),
                format!("-A {ch} -s 10.1.0.0/24 -d 10.0.0.1/32 -p udp -m udp --dport 8081 -j CNI-HOSTPORT-SETMARK"),
                format!("-A {ch} -s 127.0.0.1/32 -d 10.0.0.1/32 -p udp -m udp --dport 8081 -j CNI-HOSTPORT-SETMARK"),
                format!("-A {ch} -d 10.0.0.1/32 -p udp -m udp --dport 8081 -j DNAT --to-destination 10.1.0.5:81"),
            ]
        );
        let q = r#""dnat name: \"pmnet\" id: \"ctr1\"""#;
        assert_eq!(
            a.entries,
            vec![
                format!("-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {q} -m multiport --dports 8080,8082 -j {ch}"),
                format!("-A CNI-HOSTPORT-DNAT -p udp -m comment --comment {q} -m multiport --dports 8081 -j {ch}"),
            ]
        );
        let a6 = attachment(&c, "ctr1", "fd01::5/64".parse().expect("net"));
        assert_eq!(
            a6.rules,
            vec![
                format!("-A {ch} -s fd01::/64 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"),
                format!("-A {ch} -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd01::5]:80"),
                format!("-A {ch} -s fd01::/64 -d fd00::1/128 -p tcp -m tcp --dport 8082 -j CNI-HOSTPORT-SETMARK"),
                format!("-A {ch} -d fd00::1/128 -p tcp -m tcp --dport 8082 -j DNAT --to-destination [fd01::5]:82"),
            ]
        );
        assert_eq!(
            shared(&c)[0].rules,
            vec![
                r#"-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000"#
            ]
        );
        assert_eq!(
            shared(&c)[1].rules,
            vec!["-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE"]
        );
    }

    #[test]
    fn multiport_groups_of_fifteen_and_no_snat() {
        let mut c = conf((1..=16).map(|p| pm(p, p, Protocol::Tcp, None)).collect());
        c.snat = false;
        let a = attachment(&c, "x", "10.0.0.2/24".parse().expect("net"));
        assert_eq!(a.entries.len(), 2);
        assert!(a.entries[0].contains("--dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 "));
        assert!(a.entries[1].contains("--dports 16 "));
        assert_eq!(a.rules.len(), 16, "only DNAT rules without snat");
        assert_eq!(shared(&c).len(), 1);
    }

    #[test]
    fn external_mark_chain_and_conditions() {
        let mut c = conf(vec![pm(80, 8080, Protocol::Sctp, Some("0.0.0.0"))]);
        c.mark = MarkChain::External("KUBE-MARK-MASQ".into());
        c.conditions_v4 = vec![
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            "a b".into(),
        ];
        let a = attachment(&c, "x", "10.0.0.2/24".parse().expect("net"));
        assert!(a.rules[0].ends_with("-p sctp -m sctp --dport 80 -j KUBE-MARK-MASQ"));
        assert!(!a.rules[2].contains("-d "), "unspecified hostIP: no -d");
        assert!(a.conditioned);
        assert!(a.entries[0].contains("--dports 80 -m comment --comment \"a b\" -j "));
        assert_eq!(
            shared(&c).len(),
            1,
            "no SETMARK/MASQ with an external chain"
        );
    }

    #[test]
    fn owner_and_target_read_back() {
        let line = r#"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"pmnet\" id: \"ctr1\"" -m multiport --dports 80 -j CNI-DN-323d23e06ba2fdaccfbf7"#;
        assert_eq!(entry_owner("pmnet", line), Some("ctr1"));
        assert_eq!(entry_owner("other", line), None);
        assert_eq!(jump_target(line), Some("CNI-DN-323d23e06ba2fdaccfbf7"));
        let cut = format!(
            "-A X -m comment --comment \"{}\" -j Y",
            dnat_comment("pmnet", &"c".repeat(300)).replace('"', "\\\"")
        );
        assert_eq!(
            entry_owner("pmnet", &cut),
            None,
            "a cut comment names nobody"
        );
    }
}
