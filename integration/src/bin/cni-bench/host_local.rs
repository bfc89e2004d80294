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
use crate::{usage, Res};
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
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let name = arg.to_str().unwrap_or("");
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
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
            _ => return Err(format!("unknown argument {arg:?}\n{}", usage())),
        }
    }
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
    match bench_add_del(&ours, &reference, opts.iterations) {
        Ok((o, r, base)) => {
            if !base.is_empty() {
                notes.push(format!(
                    "(a) harness floor: the same two execs of /bin/true take {} median, {} p90",
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
            targets.push(Target {
                name: "(a)",
                text: format!("ref÷ours ≥ 3× (median): {}", fmt_ratio(ra)),
                met: Some(ra >= 3.0),
            });
        }
        Err(e) => {
            failures.push(format!("(a): {e}"));
            rows.push(failed_row("(a) ADD+DEL, exec→exit, median"));
            targets.push(failed_target("(a)", "ref÷ours ≥ 3×"));
        }
    }

    // (b) ADD in a 99%-full /16 vs an empty /16.
    progress(&format!(
        "(b) {} × ADD in a 99%-full /16 and in an empty /16 per implementation",
        opts.full_iterations
    ));
    match bench_full_range(&ours, &reference, opts.full_iterations) {
        Ok(b) => {
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
                text: format!("ours full ≤ 2× ours empty: {}", fmt_ratio(oslow)),
                met: Some(oslow <= 2.0),
            });
        }
        Err(e) => {
            failures.push(format!("(b): {e}"));
            rows.push(failed_row("(b) ADD, /16 99% full, median"));
            targets.push(failed_target("(b)", "ours full ≤ 2× ours empty"));
        }
    }

    // (c) Concurrent ADDs.
    progress(&format!(
        "(c) {CONCURRENT_ROUNDS} rounds × {CONCURRENT_ADDS} concurrent ADDs per implementation"
    ));
    match bench_concurrent(&ours, &reference) {
        Ok((o, r, base)) => {
            if !base.is_empty() {
                notes.push(format!(
                    "(c) harness floor: {CONCURRENT_ADDS} concurrent /bin/true take {} median",
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
                text: format!("ref÷ours ≥ 3×: {}", fmt_ratio(ra)),
                met: Some(ra >= 3.0),
            });
        }
        Err(e) => {
            failures.push(format!("(c): {e}"));
            rows.push(failed_row("(c) concurrent ADDs, wall, median"));
            targets.push(failed_target("(c)", "ref÷ours ≥ 3×"));
        }
    }

    // (d) Peak RSS.
    progress(&format!(
        "(d) {RSS_RUNS} × peak RSS of one ADD per implementation"
    ));
    match bench_rss(&ours, &reference) {
        Ok(d) => {
            let ra = ratio(d.ours as f64, d.reference as f64);
            rows.push(Row {
                what: format!("(d) peak RSS of one ADD, median of {RSS_RUNS}"),
                ours: Some(format!("{} KiB", d.ours)),
                reference: Some(format!("{} KiB", d.reference)),
                ratio: Some(fmt_ratio(ra)),
            });
            if d.floor > 0 {
                notes.push(format!(
                    "(d) probe floor: a child's maxrss includes the pages fork copied from the \
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
                text: format!("ours ≤ 0.5× ref: {}", fmt_ratio(ra)),
                met: Some(ra <= 0.5),
            });
        }
        Err(e) => {
            failures.push(format!("(d): {e}"));
            rows.push(failed_row("(d) peak RSS of one ADD"));
            targets.push(failed_target("(d)", "ours ≤ 0.5× ref"));
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
    write_table(&mut out, &rows, &notes, &targets);
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

pub(crate) fn add_del_once(p: &Plugin, config: &str, store: &Path, id: &str) -> Res<Duration> {
    let (stdout, t_add) = run_plugin(&p.path, "ADD", id, config)?;
    // Verified between the two timed calls, outside both timings.
    let ip = result_ip(&stdout)?;
    check_reserved(store, ip, id)?;
    let (_, t_del) = run_plugin(&p.path, "DEL", id, config)?;
    if store.join(ip.to_string()).exists() {
        return Err(format!("{}: DEL {id} left {ip} reserved", p.path.display()));
    }
    Ok(t_add + t_del)
}

/// Samples of one timed measurement: ours, reference, and the harness baseline (the same
/// process handling with `/bin/true` in place of the plugin; empty when there is no `true`).
pub(crate) type Samples = (Vec<Duration>, Vec<Duration>, Vec<Duration>);

pub(crate) fn bench_add_del(ours: &Plugin, reference: &Plugin, n: usize) -> Res<Samples> {
    let dir_o = tempdir("cni-bench-a-ours-")?;
    let dir_r = tempdir("cni-bench-a-ref-")?;
    let cfg_o = host_local_config(dir_o.path(), "10.77.0.0/24");
    let cfg_r = host_local_config(dir_r.path(), "10.77.0.0/24");
    let (store_o, store_r) = (dir_o.path().join(NET), dir_r.path().join(NET));
    let mut o = Vec::with_capacity(n);
    let mut r = Vec::with_capacity(n);
    let mut base = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("bench-a-{i}");
        if let Some(t) = true_binary() {
            let (_, t_add) = run_plugin(t, "ADD", &id, &cfg_o)?;
            let (_, t_del) = run_plugin(t, "DEL", &id, &cfg_o)?;
            base.push(t_add + t_del);
        }
        // Alternate which implementation goes first so drift hits both equally.
        if i % 2 == 0 {
            o.push(add_del_once(ours, &cfg_o, &store_o, &id)?);
            r.push(add_del_once(reference, &cfg_r, &store_r, &id)?);
        } else {
            r.push(add_del_once(reference, &cfg_r, &store_r, &id)?);
            o.push(add_del_once(ours, &cfg_o, &store_o, &id)?);
        }
    }
    Ok((o, r, base))
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

pub(crate) fn bench_concurrent(ours: &Plugin, reference: &Plugin) -> Res<Samples> {
    let mut o = Vec::with_capacity(CONCURRENT_ROUNDS);
    let mut r = Vec::with_capacity(CONCURRENT_ROUNDS);
    let mut base = Vec::with_capacity(CONCURRENT_ROUNDS);
    let ids: Vec<String> = (0..CONCURRENT_ADDS)
        .map(|i| format!("bench-c-true-{i}"))
        .collect();
    for round in 0..CONCURRENT_ROUNDS {
        if let Some(t) = true_binary() {
            let dir = tempdir("cni-bench-c-true-")?;
            let config = host_local_config(dir.path(), "10.77.0.0/16");
            let tp = Plugin {
                label: "true",
                path: t.to_path_buf(),
            };
            base.push(run_concurrently(&tp, "ADD", &ids, &config)?.0);
        }
        if round % 2 == 0 {
            o.push(concurrent_round(ours, round)?);
            r.push(concurrent_round(reference, round)?);
        } else {
            r.push(concurrent_round(reference, round)?);
            o.push(concurrent_round(ours, round)?);
        }
    }
    Ok((o, r, base))
}

// (d) -----------------------------------------------------------------------------------------

#[derive(Debug)]
pub(crate) struct Rss {
    pub(crate) ours: u64,
    pub(crate) reference: u64,
    pub(crate) floor: u64,
}

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

pub(crate) fn bench_rss(ours: &Plugin, reference: &Plugin) -> Res<Rss> {
    let mut o = Vec::with_capacity(RSS_RUNS);
    let mut r = Vec::with_capacity(RSS_RUNS);
    let mut floor = Vec::with_capacity(RSS_RUNS);
    let dir = tempdir("cni-bench-d-floor-")?;
    let dummy = dir.path().join("config.json");
    fs::write(&dummy, "{}").map_err(|e| format!("{}: {e}", dummy.display()))?;
    for _ in 0..RSS_RUNS {
        o.push(rss_once(ours)?);
        r.push(rss_once(reference)?);
        if let Ok(kib) = probe_rss(None, Path::new("/bin/true"), &dummy, None) {
            floor.push(kib);
        }
    }
    Ok(Rss {
        ours: median_u64(&o),
        reference: median_u64(&r),
        floor: median_u64(&floor),
    })
}
