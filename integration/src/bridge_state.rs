//! Bridge state as `ip -d -j link`, `bridge -j vlan show`, `ip -j addr` and
//! a plugin's result report it, made comparable across implementations and
//! runs: link names become roles (a pod's host veth is `port:<pod>`), MACs
//! are masked, VLAN ranges are expanded.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// VLAN ID → `"PVID untagged"`, `"PVID tagged"`, `"untagged"` or `"tagged"`.
pub type VlanSet = BTreeMap<u16, String>;

/// Role → its VLANs.
pub type VlanTable = BTreeMap<String, VlanSet>;

/// Role of each link name: `lo`, the bridge and `<bridge>.<vlan>` keep their
/// names; a pod's host veth is `port:<pod>`; the other end of a
/// `<bridge>.<vlan>` veth is `peer:<bridge>.<vlan>`; anything else is
/// `unknown:<kind>`.
pub fn roles(
    bridge: &str,
    pod_results: &[(String, Value)],
    links: &Value,
) -> BTreeMap<String, String> {
    let sub = format!("{bridge}.");
    let mut r = BTreeMap::new();
    for (pod, res) in pod_results {
        if let Some(n) = res["interfaces"][1]["name"].as_str() {
            r.insert(n.to_string(), format!("port:{pod}"));
        }
    }
    for l in links.as_array().into_iter().flatten() {
        let name = l["ifname"].as_str().unwrap_or_default().to_string();
        if r.contains_key(&name) {
            continue;
        }
        let role = if name == "lo" || name == bridge || name.starts_with(&sub) {
            name.clone()
        } else if let Some(peer) = l["link"].as_str().filter(|p| p.starts_with(&sub)) {
            format!("peer:{peer}")
        } else {
            format!(
                "unknown:{}",
                l["linkinfo"]["info_kind"].as_str().unwrap_or("?")
            )
        };
        r.insert(name, role);
    }
    r
}

pub fn role(roles: &BTreeMap<String, String>, name: &str) -> String {
    roles
        .get(name)
        .cloned()
        .unwrap_or_else(|| format!("unnamed:{name}"))
}

/// `ip -d -j link show` as comparable records, sorted by role.
pub fn norm_links(links: &Value, roles: &BTreeMap<String, String>) -> Vec<Value> {
    let mut v: Vec<Value> = links
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let name = l["ifname"].as_str().unwrap_or_default();
            json!({
                "role": role(roles, name),
                "kind": l["linkinfo"]["info_kind"],
                "master": l["master"].as_str().map(|m| role(roles, m)),
                "up": l["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP")),
                "operstate": l["operstate"],
                "mtu": l["mtu"],
                "vlan_filtering": l["linkinfo"]["info_data"]["vlan_filtering"],
            })
        })
        .collect();
    v.sort_by_key(|x| x["role"].as_str().unwrap_or_default().to_string());
    v
}

/// `bridge -j vlan show` as role → VLAN → "PVID untagged" / "untagged" /
/// "tagged" (ranges expanded).
pub fn norm_vlans(vlans: &Value, roles: &BTreeMap<String, String>) -> VlanTable {
    let mut out = BTreeMap::new();
    for port in vlans.as_array().into_iter().flatten() {
        let name = port["ifname"].as_str().unwrap_or_default();
        let mut set = BTreeMap::new();
        for v in port["vlans"].as_array().into_iter().flatten() {
            let vid = |k: &str| v[k].as_u64().and_then(|x| u16::try_from(x).ok());
            let first = vid("vlan").unwrap_or(0);
            let last = vid("vlanEnd").unwrap_or(first);
            let flags: Vec<&str> = v["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let untagged = flags.contains(&"Egress Untagged");
            let what = match (flags.contains(&"PVID"), untagged) {
                (true, true) => "PVID untagged",
                (true, false) => "PVID tagged",
                (false, true) => "untagged",
                (false, false) => "tagged",
            };
            for vid in first..=last {
                set.insert(vid, what.to_string());
            }
        }
        out.insert(role(roles, name), set);
    }
    out
}

/// A VLAN set from `(first, last, what)` ranges.
pub fn vset(ranges: &[(u16, u16, &str)]) -> VlanSet {
    ranges
        .iter()
        .flat_map(|(a, b, w)| (*a..=*b).map(move |v| (v, w.to_string())))
        .collect()
}

/// A result with MACs masked and link names replaced by roles.
pub fn norm_result(res: &Value, roles: &BTreeMap<String, String>) -> Value {
    let mut r = res.clone();
    if let Some(ifs) = r["interfaces"].as_array_mut() {
        for i in ifs {
            if let Some(mac) = i["mac"].as_str() {
                // A malformed MAC stays visible and so never compares equal.
                let ok = mac.len() == 17 && mac.split(':').all(|b| b.len() == 2);
                i["mac"] = json!(if ok {
                    "<mac>".to_string()
                } else {
                    format!("<bad mac {mac}>")
                });
            }
            if let Some(n) = i["name"].as_str() {
                if n.starts_with("veth") {
                    i["name"] = json!(role(roles, n));
                }
            }
        }
    }
    r
}

/// `ip -j addr show` as `address/prefix brd broadcast` strings.
pub fn norm_addrs(addrs: &Value) -> Vec<String> {
    addrs
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().into_iter().flatten())
        .filter(|a| a["scope"] != "link")
        .map(|a| {
            format!(
                "{}/{} brd {}",
                a["local"].as_str().unwrap_or_default(),
                a["prefixlen"],
                a["broadcast"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_vlan_tables() {
        let res = json!({"interfaces": [{"name": "br0"}, {"name": "veth1"}, {"name": "eth0"}]});
        let links = json!([
            {"ifname": "lo"}, {"ifname": "br0"}, {"ifname": "veth1"},
            {"ifname": "br0.100", "link": "veth2"}, {"ifname": "veth2", "link": "br0.100"},
            {"ifname": "veth3", "linkinfo": {"info_kind": "veth"}}
        ]);
        let r = roles("br0", &[("pa".into(), res)], &links);
        let got: Vec<&str> = r.values().map(String::as_str).collect();
        assert_eq!(
            got,
            [
                "br0",
                "br0.100",
                "lo",
                "port:pa",
                "peer:br0.100",
                "unknown:veth"
            ]
        );
        let vlans = json!([
            {"ifname": "veth1", "vlans": [
                {"vlan": 1, "flags": ["PVID", "Egress Untagged"]},
                {"vlan": 200, "vlanEnd": 202}
            ]}
        ]);
        assert_eq!(
            norm_vlans(&vlans, &r),
            BTreeMap::from([(
                "port:pa".to_string(),
                vset(&[(1, 1, "PVID untagged"), (200, 202, "tagged")])
            )])
        );
    }
}
