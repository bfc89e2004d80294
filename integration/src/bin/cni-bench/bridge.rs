//! `cni-bench bridge`: our bridge (+ host-local IPAM) against the reference.
//!
//! `cni-bench bridge [--ours DIR] [--ref DIR] [--iterations N] [--masq-iterations M]`
//!
//! Each DIR holds `bridge` and `host-local` of one implementation; its plugins run with
//! CNI_PATH=DIR, so our bridge delegates to our host-local and the reference to the reference.
//!
//! Isolation: everything happens in network namespaces this run creates and deletes:
//! - `cnibench-<pid>-host-ours` and `cnibench-<pid>-host-ref`: one fake host per implementation,
//!   each with its own bridge `cbr0` (10.99.0.1/16 once the first ADD ran) and its own dataDir;
//! - `cnibench-<pid>-c<N>`: container namespaces, c0..c49 for ours and c50..c99 for the
//!   reference (c0 / c50 also serve the one-pod measurements).
//!
//! The plugins run inside the fake host without an extra exec per call: a worker (this binary,
//! `cni-bench bridge-worker`) is started once per implementation with `ip netns exec <host>`,
//! and spawns the plugin batches it is sent over a pipe, timing them itself (exec → exit). So
//! the timed path is the same fork/exec/wait as in the host-local bench; the harness baseline is
//! the same batch with /bin/true as the plugin. (`setns` in a pre-exec hook would need unsafe
//! code, and nix's `sched` feature is not enabled here.) Nothing is created in the real host
//! netns: the worker, the plugins and every verification `ip -n <ns>` run against the fake
//! hosts or containers.
//!
//! The namespaces are registered before creation and deleted by a guard on every return path,
//! by a signal thread on SIGINT/SIGTERM/SIGHUP, and namespaces left by an earlier run that was
//! killed (`cnibench-<pid>-*` whose pid is no longer a cni-bench) are deleted at start.
//!
//! Measurements, ours, the reference and the floor interleaved (the iterations cycle through
//! all six orders of the three, so each runs in each place and after each other one equally
//! often):
//! - (a) ADD then DEL of one pod (same container netns and ifname), exec → exit of each, summed;
//!   median and p90 over N; and the same with ipMasq on over M iterations (iptables rules in the
//!   fake host);
//! - (b) 50 ADDs spawned at once into 50 pre-created container netns, wall time until all have
//!   exited; then 50 distinct IPs, 50 host veths all enslaved to cbr0 and 50 reservations are
//!   checked (round 0 also checks each container's eth0 address), all DELs run (untimed, shown
//!   for information), and no veth or reservation may be left; median of 6 rounds, one per
//!   order;
//! - (c) peak RSS of one bridge ADD via the rss-probe re-exec (run in the fake host). The probe
//!   reports getrusage(RUSAGE_CHILDREN).ru_maxrss: the kernel folds into a reaped process's
//!   figure the peak of every descendant it waited for, so this is max(bridge, the host-local
//!   it exec'd and waited for) — the larger of the two peaks, not their sum. host-local ADD
//!   alone is probed too, so when the bridge figure is above it, it is the bridge's own peak.
//!
//! The floor (the closing table; see floor.rs): for (a) and (b), the same kernel work through
//! cni-bridge's netlink code (or `ip -batch`) with no checks and no IPAM store and as many
//! process starts, on the pods of ours in the fake host of ours, before each iteration /
//! round; for (c), the static no-op under the same probe.

pub(crate) mod floor;
pub(crate) mod measure;
pub(crate) mod side;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bridge_worker::Worker;
use crate::netns::*;
use crate::plugin::*;
use crate::report::*;
use crate::rss_probe::RSS_RUNS;
use crate::Res;
use floor::KernelFloor;
use measure::*;
use side::*;

pub(crate) const BR_NET: &str = "benchnet";
pub(crate) const BR_NAME: &str = "cbr0";
pub(crate) const BR_SUBNET_PREFIX: u8 = 16;
pub(crate) const BR_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub(crate) const BR_DEFAULT_ITERATIONS: usize = 100;
pub(crate) const PARALLEL_PODS: usize = 50;
/// One round per order of the three runners (see `measure::ORDERS`): each
/// batch runs after each other one's DELs equally often.
pub(crate) const PARALLEL_ROUNDS: usize = 6;
pub(crate) const BR_WARMUP: usize = 3;
/// Verify the attachment inside the namespaces (not only the result) every this many
/// iterations of (a), between the timed ADD and DEL.
pub(crate) const DEEP_CHECK_EVERY: usize = 25;
#[derive(Debug)]
pub(crate) struct BridgeOpts {
    pub(crate) ours: PathBuf,
    pub(crate) reference: PathBuf,
    pub(crate) iterations: usize,
    pub(crate) masq_iterations: usize,
}

pub(crate) fn parse_bridge_opts(args: &[OsString]) -> Res<BridgeOpts> {
    let mut opts = BridgeOpts {
        ours: workspace_release_dir(),
        reference: PathBuf::from("/usr/lib/cni"),
        iterations: BR_DEFAULT_ITERATIONS,
        masq_iterations: 0,
    };
    let mut masq = None;
    for_each_option(args, |name, value| {
        match name {
            "--ours" => opts.ours = PathBuf::from(value()?),
            "--ref" => opts.reference = PathBuf::from(value()?),
            "--iterations" => opts.iterations = parse_count(name, &value()?)?,
            "--masq-iterations" => {
                let v = value()?;
                masq = Some(
                    v.to_str()
                        .and_then(|s| s.parse::<usize>().ok())
                        .ok_or_else(|| format!("{name}: expected an integer, got {v:?}"))?,
                );
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    opts.masq_iterations = masq.unwrap_or_else(|| opts.iterations.div_ceil(4));
    Ok(opts)
}

pub(crate) fn bridge_config(data_dir: &Path, masq: bool) -> String {
    serde_json::json!({
        "cniVersion": CNI_VERSION,
        "name": BR_NET,
        "type": "bridge",
        "bridge": BR_NAME,
        "isGateway": true,
        "ipMasq": masq,
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir.to_string_lossy(),
            "ranges": [[{ "subnet": "10.99.0.0/16" }]],
        },
    })
    .to_string()
}

pub(crate) fn bridge(args: &[OsString]) -> Res<bool> {
    let opts = parse_bridge_opts(args)?;
    let _ = START.get_or_init(Instant::now);
    // Before any thread exists, so that every later thread inherits the blocked mask.
    install_signal_cleanup()?;
    raise_nofile_limit();
    delete_stale_namespaces();
    let guard = NamespaceGuard;
    let result = bridge_run(&opts);
    // The workers are gone by now (dropped in bridge_run); delete the namespaces.
    drop(guard);
    result
}

/// A floor that could not be measured is a failure of the run.
fn floor_failure<K>(failures: &mut Vec<String>, what: &str, floor: &Res<Vec<K>>) {
    if let Err(e) = floor {
        failures.push(format!("{what}: {e}"));
    }
}

fn make_side(
    label: &'static str,
    which: &str,
    dir: &Path,
    host_ns: String,
    pods: Vec<String>,
) -> Res<Side> {
    let bridge = plugin_path(dir, "bridge", which)?;
    let host_local = plugin_path(dir, "host-local", which)?;
    let dir = bridge
        .parent()
        .ok_or("plugin without a directory")?
        .to_path_buf();
    let data = tempdir(&format!("cni-bench-br-{label}-"))?;
    let config = bridge_config(data.path(), false);
    let masq_config = bridge_config(data.path(), true);
    let worker = Worker::start(&host_ns)?;
    Ok(Side {
        label,
        dir,
        bridge,
        host_local,
        host_ns,
        pods,
        data,
        config,
        masq_config,
        worker,
    })
}

pub(crate) fn bridge_run(opts: &BridgeOpts) -> Res<bool> {
    let started = *START.get_or_init(Instant::now);
    // Resolve both implementations before creating anything.
    for (dir, which) in [(&opts.ours, "our"), (&opts.reference, "reference")] {
        plugin_path(dir, "bridge", which)?;
        plugin_path(dir, "host-local", which)?;
    }
    let noop = static_noop()?;
    let kernel_floor = KernelFloor::new(&opts.ours, noop.clone())?;
    let pid = std::process::id();
    let host_o = format!("{NS_PREFIX}-{pid}-host-ours");
    let host_r = format!("{NS_PREFIX}-{pid}-host-ref");
    let pods: Vec<String> = (0..2 * PARALLEL_PODS)
        .map(|n| format!("{NS_PREFIX}-{pid}-c{n}"))
        .collect();
    let mut all = vec![host_o.clone(), host_r.clone()];
    all.extend(pods.iter().cloned());
    progress(&format!(
        "creating {} network namespaces {NS_PREFIX}-{pid}-*",
        all.len()
    ));
    create_namespaces(&all)?;
    let mut sides = [
        make_side(
            "ours",
            "our",
            &opts.ours,
            host_o,
            pods[..PARALLEL_PODS].to_vec(),
        )?,
        make_side(
            "ref",
            "reference",
            &opts.reference,
            host_r,
            pods[PARALLEL_PODS..].to_vec(),
        )?,
    ];

    let mut rows: Vec<Row> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut floor_table = FloorTable::default();

    // Warm the page cache, create each bridge, and check everything end to end.
    for side in sides.iter_mut() {
        if let Err(e) = br_warm_up(side) {
            failures.push(format!("warm-up: {}", labelled(side, e)));
            reset_side(side);
        }
    }

    // (a) ADD+DEL of one pod.
    progress(&format!(
        "(a) {} × bridge ADD+DEL per implementation",
        opts.iterations
    ));
    let (a, floors) = br_bench_add_del(&mut sides, opts.iterations, false, Some(&kernel_floor));
    side_failures(&mut failures, "(a)", &a);
    let [ao, ar] = &a;
    let (floor, kernel) = split_floors(&floors);
    floor_failure(&mut failures, "(a)", &kernel);
    floor_table.push_pairs(
        "(a)",
        "one pod, exec→exit",
        kernel.as_deref().ok(),
        ao.as_deref().ok(),
        ar.as_deref().ok(),
    );
    time_row(
        &mut rows,
        "(a) ADD+DEL one pod, exec→exit, median".into(),
        side_stat(ao, |v| median(&sum_pairs(v))),
        side_stat(ar, |v| median(&sum_pairs(v))),
    );
    time_row(
        &mut rows,
        "(a) ADD+DEL one pod, exec→exit, p90".into(),
        side_stat(ao, |v| percentile(&sum_pairs(v), 90)),
        side_stat(ar, |v| percentile(&sum_pairs(v), 90)),
    );
    time_row(
        &mut rows,
        "(a) ADD alone, median (info)".into(),
        side_stat(ao, |v| median(&firsts(v))),
        side_stat(ar, |v| median(&firsts(v))),
    );
    time_row(
        &mut rows,
        "(a) DEL alone, median (info)".into(),
        side_stat(ao, |v| median(&seconds(v))),
        side_stat(ar, |v| median(&seconds(v))),
    );
    if !floor.is_empty() {
        notes.push(format!(
            "(a) harness baseline: the same two execs of /bin/true in the fake host take {} median, \
             {} p90",
            fmt_dur(median(&floor)),
            fmt_dur(percentile(&floor, 90))
        ));
    }
    // The speed issue's goal; the pair row is the last `push_pairs` added.
    targets.push(floor_target("(a) ADD+DEL", floor_table.rows.last(), 1.0));

    // (a') The same with ipMasq.
    if opts.masq_iterations > 0 {
        progress(&format!(
            "(a') {} × bridge ADD+DEL with ipMasq per implementation",
            opts.masq_iterations
        ));
        let (m, _) = br_bench_add_del(&mut sides, opts.masq_iterations, true, None);
        side_failures(&mut failures, "(a') ipMasq", &m);
        let [mo, mr] = &m;
        time_row(
            &mut rows,
            format!(
                "(a') ADD+DEL one pod, ipMasq (iptables), median of {} (info)",
                opts.masq_iterations
            ),
            side_stat(mo, |v| median(&sum_pairs(v))),
            side_stat(mr, |v| median(&sum_pairs(v))),
        );
    }

    // (b) 50 pods in parallel.
    progress(&format!(
        "(b) {PARALLEL_ROUNDS} rounds × {PARALLEL_PODS} parallel bridge ADDs per implementation"
    ));
    let (b, floors) = br_bench_parallel(&mut sides, &kernel_floor);
    side_failures(&mut failures, "(b)", &b);
    let [bo, br] = &b;
    let (floor, kernel) = split_floors(&floors);
    floor_failure(&mut failures, "(b)", &kernel);
    let pick = |r: &Res<Vec<(Duration, Duration)>>,
                f: fn(&[(Duration, Duration)]) -> Vec<Duration>| {
        r.as_deref().ok().map(f)
    };
    for (what, f) in [
        (
            format!("(b) {PARALLEL_PODS} pods attached in parallel, wall"),
            firsts as fn(&_) -> _,
        ),
        (
            format!("(b) their {PARALLEL_PODS} parallel DELs, wall"),
            seconds,
        ),
    ] {
        floor_table.rows.push(FloorRow::time(
            what,
            pick(&kernel, f).as_deref(),
            pick(bo, f).as_deref(),
            pick(br, f).as_deref(),
        ));
    }
    time_row(
        &mut rows,
        format!("(b) {PARALLEL_PODS} pods attached in parallel, wall, median of {PARALLEL_ROUNDS}"),
        side_stat(bo, |v| median(&firsts(v))),
        side_stat(br, |v| median(&firsts(v))),
    );
    time_row(
        &mut rows,
        format!("(b) their {PARALLEL_PODS} parallel DELs, wall, median (untimed part, info)"),
        side_stat(bo, |v| median(&seconds(v))),
        side_stat(br, |v| median(&seconds(v))),
    );
    if !floor.is_empty() {
        notes.push(format!(
            "(b) harness baseline: {PARALLEL_PODS} concurrent /bin/true in the fake host take {} \
             median",
            fmt_dur(median(&floor))
        ));
    }
    // The speed issue's goal; the attach row is the second last pushed.
    let rows_now = floor_table.rows.len();
    let attach = rows_now
        .checked_sub(2)
        .and_then(|i| floor_table.rows.get(i));
    targets.push(floor_target("(b) parallel ADDs", attach, 0.9));

    // (c) Peak RSS.
    progress(&format!(
        "(c) {RSS_RUNS} × peak RSS of one bridge ADD and one host-local ADD per implementation"
    ));
    let rss_what = "(c) peak RSS of one bridge ADD".to_string();
    match br_bench_rss(&mut sides, &noop) {
        Ok((c, floors)) => {
            side_failures(&mut failures, "(c)", &c);
            let [co, cr] = &c;
            let (floor, kernel) = split_floors(&floors);
            floor_failure(&mut failures, "(c)", &kernel);
            floor_table.rows.push(FloorRow::kib(
                rss_what,
                kernel.as_deref().ok(),
                side_stat(co, firsts).as_deref(),
                side_stat(cr, firsts).as_deref(),
            ));
            let (bo, br) = (
                side_stat(co, |v| median_u64(&firsts(v))),
                side_stat(cr, |v| median_u64(&firsts(v))),
            );
            let (ho, hr) = (
                side_stat(co, |v| median_u64(&seconds(v))),
                side_stat(cr, |v| median_u64(&seconds(v))),
            );
            let ra = kib_row(
                &mut rows,
                format!(
                    "(c) peak RSS of one bridge ADD (max of bridge and its host-local), median \
                     of {RSS_RUNS}"
                ),
                bo,
                br,
            );
            kib_row(
                &mut rows,
                format!("(c) peak RSS of host-local ADD alone, median of {RSS_RUNS} (info)"),
                ho,
                hr,
            );
            // Above host-local alone by more than run-to-run noise (5%): the max is the
            // bridge's own peak. Otherwise host-local may be the max.
            let own = |label: &str, b: Option<u64>, h: Option<u64>| match b.zip(h) {
                Some((b, h)) if b * 100 > h * 105 => {
                    format!("{label}: {b} KiB is the bridge process's own peak")
                }
                Some((b, h)) => format!(
                    "{label}: host-local alone reaches {h} KiB, so the bridge's own peak is only \
                     known to be ≤ {b} KiB"
                ),
                None => format!("{label}: failed"),
            };
            notes.push(format!(
                "(c) what is measured: ru_maxrss of getrusage(RUSAGE_CHILDREN) in a probe process \
                 that runs one bridge ADD in the fake host; the kernel folds in the peak of every \
                 descendant that was waited for, so the figure is max(bridge, the host-local it \
                 exec'd), not their sum. {}; {}.",
                own("ours", bo, ho),
                own("ref", br, hr)
            ));
            if !floor.is_empty() {
                notes.push(format!(
                    "(c) probe baseline: a child's maxrss includes the pages fork copied from the \
                     probe; the probe running /bin/true reports {} KiB",
                    median_u64(&floor)
                ));
            }
            targets.push(match ra {
                Some(ra) => Target {
                    name: "(c)",
                    text: format!("ours ≤ 0.5× ref: {}", fmt_ratio(ra)),
                    met: Some(ra <= 0.5),
                },
                None => failed_target("(c)", "ours ≤ 0.5× ref"),
            });
        }
        Err(e) => {
            failures.push(format!("(c): {e}"));
            floor_table
                .rows
                .push(FloorRow::kib(rss_what, None, None, None));
            rows.push(failed_row("(c) peak RSS of one bridge ADD"));
            targets.push(failed_target("(c)", "ours ≤ 0.5× ref"));
        }
    }

    // Report.
    let mut out = String::new();
    let _ = writeln!(out, "## bridge (+ host-local IPAM): ours vs reference\n");
    let _ = writeln!(out, "- machine: {}", machine());
    for s in &sides {
        let _ = writeln!(
            out,
            "- {}: `{}` (CNI_PATH `{}`), fake host netns `{}`",
            if s.label == "ours" {
                "ours"
            } else {
                "reference"
            },
            s.bridge.display(),
            s.dir.display(),
            s.host_ns
        );
    }
    let _ = writeln!(
        out,
        "- config: cniVersion {CNI_VERSION}, bridge {BR_NAME}, isGateway, ipMasq false (true in \
         (a')), host-local 10.99.0.0/16; iterations: (a) {}, (a') {}, (b) {PARALLEL_ROUNDS} \
         rounds of {PARALLEL_PODS}, (c) {RSS_RUNS} runs; total bench time {:.1} s\n",
        opts.iterations,
        opts.masq_iterations,
        started.elapsed().as_secs_f64()
    );
    floor_table.notes.push(format!(
        "floor of (a) and (b): the same kernel work with no checks and no IPAM store: {}. \
         Floor of (c): the static no-op under the same rss-probe in the fake host.",
        kernel_floor.describe()
    ));
    write_table(&mut out, &rows, &notes, &floor_table, &targets);
    // Stop the workers before the namespaces go.
    drop(sides);
    progress("done");
    print!("{out}");

    if failures.is_empty() {
        Ok(true)
    } else {
        for f in &failures {
            eprintln!("cni-bench: FAILURE {f}");
        }
        Ok(false)
    }
}
