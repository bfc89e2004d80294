//! The bridge measurements (a), (a'), (b) and (c), ours and reference interleaved.

use std::collections::HashSet;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use super::floor::KernelFloor;
use super::*;
use crate::bridge_worker::Call;
use crate::netns::netns_path;
use crate::plugin::*;
use crate::rss_probe::{probe_rss, RSS_RUNS};
use crate::Res;

// The measurements -----------------------------------------------------------------------------

/// ADD, verification (untimed), DEL of one pod in `pods[0]`; returns (ADD, DEL) times.
pub(crate) fn br_add_del_once(
    side: &mut Side,
    masq: bool,
    id: &str,
    deep: bool,
) -> Res<(Duration, Duration)> {
    let call = side.call(id.to_string(), 0);
    let (stdout, t_add) = side.one("ADD", masq, &call)?;
    let (ip, veth) =
        bridge_result(&stdout, &call.netns).map_err(|e| format!("{}: {e}", side.label))?;
    check_reserved(&side.store(), ip, id)?;
    if deep {
        check_attached(side, 0, ip, &veth)?;
        if masq {
            let rules = cni_nat_rules(side)?;
            let want = format!("-A POSTROUTING -s {ip}/32 ");
            if !rules.iter().any(|r| r.starts_with(&want)) {
                return Err(format!(
                    "{}: no masquerade rule for {ip} after ADD: {rules:?}",
                    side.label
                ));
            }
        }
    }
    let (_, t_del) = side.one("DEL", masq, &call)?;
    if side.store().join(ip.to_string()).exists() {
        return Err(format!("{}: DEL {id} left {ip} reserved", side.label));
    }
    if deep {
        check_clean(side)?;
    }
    Ok((t_add, t_del))
}

pub(crate) fn br_warm_up(side: &mut Side) -> Res<()> {
    for i in 0..BR_WARMUP {
        br_add_del_once(side, false, &format!("warm-{i}"), true)?;
    }
    Ok(())
}

/// Per implementation (index 0 ours, 1 reference): the samples, or the error that stopped it.
pub(crate) type PerSide<T> = [Result<Vec<T>, String>; 2];

/// The per-side samples of a measurement and its per-iteration floor samples.
pub(crate) type Interleaved<T, F> = (PerSide<T>, Vec<F>);

/// One iteration's floor samples: the /bin/true harness baseline (`None` without `true` or
/// when it failed) and the floor (`None` when not measured).
pub(crate) type FloorSample<H, K> = (Option<H>, Option<Res<K>>);

/// The harness baselines, and the floor samples or the first error among them.
pub(crate) fn split_floors<H: Copy, K: Copy>(
    floors: &[FloorSample<H, K>],
) -> (Vec<H>, Res<Vec<K>>) {
    let harness = floors.iter().filter_map(|f| f.0).collect();
    let floor = floors
        .iter()
        .filter_map(|f| f.1.clone())
        .collect::<Res<Vec<K>>>();
    (harness, floor)
}

pub(crate) fn labelled(side: &Side, e: String) -> String {
    if e.starts_with(&format!("{}:", side.label)) {
        e
    } else {
        format!("{}: {e}", side.label)
    }
}

/// The orders the three runners of an iteration take (0 and 1: the sides, 2: the floor): all
/// six, in turn, so that each runs in each place and right after each other one equally often.
const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [1, 2, 0],
    [2, 0, 1],
    [0, 2, 1],
    [2, 1, 0],
    [1, 0, 2],
];

/// Runs `step(side, i)` for i in 0..n on both sides and `floor` (with `sides[0]`'s worker),
/// interleaved in every order in turn ([`ORDERS`]): a DEL's time is mostly the kernel's RCU
/// barrier, whose length depends on what ran just before it (measured: the floor's DEL median
/// 22.0 ms when it always ran before ours, 18.7 ms when always after), so none may keep one
/// place or one predecessor. A side whose step fails stops there (its leftovers are removed)
/// while the other goes on.
pub(crate) fn interleave<T, F>(
    sides: &mut [Side; 2],
    n: usize,
    mut floor: impl FnMut(&mut Side, usize) -> F,
    mut step: impl FnMut(&mut Side, usize) -> Res<T>,
) -> Interleaved<T, F> {
    let mut res: PerSide<T> = [Ok(Vec::with_capacity(n)), Ok(Vec::with_capacity(n))];
    let mut floors = Vec::new();
    for i in 0..n {
        if res.iter().all(Result::is_err) {
            break;
        }
        for &s in &ORDERS[i % ORDERS.len()] {
            if s == 2 {
                floors.push(floor(&mut sides[0], i));
                continue;
            }
            let Ok(samples) = &mut res[s] else {
                continue;
            };
            match step(&mut sides[s], i) {
                Ok(t) => samples.push(t),
                Err(e) => {
                    res[s] = Err(labelled(&sides[s], e));
                    reset_side(&sides[s]);
                }
            }
        }
    }
    (res, floors)
}

/// Applies a final check to every side that has not failed yet.
pub(crate) fn post_check<T>(
    res: &mut PerSide<T>,
    sides: &[Side; 2],
    check: impl Fn(&Side) -> Res<()>,
) {
    for (r, side) in res.iter_mut().zip(sides) {
        if r.is_ok() {
            if let Err(e) = check(side) {
                *r = Err(labelled(side, e));
                reset_side(side);
            }
        }
    }
}

/// (a) and (a'): per side (ADD, DEL) times; harness baseline = two /bin/true execs; floor =
/// `kernel_floor` on `pods[0]` (when given).
pub(crate) fn br_bench_add_del(
    sides: &mut [Side; 2],
    n: usize,
    masq: bool,
    kernel_floor: Option<&KernelFloor>,
) -> Interleaved<(Duration, Duration), FloorSample<Duration, (Duration, Duration)>> {
    let tag = if masq { "m" } else { "a" };
    let (mut res, floor) = interleave(
        sides,
        n,
        |s, i| {
            let harness = true_binary().and_then(|t| {
                let call = s.call(format!("bench-{tag}-{i}"), 0);
                let calls = std::slice::from_ref(&call);
                Some(s.floor(t, calls).ok()? + s.floor(t, calls).ok()?)
            });
            (harness, kernel_floor.map(|k| k.run(s, &[0])))
        },
        |s, i| {
            let deep = i % DEEP_CHECK_EVERY == 0 || i + 1 == n;
            br_add_del_once(s, masq, &format!("bench-{tag}-{i}"), deep)
        },
    );
    post_check(&mut res, sides, |side| {
        check_clean(side)?;
        if masq {
            let rules = cni_nat_rules(side)?;
            if !rules.is_empty() {
                return Err(format!("masquerade rules left after DEL: {rules:?}"));
            }
        }
        Ok(())
    });
    (res, floor)
}

/// (b): per side (ADD wall, DEL wall) per round; harness baseline = 50 concurrent /bin/true;
/// floor = `kernel_floor` on the 50 pods at once.
pub(crate) fn br_bench_parallel(
    sides: &mut [Side; 2],
    kernel_floor: &KernelFloor,
) -> Interleaved<(Duration, Duration), FloorSample<Duration, (Duration, Duration)>> {
    let pods: Vec<usize> = (0..PARALLEL_PODS).collect();
    interleave(
        sides,
        PARALLEL_ROUNDS,
        |s, _| {
            let harness = true_binary().and_then(|t| {
                let calls: Vec<Call> = (0..PARALLEL_PODS)
                    .map(|k| s.call(format!("bench-b-true-{k}"), k))
                    .collect();
                s.floor(t, &calls).ok()
            });
            (harness, Some(kernel_floor.run(s, &pods)))
        },
        br_parallel_round,
    )
}

/// (b) one round for one side: 50 ADDs at once (timed), checks, 50 DELs at once, checks.
/// Returns (ADD wall, DEL wall).
pub(crate) fn br_parallel_round(side: &mut Side, round: usize) -> Res<(Duration, Duration)> {
    let calls: Vec<Call> = (0..PARALLEL_PODS)
        .map(|k| side.call(format!("bench-b-{round}-{k}"), k))
        .collect();
    let add = side.batch("ADD", false, &calls)?;
    let mut ips = HashSet::new();
    let mut veths = HashSet::new();
    for (k, (c, o)) in calls.iter().zip(&add.outs).enumerate() {
        let (ip, veth) =
            bridge_result(&o.stdout, &c.netns).map_err(|e| format!("{}: {e}", side.label))?;
        check_reserved(&side.store(), ip, &c.id)?;
        if round == 0 {
            check_attached(side, k, ip, &veth)?;
        }
        ips.insert(ip);
        veths.insert(veth);
    }
    if ips.len() != PARALLEL_PODS || veths.len() != PARALLEL_PODS {
        return Err(format!(
            "{}: {PARALLEL_PODS} parallel ADDs gave {} distinct IPs and {} distinct host veths",
            side.label,
            ips.len(),
            veths.len()
        ));
    }
    let ports: HashSet<String> = host_links(side, &["master", BR_NAME])?
        .into_iter()
        .collect();
    let host_veths = host_links(side, &["type", "veth"])?;
    if ports != veths || host_veths.len() != PARALLEL_PODS {
        return Err(format!(
            "{}: after {PARALLEL_PODS} ADDs, {BR_NAME} has {} ports ({} of the result veths) and \
             the host {} veths",
            side.label,
            ports.len(),
            ports.intersection(&veths).count(),
            host_veths.len()
        ));
    }
    let n = reservations(&side.store())?;
    if n != PARALLEL_PODS {
        return Err(format!(
            "{}: {n} reservations after {PARALLEL_PODS} ADDs",
            side.label
        ));
    }
    let del = side.batch("DEL", false, &calls)?;
    check_clean(side)?;
    Ok((add.wall, del.wall))
}

/// `ip netns exec <host> cni-bench rss-probe <plugin> <config> [netns]`, in KiB.
fn br_probe(side: &Side, plugin: &Path, config_file: &Path, netns: Option<&str>) -> Res<u64> {
    probe_rss(Some(&side.host_ns), plugin, config_file, netns)
        .map_err(|e| format!("{}: {e}", side.label))
}

/// (c) for one side: (bridge ADD, host-local ADD alone), KiB. The bridge ADD attaches
/// `pods[0]` and is undone with a DEL through the worker; host-local gets a fresh store.
pub(crate) fn br_rss_once(side: &mut Side) -> Res<(u64, u64)> {
    let dir = tempdir("cni-bench-br-rss-")?;
    let config_file = dir.path().join("bridge.json");
    fs::write(&config_file, &side.config).map_err(|e| format!("{}: {e}", config_file.display()))?;
    let netns = netns_path(&side.pods[0]);
    let bridge = br_probe(side, &side.bridge, &config_file, Some(&netns))?;
    // The probe discards the result: check what it left, then undo it.
    let veths = host_links(side, &["master", BR_NAME])?;
    let n = reservations(&side.store())?;
    if veths.len() != 1 || n != 1 {
        return Err(format!(
            "{}: after the probed ADD: {} ports on {BR_NAME}, {n} reservations (want 1 and 1)",
            side.label,
            veths.len()
        ));
    }
    side.one("DEL", false, &side.call("bench-rss".into(), 0))?;
    check_clean(side)?;

    let hl_file = dir.path().join("host-local.json");
    let hl_data = dir.path().join("data");
    fs::write(&hl_file, bridge_config(&hl_data, false))
        .map_err(|e| format!("{}: {e}", hl_file.display()))?;
    let host_local = br_probe(side, &side.host_local, &hl_file, Some(&netns))?;
    check_reserved(
        &hl_data.join(BR_NET),
        Ipv4Addr::new(10, 99, 0, 2),
        "bench-rss",
    )?;
    Ok((bridge, host_local))
}

/// (c): per side (bridge ADD KiB, host-local ADD KiB) per run; harness baseline = the probe on
/// /bin/true; floor = the probe on the static no-op.
pub(crate) fn br_bench_rss(
    sides: &mut [Side; 2],
    noop: &Path,
) -> Res<Interleaved<(u64, u64), FloorSample<u64, u64>>> {
    let dir = tempdir("cni-bench-br-rss-floor-")?;
    let dummy = dir.path().join("config.json");
    fs::write(&dummy, "{}").map_err(|e| format!("{}: {e}", dummy.display()))?;
    Ok(interleave(
        sides,
        RSS_RUNS,
        |s, _| {
            let harness = true_binary().and_then(|t| br_probe(s, t, &dummy, None).ok());
            (harness, Some(br_probe(s, noop, &dummy, None)))
        },
        |s, _| br_rss_once(s),
    ))
}

pub(crate) fn side_failures<T>(failures: &mut Vec<String>, what: &str, res: &PerSide<T>) {
    for r in res {
        if let Err(e) = r {
            failures.push(format!("{what}: {e}"));
        }
    }
}
