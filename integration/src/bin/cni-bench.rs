//! `cni-bench`: compares our CNI plugins with the reference (Go) plugins, in one run.
//!
//! ```text
//! cargo run --release -p integration --bin cni-bench -- host-local \
//!     [--ours DIR] [--ref DIR] [--iterations N] [--full-iterations M]
//! ```
//!
//! `--ours` defaults to `<workspace>/target/release`, `--ref` to `/usr/lib/cni` (Debian's
//! containernetworking-plugins, reference v1.1.1, so both sides are driven at cniVersion 1.0.0).
//! `--iterations` sets (a) (default 200); (b) defaults to 50, or a quarter of `--iterations`
//! when that is given, unless `--full-iterations` sets it.
//!
//! Measurements (host-local), each printed as ours / reference / ratio:
//! - (a) one ADD+DEL, exec to exit, median and p90, fresh /24 store, ours and ref interleaved;
//! - (b) one ADD in a /16 that is 99% full (store written directly), and in an empty /16;
//! - (c) 200 concurrent ADDs (distinct ids) on a fresh /16: wall time until all have exited,
//!   median of 5 rounds, with every result checked for success and distinct IPs;
//! - (d) peak RSS of one ADD, measured by a re-exec of this binary (`cni-bench rss-probe ...`)
//!   with `getrusage(RUSAGE_CHILDREN)`, median of 5.
//!
//! The tool is a report, not a test: it exits 0 when targets are missed, but non-zero when any
//! plugin call failed or a result was wrong.
#![allow(clippy::print_stdout)]

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};

type Res<T> = Result<T, String>;

/// Network name used in every config (and so the store subdirectory).
const NET: &str = "bench";
const IFNAME: &str = "eth0";
const NETNS: &str = "/var/run/netns/bench";
const CNI_VERSION: &str = "1.0.0";

const DEFAULT_ITERATIONS: usize = 200;
const DEFAULT_FULL_ITERATIONS: usize = 50;
const CONCURRENT_ADDS: usize = 200;
const CONCURRENT_ROUNDS: usize = 5;
const RSS_RUNS: usize = 5;
const WARMUP: usize = 5;
/// Fraction (per mille) of the /16's usable addresses reserved in (b).
const FULL_PER_MILLE: usize = 990;
const FILL_SEED: u64 = 0x5eed_cafe_f00d_0001;
/// Allocatable addresses in 10.77.0.0/16: 10.77.0.1-10.77.255.254 minus the gateway 10.77.0.1.
const USABLE_16: usize = 65_533;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let sub = args.first().and_then(|a| a.to_str()).unwrap_or("");
    let result = match sub {
        "host-local" => host_local(&args[1..]),
        "bridge" => Err("the bridge benchmark is not written yet".into()),
        "rss-probe" => rss_probe(&args[1..]),
        "-h" | "--help" | "help" => {
            println!("{}", usage());
            Ok(true)
        }
        _ => Err(format!("unknown or missing subcommand\n{}", usage())),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cni-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn usage() -> &'static str {
    "usage: cni-bench host-local [--ours DIR] [--ref DIR] [--iterations N] [--full-iterations M]\n\
     \x20      cni-bench rss-probe PLUGIN CONFIG_FILE   (internal: one ADD, prints children maxrss KiB)\n\
     defaults: --ours <workspace>/target/release, --ref /usr/lib/cni, --iterations 200,\n\
     \x20         --full-iterations 50 (or iterations/4 when --iterations is given)"
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Opts {
    ours: PathBuf,
    reference: PathBuf,
    iterations: usize,
    full_iterations: usize,
}

fn parse_opts(args: &[OsString]) -> Res<Opts> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    let mut opts = Opts {
        ours: workspace.join("target").join("release"),
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

fn parse_count(name: &str, v: &OsString) -> Res<usize> {
    match v.to_str().and_then(|s| s.parse::<usize>().ok()) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!("{name}: expected a positive integer, got {v:?}")),
    }
}

/// Resolves `<dir>/<name>` to an absolute path to an executable file, or a clear error.
fn plugin_path(dir: &Path, name: &str, which: &str) -> Res<PathBuf> {
    let path = dir.join(name);
    let meta = fs::metadata(&path).map_err(|e| {
        format!(
            "{which} plugin binary {} not found ({e}); build it or pass --{} DIR",
            path.display(),
            if which == "our" { "ours" } else { "ref" }
        )
    })?;
    use std::os::unix::fs::PermissionsExt as _;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "{which} plugin {} is not an executable file",
            path.display()
        ));
    }
    path.canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Driving a plugin
// ---------------------------------------------------------------------------------------------

/// One plugin under test.
#[derive(Debug, Clone)]
struct Plugin {
    label: &'static str,
    path: PathBuf,
}

fn host_local_config(data_dir: &Path, subnet: &str) -> String {
    serde_json::json!({
        "cniVersion": CNI_VERSION,
        "name": NET,
        "type": "host-local",
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir.to_string_lossy(),
            "ranges": [[{ "subnet": subnet }]],
        },
    })
    .to_string()
}

/// A plugin command with a cleared environment (only the CNI variables and PATH).
fn plugin_command(plugin: &Path, cmd: &str, id: &str) -> Command {
    let mut c = Command::new(plugin);
    c.env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", NETNS)
        .env("CNI_IFNAME", IFNAME)
        .env(
            "CNI_PATH",
            plugin.parent().unwrap_or_else(|| Path::new("/")),
        );
    if let Some(path) = std::env::var_os("PATH") {
        c.env("PATH", path);
    }
    c
}

fn spawn_plugin(plugin: &Path, cmd: &str, id: &str, config: &str) -> Res<Child> {
    let mut child = plugin_command(plugin, cmd, id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", plugin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A config is far below the pipe buffer size, so this never blocks. A plugin that
        // exits without reading stdin gives EPIPE here; its exit status tells the story.
        match stdin.write_all(config.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(format!("{cmd} {id}: writing stdin: {e}"));
            }
            _ => {}
        }
    }
    Ok(child)
}

#[derive(Debug)]
struct Outcome {
    ok: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: String,
}

fn finish(child: Child) -> Res<Outcome> {
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for plugin: {e}"))?;
    Ok(Outcome {
        ok: out.status.success(),
        stdout: out.stdout,
        stderr: out.stderr,
        status: out.status.to_string(),
    })
}

fn describe_failure(plugin: &Path, cmd: &str, id: &str, o: &Outcome) -> String {
    format!(
        "{} {cmd} (id {id}) failed: {}\n  stdout: {}\n  stderr: {}",
        plugin.display(),
        o.status,
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

/// Runs one command to completion; returns its stdout and the exec-to-exit time.
fn run_plugin(plugin: &Path, cmd: &str, id: &str, config: &str) -> Res<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let child = spawn_plugin(plugin, cmd, id, config)?;
    let out = finish(child)?;
    let took = start.elapsed();
    if !out.ok {
        return Err(describe_failure(plugin, cmd, id, &out));
    }
    Ok((out.stdout, took))
}

/// Extracts the single IPv4 address (without prefix) from an ADD result.
fn result_ip(stdout: &[u8]) -> Res<Ipv4Addr> {
    let v: serde_json::Value = serde_json::from_slice(stdout).map_err(|e| {
        format!(
            "ADD result is not JSON ({e}): {}",
            String::from_utf8_lossy(stdout)
        )
    })?;
    let ips = v
        .get("ips")
        .and_then(|i| i.as_array())
        .ok_or_else(|| format!("ADD result has no ips[]: {v}"))?;
    if ips.len() != 1 {
        return Err(format!("ADD result should have exactly one IP: {v}"));
    }
    let addr = ips[0]
        .get("address")
        .and_then(|a| a.as_str())
        .ok_or_else(|| format!("ADD result ips[0] has no address: {v}"))?;
    let ip = addr.split('/').next().unwrap_or(addr);
    ip.parse()
        .map_err(|e| format!("ADD result address {addr:?}: {e}"))
}

/// Checks that the store holds `<ip>` reserved for `id`.
fn check_reserved(store: &Path, ip: Ipv4Addr, id: &str) -> Res<()> {
    let file = store.join(ip.to_string());
    let content = fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let want = format!("{id}\r\n{IFNAME}");
    if String::from_utf8_lossy(&content).trim() != want {
        return Err(format!(
            "{} holds {:?}, expected {want:?}",
            file.display(),
            String::from_utf8_lossy(&content)
        ));
    }
    Ok(())
}

/// Count of reservation files (names that parse as IPs) in a store directory.
fn reservations(store: &Path) -> Res<usize> {
    let mut n = 0;
    for entry in fs::read_dir(store).map_err(|e| format!("{}: {e}", store.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", store.display()))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok())
        {
            n += 1;
        }
    }
    Ok(n)
}

fn tempdir(prefix: &str) -> Res<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("creating a temporary directory: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting
// ---------------------------------------------------------------------------------------------

fn percentile(samples: &[Duration], pct: usize) -> Duration {
    let mut v = samples.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = (pct * v.len()).div_ceil(100).clamp(1, v.len());
    v[rank - 1]
}

fn median(samples: &[Duration]) -> Duration {
    let mut v = samples.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

fn median_u64(samples: &[u64]) -> u64 {
    let mut v = samples.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

fn fmt_dur(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.3} ms")
    } else if ms < 100.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        f64::INFINITY
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

/// A Markdown table row; `None` cells are printed as `FAILED`.
#[derive(Debug)]
struct Row {
    what: String,
    ours: Option<String>,
    reference: Option<String>,
    ratio: Option<String>,
}

fn cell(c: &Option<String>) -> &str {
    c.as_deref().unwrap_or("FAILED")
}

#[derive(Debug)]
struct Target {
    name: &'static str,
    text: String,
    met: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// host-local
// ---------------------------------------------------------------------------------------------

fn host_local(args: &[OsString]) -> Res<bool> {
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
    let _ = writeln!(
        out,
        "| measurement | ours | reference | ratio |\n|---|---:|---:|---:|"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.what,
            cell(&r.ours),
            cell(&r.reference),
            cell(&r.ratio)
        );
    }
    let _ = writeln!(
        out,
        "\nratio = reference ÷ ours for times (higher is better), ours ÷ reference for RSS \
         (lower is better)."
    );
    for n in &notes {
        let _ = writeln!(out, "{n}");
    }
    let met = targets.iter().filter(|t| t.met == Some(true)).count();
    let summary: Vec<String> = targets
        .iter()
        .map(|t| {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "FAILED",
            };
            format!("{} {} {verdict}", t.name, t.text)
        })
        .collect();
    let _ = writeln!(
        out,
        "\nTargets ({met}/{} met): {}",
        targets.len(),
        summary.join("; ")
    );
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

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A progress line on stderr, stamped with the time since the bench started.
fn progress(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("cni-bench [{t:6.1}s] {msg}");
}

fn failed_row(what: &str) -> Row {
    Row {
        what: what.into(),
        ours: None,
        reference: None,
        ratio: None,
    }
}

fn failed_target(name: &'static str, text: &str) -> Target {
    Target {
        name,
        text: text.into(),
        met: None,
    }
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let tmp = std::env::temp_dir();
    format!(
        "nproc {nproc}, Linux {kernel}, {cpu}; stores under {}",
        tmp.display()
    )
}

/// 200 children with three pipes each need more than the usual 1024 descriptors at worst.
fn raise_nofile_limit() {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65_536);
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}

fn warm_up(p: &Plugin) -> Res<()> {
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

fn add_del_once(p: &Plugin, config: &str, store: &Path, id: &str) -> Res<Duration> {
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
type Samples = (Vec<Duration>, Vec<Duration>, Vec<Duration>);

fn true_binary() -> Option<&'static Path> {
    ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
}

fn bench_add_del(ours: &Plugin, reference: &Plugin, n: usize) -> Res<Samples> {
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

// (b) -----------------------------------------------------------------------------------------

#[derive(Debug)]
struct FullRange {
    filled: usize,
    ours_full: Vec<Duration>,
    ref_full: Vec<Duration>,
    ours_empty: Vec<Duration>,
    ref_empty: Vec<Duration>,
    /// The untimed restoring DELs in the full stores, for information.
    ours_full_del: Vec<Duration>,
    ref_full_del: Vec<Duration>,
}

/// SplitMix64: small, deterministic, good enough to pick addresses.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        // The modulo bias is irrelevant at these sizes.
        (self.next() % n as u64) as usize
    }
}

/// The addresses to reserve in 10.77.0.0/16 (same for both implementations) and the one to
/// write as `last_reserved_ip.0`.
fn fill_plan() -> (Vec<Ipv4Addr>, Ipv4Addr) {
    // Usable: rangeStart 10.77.0.1 .. rangeEnd 10.77.255.254, minus the gateway 10.77.0.1.
    let base = u32::from(Ipv4Addr::new(10, 77, 0, 0));
    let mut all: Vec<Ipv4Addr> = (2..=0xfffe).map(|h| Ipv4Addr::from(base + h)).collect();
    debug_assert_eq!(all.len(), USABLE_16);
    let mut rng = SplitMix64(FILL_SEED);
    // Fisher–Yates shuffle; the first 99% are reserved.
    for i in (1..all.len()).rev() {
        let j = rng.below(i + 1);
        all.swap(i, j);
    }
    let count = (all.len() * FULL_PER_MILLE).div_ceil(1000);
    all.truncate(count);
    let last = all[rng.below(count)];
    (all, last)
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> Res<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(content)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a host-local store for network `bench` directly, as the reference would have left it.
fn prepare_full_store(data_dir: &Path, plan: &[Ipv4Addr], last: Ipv4Addr) -> Res<()> {
    let store = data_dir.join(NET);
    fs::create_dir_all(&store).map_err(|e| format!("{}: {e}", store.display()))?;
    write_file(&store.join("lock"), b"", 0o750)?;
    for (n, ip) in plan.iter().enumerate() {
        write_file(
            &store.join(ip.to_string()),
            format!("fill-{n}\r\n{IFNAME}").as_bytes(),
            0o600,
        )?;
    }
    write_file(
        &store.join("last_reserved_ip.0"),
        last.to_string().as_bytes(),
        0o600,
    )
}

/// One timed ADD, then an untimed DEL of the same id to restore the store.
/// Returns both times; only the ADD is the measurement, the DEL time is shown for information.
fn timed_add_then_del(
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

fn bench_full_range(ours: &Plugin, reference: &Plugin, n: usize) -> Res<FullRange> {
    let (plan, last) = fill_plan();
    let full_o = tempdir("cni-bench-b-full-ours-")?;
    let full_r = tempdir("cni-bench-b-full-ref-")?;
    let empty_o = tempdir("cni-bench-b-empty-ours-")?;
    let empty_r = tempdir("cni-bench-b-empty-ref-")?;
    // One writer thread per store (about 65k files each).
    std::thread::scope(|s| {
        let a = s.spawn(|| prepare_full_store(full_o.path(), &plan, last));
        let b = prepare_full_store(full_r.path(), &plan, last);
        a.join()
            .map_err(|_| "store writer thread panicked".to_string())
            .and_then(|r| r)
            .and(b)
    })?;
    progress(&format!(
        "(b) wrote {} reservations into each full store",
        plan.len()
    ));
    let subnet = "10.77.0.0/16";
    let cases: [(&Plugin, &tempfile::TempDir); 4] = [
        (ours, &full_o),
        (reference, &full_r),
        (ours, &empty_o),
        (reference, &empty_r),
    ];
    let configs: Vec<String> = cases
        .iter()
        .map(|(_, d)| host_local_config(d.path(), subnet))
        .collect();
    let mut samples: [Vec<Duration>; 4] = Default::default();
    let mut dels: [Vec<Duration>; 4] = Default::default();
    for i in 0..n {
        let id = format!("bench-b-{i}");
        // Rotate the starting case each iteration to spread noise over all four.
        for k in 0..cases.len() {
            let c = (i + k) % cases.len();
            let (p, dir) = cases[c];
            let (t, t_del) = timed_add_then_del(p, &configs[c], &dir.path().join(NET), &id)
                .map_err(|e| {
                    format!(
                        "{} {} store: {e}",
                        p.label,
                        ["full", "full", "empty", "empty"][c]
                    )
                })?;
            samples[c].push(t);
            dels[c].push(t_del);
        }
    }
    for (p, dir) in &cases[..2] {
        let left = reservations(&dir.path().join(NET))?;
        if left != plan.len() {
            return Err(format!(
                "{}: full store ends with {left} reservations, expected {}",
                p.label,
                plan.len()
            ));
        }
    }
    // Removing the full stores takes a while too; do both at once.
    std::thread::scope(|s| {
        s.spawn(move || drop(full_o));
        drop(full_r);
    });
    let [ours_full, ref_full, ours_empty, ref_empty] = samples;
    let [ours_full_del, ref_full_del, _, _] = dels;
    Ok(FullRange {
        filled: plan.len(),
        ours_full,
        ref_full,
        ours_empty,
        ref_empty,
        ours_full_del,
        ref_full_del,
    })
}

// (c) -----------------------------------------------------------------------------------------

/// Spawns `ids.len()` commands at once and waits for all; returns the wall time and outputs.
fn run_concurrently(
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

fn concurrent_round(p: &Plugin, round: usize) -> Res<Duration> {
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

fn bench_concurrent(ours: &Plugin, reference: &Plugin) -> Res<Samples> {
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
struct Rss {
    ours: u64,
    reference: u64,
    floor: u64,
}

/// Runs `cni-bench rss-probe <plugin> <config>` and returns the KiB it reports.
fn probe_rss(plugin: &Path, config_file: &Path) -> Res<u64> {
    let exe = std::env::current_exe().map_err(|e| format!("locating cni-bench: {e}"))?;
    let out = Command::new(&exe)
        .arg("rss-probe")
        .arg(plugin)
        .arg(config_file)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {} rss-probe: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "rss-probe of {} failed ({}): {}",
            plugin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .map_err(|e| format!("rss-probe printed {text:?}: {e}"))
}

fn rss_once(p: &Plugin) -> Res<u64> {
    let dir = tempdir("cni-bench-d-")?;
    let config_file = dir.path().join("config.json");
    let data_dir = dir.path().join("data");
    fs::write(&config_file, host_local_config(&data_dir, "10.77.0.0/24"))
        .map_err(|e| format!("{}: {e}", config_file.display()))?;
    let kib = probe_rss(&p.path, &config_file)?;
    // The probe only sees the exit status; check the reservation it made.
    check_reserved(
        &data_dir.join(NET),
        Ipv4Addr::new(10, 77, 0, 2),
        "bench-rss",
    )?;
    Ok(kib)
}

fn bench_rss(ours: &Plugin, reference: &Plugin) -> Res<Rss> {
    let mut o = Vec::with_capacity(RSS_RUNS);
    let mut r = Vec::with_capacity(RSS_RUNS);
    let mut floor = Vec::with_capacity(RSS_RUNS);
    let dir = tempdir("cni-bench-d-floor-")?;
    let dummy = dir.path().join("config.json");
    fs::write(&dummy, "{}").map_err(|e| format!("{}: {e}", dummy.display()))?;
    for _ in 0..RSS_RUNS {
        o.push(rss_once(ours)?);
        r.push(rss_once(reference)?);
        if let Ok(kib) = probe_rss(Path::new("/bin/true"), &dummy) {
            floor.push(kib);
        }
    }
    Ok(Rss {
        ours: median_u64(&o),
        reference: median_u64(&r),
        floor: median_u64(&floor),
    })
}

/// `cni-bench rss-probe PLUGIN CONFIG_FILE`: runs one ADD (id `bench-rss`) with stdin from
/// CONFIG_FILE and prints the peak RSS of its waited-for children, in KiB.
///
/// This process is kept as small as possible: at exec, Linux folds the spawning process's
/// resident size into the child's maxrss, so this process's own RSS is the measurement floor.
fn rss_probe(args: &[OsString]) -> Res<bool> {
    let [plugin, config] = args else {
        return Err(format!("rss-probe needs PLUGIN CONFIG_FILE\n{}", usage()));
    };
    let plugin = Path::new(plugin);
    let stdin = fs::File::open(config).map_err(|e| format!("{config:?}: {e}"))?;
    let mut cmd = plugin_command(plugin, "ADD", "bench-rss");
    // Setting a gid (our own, so it is a no-op) makes std use fork+exec instead of
    // posix_spawn's vfork. After vfork the exec'd child is charged this process's whole RSS
    // high-water mark (file pages included); after fork only the pages fork copied (mostly
    // anonymous), which lowers the measurement floor.
    if let Ok(meta) = fs::metadata("/proc/self") {
        use std::os::unix::fs::MetadataExt as _;
        use std::os::unix::process::CommandExt as _;
        cmd.gid(meta.gid());
    }
    let mut child = cmd
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", plugin.display()))?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {}: {e}", plugin.display()))?;
    if !status.success() {
        return Err(format!(
            "{} ADD failed ({status}): {}",
            plugin.display(),
            err.trim()
        ));
    }
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).map_err(|e| format!("getrusage: {e}"))?;
    // On Linux ru_maxrss is in KiB.
    println!("{}", usage.max_rss());
    Ok(true)
}
