//! The bridge floor: the kernel work of one pod's ADD and DEL, issued by `ip -batch` with no
//! checks and no IPAM store, with as many process starts as ours (2 per ADD: bridge and the
//! host-local it execs; 2 per DEL).
//!
//! ADD: `ip -batch` in the fake host (veth with its peer created in the pod as eth0, master
//! cbr0, up), then `ip -n <pod> -batch` (eth0 up, address, default route). DEL: `ip -n <pod>
//! link del eth0` (the pair goes, as in ours), then the static no-op for the IPAM exec. Both
//! run through the fake host's worker, the ADD chains of all pods at once, as ours' batches.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::bridge_worker::Batch;
use crate::plugin::{find_on_path, tempdir};
use crate::Res;

/// First address the floor gives its pods (10.99.200.1 onwards, far from host-local's).
const FLOOR_HOST_BASE: u8 = 200;

#[derive(Debug)]
pub(crate) struct KernelFloor {
    /// Holds the batch files.
    dir: tempfile::TempDir,
    ip: PathBuf,
    noop: PathBuf,
}

impl KernelFloor {
    pub(crate) fn new(noop: PathBuf) -> Res<KernelFloor> {
        let ip = find_on_path("ip").ok_or("ip (iproute2) not found on PATH")?;
        Ok(KernelFloor {
            dir: tempdir("cni-bench-br-floor-")?,
            ip,
            noop,
        })
    }

    fn file(&self, name: &str, lines: &[String]) -> Res<String> {
        let path = self.dir.path().join(name);
        if !path.exists() {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(path.to_string_lossy().into_owned())
    }

    fn add_chain(&self, side: &Side, pod: usize) -> Res<Vec<Vec<String>>> {
        let ns = &side.pods[pod];
        let veth = format!("vflr{pod}");
        let addr = format!(
            "10.99.{}.{}/{BR_SUBNET_PREFIX}",
            usize::from(FLOOR_HOST_BASE) + pod / 250,
            pod % 250 + 1
        );
        let host = self.file(
            &format!("add-host-{pod}"),
            &[
                format!("link add {veth} type veth peer name {IFNAME} netns {ns}"),
                format!("link set {veth} master {BR_NAME}"),
                format!("link set {veth} up"),
            ],
        )?;
        let inside = self.file(
            &format!("add-pod-{pod}"),
            &[
                format!("link set {IFNAME} up"),
                format!("addr add {addr} dev {IFNAME}"),
                format!("route add default via {BR_GATEWAY} dev {IFNAME}"),
            ],
        )?;
        let ip = self.ip.to_string_lossy().into_owned();
        Ok(vec![
            vec![ip.clone(), "-batch".into(), host],
            vec![ip, "-n".into(), ns.clone(), "-batch".into(), inside],
        ])
    }

    fn del_chain(&self, side: &Side, pod: usize) -> Vec<Vec<String>> {
        let ip = self.ip.to_string_lossy().into_owned();
        vec![
            vec![
                ip,
                "-n".into(),
                side.pods[pod].clone(),
                "link".into(),
                "del".into(),
                IFNAME.into(),
            ],
            vec![self.noop.to_string_lossy().into_owned()],
        ]
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
        format!(
            "`{ip} -batch` in the fake host (`link add vflrN type veth peer name {IFNAME} netns \
             <pod>`, `link set vflrN master {BR_NAME}`, `link set vflrN up`), then `{ip} -n <pod> \
             -batch` ({IFNAME} up, its address, the default route) for an ADD; `{ip} -n <pod> link \
             del {IFNAME}`, then the static no-op `{noop}` for a DEL. Two process starts each, as \
             ours (bridge, and the host-local it execs), in the fake host of ours, interleaved \
             with the measured iterations. Note that `ip` is dynamically linked and `ip -n` also \
             remounts /sys in a mount namespace of its own, so this floor is somewhat above the \
             kernel's own cost",
            ip = self.ip.display(),
            noop = self.noop.display()
        )
    }
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
