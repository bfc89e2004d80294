//! The bridge configuration: read like the reference (case-insensitive keys)
//! and validated before anything is touched.

use crate::error::BridgeError;
use cni_spec::args::load_args;
use cni_spec::json::Obj;
use cni_spec::{CniResult, Dns, Request};
use serde_json::Value;
use std::collections::BTreeSet;

/// The masquerade implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasqBackend {
    /// iptables/ip6tables `nat` table, chain `CNI-<hash>`.
    Iptables,
    /// nftables table `inet cni_plugins_masquerade`.
    Nftables,
}

/// A validated bridge configuration.
#[derive(Debug, Clone)]
pub struct BridgeConf {
    /// Bridge name (default `cni0`).
    pub bridge: String,
    /// Put the gateway address on the bridge (implied by `isDefaultGateway`).
    pub is_gateway: bool,
    /// Add default routes via the gateway.
    pub is_default_gateway: bool,
    /// Replace a different address already on the bridge.
    pub force_address: bool,
    /// Masquerade traffic leaving the pod subnet.
    pub ip_masq: bool,
    /// Explicit masquerade backend.
    pub ip_masq_backend: Option<MasqBackend>,
    /// MTU of a new bridge and of both veth ends (0: kernel default).
    pub mtu: u32,
    /// Hairpin on the host port.
    pub hairpin: bool,
    /// Bridge promiscuous.
    pub promisc: bool,
    /// Access VLAN (0: none).
    pub vlan: u16,
    /// Tagged VLANs, sorted and unique.
    pub vlan_trunk: Vec<u16>,
    /// Keep VLAN 1 (untagged) on the port when VLANs are used; default
    /// true, as upstream and as the reference (which always keeps it).
    pub preserve_default_vlan: bool,
    /// IPv6 duplicate address detection on the container interface.
    pub enable_dad: bool,
    /// nftables MAC spoof check on the host port.
    pub mac_spoof_check: bool,
    /// Leave the container interface down (L2 only).
    pub disable_container_interface: bool,
    /// Isolated bridge port.
    pub port_isolation: bool,
    /// `ipam.type`; `None` means L2 only.
    pub ipam_type: Option<String>,
    /// Top-level `dns`.
    pub dns: Dns,
    /// Container MAC: runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC.
    pub mac: Option<[u8; 6]>,
    /// `prevResult`, when given.
    pub prev_result: Option<CniResult>,
}

fn invalid(m: impl Into<String>) -> BridgeError {
    BridgeError::Config(m.into())
}

fn decode(e: impl ToString) -> BridgeError {
    BridgeError::Decode(format!("failed to load netconf: {}", e.to_string()))
}

/// Parses `aa:bb:cc:dd:ee:ff` (also `-` separated).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        mac[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

fn int(o: &Obj<'_>, key: &str) -> Result<Option<i64>, BridgeError> {
    match o.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| decode(format!("{} must be an integer", o.child_path(key)))),
    }
}

fn trunk(o: &Obj<'_>) -> Result<Vec<u16>, BridgeError> {
    let Some(list) = o.array("vlanTrunk").map_err(decode)? else {
        return Ok(Vec::new());
    };
    let mut ids = BTreeSet::new();
    let valid = |n: i64| (1..=4094).contains(&n);
    for (i, item) in list.iter().enumerate() {
        let path = format!("vlanTrunk[{i}]");
        let t = Obj::of(item, &path).map_err(decode)?;
        let min = int(&t, "minID")?;
        let max = int(&t, "maxID")?;
        match (min, max) {
            (Some(a), Some(b)) => {
                if !valid(a) {
                    return Err(invalid("incorrect trunk minID parameter"));
                }
                if !valid(b) {
                    return Err(invalid("incorrect trunk maxID parameter"));
                }
                if a > b {
                    return Err(invalid("minID is greater than maxID in trunk parameter"));
                }
                ids.extend((a..=b).filter_map(|v| u16::try_from(v).ok()));
            }
            (Some(_), None) => {
                return Err(invalid(
                    "minID and maxID should be configured simultaneously, maxID is missing",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "minID and maxID should be configured simultaneously, minID is missing",
                ))
            }
            (None, None) => {}
        }
        if let Some(id) = int(&t, "id")? {
            if !valid(id) {
                return Err(invalid("incorrect trunk id parameter"));
            }
            ids.extend(u16::try_from(id).ok());
        }
    }
    Ok(ids.into_iter().collect())
}

/// Reads and validates the configuration of `req`.
///
/// # Errors
/// Code 6 for values of the wrong type, 7 for invalid settings, 4 for
/// `CNI_ARGS`.
pub fn load(req: &Request) -> Result<BridgeConf, BridgeError> {
    let o = req.conf();
    let bridge = o.str("bridge").map_err(decode)?.unwrap_or("");
    let bridge = if bridge.is_empty() { "cni0" } else { bridge }.to_string();
    if let Err(e) = cni_spec::env::validate_ifname(&bridge) {
        return Err(invalid(format!(
            "invalid bridge name {bridge:?}: {}",
            e.msg
        )));
    }
    let vlan = int(&o, "vlan")?.unwrap_or(0);
    if !(0..=4094).contains(&vlan) {
        return Err(invalid(format!(
            "invalid VLAN ID {vlan} (must be between 0 and 4094)"
        )));
    }
    let vlan = u16::try_from(vlan).unwrap_or(0);
    let vlan_trunk = trunk(&o)?;
    if vlan != 0 && vlan_trunk.contains(&vlan) {
        return Err(invalid(format!(
            "vlan {vlan} is also listed in vlanTrunk: a port cannot carry one VLAN both untagged and tagged"
        )));
    }
    let mtu = int(&o, "mtu")?.unwrap_or(0);
    if mtu != 0 && !(68..=65535).contains(&mtu) {
        return Err(invalid(format!(
            "invalid mtu {mtu} (must be between 68 and 65535)"
        )));
    }
    let hairpin = o.bool("hairpinMode").map_err(decode)?;
    let promisc = o.bool("promiscMode").map_err(decode)?;
    if hairpin && promisc {
        return Err(invalid(
            "cannot set hairpin mode and promiscuous mode at the same time",
        ));
    }
    let ipam_type = match o.obj("ipam").map_err(decode)? {
        Some(ipam) => Obj::new(ipam, "ipam")
            .str("type")
            .map_err(decode)?
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        None => None,
    };
    let disable_container_interface = o.bool("disableContainerInterface").map_err(decode)?;
    if ipam_type.is_some() && disable_container_interface {
        return Err(invalid(
            "cannot use IPAM when DisableContainerInterface flag is set",
        ));
    }
    let ip_masq_backend = match o.str("ipMasqBackend").map_err(decode)? {
        None | Some("") => None,
        Some("iptables") => Some(MasqBackend::Iptables),
        Some("nftables") => Some(MasqBackend::Nftables),
        Some(other) => {
            return Err(BridgeError::Config(format!(
                "unknown ipMasqBackend {other:?} (must be \"iptables\" or \"nftables\")"
            )))
        }
    };
    let is_default_gateway = o.bool("isDefaultGateway").map_err(decode)?;
    let dns = match o.get("dns") {
        Some(v) => Dns::from_json(v, "dns").map_err(decode)?,
        None => Dns::default(),
    };

    // MAC: CNI_ARGS, then args.cni.mac, then runtimeConfig.mac (last wins).
    let mut mac_text: Option<String> = None;
    load_args(&req.args, &["MAC"], |_, v| {
        mac_text = Some(v.to_string());
        Ok(())
    })
    .map_err(|e| BridgeError::Args(e.to_string()))?;
    if let Some(args) = o.obj("args").map_err(decode)? {
        if let Some(cni) = Obj::new(args, "args").obj("cni").map_err(decode)? {
            if let Some(m) = Obj::new(cni, "args.cni").str("mac").map_err(decode)? {
                mac_text = Some(m.to_string());
            }
        }
    }
    if let Some(rc) = o.obj("runtimeConfig").map_err(decode)? {
        if let Some(m) = Obj::new(rc, "runtimeConfig").str("mac").map_err(decode)? {
            mac_text = Some(m.to_string());
        }
    }
    let mac = match mac_text.filter(|m| !m.is_empty()) {
        None => None,
        Some(t) => Some(
            parse_mac(&t).ok_or_else(|| invalid(format!("address {t}: invalid MAC address")))?,
        ),
    };
    let prev_result = match o.get("prevResult") {
        Some(v) if !matches!(v, Value::Object(m) if m.is_empty()) => Some(
            CniResult::decode(v, req.version)
                .map_err(|e| BridgeError::Decode(format!("could not parse prevResult: {}", e.msg)))?
                .0,
        ),
        _ => None,
    };
    Ok(BridgeConf {
        bridge,
        is_gateway: o.bool("isGateway").map_err(decode)? || is_default_gateway,
        is_default_gateway,
        force_address: o.bool("forceAddress").map_err(decode)?,
        ip_masq: o.bool("ipMasq").map_err(decode)?,
        ip_masq_backend,
        mtu: u32::try_from(mtu).unwrap_or(0),
        hairpin,
        promisc,
        vlan,
        vlan_trunk,
        preserve_default_vlan: o.get("preserveDefaultVlan").is_none()
            || o.bool("preserveDefaultVlan").map_err(decode)?,
        enable_dad: o.bool("enabledad").map_err(decode)?,
        mac_spoof_check: o.bool("macspoofchk").map_err(decode)?,
        disable_container_interface,
        port_isolation: o.bool("portIsolation").map_err(decode)?,
        ipam_type,
        dns,
        mac,
        prev_result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_spec::env::Command;
    use cni_spec::version::Version;

    fn conf(extra: Value) -> Result<BridgeConf, BridgeError> {
        let mut config = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"});
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let Value::Object(config) = config else {
            unreachable!()
        };
        load(&Request {
            command: Command::Add,
            container_id: "c".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            args: String::new(),
            path: Vec::new(),
            stdin: Vec::new(),
            version: Version::V1_0_0,
            name: "n".into(),
            config,
        })
    }

    #[test]
    fn default_vlan_is_preserved_unless_refused() {
        let keep = |extra| conf(extra).map(|c| c.preserve_default_vlan).ok();
        assert_eq!(keep(serde_json::json!({"vlan": 100})), Some(true));
        assert_eq!(
            keep(serde_json::json!({"vlan": 100, "preserveDefaultVlan": null})),
            Some(true)
        );
        assert_eq!(
            keep(serde_json::json!({"vlan": 100, "preserveDefaultVlan": true})),
            Some(true)
        );
        assert_eq!(
            keep(serde_json::json!({"vlan": 100, "preserveDefaultVlan": false})),
            Some(false)
        );
        assert!(conf(serde_json::json!({"preserveDefaultVlan": "no"})).is_err());
    }
}
