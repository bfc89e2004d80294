//! Harness for the black-box `portmap` tests: runs a `portmap` binary (ours
//! or the reference) inside a fake host ([`Netns`]) and reads the host's
//! port-forwarding state back with `iptables-save`/`ip6tables-save`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::netns::{no_output, run_with_timeout, Netns};
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
