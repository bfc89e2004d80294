//! `cni-bench host-local`: our host-local against the reference, (a) to (d) (see main.rs).

mod full_range;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::plugin::*;
use crate::report::*;
use crate::rss_probe::{probe_rss, RSS_RUNS};

// The goals of the speed issue, against the floor where there is one.
/// (a) ours ADD+DEL ÷ floor (two execs of a static no-op).
const A_FLOOR_TARGET: f64 = 1.1;
/// (b) ours in a 99%-full /16 ÷ ours in an empty one.
const B_SLOWDOWN_TARGET: f64 = 1.2;
/// (c) reference ÷ ours, 200 concurrent ADDs.
const C_SPEEDUP_TARGET: f64 = 4.0;
/// (d) our peak RSS of one ADD.
const D_RSS_TARGET_KIB: u64 = 1024;
use crate::Res;
use full_range::{bench_full_range, USABLE_16};

pub(crate) const DEFAULT_ITERATIONS: usize = 200;
pub(crate) const DEFAULT_FULL_ITERATIONS: usize = 50;
pub(crate) const CONCURRENT_ADDS: usize = 200;
pub(crate) const CONCURRENT_ROUNDS: usize = 5;
pub(crate) const WARMUP: usize = 5;
// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub(crate) struct Opts {
    pub(crate) ours: PathBuf,
    pub(crate) reference: PathBuf,
    pub(crate) iterations: usize,
    pub(crate) full_iterations: usize,
}

pub(crate) fn parse_opts(args: &[OsString]) -> Res<Opts> {
    let mut opts = Opts {
        ours: workspace_release_dir(),
        reference: PathBuf::from("/usr/lib/cni"),
        iterations: DEFAULT_ITERATIONS,
        full_iterations: DEFAULT_FULL_ITERATIONS,
    };
    let mut full_given = false;
    let mut iter_given = false;
    for_each_option(args, |name, value| {
        match name {
            "--ours" => opts.ours = PathBuf::from(value()?),
            "--ref" => opts.reference = PathBuf::from(value()?),
            "--iterations" => {
                opts.iterations = parse_count(name, &value()?)?;
                iter_given = true;
            }
            "--full-iterations" => {
                opts.full_iterations = parse_count(name, &value()?)?;
                full_given = true;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if iter_given && !full_given {
        opts.full_iterations = opts.iterations.div_ceil(4);
    }
    Ok(opts)
}

// ---------------------------------------------------------------------------------------------
// host-local
// ---------------------------------------------------------------------------------------------

pub(crate) fn host_local(args: &[OsString]) -> Res<bool> {
    let opts = parse_opts(args)?;
    let ours = Plugin {
        label: "ours",
        path: plugin_path(&opts.ours, "host-local", "our")?,
    };
    let reference = Plugin {
        label: "ref",
        path: plugin_path(&opts.reference, "host-local", "reference")?,
    };
    let noop = static_noop()?;
    raise_nofile_limit();

    let mut rows: Vec<Row> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let started = *START.get_or_init(Instant::now);

    // Warm the page cache and check both binaries work at all before timing anything.
    for p in [&ours, &reference] {
        if let Err(e) = warm_up(p) {
            failures.push(format!("warm-up ({}): {e}", p.label));
        }
    }

    // (a) ADD+DEL latency.
    progress(&format!(
        "(a) {} × ADD+DEL per implementation",
        opts.iterations
    ));
    let mut notes: Vec<String> = Vec::new();
    let mut floor = FloorTable::default();
    match bench_add_del(&ours, &reference, &noop, opts.iterations) {
        Ok(a) => {
            floor.push_pairs(
                "(a)",
                "exec→exit",
                Some(&a.floor),
                Some(&a.ours),
                Some(&a.reference),
            );
            let (o, r, base) = (
                sum_pairs(&a.ours),
                sum_pairs(&a.reference),
                sum_pairs(&a.harness),
            );
            if !base.is_empty() {
                notes.push(format!(
                    "(a) harness baseline: the same two execs of /bin/true take {} median, {} p90",
                    fmt_dur(median(&base)),
                    fmt_dur(percentile(&base, 90))
                ));
            }
            let (om, rm) = (median(&o), median(&r));
            let (o90, r90) = (percentile(&o, 90), percentile(&r, 90));
            let ra = ratio(rm.as_secs_f64(), om.as_secs_f64());
            rows.push(Row {
                what: "(a) ADD+DEL, exec→exit, median".into(),
                ours: Some(fmt_dur(om)),
                reference: Some(fmt_dur(rm)),
                ratio: Some(fmt_ratio(ra)),
            });
            rows.push(Row {
                what: "(a) ADD+DEL, exec→exit, p90".into(),
                ours: Some(fmt_dur(o90)),
                reference: Some(fmt_dur(r90)),
                ratio: Some(fmt_ratio(ratio(r90.as_secs_f64(), o90.as_secs_f64()))),
            });
            // The pair row is the last `push_pairs` added.
            targets.push(floor_target(
                "(a) ADD+DEL",
                floor.rows.last(),
                A_FLOOR_TARGET,
            ));
        }
        Err(e) => {
            failures.push(format!("(a): {e}"));
            floor.push_pairs("(a)", "exec→exit", None, None, None);
            rows.push(failed_row("(a) ADD+DEL, exec→exit, median"));
            targets.push(floor_target("(a) ADD+DEL", None, A_FLOOR_TARGET));
        }
    }

    // (b) ADD in a 99%-full /16 vs an empty /16.
    progress(&format!(
        "(b) {} × ADD in a 99%-full /16 and in an empty /16 per implementation",
        opts.full_iterations
    ));
    match bench_full_range(&ours, &reference, &noop, opts.full_iterations) {
        Ok(b) => {
            for (what, o, r) in [
                ("99% full", &b.ours_full, &b.ref_full),
                ("empty", &b.ours_empty, &b.ref_empty),
            ] {
                floor.rows.push(FloorRow::time(
                    format!("(b) ADD, /16 {what}"),
                    Some(&b.floor),
                    Some(o),
                    Some(r),
                ));
            }
            let [of, rf, oe, re] = [&b.ours_full, &b.ref_full, &b.ours_empty, &b.ref_empty]
                .map(|s| median(s).as_secs_f64());
            rows.push(Row {
                what: format!(
                    "(b) ADD, /16 99% full ({} of {USABLE_16} reserved), median",
                    b.filled
                ),
                ours: Some(fmt_dur(Duration::from_secs_f64(of))),
                reference: Some(fmt_dur(Duration::from_secs_f64(rf))),
                ratio: Some(fmt_ratio(ratio(rf, of))),
            });
            rows.push(Row {
                what: "(b) ADD, empty /16, median".into(),
                ours: Some(fmt_dur(Duration::from_secs_f64(oe))),
                reference: Some(fmt_dur(Duration::from_secs_f64(re))),
                ratio: Some(fmt_ratio(ratio(re, oe))),
            });
            let (od, rd) = (median(&b.ours_full_del), median(&b.ref_full_del));
            rows.push(Row {
                what: "(b) restoring DEL, /16 99% full, median (untimed part, info)".into(),
                ours: Some(fmt_dur(od)),
                reference: Some(fmt_dur(rd)),
                ratio: Some(fmt_ratio(ratio(rd.as_secs_f64(), od.as_secs_f64()))),
            });
            let (oslow, rslow) = (ratio(of, oe), ratio(rf, re));
            rows.push(Row {
                what: "(b) full ÷ empty slowdown".into(),
                ours: Some(fmt_ratio(oslow)),
                reference: Some(fmt_ratio(rslow)),
                ratio: Some("–".into()),
            });
            targets.push(Target {
                name: "(b)",
                text: format!(
                    "ours full ≤ {B_SLOWDOWN_TARGET}× ours empty: {}",
                    fmt_ratio(oslow)
                ),
                met: Some(oslow <= B_SLOWDOWN_TARGET),
            });
        }
        Err(e) => {
            failures.push(format!("(b): {e}"));
            for what in ["99% full", "empty"] {
                let row = FloorRow::time(format!("(b) ADD, /16 {what}"), None, None, None);
                floor.rows.push(row);
            }
            rows.push(failed_row("(b) ADD, /16 99% full, median"));
            targets.push(failed_target("(b)", "ours full ≤ 1.2× ours empty"));
        }
    }

    // (c) Concurrent ADDs.
    progress(&format!(
        "(c) {CONCURRENT_ROUNDS} rounds × {CONCURRENT_ADDS} concurrent ADDs per implementation"
    ));
    let concurrent_what = format!("(c) {CONCURRENT_ADDS} concurrent ADDs, wall");
    match bench_concurrent(&ours, &reference, &noop) {
        Ok(c) => {
            floor.rows.push(FloorRow::time(
                concurrent_what,
                Some(&c.floor),
                Some(&c.ours),
                Some(&c.reference),
            ));
            let (o, r, base) = (c.ours, c.reference, c.harness);
            if !base.is_empty() {
                notes.push(format!(
                    "(c) harness baseline: {CONCURRENT_ADDS} concurrent /bin/true take {} median",
                    fmt_dur(median(&base))
                ));
            }
            let (om, rm) = (median(&o), median(&r));
            let ra = ratio(rm.as_secs_f64(), om.as_secs_f64());
            rows.push(Row {
                what: format!(
                    "(c) {CONCURRENT_ADDS} concurrent ADDs, wall, median of {CONCURRENT_ROUNDS}"
                ),
                ours: Some(fmt_dur(om)),
                reference: Some(fmt_dur(rm)),
                ratio: Some(fmt_ratio(ra)),
            });
            targets.push(Target {
                name: "(c)",
                text: format!("ref÷ours ≥ {C_SPEEDUP_TARGET}×: {}", fmt_ratio(ra)),
                met: Some(ra >= C_SPEEDUP_TARGET),
            });
        }
        Err(e) => {
            failures.push(format!("(c): {e}"));
            let row = FloorRow::time(concurrent_what, None, None, None);
            floor.rows.push(row);
            rows.push(failed_row("(c) concurrent ADDs, wall, median"));
            targets.push(failed_target("(c)", "ref÷ours ≥ 4×"));
        }
    }

    // (d) Peak RSS.
    progress(&format!(
        "(d) {RSS_RUNS} × peak RSS of one ADD per implementation"
    ));
    let rss_what = "(d) peak RSS of one ADD".to_string();
    match bench_rss(&ours, &reference, &noop) {
        Ok(s) => {
            floor.rows.push(FloorRow::kib(
                rss_what,
                Some(&s.floor),
                Some(&s.ours),
                Some(&s.reference),
            ));
            let d = Rss {
                ours: median_u64(&s.ours),
                reference: median_u64(&s.reference),
                floor: median_u64(&s.harness),
            };
            let ra = ratio(d.ours as f64, d.reference as f64);
            rows.push(Row {
                what: format!("(d) peak RSS of one ADD, median of {RSS_RUNS}"),
                ours: Some(format!("{} KiB", d.ours)),
                reference: Some(format!("{} KiB", d.reference)),
                ratio: Some(fmt_ratio(ra)),
            });
            if d.floor > 0 {
                notes.push(format!(
                    "(d) probe baseline: a child's maxrss includes the pages fork copied from the \
                     probe; the probe running /bin/true reports {} KiB{}",
                    d.floor,
                    if d.ours <= d.floor {
                        "; ours is at the floor, so its real peak is at most this"
                    } else {
                        ""
                    }
                ));
            }
            targets.push(Target {
                name: "(d)",
                text: format!("ours ≤ {D_RSS_TARGET_KIB} KiB: {} KiB", d.ours),
                met: Some(d.ours <= D_RSS_TARGET_KIB),
            });
        }
        Err(e) => {
            failures.push(format!("(d): {e}"));
            floor.rows.push(FloorRow::kib(rss_what, None, None, None));
            rows.push(failed_row("(d) peak RSS of one ADD"));
            targets.push(failed_target("(d)", "ours ≤ 1024 KiB"));
        }
    }

    // Report.
    let mut out = String::new();
    let _ = writeln!(out, "## host-local: ours vs reference\n");
    let _ = writeln!(out, "- machine: {}", machine());
    let _ = writeln!(
        out,
        "- ours: `{}`\n- reference: `{}`",
        ours.path.display(),
        reference.path.display()
    );
    let _ = writeln!(
        out,
        "- cniVersion {CNI_VERSION}; iterations: (a) {} ADD+DEL, (b) {} ADDs per case, \
         (c) {CONCURRENT_ROUNDS} rounds of {CONCURRENT_ADDS}, (d) {RSS_RUNS} runs; \
         total bench time {:.1} s\n",
        opts.iterations,
        opts.full_iterations,
        started.elapsed().as_secs_f64()
    );
    floor.notes.push(format!(
        "floor: the static no-op `{}` (`int main(void) {{ return 0; }}`, cc -static), exec'd \
         exactly as the plugins are (same environment, config on stdin, pipes), in the same \
         iterations: (a) an ADD and a DEL exec, (b) an ADD exec, (c) {CONCURRENT_ADDS} at once, \
         (d) under the same rss-probe.",
        noop.display()
    ));
    write_table(&mut out, &rows, &notes, &floor, &targets);
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
/// Medians of (d), KiB; `floor` is the probe on /bin/true (0 when there is none).
#[derive(Debug)]
struct Rss {
    ours: u64,
    reference: u64,
    floor: u64,
}

pub(crate) fn warm_up(p: &Plugin) -> Res<()> {
    let dir = tempdir("cni-bench-warm-")?;
    let config = host_local_config(dir.path(), "10.77.0.0/24");
    for i in 0..WARMUP {
        let id = format!("warm-{i}");
        let (stdout, _) = run_plugin(&p.path, "ADD", &id, &config)?;
        let ip = result_ip(&stdout)?;
        check_reserved(&dir.path().join(NET), ip, &id)?;
        run_plugin(&p.path, "DEL", &id, &config)?;
    }
    Ok(())
}

// (a) -----------------------------------------------------------------------------------------

/// Samples of one timed measurement: ours, reference, the harness baseline (the same process
/// handling with `/bin/true` in place of the plugin; empty when there is no `true`) and the
/// floor (the static no-op exec'd the same way).
#[derive(Debug)]
pub(crate) struct Samples<T> {
    pub(crate) ours: Vec<T>,
    pub(crate) reference: Vec<T>,
    pub(crate) harness: Vec<T>,
    pub(crate) floor: Vec<T>,
}

impl<T> Samples<T> {
    fn with_capacity(n: usize) -> Samples<T> {
        Samples {
            ours: Vec::with_capacity(n),
            reference: Vec::with_capacity(n),
            harness: Vec::with_capacity(n),
            floor: Vec::with_capacity(n),
        }
    }
}

/// The (ADD, DEL) exec-to-exit times of a program that is not a plugin (no result, no store).
fn exec_pair(prog: &Path, id: &str, config: &str) -> Res<(Duration, Duration)> {
    let (_, t_add) = run_plugin(prog, "ADD", id, config)?;
    let (_, t_del) = run_plugin(prog, "DEL", id, config)?;
    Ok((t_add, t_del))
}

/// ADD, its checks (untimed), DEL of the same id (which restores the store); returns the
/// exec-to-exit times of both.
pub(crate) fn timed_add_then_del(
    p: &Plugin,
    config: &str,
    store: &Path,
    id: &str,
) -> Res<(Duration, Duration)> {
    let (stdout, t_add) = run_plugin(&p.path, "ADD", id, config)?;
    let ip = result_ip(&stdout)?;
    check_reserved(store, ip, id)?;
    let (_, t_del) = run_plugin(&p.path, "DEL", id, config)?;
    if store.join(ip.to_string()).exists() {
        return Err(format!("{}: DEL {id} left {ip} reserved", p.path.display()));
    }
    Ok((t_add, t_del))
}

/// Per iteration, (ADD, DEL) of ours, the reference, /bin/true and the static no-op.
pub(crate) fn bench_add_del(
    ours: &Plugin,
    reference: &Plugin,
    noop: &Path,
    n: usize,
) -> Res<Samples<(Duration, Duration)>> {
    let dir_o = tempdir("cni-bench-a-ours-")?;
    let dir_r = tempdir("cni-bench-a-ref-")?;
    let cfg_o = host_local_config(dir_o.path(), "10.77.0.0/24");
    let cfg_r = host_local_config(dir_r.path(), "10.77.0.0/24");
    let (store_o, store_r) = (dir_o.path().join(NET), dir_r.path().join(NET));
    let mut s = Samples::with_capacity(n);
    for i in 0..n {
        let id = format!("bench-a-{i}");
        if let Some(t) = true_binary() {
            s.harness.push(exec_pair(t, &id, &cfg_o)?);
        }
        // Rotate which of the floor, ours and the reference goes first so drift hits all
        // three equally.
        for k in 0..3 {
            match (i + k) % 3 {
                0 => s.floor.push(exec_pair(noop, &id, &cfg_o)?),
                1 => s
                    .ours
                    .push(timed_add_then_del(ours, &cfg_o, &store_o, &id)?),
                _ => s
                    .reference
                    .push(timed_add_then_del(reference, &cfg_r, &store_r, &id)?),
            }
        }
    }
    Ok(s)
}

// (c) -----------------------------------------------------------------------------------------

/// Spawns `ids.len()` commands at once and waits for all; returns the wall time and outputs.
pub(crate) fn run_concurrently(
    p: &Plugin,
    cmd: &str,
    ids: &[String],
    config: &str,
) -> Res<(Duration, Vec<Outcome>)> {
    let start = Instant::now();
    let mut children = Vec::with_capacity(ids.len());
    let mut spawn_err = None;
    for id in ids {
        match spawn_plugin(&p.path, cmd, id, config) {
            Ok(c) => children.push(c),
            Err(e) => {
                spawn_err = Some(e);
                break;
            }
        }
    }
    let mut outs = Vec::with_capacity(children.len());
    for c in children {
        outs.push(finish(c)?);
    }
    let took = start.elapsed();
    if let Some(e) = spawn_err {
        return Err(e);
    }
    Ok((took, outs))
}

pub(crate) fn concurrent_round(p: &Plugin, round: usize) -> Res<Duration> {
    let dir = tempdir("cni-bench-c-")?;
    let config = host_local_config(dir.path(), "10.77.0.0/16");
    let store = dir.path().join(NET);
    let ids: Vec<String> = (0..CONCURRENT_ADDS)
        .map(|i| format!("bench-c-{round}-{i}"))
        .collect();
    let (took, outs) = run_concurrently(p, "ADD", &ids, &config)?;
    let mut ips = HashSet::new();
    for (id, o) in ids.iter().zip(&outs) {
        if !o.ok {
            return Err(describe_failure(&p.path, "ADD", id, o));
        }
        let ip = result_ip(&o.stdout)?;
        check_reserved(&store, ip, id)?;
        ips.insert(ip);
    }
    if ips.len() != CONCURRENT_ADDS {
        return Err(format!(
            "{}: {CONCURRENT_ADDS} concurrent ADDs returned only {} distinct IPs",
            p.label,
            ips.len()
        ));
    }
    // Clean up with DELs (untimed), also concurrent, then check that nothing is left.
    let (_, outs) = run_concurrently(p, "DEL", &ids, &config)?;
    for (id, o) in ids.iter().zip(&outs) {
        if !o.ok {
            return Err(describe_failure(&p.path, "DEL", id, o));
        }
    }
    let left = reservations(&store)?;
    if left != 0 {
        return Err(format!(
            "{}: {left} reservations left after DEL of all {CONCURRENT_ADDS}",
            p.label
        ));
    }
    Ok(took)
}

pub(crate) fn bench_concurrent(
    ours: &Plugin,
    reference: &Plugin,
    noop: &Path,
) -> Res<Samples<Duration>> {
    let mut s = Samples::with_capacity(CONCURRENT_ROUNDS);
    let ids: Vec<String> = (0..CONCURRENT_ADDS)
        .map(|i| format!("bench-c-true-{i}"))
        .collect();
    let floor = Plugin {
        label: "floor",
        path: noop.to_path_buf(),
    };
    for round in 0..CONCURRENT_ROUNDS {
        let dir = tempdir("cni-bench-c-true-")?;
        let config = host_local_config(dir.path(), "10.77.0.0/16");
        if let Some(t) = true_binary() {
            let tp = Plugin {
                label: "true",
                path: t.to_path_buf(),
            };
            s.harness
                .push(run_concurrently(&tp, "ADD", &ids, &config)?.0);
        }
        s.floor
            .push(run_concurrently(&floor, "ADD", &ids, &config)?.0);
        if round % 2 == 0 {
            s.ours.push(concurrent_round(ours, round)?);
            s.reference.push(concurrent_round(reference, round)?);
        } else {
            s.reference.push(concurrent_round(reference, round)?);
            s.ours.push(concurrent_round(ours, round)?);
        }
    }
    Ok(s)
}

// (d) -----------------------------------------------------------------------------------------

pub(crate) fn rss_once(p: &Plugin) -> Res<u64> {
    let dir = tempdir("cni-bench-d-")?;
    let config_file = dir.path().join("config.json");
    let data_dir = dir.path().join("data");
    fs::write(&config_file, host_local_config(&data_dir, "10.77.0.0/24"))
        .map_err(|e| format!("{}: {e}", config_file.display()))?;
    let kib = probe_rss(None, &p.path, &config_file, None)?;
    // The probe only sees the exit status; check the reservation it made.
    check_reserved(
        &data_dir.join(NET),
        Ipv4Addr::new(10, 77, 0, 2),
        "bench-rss",
    )?;
    Ok(kib)
}

/// Per run, KiB: ours, the reference, the probe on /bin/true (harness) and on the static no-op
/// (floor).
pub(crate) fn bench_rss(ours: &Plugin, reference: &Plugin, noop: &Path) -> Res<Samples<u64>> {
    let mut s = Samples::with_capacity(RSS_RUNS);
    let dir = tempdir("cni-bench-d-floor-")?;
    let dummy = dir.path().join("config.json");
    fs::write(&dummy, "{}").map_err(|e| format!("{}: {e}", dummy.display()))?;
    for _ in 0..RSS_RUNS {
        s.ours.push(rss_once(ours)?);
        s.reference.push(rss_once(reference)?);
        if let Ok(kib) = probe_rss(None, Path::new("/bin/true"), &dummy, None) {
            s.harness.push(kib);
        }
        s.floor.push(probe_rss(None, noop, &dummy, None)?);
    }
    Ok(s)
}
