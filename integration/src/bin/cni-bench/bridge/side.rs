//! One implementation under test in the bridge bench, and the checks of what it left in the
//! namespaces.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;
use crate::bridge_worker::{Batch, Call, Worker};
use crate::netns::netns_path;
use crate::plugin::*;
use crate::Res;

// One implementation under test ----------------------------------------------------------------

#[derive(Debug)]
pub(crate) struct Side {
    pub(crate) label: &'static str,
    pub(crate) dir: PathBuf,
    pub(crate) bridge: PathBuf,
    pub(crate) host_local: PathBuf,
    pub(crate) host_ns: String,
    /// Container netns names; `pods[0]` also serves (a) and (c).
    pub(crate) pods: Vec<String>,
    pub(crate) data: tempfile::TempDir,
    pub(crate) config: String,
    pub(crate) masq_config: String,
    pub(crate) worker: Worker,
}

impl Side {
    pub(crate) fn store(&self) -> PathBuf {
        self.data.path().join(BR_NET)
    }

    pub(crate) fn call(&self, id: String, pod: usize) -> Call {
        Call {
            id,
            netns: netns_path(&self.pods[pod]),
        }
    }

    /// Runs a batch of bridge calls; fails unless every call succeeded.
    pub(crate) fn batch(&mut self, cmd: &str, masq: bool, calls: &[Call]) -> Res<Batch> {
        let config = if masq {
            &self.masq_config
        } else {
            &self.config
        };
        let b = self
            .worker
            .run(&self.bridge, cmd, config, &self.dir, calls)
            .map_err(|e| format!("{}: {e}", self.label))?;
        for (c, o) in calls.iter().zip(&b.outs) {
            if !o.ok {
                return Err(describe_failure(&self.bridge, cmd, &c.id, o));
            }
        }
        Ok(b)
    }

    /// One bridge call; returns its stdout and exec → exit time.
    pub(crate) fn one(&mut self, cmd: &str, masq: bool, call: &Call) -> Res<(Vec<u8>, Duration)> {
        let mut b = self.batch(cmd, masq, std::slice::from_ref(call))?;
        let out = b.outs.pop().ok_or("empty batch")?;
        Ok((out.stdout, b.wall))
    }

    /// The same batch with /bin/true in place of the plugin: the harness baseline.
    pub(crate) fn floor(&mut self, true_bin: &Path, calls: &[Call]) -> Res<Duration> {
        let b = self
            .worker
            .run(true_bin, "ADD", &self.config, &self.dir, calls)?;
        Ok(b.wall)
    }
}

/// `ip <args>`; its stdout, or an error with its stderr.
pub(crate) fn run_ip(args: &[&str]) -> Res<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("spawn ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Link names from `ip -o link show` output (`5: vethab12cd34@if2: <...`).
pub(crate) fn link_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

pub(crate) fn host_links(side: &Side, filter: &[&str]) -> Res<Vec<String>> {
    let mut args = vec!["-n", side.host_ns.as_str(), "-o", "link", "show"];
    args.extend_from_slice(filter);
    Ok(link_names(&run_ip(&args)?))
}

/// What a bridge ADD result must say: one address in 10.99.0.0/16 with gateway 10.99.0.1, and
/// interfaces [cbr0, host veth, eth0 in `netns`]. Returns the address and the host veth name.
pub(crate) fn bridge_result(stdout: &[u8], netns: &str) -> Res<(Ipv4Addr, String)> {
    let v: serde_json::Value = serde_json::from_slice(stdout).map_err(|e| {
        format!(
            "ADD result is not JSON ({e}): {}",
            String::from_utf8_lossy(stdout)
        )
    })?;
    let ip = result_ip(stdout)?;
    let ip0 = &v["ips"][0];
    let prefix = ip0["address"]
        .as_str()
        .and_then(|a| a.split_once('/'))
        .and_then(|(_, p)| p.parse::<u8>().ok());
    let net = u32::from(ip) >> (32 - u32::from(BR_SUBNET_PREFIX));
    if prefix != Some(BR_SUBNET_PREFIX) || net != u32::from(BR_GATEWAY) >> 16 {
        return Err(format!("ADD result address is not in 10.99.0.0/16: {v}"));
    }
    if ip0["gateway"].as_str() != Some("10.99.0.1") {
        return Err(format!("ADD result gateway is not 10.99.0.1: {v}"));
    }
    let ifs = v["interfaces"]
        .as_array()
        .ok_or_else(|| format!("ADD result has no interfaces[]: {v}"))?;
    let name = |i: usize| ifs.get(i).and_then(|x| x["name"].as_str());
    if ifs.len() != 3
        || name(0) != Some(BR_NAME)
        || name(2) != Some(IFNAME)
        || ifs[2]["sandbox"].as_str() != Some(netns)
        || !ifs[1]["sandbox"].is_null()
    {
        return Err(format!(
            "ADD result interfaces should be [{BR_NAME}, host veth, {IFNAME} in {netns}]: {v}"
        ));
    }
    let veth = name(1).unwrap_or("").to_string();
    if veth.is_empty() {
        return Err(format!("ADD result host veth has no name: {v}"));
    }
    Ok((ip, veth))
}

/// Checks inside the namespaces that `pod` has eth0 with `ip`/16, and that `veth` is a port of
/// cbr0 in the fake host, which holds the gateway address.
pub(crate) fn check_attached(side: &Side, pod: usize, ip: Ipv4Addr, veth: &str) -> Res<()> {
    let want = format!("inet {ip}/{BR_SUBNET_PREFIX} ");
    let addrs = run_ip(&[
        "-n",
        &side.pods[pod],
        "-o",
        "-4",
        "addr",
        "show",
        "dev",
        IFNAME,
    ])?;
    if !addrs.contains(&want) {
        return Err(format!(
            "{}: {IFNAME} in {} lacks {ip}/{BR_SUBNET_PREFIX}: {}",
            side.label,
            side.pods[pod],
            addrs.trim()
        ));
    }
    let ports = host_links(side, &["master", BR_NAME])?;
    if !ports.iter().any(|p| p == veth) {
        return Err(format!(
            "{}: host veth {veth} is not a port of {BR_NAME} (ports {ports:?})",
            side.label
        ));
    }
    let gw = run_ip(&[
        "-n",
        &side.host_ns,
        "-o",
        "-4",
        "addr",
        "show",
        "dev",
        BR_NAME,
    ])?;
    if !gw.contains(&format!("inet {BR_GATEWAY}/{BR_SUBNET_PREFIX} ")) {
        return Err(format!(
            "{}: {BR_NAME} lacks {BR_GATEWAY}/{BR_SUBNET_PREFIX}: {}",
            side.label,
            gw.trim()
        ));
    }
    Ok(())
}

/// Checks that the fake host has no veth left and the store no reservation.
pub(crate) fn check_clean(side: &Side) -> Res<()> {
    let veths = host_links(side, &["type", "veth"])?;
    if !veths.is_empty() {
        return Err(format!(
            "{}: {} veths left in the host, e.g. {:?}",
            side.label,
            veths.len(),
            &veths[..veths.len().min(5)]
        ));
    }
    let store = side.store();
    if store.exists() {
        let n = reservations(&store)?;
        if n != 0 {
            return Err(format!("{}: {n} reservations left", side.label));
        }
    }
    Ok(())
}

/// After a failed measurement: removes leftover veths and reservations so that the next
/// measurement starts clean (and so that its checks do not report the same failure again).
pub(crate) fn reset_side(side: &Side) {
    if let Ok(veths) = host_links(side, &["type", "veth"]) {
        for v in veths {
            let _ = run_ip(&["-n", &side.host_ns, "link", "del", &v]);
        }
    }
    if let Ok(entries) = fs::read_dir(side.store()) {
        for e in entries.flatten() {
            if e.file_name()
                .to_str()
                .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok())
            {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The `iptables -t nat -S` lines of a fake host that mention a CNI chain.
pub(crate) fn cni_nat_rules(side: &Side) -> Res<Vec<String>> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &side.host_ns,
            "iptables",
            "-t",
            "nat",
            "-S",
        ])
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        )
        .output()
        .map_err(|e| format!("ip netns exec iptables: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables -t nat -S in {} failed: {}",
            side.host_ns,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("CNI-"))
        .map(str::to_string)
        .collect())
}
