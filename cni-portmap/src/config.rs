//! The portmap configuration: read like the reference (case-insensitive
//! keys, `null` as absent) and validated before anything is touched.

use crate::error::PortmapError;
use cni_spec::json::{JsonTypeError, Obj};
use cni_spec::{CniResult, Request};
use ipnetwork::IpNetwork;
use serde_json::Value;
use std::fmt;
use std::net::IpAddr;

/// The reference's default mark bit (Kubernetes uses 14 and 15, Calico
/// 20–31).
pub const DEFAULT_MARK_BIT: u32 = 13;

/// A transport protocol a mapping may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// `sctp`.
    Sctp,
    /// `tcp`.
    Tcp,
    /// `udp`.
    Udp,
}

impl Protocol {
    /// The name iptables and the reference use.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Sctp => "sctp",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `runtimeConfig.portMappings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    /// Port on the node.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Only traffic to this node address (`None`: any local address). An
    /// unspecified address (`0.0.0.0`, `::`) is kept: it selects a family
    /// without restricting the destination, as in the reference.
    pub host_ip: Option<IpAddr>,
}

impl PortMapping {
    /// Whether the mapping applies to container addresses of this family:
    /// every mapping without `hostIP`, or one whose `hostIP` has the family.
    pub fn applies_to(&self, v4: bool) -> bool {
        self.host_ip.is_none_or(|ip| is_v4(ip) == v4)
    }

    /// The destination match: `hostIP` unless unspecified.
    pub fn dst(&self) -> Option<IpAddr> {
        self.host_ip.filter(|ip| !ip.is_unspecified())
    }
}

/// Whether an address counts as IPv4 (an IPv4-mapped IPv6 address does, as
/// for the reference).
pub fn is_v4(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(a) => a.to_ipv4_mapped().is_some(),
    }
}

/// How hairpin and localhost traffic gets its masquerade mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkChain {
    /// Ours: `CNI-HOSTPORT-SETMARK` setting this bit, masqueraded by
    /// `CNI-HOSTPORT-MASQ`.
    Bit(u32),
    /// Someone else's chain (`externalSetMarkChain`), e.g. kube-proxy's
    /// `KUBE-MARK-MASQ`; we create neither chain.
    External(String),
}

/// Which firewall holds the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// iptables/ip6tables table `nat` (reference v1.1.1 and HEAD).
    Iptables,
    /// nftables tables `ip cni_hostport` and `ip6 cni_hostport` (reference
    /// HEAD).
    Nftables,
}

impl Backend {
    fn as_str(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }
}

/// A validated portmap configuration.
#[derive(Debug, Clone)]
pub struct PortmapConf {
    /// The network name.
    pub name: String,
    /// `backend`: given, or iptables unless only nft is installed.
    pub backend: Backend,
    /// `masqAll` (nftables): masquerade every connection to the container
    /// through a published port, not only hairpin and localhost ones.
    pub masq_all: bool,
    /// `runtimeConfig.portMappings`.
    pub mappings: Vec<PortMapping>,
    /// Masquerade hairpin and localhost traffic (default true).
    pub snat: bool,
    /// Where the mark comes from.
    pub mark: MarkChain,
    /// Extra match arguments for the IPv4 entry rules.
    pub conditions_v4: Vec<String>,
    /// Extra match arguments for the IPv6 entry rules.
    pub conditions_v6: Vec<String>,
    /// `prevResult`, when given.
    pub prev_result: Option<CniResult>,
}

/// The container addresses portmap forwards to: the first IPv4 and the
/// first IPv6 address of `prevResult` on the container's interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerIps {
    /// IPv4 address with its prefix.
    pub v4: Option<IpNetwork>,
    /// IPv6 address with its prefix.
    pub v6: Option<IpNetwork>,
}

impl ContainerIps {
    /// Picks the addresses as the reference does: an address whose
    /// `interface` names another interface, or a host-side one (no
    /// sandbox), is skipped; the first of each family wins.
    pub fn from_result(r: &CniResult, ifname: &str) -> ContainerIps {
        let mut out = ContainerIps::default();
        for ip in &r.ips {
            let v4 = ip.address.is_ipv4();
            if (v4 && out.v4.is_some()) || (!v4 && out.v6.is_some()) {
                continue;
            }
            if let Some(iface) = ip.interface.and_then(|i| r.interfaces.get(i)) {
                if iface.name != ifname || iface.sandbox.is_empty() {
                    continue;
                }
            }
            if v4 {
                out.v4 = Some(ip.address);
            } else {
                out.v6 = Some(ip.address);
            }
        }
        out
    }

    /// The addresses present, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = IpNetwork> {
        self.v4.into_iter().chain(self.v6)
    }
}

fn decode(e: JsonTypeError) -> PortmapError {
    PortmapError::Decode(e.to_string())
}

fn invalid(msg: impl Into<String>) -> PortmapError {
    PortmapError::Config(msg.into())
}

/// Reads a port: an integer in 1–65535. Other integers are invalid (code
/// 7, the reference's wording); other JSON types cannot be decoded.
fn port(o: &Obj<'_>, key: &str, what: &str) -> Result<u16, PortmapError> {
    let v = o.get(key).unwrap_or(&Value::Null);
    let n = match v {
        Value::Null => 0,
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            PortmapError::Decode(format!(
                "cannot decode {}: expected integer, found {n}",
                o.child_path(key)
            ))
        })?,
        other => {
            return Err(PortmapError::Decode(format!(
                "cannot decode {}: expected integer, found {}",
                o.child_path(key),
                cni_spec::json::type_name(other)
            )))
        }
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(format!("Invalid {what} port number: {n}")))
}

fn mapping(v: &Value, path: &str) -> Result<PortMapping, PortmapError> {
    let o = Obj::of(v, path).map_err(decode)?;
    let container_port = port(&o, "containerPort", "container")?;
    let host_port = port(&o, "hostPort", "host")?;
    let proto_text = o.str("protocol").map_err(decode)?.unwrap_or_default();
    let protocol = Protocol::parse(proto_text).ok_or_else(|| {
        invalid(format!(
            "{path}: invalid protocol {proto_text:?}: must be tcp, udp or sctp"
        ))
    })?;
    let host_ip = match o.str("hostIP").map_err(decode)?.unwrap_or_default() {
        "" => None,
        t => Some(
            t.parse::<IpAddr>()
                .map_err(|_| invalid(format!("{path}: invalid hostIP {t:?}")))?,
        ),
    };
    Ok(PortMapping {
        host_port,
        container_port,
        protocol,
        host_ip,
    })
}

fn string_list(o: &Obj<'_>, key: &str) -> Result<Vec<String>, PortmapError> {
    Ok(o.str_array(key)
        .map_err(decode)?
        .into_iter()
        .map(str::to_string)
        .collect())
}

/// The backend conditions are written for: iptables arguments start with
/// `-` or `!`, nftables expressions never do.
fn conditions_backend(c: &[String]) -> Option<Backend> {
    let first = c.first()?;
    Some(if first.starts_with('-') || first.starts_with('!') {
        Backend::Iptables
    } else {
        Backend::Nftables
    })
}

/// Reads `backend` (default: iptables, unless only nft is installed) and
/// refuses options of the other backend, as reference HEAD does.
fn backend(
    o: &Obj<'_>,
    external_mark: bool,
    v4: &[String],
    v6: &[String],
) -> Result<Backend, PortmapError> {
    let chosen = match o.str("backend").map_err(decode)? {
        None => {
            if crate::tools::find("iptables-restore").is_none()
                && crate::tools::find("nft").is_some()
            {
                Backend::Nftables
            } else {
                Backend::Iptables
            }
        }
        Some("iptables") => Backend::Iptables,
        Some("nftables") => Backend::Nftables,
        Some(other) => return Err(invalid(format!("unrecognized backend {other:?}"))),
    };
    let mut foreign = Vec::new();
    if external_mark && chosen == Backend::Nftables {
        foreign.push("externalSetMarkChain");
    }
    for (key, c) in [("conditionsV4", v4), ("conditionsV6", v6)] {
        if conditions_backend(c).is_some_and(|b| b != chosen) {
            foreign.push(key);
        }
    }
    if !foreign.is_empty() {
        let other = match chosen {
            Backend::Iptables => Backend::Nftables,
            Backend::Nftables => Backend::Iptables,
        };
        return Err(invalid(format!(
            "{} backend was requested but configuration contains {}-specific options [{}]",
            chosen.as_str(),
            other.as_str(),
            foreign.join(" ")
        )));
    }
    Ok(chosen)
}

/// Reads and validates the configuration of `req`. Needs no `prevResult`
/// (DEL and GC run without one); see [`PortmapConf::container_ips`].
///
/// # Errors
/// Code 6 for values of the wrong type or an unreadable `prevResult`, code 7
/// for invalid settings and mappings.
pub fn load(req: &Request) -> Result<PortmapConf, PortmapError> {
    let o = req.conf();
    let snat = match o.get("snat") {
        None => true,
        Some(_) => o.bool("snat").map_err(decode)?,
    };
    let bit = match o.get("markMasqBit") {
        None => None,
        Some(Value::Number(n)) => Some(n.as_i64().ok_or_else(|| {
            PortmapError::Decode(format!(
                "cannot decode markMasqBit: expected integer, found {n}"
            ))
        })?),
        Some(other) => {
            return Err(PortmapError::Decode(format!(
                "cannot decode markMasqBit: expected integer, found {}",
                cni_spec::json::type_name(other)
            )))
        }
    };
    let external = o.str("externalSetMarkChain").map_err(decode)?;
    let mark = match (bit, external) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "Cannot specify externalSetMarkChain and markMasqBit",
            ))
        }
        (_, Some(chain)) => {
            if chain.is_empty() || chain.chars().any(|c| c.is_whitespace() || c == '"') {
                return Err(invalid(format!(
                    "invalid externalSetMarkChain {chain:?}: must be an iptables chain name"
                )));
            }
            MarkChain::External(chain.to_string())
        }
        (Some(b), None) => MarkChain::Bit(
            u32::try_from(b)
                .ok()
                .filter(|b| *b <= 31)
                .ok_or_else(|| invalid("MasqMarkBit must be between 0 and 31"))?,
        ),
        (None, None) => MarkChain::Bit(DEFAULT_MARK_BIT),
    };
    let conditions_v4 = string_list(&o, "conditionsV4")?;
    let conditions_v6 = string_list(&o, "conditionsV6")?;
    let backend = backend(
        &o,
        matches!(mark, MarkChain::External(_)),
        &conditions_v4,
        &conditions_v6,
    )?;
    let mut mappings: Vec<PortMapping> = Vec::new();
    if let Some(rc) = o.obj("runtimeConfig").map_err(decode)? {
        let rc_path = o.child_path("runtimeConfig");
        let rc = Obj::new(rc, &rc_path);
        let list_path = rc.child_path("portMappings");
        for (i, v) in rc
            .array("portMappings")
            .map_err(decode)?
            .into_iter()
            .flatten()
            .enumerate()
        {
            let path = format!("{list_path}[{i}]");
            let m = mapping(v, &path)?;
            if let Some(j) = mappings.iter().position(|p| {
                p.host_port == m.host_port && p.protocol == m.protocol && p.host_ip == m.host_ip
            }) {
                return Err(invalid(format!(
                    "{path} duplicates {list_path}[{j}]: {} hostPort {}{}",
                    m.protocol,
                    m.host_port,
                    m.host_ip
                        .map(|ip| format!(" hostIP {ip}"))
                        .unwrap_or_default()
                )));
            }
            mappings.push(m);
        }
    }
    let prev_result = match o.get("prevResult") {
        Some(v) if !matches!(v, Value::Object(m) if m.is_empty()) => Some(
            CniResult::decode(v, req.version)
                .map_err(|e| {
                    PortmapError::Decode(format!("could not parse prevResult: {}", e.msg))
                })?
                .0,
        ),
        _ => None,
    };
    Ok(PortmapConf {
        name: req.name.clone(),
        mappings,
        snat,
        mark,
        backend,
        masq_all: o.bool("masqAll").map_err(decode)?,
        conditions_v4,
        conditions_v6,
        prev_result,
    })
}

impl PortmapConf {
    /// The container addresses from `prevResult`, checked against the
    /// mappings: a `hostIP` of a family the container has no address of is
    /// invalid (the reference silently maps nothing for it).
    ///
    /// # Errors
    /// No `prevResult` (`must be called as chained plugin`), or a `hostIP`
    /// of the wrong family (code 7).
    pub fn container_ips(&self, ifname: &str) -> Result<ContainerIps, PortmapError> {
        let r = self
            .prev_result
            .as_ref()
            .ok_or_else(|| invalid("must be called as chained plugin"))?;
        let ips = ContainerIps::from_result(r, ifname);
        for (i, m) in self.mappings.iter().enumerate() {
            let Some(h) = m.host_ip else { continue };
            let v4 = is_v4(h);
            let present = if v4 {
                ips.v4.is_some()
            } else {
                ips.v6.is_some()
            };
            if !present {
                return Err(invalid(format!(
                    "runtimeConfig.portMappings[{i}]: hostIP {h} is IPv{} but the container has no IPv{} address on {ifname}",
                    if v4 { 4 } else { 6 },
                    if v4 { 4 } else { 6 },
                )));
            }
        }
        Ok(ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_spec::env::Command;
    use cni_spec::Version;
    use serde_json::json;

    fn req(conf: Value) -> Request {
        let Value::Object(config) = conf else {
            panic!("test config must be an object")
        };
        Request {
            command: Command::Add,
            container_id: "c1".into(),
            netns: String::new(),
            ifname: "eth0".into(),
            args: String::new(),
            path: Vec::new(),
            stdin: Vec::new(),
            version: Version::V1_0_0,
            name: "net".into(),
            config,
        }
    }

    fn err(conf: Value) -> String {
        match load(&req(conf)) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_and_case_insensitive_keys() {
        let c = load(&req(json!({
            "RuntimeConfig": {"PortMappings": [{"HostPort": 80, "containerPort": 8080, "protocol": "UDP"}]},
            "backend": "iptables"
        })))
        .expect("valid");
        assert!(c.snat);
        assert_eq!(c.mark, MarkChain::Bit(DEFAULT_MARK_BIT));
        assert_eq!(c.backend, Backend::Iptables);
        assert_eq!(
            c.mappings,
            vec![PortMapping {
                host_port: 80,
                container_port: 8080,
                protocol: Protocol::Udp,
                host_ip: None
            }]
        );
        assert!(c.prev_result.is_none());
    }

    #[test]
    fn same_port_on_two_host_ips_is_no_duplicate() {
        let c = load(&req(json!({"runtimeConfig": {"portMappings": [
            {"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "10.0.0.1"},
            {"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "10.0.0.2"},
            {"hostPort": 80, "containerPort": 80, "protocol": "udp"}
        ]}})))
        .expect("valid");
        assert_eq!(c.mappings.len(), 3);
        let e = err(json!({"runtimeConfig": {"portMappings": [
            {"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "10.0.0.1"},
            {"hostPort": 80, "containerPort": 81, "protocol": "tcp", "hostIP": "10.0.0.1"}
        ]}}));
        assert_eq!(e, "runtimeConfig.portMappings[1] duplicates runtimeConfig.portMappings[0]: tcp hostPort 80 hostIP 10.0.0.1");
    }

    #[test]
    fn port_and_mark_limits() {
        let m = |h: Value| json!({"runtimeConfig": {"portMappings": [{"hostPort": h, "containerPort": 1, "protocol": "tcp"}]}});
        assert!(load(&req(m(json!(65535)))).is_ok());
        assert_eq!(err(m(json!(65536))), "Invalid host port number: 65536");
        assert_eq!(err(m(json!(0))), "Invalid host port number: 0");
        assert_eq!(
            err(m(json!(1.5))),
            "cannot decode runtimeConfig.portMappings[0].hostPort: expected integer, found 1.5"
        );
        assert!(load(&req(json!({"markMasqBit": 0}))).is_ok());
        assert!(load(&req(json!({"markMasqBit": 31}))).is_ok());
        assert_eq!(
            err(json!({"markMasqBit": 32})),
            "MasqMarkBit must be between 0 and 31"
        );
        assert_eq!(
            err(json!({"externalSetMarkChain": "A B"})),
            "invalid externalSetMarkChain \"A B\": must be an iptables chain name"
        );
    }

    #[test]
    fn container_ips_skip_other_interfaces() {
        let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/x"}, {"name": "eth1", "sandbox": "/x"}],
        "ips": [
            {"address": "10.0.0.1/24", "interface": 0},
            {"address": "10.0.1.1/24", "interface": 2},
            {"address": "10.0.2.2/24", "interface": 1},
            {"address": "10.0.3.3/24", "interface": 1},
            {"address": "fd00::2/64"}
        ]});
        let c = load(&req(
            json!({"prevResult": prev, "runtimeConfig": {"portMappings": [
                {"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "::"}
            ]}}),
        ))
        .expect("valid");
        let ips = c.container_ips("eth0").expect("ips");
        assert_eq!(
            ips.v4.map(|n| n.to_string()).as_deref(),
            Some("10.0.2.2/24")
        );
        assert_eq!(ips.v6.map(|n| n.to_string()).as_deref(), Some("fd00::2/64"));
        let v4_only = load(&req(json!({"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]},
            "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "::"}]}})))
        .expect("valid");
        assert!(
            v4_only.container_ips("eth0").is_err(),
            "an IPv6 hostIP needs an IPv6 container address"
        );
    }

    #[test]
    fn backend_options() {
        assert_eq!(
            load(&req(
                json!({"backend": "nftables", "conditionsV4": ["ip saddr 1.2.3.4"]})
            ))
            .expect("valid")
            .backend,
            Backend::Nftables
        );
        assert_eq!(
            err(json!({"backend": "nftables", "conditionsV6": ["-s", "::1"]})),
            "nftables backend was requested but configuration contains iptables-specific options [conditionsV6]"
        );
        assert_eq!(
            err(json!({"backend": 1})),
            "cannot decode backend: expected string, found number"
        );
    }
}
