//! Harness for the black-box `portmap` tests: runs a `portmap` binary (ours
//! or the reference) inside a fake host ([`Netns`]) and reads the host's
//! port-forwarding state back with `iptables-save`/`ip6tables-save`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::netns::{no_output, run_with_timeout, veth_between, Netns};
use crate::{ours_dir, ref_dir, Output, EXEC_TIMEOUT, PATH};

/// Network name used by the portmap tests.
pub const PM_NET: &str = "pmnet";

/// A `portmap` binary.
#[derive(Debug, Clone)]
pub struct Portmap {
    /// "ours" or "reference".
    pub label: &'static str,
    /// The binary.
    pub path: PathBuf,
}

impl Portmap {
    /// Ours (`CNI_BIN_DIR`, default `target/debug`).
    pub fn ours() -> Portmap {
        let path = ours_dir().join("portmap");
        assert!(
            path.is_file(),
            "our portmap {} not found: cargo build -p cni-portmap (or set CNI_BIN_DIR)",
            path.display()
        );
        Portmap {
            label: "ours",
            path,
        }
    }

    /// The reference v1.1.1 (`REF_CNI_DIR`, default /usr/lib/cni).
    pub fn reference() -> Portmap {
        let path = ref_dir().join("portmap");
        assert!(
            path.is_file(),
            "reference portmap {} not found: install containernetworking-plugins",
            path.display()
        );
        Portmap {
            label: "reference",
            path,
        }
    }

    /// Runs `command` inside `host` with a cleared environment.
    pub fn exec(&self, host: &Netns, command: &str, env: &[(&str, &str)], conf: &Value) -> Output {
        let mut cmd = std::process::Command::new("ip");
        cmd.env_clear()
            .env("PATH", PATH)
            .args(["netns", "exec", host.name()])
            .arg(&self.path)
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", ours_dir());
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_timeout(
            cmd,
            conf.to_string().as_bytes(),
            EXEC_TIMEOUT,
            &format!("{} portmap {command}", self.label),
        )
    }

    fn attachment(
        &self,
        host: &Netns,
        command: &str,
        conf: &Value,
        id: &str,
        netns: Option<&str>,
    ) -> Output {
        let mut env = vec![("CNI_CONTAINERID", id), ("CNI_IFNAME", "eth0")];
        if let Some(n) = netns {
            env.push(("CNI_NETNS", n));
        }
        self.exec(host, command, &env, conf)
    }

    /// ADD: `Ok(result)` or `Err(error JSON)`.
    pub fn add(&self, host: &Netns, conf: &Value, id: &str) -> Result<Value, Value> {
        self.attachment(host, "ADD", conf, id, Some("/run/netns/none"))
            .into_result()
    }

    /// ADD that must succeed.
    #[track_caller]
    pub fn must_add(&self, host: &Netns, conf: &Value, id: &str) -> Value {
        self.add(host, conf, id)
            .unwrap_or_else(|e| panic!("{} portmap ADD failed: {e}\nconf: {conf}", self.label))
    }

    /// DEL (`netns`: the `CNI_NETNS` to give, if any).
    pub fn del(
        &self,
        host: &Netns,
        conf: &Value,
        id: &str,
        netns: Option<&str>,
    ) -> Result<(), Value> {
        let out = self.attachment(host, "DEL", conf, id, netns);
        no_output(out, self.label, "DEL")
    }

    /// DEL that must succeed.
    #[track_caller]
    pub fn must_del(&self, host: &Netns, conf: &Value, id: &str) {
        if let Err(e) = self.del(host, conf, id, Some("/run/netns/none")) {
            panic!("{} portmap DEL failed: {e}\nconf: {conf}", self.label);
        }
    }

    /// CHECK.
    pub fn check(&self, host: &Netns, conf: &Value, id: &str) -> Result<(), Value> {
        let out = self.attachment(host, "CHECK", conf, id, Some("/run/netns/none"));
        no_output(out, self.label, "CHECK")
    }

    /// GC.
    pub fn gc(&self, host: &Netns, conf: &Value) -> Result<(), Value> {
        no_output(self.exec(host, "GC", &[], conf), self.label, "GC")
    }
}

/// A portmap configuration of network [`PM_NET`] with `mappings` in
/// `runtimeConfig.portMappings` and `extra` merged on top.
pub fn pm_conf(version: &str, mappings: Value, extra: Value) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("cniVersion".into(), json!(version));
    m.insert("name".into(), json!(PM_NET));
    m.insert("type".into(), json!("portmap"));
    m.insert("runtimeConfig".into(), json!({ "portMappings": mappings }));
    if let Value::Object(e) = extra {
        m.extend(e);
    }
    Value::Object(m)
}

/// A `prevResult` as a main plugin returns it: `eth0` in a sandbox, with
/// `addrs` on it (and a host-side interface first, which portmap must skip).
/// Before 1.0.0 each address carries its `version`, as main plugins print it.
pub fn prev_result(version: &str, addrs: &[&str]) -> Value {
    let legacy = version.starts_with("0.");
    let ips: Vec<Value> = addrs
        .iter()
        .map(|a| {
            let mut ip = json!({"address": a, "interface": 1});
            if legacy {
                ip["version"] = json!(if a.contains(':') { "6" } else { "4" });
            }
            ip
        })
        .collect();
    json!({
        "cniVersion": version,
        "interfaces": [
            {"name": "cni0", "mac": "02:00:00:00:00:01"},
            {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/x"}
        ],
        "ips": ips,
        "dns": {}
    })
}

/// The host's `nat` table of one family, normalised (see
/// [`Netns::nat_rules`]).
pub fn nat(host: &Netns, v6: bool) -> Vec<String> {
    host.nat_rules(v6)
}

/// Every rule or chain in either family that belongs to an attachment: a
/// `CNI-DN-`/`CNI-SN-` chain or a rule mentioning one.
pub fn attachment_state(host: &Netns) -> Vec<String> {
    let mut v = host.nat_rules(false);
    v.extend(host.nat_rules(true).into_iter().map(|l| format!("v6 {l}")));
    v.into_iter()
        .filter(|l| l.contains("CNI-DN-") || l.contains("CNI-SN-"))
        .collect()
}

/// Waits until `probe` returns true or `within` passes.
pub fn eventually(within: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if probe() {
            return true;
        }
        if start.elapsed() >= within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node's uplink address (IPv4) in [`Uplinked`].
pub const NODE4: &str = "192.168.77.1";
/// The client's address (IPv4) in [`Uplinked`].
pub const CLIENT4: &str = "192.168.77.2";
/// The node's uplink address (IPv6) in [`Uplinked`].
pub const NODE6: &str = "fd77::1";
/// The client's address (IPv6) in [`Uplinked`].
pub const CLIENT6: &str = "fd77::2";

/// A fake node and a client namespace linked by a veth (`up0` – `down0`,
/// [`NODE4`]/[`NODE6`] – [`CLIENT4`]/[`CLIENT6`]), with connection tracking
/// on in the node: a stateful `INPUT` rule per family, as a real node has
/// (kube-proxy, a firewall), and unreplied UDP entries kept 10 minutes so
/// that a slow run cannot see them expire; so are the ICMP entries of
/// [`Uplinked::spray`]'s pings, which the tables compared before and after
/// an ADD hold too (30 s by default).
#[derive(Debug)]
pub struct Uplinked {
    /// The node (where portmap runs).
    pub node: Netns,
    /// The client.
    pub client: Netns,
}

impl Uplinked {
    /// Creates both namespaces.
    pub fn new(tag: &str) -> Uplinked {
        let node = Netns::new(&format!("{tag}n"));
        let client = Netns::new(&format!("{tag}c"));
        veth_between(
            &node,
            "up0",
            Some(&format!("{NODE4}/24")),
            &client,
            "down0",
            Some(&format!("{CLIENT4}/24")),
        );
        node.ip(&["addr", "add", &format!("{NODE6}/64"), "dev", "up0", "nodad"]);
        client.ip(&[
            "addr",
            "add",
            &format!("{CLIENT6}/64"),
            "dev",
            "down0",
            "nodad",
        ]);
        for tool in ["iptables", "ip6tables"] {
            node.accept_established(tool);
        }
        node.sh(&[
            "sh",
            "-c",
            "set -e; for t in udp icmp icmpv6; do echo 600 > /proc/sys/net/netfilter/nf_conntrack_${t}_timeout; done",
        ]);
        Uplinked { node, client }
    }

    /// The node's address of one family.
    pub fn node_addr(v6: bool) -> &'static str {
        if v6 {
            NODE6
        } else {
            NODE4
        }
    }

    /// Sends one UDP datagram from each of `count` client ports, starting
    /// at `first_sport`, to the node's `port` (nothing listens: each leaves
    /// an unreplied entry in the node's table), and checks that the node
    /// now tracks exactly `count` flows from those ports.
    #[track_caller]
    pub fn spray(&self, echo: &str, v6: bool, port: u16, first_sport: u16, count: u16) {
        // Neighbour discovery first, so that no datagram waits for it.
        let addr = Self::node_addr(v6);
        self.client.sh(&["ping", "-c", "1", "-W", "5", addr]);
        let (p, f, c) = (port.to_string(), first_sport.to_string(), count.to_string());
        self.client.sh(&[echo, "spray", addr, &p, &f, &c]);
        let last = u32::from(first_sport) + u32::from(count);
        let mut seen = 0;
        eventually(Duration::from_secs(10), || {
            seen = conntrack_entries(&self.node, v6)
                .iter()
                .filter(|e| {
                    e.starts_with("udp ")
                        && orig_field(e, "dport") == Some(p.as_str())
                        && orig_field(e, "sport")
                            .and_then(|s| s.parse::<u32>().ok())
                            .is_some_and(|s| s >= u32::from(first_sport) && s < last)
                })
                .count();
            seen == usize::from(count)
        });
        assert_eq!(
            seen,
            usize::from(count),
            "[{}] conntrack entries of the UDP flows to {addr} port {port}",
            self.node.name()
        );
    }
}

/// The conntrack table of one family in `ns` (`conntrack -L`), one line
/// per entry without what differs from run to run (the timeout, `use=`,
/// ICMP `id=`), sorted:
/// e.g. `udp 17 src=192.168.77.2 dst=192.168.77.1 sport=40000 dport=5353
/// [UNREPLIED] src=… mark=0`.
pub fn conntrack_entries(ns: &Netns, v6: bool) -> Vec<String> {
    let family = if v6 { "ipv6" } else { "ipv4" };
    let out = ns.sh(&["conntrack", "-L", "-f", family]);
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .enumerate()
                .filter(|(i, t)| *i != 2 && !t.starts_with("use=") && !t.starts_with("id="))
                .map(|(_, t)| t)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    v.sort();
    v
}

/// The first (original direction) `key=value` of a [`conntrack_entries`]
/// line.
pub fn orig_field<'a>(entry: &'a str, key: &str) -> Option<&'a str> {
    entry
        .split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}
