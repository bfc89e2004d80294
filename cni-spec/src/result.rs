//! The success result, held in the newest shape (1.1.0) and converted to the
//! version a runtime asked for on output.
//!
//! Output follows what the reference library prints at each version:
//! 0.1.0/0.2.0 keep the first IPv4 and first IPv6 address (`ip4`/`ip6`,
//! routes sorted by family) and fail with `cannot convert: no valid IP
//! addresses` when there is none; 0.3.x/0.4.0 add `ips[].version`; 1.x drop it
//! and keep the 1.1 extras (`mtu`, `socketPath`, `pciID`, route `mtu`,
//! `advmss`, `priority`, `table`, `scope`). An empty `dns` is printed as `{}`
//! up to 1.0.0 (as v1.x of the reference library does) and omitted in 1.1.0.

use crate::error::{CniError, ErrorCode};
use crate::json::Obj;
use crate::version::Version;
use ipnetwork::IpNetwork;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// An interface in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address, empty when unknown.
    pub mac: String,
    /// MTU (1.1.0), 0 when unset.
    pub mtu: u32,
    /// Netns path for container interfaces, empty for host interfaces.
    pub sandbox: String,
    /// vhost-user socket path (1.1.0), empty when unset.
    pub socket_path: String,
    /// PCI id (1.1.0), empty when unset.
    pub pci_id: String,
}

/// An address in a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Index into `interfaces`.
    pub interface: Option<usize>,
    /// Address with its prefix length, e.g. `10.1.2.2/24`.
    pub address: IpNetwork,
    /// Gateway, if any.
    pub gateway: Option<IpAddr>,
}

/// A route in a result (and in host-local's `routes` option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: IpNetwork,
    /// Next hop, if any.
    pub gw: Option<IpAddr>,
    /// 1.1.0 extras, kept as given.
    pub mtu: Option<u64>,
    /// 1.1.0: advertised MSS.
    pub advmss: Option<u64>,
    /// 1.1.0: route priority (metric).
    pub priority: Option<u64>,
    /// 1.1.0: routing table.
    pub table: Option<u64>,
    /// 1.1.0: route scope.
    pub scope: Option<u64>,
}

/// DNS settings in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    /// Name servers, in order.
    pub nameservers: Vec<String>,
    /// Local domain.
    pub domain: String,
    /// Search domains.
    pub search: Vec<String>,
    /// resolver options.
    pub options: Vec<String>,
}

impl Dns {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        let list = |v: &[String]| Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect());
        if !self.nameservers.is_empty() {
            m.insert("nameservers".into(), list(&self.nameservers));
        }
        if !self.domain.is_empty() {
            m.insert("domain".into(), Value::from(self.domain.as_str()));
        }
        if !self.search.is_empty() {
            m.insert("search".into(), list(&self.search));
        }
        if !self.options.is_empty() {
            m.insert("options".into(), list(&self.options));
        }
        Value::Object(m)
    }
}

/// A success result in the newest shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS.
    pub dns: Dns,
}

fn decode_err(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::DECODING_FAILURE, msg)
}

/// Parses an IP address as the reference does (`invalid IP address: x`).
///
/// # Errors
/// Text that is not an IPv4 or IPv6 address.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("invalid IP address: {s}"))
}

/// Parses `a.b.c.d/n` keeping the host bits (`invalid CIDR address: x`).
///
/// # Errors
/// Text that is not an address with a prefix length.
pub fn parse_cidr(s: &str) -> Result<IpNetwork, String> {
    let bad = || format!("invalid CIDR address: {s}");
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
        return Err(bad());
    }
    let len: u8 = len.parse().map_err(|_| bad())?;
    IpNetwork::new(ip, len).map_err(|_| bad())
}

impl Route {
    /// A route to `dst` via `gw`.
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }

    /// Reads a route object (`dst`, `gw`, and the 1.1.0 extras).
    ///
    /// # Errors
    /// A missing or malformed `dst`, a malformed `gw`, or wrong JSON types.
    pub fn from_json(v: &Value, path: &str) -> Result<Route, String> {
        let o = Obj::of(v, path).map_err(|e| e.to_string())?;
        let dst = o
            .str("dst")
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{}: missing dst", o.child_path("dst")))?;
        let dst = parse_cidr(dst)?;
        let gw = match o.str("gw").map_err(|e| e.to_string())? {
            Some(s) if !s.is_empty() => Some(parse_ip(s)?),
            _ => None,
        };
        let num = |k: &str| o.u64(k).map_err(|e| e.to_string());
        Ok(Route {
            dst,
            gw,
            mtu: num("mtu")?,
            advmss: num("advmss")?,
            priority: num("priority")?,
            table: num("table")?,
            scope: num("scope")?,
        })
    }

    fn to_json(&self, extras: bool) -> Value {
        let mut m = Map::new();
        m.insert("dst".into(), Value::from(self.dst.to_string()));
        if let Some(gw) = self.gw {
            m.insert("gw".into(), Value::from(gw.to_string()));
        }
        if extras {
            for (k, v) in [
                ("mtu", self.mtu),
                ("advmss", self.advmss),
                ("priority", self.priority),
                ("table", self.table),
                ("scope", self.scope),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), Value::from(v));
                }
            }
        }
        Value::Object(m)
    }
}

impl Dns {
    /// Reads a `dns` object.
    ///
    /// # Errors
    /// Wrong JSON types.
    pub fn from_json(v: &Value, path: &str) -> Result<Dns, String> {
        let o = Obj::of(v, path).map_err(|e| e.to_string())?;
        let list = |k: &str| -> Result<Vec<String>, String> {
            Ok(o.str_array(k)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(str::to_string)
                .collect())
        };
        Ok(Dns {
            nameservers: list("nameservers")?,
            domain: o
                .str("domain")
                .map_err(|e| e.to_string())?
                .unwrap_or_default()
                .to_string(),
            search: list("search")?,
            options: list("options")?,
        })
    }
}

impl CniResult {
    /// Encodes the result for `version`.
    ///
    /// # Errors
    /// 0.1.0/0.2.0 with no IP address: `cannot convert: no valid IP addresses`
    /// (code 999, as the reference reports it).
    pub fn encode(&self, version: Version) -> Result<Value, CniError> {
        if version.is_legacy_result() {
            return self.encode_legacy(version);
        }
        let extras = version >= Version::V1_0_0;
        let mut m = Map::new();
        m.insert("cniVersion".into(), Value::from(version.as_str()));
        if !self.interfaces.is_empty() {
            let list = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut o = Map::new();
                    o.insert("name".into(), Value::from(i.name.as_str()));
                    if !i.mac.is_empty() {
                        o.insert("mac".into(), Value::from(i.mac.as_str()));
                    }
                    if extras && i.mtu != 0 {
                        o.insert("mtu".into(), Value::from(i.mtu));
                    }
                    if !i.sandbox.is_empty() {
                        o.insert("sandbox".into(), Value::from(i.sandbox.as_str()));
                    }
                    if extras && !i.socket_path.is_empty() {
                        o.insert("socketPath".into(), Value::from(i.socket_path.as_str()));
                    }
                    if extras && !i.pci_id.is_empty() {
                        o.insert("pciID".into(), Value::from(i.pci_id.as_str()));
                    }
                    Value::Object(o)
                })
                .collect();
            m.insert("interfaces".into(), Value::Array(list));
        }
        if !self.ips.is_empty() {
            let list = self
                .ips
                .iter()
                .map(|ip| {
                    let mut o = Map::new();
                    if version.has_ip_version() {
                        let fam = if ip.address.is_ipv4() { "4" } else { "6" };
                        o.insert("version".into(), Value::from(fam));
                    }
                    if let Some(idx) = ip.interface {
                        o.insert("interface".into(), Value::from(idx));
                    }
                    o.insert("address".into(), Value::from(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        o.insert("gateway".into(), Value::from(gw.to_string()));
                    }
                    Value::Object(o)
                })
                .collect();
            m.insert("ips".into(), Value::Array(list));
        }
        if !self.routes.is_empty() {
            let list = self.routes.iter().map(|r| r.to_json(extras)).collect();
            m.insert("routes".into(), Value::Array(list));
        }
        if version < Version::V1_1_0 || !self.dns.is_empty() {
            m.insert("dns".into(), self.dns.to_json());
        }
        Ok(Value::Object(m))
    }

    fn encode_legacy(&self, version: Version) -> Result<Value, CniError> {
        let v4 = self.ips.iter().find(|i| i.address.is_ipv4());
        let v6 = self.ips.iter().find(|i| i.address.is_ipv6());
        if v4.is_none() && v6.is_none() {
            return Err(CniError::new(
                ErrorCode::INTERNAL,
                "cannot convert: no valid IP addresses",
            ));
        }
        let family = |ip: &IpConfig, v4: bool| {
            let mut o = Map::new();
            o.insert("ip".into(), Value::from(ip.address.to_string()));
            if let Some(gw) = ip.gateway {
                o.insert("gateway".into(), Value::from(gw.to_string()));
            }
            let routes: Vec<Value> = self
                .routes
                .iter()
                .filter(|r| r.dst.is_ipv4() == v4)
                .map(|r| r.to_json(false))
                .collect();
            if !routes.is_empty() {
                o.insert("routes".into(), Value::Array(routes));
            }
            Value::Object(o)
        };
        let mut m = Map::new();
        m.insert("cniVersion".into(), Value::from(version.as_str()));
        if let Some(ip) = v4 {
            m.insert("ip4".into(), family(ip, true));
        }
        if let Some(ip) = v6 {
            m.insert("ip6".into(), family(ip, false));
        }
        m.insert("dns".into(), self.dns.to_json());
        Ok(Value::Object(m))
    }

    /// Decodes a result of any supported version (a delegated plugin's
    /// output, or `prevResult`). `fallback` is used when the result carries
    /// no `cniVersion`. Returns the result and the version it declared.
    ///
    /// # Errors
    /// Code 6 naming what could not be decoded; code 1 for an unknown version.
    pub fn decode(v: &Value, fallback: Version) -> Result<(CniResult, Version), CniError> {
        let o = Obj::of(v, "result").map_err(|e| decode_err(e.to_string()))?;
        let version = match o.str("cniVersion").map_err(|e| decode_err(e.to_string()))? {
            None | Some("") => fallback,
            Some(s) => Version::from_exact(s).ok_or_else(|| {
                CniError::new(
                    ErrorCode::INCOMPATIBLE_VERSION,
                    format!("unsupported result version {s:?}"),
                )
            })?,
        };
        let r = decode_body(&o, version)
            .map_err(|s| decode_err(format!("failed to decode result: {s}")))?;
        Ok((r, version))
    }
}

fn text(e: crate::json::JsonTypeError) -> String {
    e.to_string()
}

/// Reads `ip`/`address` (named `addr_key`), `gateway` and `interface`.
fn decode_ip(o: &Obj<'_>, addr_key: &str) -> Result<IpConfig, String> {
    let address = o
        .str(addr_key)
        .map_err(text)?
        .ok_or_else(|| format!("{} missing", o.child_path(addr_key)))?;
    let gateway = match o.str("gateway").map_err(text)? {
        Some(g) if !g.is_empty() => Some(parse_ip(g)?),
        _ => None,
    };
    let interface = o
        .u64("interface")
        .map_err(text)?
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    Ok(IpConfig {
        interface,
        address: parse_cidr(address)?,
        gateway,
    })
}

/// Reads the `routes` array of `o`.
fn decode_routes(o: &Obj<'_>) -> Result<Vec<Route>, String> {
    let base = o.child_path("routes");
    o.array("routes")
        .map_err(text)?
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, rv)| Route::from_json(rv, &format!("{base}[{i}]")))
        .collect()
}

fn decode_body(o: &Obj<'_>, version: Version) -> Result<CniResult, String> {
    let mut r = CniResult::default();
    if version.is_legacy_result() {
        for key in ["ip4", "ip6"] {
            let Some(fam) = o.obj(key).map_err(text)? else {
                continue;
            };
            let path = o.child_path(key);
            let fo = Obj::new(fam, &path);
            r.ips.push(decode_ip(&fo, "ip")?);
            r.routes.extend(decode_routes(&fo)?);
        }
    } else {
        let base = o.child_path("interfaces");
        for (i, iv) in o
            .array("interfaces")
            .map_err(text)?
            .into_iter()
            .flatten()
            .enumerate()
        {
            let path = format!("{base}[{i}]");
            let io = Obj::of(iv, &path).map_err(text)?;
            let s = |k: &str| -> Result<String, String> {
                Ok(io.str(k).map_err(text)?.unwrap_or_default().to_string())
            };
            let mtu = io.u64("mtu").map_err(text)?.unwrap_or(0);
            r.interfaces.push(Interface {
                name: s("name")?,
                mac: s("mac")?,
                mtu: u32::try_from(mtu).map_err(|_| format!("{path}.mtu out of range"))?,
                sandbox: s("sandbox")?,
                socket_path: s("socketPath")?,
                pci_id: s("pciID")?,
            });
        }
        let base = o.child_path("ips");
        for (i, iv) in o
            .array("ips")
            .map_err(text)?
            .into_iter()
            .flatten()
            .enumerate()
        {
            let path = format!("{base}[{i}]");
            r.ips
                .push(decode_ip(&Obj::of(iv, &path).map_err(text)?, "address")?);
        }
        r.routes = decode_routes(o)?;
    }
    if let Some(d) = o.get("dns") {
        r.dns = Dns::from_json(d, &o.child_path("dns"))?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        let net = |s: &str| parse_cidr(s).unwrap_or_else(|e| panic!("{e}"));
        let ip = |s: &str| parse_ip(s).ok();
        CniResult {
            interfaces: vec![],
            ips: vec![
                IpConfig {
                    interface: None,
                    address: net("10.1.2.2/24"),
                    gateway: ip("10.1.2.1"),
                },
                IpConfig {
                    interface: None,
                    address: net("10.1.3.2/24"),
                    gateway: ip("10.1.3.1"),
                },
                IpConfig {
                    interface: None,
                    address: net("2001:db8:1::2/64"),
                    gateway: ip("2001:db8:1::1"),
                },
            ],
            routes: vec![
                Route::new(net("0.0.0.0/0"), None),
                Route {
                    mtu: Some(1400),
                    ..Route::new(net("::/0"), ip("2001:db8:1::1"))
                },
            ],
            dns: Dns::default(),
        }
    }

    #[test]
    fn legacy_keeps_first_per_family() {
        let v = sample().encode(Version::V0_2_0).unwrap_or_default();
        assert_eq!(
            v,
            json!({"cniVersion":"0.2.0",
                "ip4":{"ip":"10.1.2.2/24","gateway":"10.1.2.1","routes":[{"dst":"0.0.0.0/0"}]},
                "ip6":{"ip":"2001:db8:1::2/64","gateway":"2001:db8:1::1","routes":[{"dst":"::/0","gw":"2001:db8:1::1"}]},
                "dns":{}})
        );
    }

    #[test]
    fn legacy_without_ips_fails() {
        let r = CniResult::default();
        let e = r.encode(Version::V0_1_0).err();
        assert_eq!(
            e.map(|e| e.msg),
            Some("cannot convert: no valid IP addresses".into())
        );
    }

    #[test]
    fn v04_has_version_and_v1_not() {
        let v = sample().encode(Version::V0_4_0).unwrap_or_default();
        assert_eq!(v["ips"][0]["version"], json!("4"));
        assert_eq!(v["ips"][2]["version"], json!("6"));
        assert_eq!(v["routes"][1], json!({"dst":"::/0","gw":"2001:db8:1::1"}));
        assert_eq!(v["dns"], json!({}));
        let v = sample().encode(Version::V1_0_0).unwrap_or_default();
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["routes"][1]["mtu"], json!(1400));
        assert_eq!(v["dns"], json!({}));
        let v = sample().encode(Version::V1_1_0).unwrap_or_default();
        assert!(v.get("dns").is_none());
    }

    #[test]
    fn decode_roundtrips_every_version() {
        for ver in crate::version::SUPPORTED {
            let enc = sample().encode(ver).unwrap_or_default();
            let (dec, got) =
                CniResult::decode(&enc, Version::V1_0_0).unwrap_or_else(|e| panic!("{ver}: {e}"));
            assert_eq!(got, ver);
            let again = dec.encode(ver).unwrap_or_default();
            assert_eq!(again, enc, "{ver}");
        }
    }

    #[test]
    fn decode_errors_are_code_6() {
        let e = CniResult::decode(&json!({"ips":[{"address":"nope"}]}), Version::V1_0_0).err();
        assert_eq!(e.map(|e| e.code), Some(ErrorCode::DECODING_FAILURE));
    }

    #[test]
    fn cidr_parsing() {
        assert!(parse_cidr("10.9.0.5").is_err());
        assert!(parse_cidr("10.9.0.5/33").is_err());
        assert!(parse_cidr("10.9.0.5/+3").is_err());
        assert_eq!(
            parse_cidr("10.9.0.5/24").map(|n| n.to_string()),
            Ok("10.9.0.5/24".into())
        );
    }
}
