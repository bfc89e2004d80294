//! The bridge floor: the kernel work of one pod's ADD and DEL with no checks, no sysctls and no
//! IPAM store, with as many process starts as ours (2 per ADD: bridge and the host-local it
//! execs; 2 per DEL), run through the fake host's worker (the chains of all pods at once, as
//! ours' batches).
//!
//! With `<ours>/examples/bridge-floor` (cni-bridge's example, built static next to the plugins
//! by `scripts/build-plugins --bench-floor`): that helper, which issues the work through
//! cni-bridge's own netlink and namespace code (ADD: veth with its peer created as eth0 in the
//! pod, master cbr0, up; in the pod: eth0 up, address, default route. DEL: eth0 deleted in the
//! pod), then the static no-op in place of the IPAM exec. Without it: `ip -batch` in the fake
//! host, then `ip -n <pod> -batch` for an ADD; `ip link del` of the host end, then the no-op,
//! for a DEL (iproute2 is dynamically linked and `ip -n` remounts /sys, so that floor is high).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::bridge_worker::Batch;
use crate::netns::netns_path;
use crate::plugin::{find_on_path, is_executable, tempdir};
use crate::Res;

/// The floor's pods get 10.99.200.1 onwards, far from host-local's allocations.
const FLOOR_HOST_BASE: usize = 200;

/// What issues the kernel work.
#[derive(Debug)]
enum Tool {
    /// cni-bridge's example `bridge-floor`.
    Helper(PathBuf),
    /// iproute2's `ip`, and a directory for its batch files.
    Ip(PathBuf, tempfile::TempDir),
}

#[derive(Debug)]
pub(crate) struct KernelFloor {
    tool: Tool,
    noop: PathBuf,
}

impl KernelFloor {
    /// The helper in `<ours>/examples` when it was built, else `ip`.
    pub(crate) fn new(ours: &Path, noop: PathBuf) -> Res<KernelFloor> {
        let helper = ours.join("examples").join("bridge-floor");
        let tool = if is_executable(&helper) {
            Tool::Helper(helper)
        } else {
            let ip = find_on_path("ip").ok_or("ip (iproute2) not found on PATH")?;
            Tool::Ip(ip, tempdir("cni-bench-br-floor-")?)
        };
        Ok(KernelFloor { tool, noop })
    }

    fn noop(&self) -> Vec<String> {
        vec![self.noop.to_string_lossy().into_owned()]
    }

    fn add_chain(&self, side: &Side, pod: usize) -> Res<Vec<Vec<String>>> {
        let ns = &side.pods[pod];
        let veth = format!("vflr{pod}");
        let addr = format!(
            "10.99.{}.{}/{BR_SUBNET_PREFIX}",
            FLOOR_HOST_BASE + pod / 250,
            pod % 250 + 1
        );
        let first = match &self.tool {
            Tool::Helper(helper) => vec![
                helper.to_string_lossy().into_owned(),
                "add".into(),
                netns_path(ns),
                veth,
                BR_NAME.into(),
                addr,
                BR_GATEWAY.to_string(),
            ],
            Tool::Ip(ip, dir) => {
                let host = batch_file(
                    dir.path(),
                    &format!("add-host-{pod}"),
                    &[
                        format!("link add {veth} type veth peer name {IFNAME} netns {ns}"),
                        format!("link set {veth} master {BR_NAME}"),
                        format!("link set {veth} up"),
                    ],
                )?;
                let inside = batch_file(
                    dir.path(),
                    &format!("add-pod-{pod}"),
                    &[
                        format!("link set {IFNAME} up"),
                        format!("addr add {addr} dev {IFNAME}"),
                        format!("route add default via {BR_GATEWAY} dev {IFNAME}"),
                    ],
                )?;
                let ip = ip.to_string_lossy().into_owned();
                return Ok(vec![
                    vec![ip.clone(), "-batch".into(), host],
                    vec![ip, "-n".into(), ns.clone(), "-batch".into(), inside],
                ]);
            }
        };
        Ok(vec![first, self.noop()])
    }

    fn del_chain(&self, side: &Side, pod: usize) -> Vec<Vec<String>> {
        let first = match &self.tool {
            Tool::Helper(helper) => vec![
                helper.to_string_lossy().into_owned(),
                "del".into(),
                netns_path(&side.pods[pod]),
            ],
            Tool::Ip(ip, _) => vec![
                ip.to_string_lossy().into_owned(),
                "link".into(),
                "del".into(),
                format!("vflr{pod}"),
            ],
        };
        vec![first, self.noop()]
    }

    /// ADD of `pods` (all at once), then their DEL; returns (ADD wall, DEL wall). On failure,
    /// removes what is left so that the next measurement starts clean.
    pub(crate) fn run(&self, side: &mut Side, pods: &[usize]) -> Res<(Duration, Duration)> {
        let r = self.run_inner(side, pods);
        if r.is_err() {
            reset_side(side);
        }
        r.map_err(|e| format!("floor: {e}"))
    }

    fn run_inner(&self, side: &mut Side, pods: &[usize]) -> Res<(Duration, Duration)> {
        let adds = pods
            .iter()
            .map(|&k| self.add_chain(side, k))
            .collect::<Res<Vec<_>>>()?;
        let dels: Vec<_> = pods.iter().map(|&k| self.del_chain(side, k)).collect();
        let add = checked(side.worker.run_chains(&adds)?)?;
        let del = checked(side.worker.run_chains(&dels)?)?;
        Ok((add.wall, del.wall))
    }

    /// What the floor is, for the notes under the table.
    pub(crate) fn describe(&self) -> String {
        let noop = self.noop.display();
        match &self.tool {
            Tool::Helper(helper) => format!(
                "`{}` (cni-bridge's example, static, through cni-bridge's own netlink and \
                 namespace code): for an ADD, veth vflrN with its peer created as {IFNAME} in \
                 the pod, master {BR_NAME}, up, then in the pod {IFNAME} up, its address and the \
                 default route; for a DEL, {IFNAME} deleted in the pod. Each followed by the \
                 static no-op `{noop}` in place of the IPAM exec: two process starts per call, as \
                 ours (bridge, and the host-local it execs), in the fake host of ours, \
                 interleaved with the measured iterations",
                helper.display()
            ),
            Tool::Ip(ip, _) => format!(
                "`{ip} -batch` in the fake host (`link add vflrN type veth peer name {IFNAME} \
                 netns <pod>`, `link set vflrN master {BR_NAME}`, `link set vflrN up`), then \
                 `{ip} -n <pod> -batch` ({IFNAME} up, its address, the default route) for an \
                 ADD; `{ip} link del vflrN`, then the static no-op `{noop}`, for a DEL. Two \
                 process starts each, as ours, in the fake host of ours, interleaved with the \
                 measured iterations. `ip` is dynamically linked and `ip -n` also remounts /sys \
                 in a mount namespace of its own, so this floor is above the kernel's own cost \
                 (build cni-bridge's example bridge-floor, `scripts/build-plugins \
                 --bench-floor`, for the tighter one)",
                ip = ip.display()
            ),
        }
    }
}

/// Writes `lines` to `<dir>/<name>` once; returns its path.
fn batch_file(dir: &Path, name: &str, lines: &[String]) -> Res<String> {
    let path = dir.join(name);
    if !path.exists() {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(path.to_string_lossy().into_owned())
}

fn checked(b: Batch) -> Res<Batch> {
    match b.outs.iter().find(|o| !o.ok) {
        Some(o) => Err(format!(
            "{}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        None => Ok(b),
    }
}
