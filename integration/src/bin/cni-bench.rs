//! `cni-bench`: compares our CNI plugins with the reference (Go) plugins, in one run.
//!
//! ```text
//! cargo run --release -p integration --bin cni-bench -- host-local \
//!     [--ours DIR] [--ref DIR] [--iterations N] [--full-iterations M]
//! cargo run --release -p integration --bin cni-bench -- bridge \
//!     [--ours DIR] [--ref DIR] [--iterations N] [--masq-iterations M]
//! cargo run --release -p integration --bin cni-bench -- cri \
//!     [--ours DIR] [--iterations N] [--images N] [--clients C] [--seconds S]
//! ```
//!
//! The `bridge` subcommand (root only; everything in throwaway network namespaces) is described
//! at the `bridge` section below, and the `cri` subcommand (root only: `cri-adapter serve` in
//! front of a containerd it starts, against containerd directly) at the `cri` section.
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
        "bridge" => bridge(&args[1..]),
        "cri" => cri(&args[1..]),
        "seed" => integration::seed_bench::run(&args[1..]),
        "bridge-worker" => bridge_worker(&args[1..]),
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
     \x20      cni-bench bridge [--ours DIR] [--ref DIR] [--iterations N] [--masq-iterations M]\n\
     \x20      cni-bench cri [--ours DIR] [--iterations N] [--images N] [--clients C] [--seconds S]\n\
     \x20      cni-bench seed [--size MIB]\n\
     \x20      cni-bench rss-probe PLUGIN CONFIG_FILE [NETNS]   (internal: one ADD, prints children maxrss KiB)\n\
     \x20      cni-bench bridge-worker   (internal: runs plugin batches read from stdin, in its netns)\n\
     host-local defaults: --ours <workspace>/target/release, --ref /usr/lib/cni, --iterations 200,\n\
     \x20         --full-iterations 50 (or iterations/4 when --iterations is given)\n\
     bridge defaults: --ours <workspace>/target/release, --ref /usr/lib/cni, --iterations 100,\n\
     \x20         --masq-iterations iterations/4 (0 skips the ipMasq row); DIR must hold both `bridge`\n\
     \x20         and `host-local`; needs root (network namespaces)\n\
     cri defaults: --ours <workspace>/target/release (falls back to it when DIR has no\n\
     \x20         `cri-adapter`), --iterations 2000 (ListImages: a quarter), --images 300,\n\
     \x20         --clients 8, --seconds 2; needs root and Debian's containerd"
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
    spawn_with(
        plugin_command(plugin, cmd, id),
        config,
        &format!("{cmd} {id}"),
    )
}

/// Spawns a prepared plugin command with piped stdio and writes `config` to its stdin.
fn spawn_with(mut command: Command, config: &str, what: &str) -> Res<Child> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", command.get_program().to_string_lossy()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A config is far below the pipe buffer size, so this never blocks. A plugin that
        // exits without reading stdin gives EPIPE here; its exit status tells the story.
        match stdin.write_all(config.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(format!("{what}: writing stdin: {e}"));
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

/// `cni-bench rss-probe PLUGIN CONFIG_FILE [NETNS]`: runs one ADD (id `bench-rss`, CNI_NETNS
/// NETNS when given) with stdin from CONFIG_FILE and prints the peak RSS of its waited-for
/// children, in KiB.
///
/// This process is kept as small as possible: at exec, Linux folds the spawning process's
/// resident size into the child's maxrss, so this process's own RSS is the measurement floor.
fn rss_probe(args: &[OsString]) -> Res<bool> {
    let (plugin, config, netns) = match args {
        [plugin, config] => (plugin, config, None),
        [plugin, config, netns] => (plugin, config, Some(netns)),
        _ => {
            return Err(format!(
                "rss-probe needs PLUGIN CONFIG_FILE [NETNS]\n{}",
                usage()
            ))
        }
    };
    let plugin = Path::new(plugin);
    let stdin = fs::File::open(config).map_err(|e| format!("{config:?}: {e}"))?;
    let mut cmd = plugin_command(plugin, "ADD", "bench-rss");
    if let Some(netns) = netns {
        cmd.env("CNI_NETNS", netns);
    }
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

// ---------------------------------------------------------------------------------------------
// bridge
// ---------------------------------------------------------------------------------------------
//
// `cni-bench bridge [--ours DIR] [--ref DIR] [--iterations N] [--masq-iterations M]`
//
// Each DIR holds `bridge` and `host-local` of one implementation; its plugins run with
// CNI_PATH=DIR, so our bridge delegates to our host-local and the reference to the reference.
//
// Isolation: everything happens in network namespaces this run creates and deletes:
// - `cnibench-<pid>-host-ours` and `cnibench-<pid>-host-ref`: one fake host per implementation,
//   each with its own bridge `cbr0` (10.99.0.1/16 once the first ADD ran) and its own dataDir;
// - `cnibench-<pid>-c<N>`: container namespaces, c0..c49 for ours and c50..c99 for the
//   reference (c0 / c50 also serve the one-pod measurements).
// The plugins run inside the fake host without an extra exec per call: a worker (this binary,
// `cni-bench bridge-worker`) is started once per implementation with `ip netns exec <host>`,
// and spawns the plugin batches it is sent over a pipe, timing them itself (exec → exit). So
// the timed path is the same fork/exec/wait as in the host-local bench; the harness floor is
// the same batch with /bin/true as the plugin. (`setns` in a pre-exec hook would need unsafe
// code, and nix's `sched` feature is not enabled here.) Nothing is created in the real host
// netns: the worker, the plugins and every verification `ip -n <ns>` run against the fake
// hosts or containers.
//
// The namespaces are registered before creation and deleted by a guard on every return path,
// by a signal thread on SIGINT/SIGTERM/SIGHUP, and namespaces left by an earlier run that was
// killed (`cnibench-<pid>-*` whose pid is no longer a cni-bench) are deleted at start.
//
// Measurements, ours and reference interleaved (the order alternates every iteration):
// - (a) ADD then DEL of one pod (same container netns and ifname), exec → exit of each, summed;
//   median and p90 over N; and the same with ipMasq on over M iterations (iptables rules in the
//   fake host);
// - (b) 50 ADDs spawned at once into 50 pre-created container netns, wall time until all have
//   exited; then 50 distinct IPs, 50 host veths all enslaved to cbr0 and 50 reservations are
//   checked (round 0 also checks each container's eth0 address), all DELs run (untimed, shown
//   for information), and no veth or reservation may be left; median of 5 rounds;
// - (c) peak RSS of one bridge ADD via the rss-probe re-exec (run in the fake host). The probe
//   reports getrusage(RUSAGE_CHILDREN).ru_maxrss: the kernel folds into a reaped process's
//   figure the peak of every descendant it waited for, so this is max(bridge, the host-local
//   it exec'd and waited for) — the larger of the two peaks, not their sum. host-local ADD
//   alone is probed too, so when the bridge figure is above it, it is the bridge's own peak.

const BR_NET: &str = "benchnet";
const BR_NAME: &str = "cbr0";
const BR_SUBNET_PREFIX: u8 = 16;
const BR_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const BR_DEFAULT_ITERATIONS: usize = 100;
const PARALLEL_PODS: usize = 50;
const PARALLEL_ROUNDS: usize = 5;
const BR_WARMUP: usize = 3;
/// Verify the attachment inside the namespaces (not only the result) every this many
/// iterations of (a), between the timed ADD and DEL.
const DEEP_CHECK_EVERY: usize = 25;
const NS_PREFIX: &str = "cnibench";
const NETNS_DIR: &str = "/var/run/netns";
/// A batch that takes longer than this is killed (a hung plugin must not hang the bench).
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug)]
struct BridgeOpts {
    ours: PathBuf,
    reference: PathBuf,
    iterations: usize,
    masq_iterations: usize,
}

fn parse_bridge_opts(args: &[OsString]) -> Res<BridgeOpts> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    let mut opts = BridgeOpts {
        ours: workspace.join("target").join("release"),
        reference: PathBuf::from("/usr/lib/cni"),
        iterations: BR_DEFAULT_ITERATIONS,
        masq_iterations: 0,
    };
    let mut masq = None;
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
            "--iterations" => opts.iterations = parse_count(name, &value()?)?,
            "--masq-iterations" => {
                let v = value()?;
                masq = Some(
                    v.to_str()
                        .and_then(|s| s.parse::<usize>().ok())
                        .ok_or_else(|| format!("{name}: expected an integer, got {v:?}"))?,
                );
            }
            _ => return Err(format!("unknown argument {arg:?}\n{}", usage())),
        }
    }
    opts.masq_iterations = masq.unwrap_or_else(|| opts.iterations.div_ceil(4));
    Ok(opts)
}

fn bridge_config(data_dir: &Path, masq: bool) -> String {
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

fn netns_path(name: &str) -> String {
    format!("{NETNS_DIR}/{name}")
}

// Namespace bookkeeping ------------------------------------------------------------------------

/// Every namespace this run created (or is about to create). Creation and deletion both hold
/// the lock, so the signal thread never races a half-done creation.
static NAMESPACES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn lock_namespaces() -> std::sync::MutexGuard<'static, Vec<String>> {
    NAMESPACES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `ip -force -batch -` with the given lines (it keeps going past a failing line).
fn ip_batch(lines: &[String]) -> Res<()> {
    let mut child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn ip: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("ip -batch: writing stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for ip -batch: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip -batch failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn create_namespaces(names: &[String]) -> Res<()> {
    let mut list = lock_namespaces();
    list.extend(names.iter().cloned());
    let lines: Vec<String> = names.iter().map(|n| format!("netns add {n}")).collect();
    ip_batch(&lines)?;
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !Path::new(NETNS_DIR).join(n).exists())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "could not create network namespaces {missing:?} (cni-bench bridge needs root)"
        ));
    }
    Ok(())
}

/// Deletes every registered namespace; returns the ones still present afterwards.
fn delete_namespaces() -> Vec<String> {
    let mut list = lock_namespaces();
    if list.is_empty() {
        return Vec::new();
    }
    let names = std::mem::take(&mut *list);
    let lines: Vec<String> = names.iter().map(|n| format!("netns del {n}")).collect();
    if let Err(e) = ip_batch(&lines) {
        eprintln!("cni-bench: deleting namespaces: {e}");
    }
    names
        .into_iter()
        .filter(|n| Path::new(NETNS_DIR).join(n).exists())
        .collect()
}

/// Deletes the registered namespaces when dropped (every return path, and unwinding).
#[derive(Debug)]
struct NamespaceGuard;

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let left = delete_namespaces();
        if left.is_empty() {
            progress("deleted the bench network namespaces");
        } else {
            eprintln!("cni-bench: WARNING: could not delete network namespaces {left:?}");
        }
    }
}

/// Blocks SIGINT/SIGTERM/SIGHUP in this (still single-threaded) process and starts a thread
/// that, on any of them, deletes the namespaces and exits. Children start with an empty
/// signal mask (std resets it), so plugins and workers are unaffected.
fn install_signal_cleanup() -> Res<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                eprintln!("cni-bench: {sig}: deleting the bench network namespaces");
                // `cni-bench cri`: stop serve and containerd, remove their directory.
                SIGNALLED.store(true, std::sync::atomic::Ordering::SeqCst);
                cri_cleanup();
                let left = delete_namespaces();
                if !left.is_empty() {
                    eprintln!("cni-bench: WARNING: could not delete {left:?}");
                }
                std::process::exit(128 + sig as i32);
            }
        })
        .map_err(|e| format!("starting the signal thread: {e}"))?;
    Ok(())
}

/// Deletes `cnibench-<pid>-*` namespaces whose pid is no longer a running cni-bench (a run
/// killed with SIGKILL cannot clean up after itself).
fn delete_stale_namespaces() {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return;
    };
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{NS_PREFIX}-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        // `pid (comm) S ...`; a zombie (state Z) is as dead as a missing process.
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = stat
            .rsplit_once(") ")
            .is_some_and(|(head, tail)| head.ends_with("(cni-bench") && !tail.starts_with('Z'));
        if !alive {
            stale.push(name);
        }
    }
    if !stale.is_empty() {
        progress(&format!(
            "deleting {} stale namespaces of an earlier run",
            stale.len()
        ));
        let lines: Vec<String> = stale.iter().map(|n| format!("netns del {n}")).collect();
        if let Err(e) = ip_batch(&lines) {
            eprintln!("cni-bench: deleting stale namespaces: {e}");
        }
    }
}

// The worker (runs inside a fake host netns) ---------------------------------------------------

/// One plugin call of a batch.
#[derive(Debug, Clone)]
struct Call {
    id: String,
    netns: String,
}

/// The outcome of a batch: wall time from the first spawn until the last child was reaped.
#[derive(Debug)]
struct Batch {
    wall: Duration,
    outs: Vec<Outcome>,
}

fn cni_command(prog: &Path, cmd: &str, call: &Call, cni_path: &str) -> Command {
    let mut c = Command::new(prog);
    c.env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", &call.id)
        .env("CNI_NETNS", &call.netns)
        .env("CNI_IFNAME", IFNAME)
        .env("CNI_PATH", cni_path)
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        );
    c
}

/// Spawns every call at once, then reaps them all. A watchdog kills the children (by pid)
/// if the batch exceeds BATCH_TIMEOUT.
fn run_batch(prog: &Path, cmd: &str, config: &str, cni_path: &str, calls: &[Call]) -> Res<Batch> {
    let start = Instant::now();
    let mut children = Vec::with_capacity(calls.len());
    let mut spawn_err = None;
    for call in calls {
        let c = cni_command(prog, cmd, call, cni_path);
        match spawn_with(c, config, &format!("{cmd} {}", call.id)) {
            Ok(child) => children.push(child),
            Err(e) => {
                spawn_err = Some(e);
                break;
            }
        }
    }
    let pids: Vec<i32> = children
        .iter()
        .filter_map(|c| i32::try_from(c.id()).ok())
        .collect();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(BATCH_TIMEOUT)
        {
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            true
        } else {
            false
        }
    });
    let mut outs = Vec::with_capacity(children.len());
    let mut wait_err = None;
    for c in children {
        match finish(c) {
            Ok(o) => outs.push(o),
            Err(e) => wait_err = Some(e),
        }
    }
    let wall = start.elapsed();
    let _ = done_tx.send(());
    if watchdog.join().unwrap_or(false) {
        return Err(format!(
            "{cmd} batch of {} timed out after {BATCH_TIMEOUT:?} and was killed",
            calls.len()
        ));
    }
    if let Some(e) = spawn_err.or(wait_err) {
        return Err(e);
    }
    Ok(Batch { wall, outs })
}

fn json_str<'a>(v: &'a serde_json::Value, key: &str) -> Res<&'a str> {
    v.get(key)
        .and_then(|x| x.as_str())
        .ok_or_else(|| format!("request without string {key:?}"))
}

fn serve_request(line: &str) -> Res<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("bad request ({e}): {line}"))?;
    let prog = Path::new(json_str(&v, "prog")?);
    let cmd = json_str(&v, "cmd")?;
    let config = json_str(&v, "config")?;
    let cni_path = json_str(&v, "cni_path")?;
    let mut calls = Vec::new();
    for c in v
        .get("calls")
        .and_then(|c| c.as_array())
        .ok_or("request without calls")?
    {
        calls.push(Call {
            id: json_str(c, "id")?.to_string(),
            netns: json_str(c, "netns")?.to_string(),
        });
    }
    let batch = run_batch(prog, cmd, config, cni_path, &calls)?;
    let outs: Vec<serde_json::Value> = batch
        .outs
        .iter()
        .map(|o| {
            serde_json::json!({
                "ok": o.ok,
                "status": o.status,
                "stdout": String::from_utf8_lossy(&o.stdout),
                "stderr": String::from_utf8_lossy(&o.stderr),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "wall_ns": u64::try_from(batch.wall.as_nanos()).unwrap_or(u64::MAX),
        "outs": outs,
    }))
}

/// `cni-bench bridge-worker`: reads one JSON request per line on stdin, runs the batch and
/// answers one JSON line on stdout; exits at end of input.
fn bridge_worker(args: &[OsString]) -> Res<bool> {
    if !args.is_empty() {
        return Err(format!("bridge-worker takes no arguments\n{}", usage()));
    }
    raise_nofile_limit();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    let mut line = String::new();
    loop {
        line.clear();
        let n = stdin
            .read_line(&mut line)
            .map_err(|e| format!("worker stdin: {e}"))?;
        if n == 0 {
            return Ok(true);
        }
        let answer =
            serve_request(line.trim()).unwrap_or_else(|e| serde_json::json!({ "error": e }));
        writeln!(stdout, "{answer}")
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("worker stdout: {e}"))?;
    }
}

/// The parent's handle on a worker started with `ip netns exec <host> cni-bench bridge-worker`.
#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Worker {
    fn start(host_ns: &str) -> Res<Worker> {
        let exe = std::env::current_exe().map_err(|e| format!("locating cni-bench: {e}"))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", host_ns])
            .arg(&exe)
            .arg("bridge-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("ip netns exec {host_ns} {}: {e}", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or("worker without stdout")
            .map(std::io::BufReader::new)?;
        Ok(Worker {
            child,
            stdin,
            stdout,
        })
    }

    fn run(
        &mut self,
        prog: &Path,
        cmd: &str,
        config: &str,
        cni_path: &Path,
        calls: &[Call],
    ) -> Res<Batch> {
        use std::io::BufRead as _;
        let calls_json: Vec<serde_json::Value> = calls
            .iter()
            .map(|c| serde_json::json!({ "id": c.id, "netns": c.netns }))
            .collect();
        let req = serde_json::json!({
            "prog": prog.to_string_lossy(),
            "cmd": cmd,
            "config": config,
            "cni_path": cni_path.to_string_lossy(),
            "calls": calls_json,
        });
        let stdin = self.stdin.as_mut().ok_or("worker stdin closed")?;
        writeln!(stdin, "{req}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to the worker: {e}"))?;
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("reading from the worker: {e}"))?;
        if n == 0 {
            return Err("the worker exited unexpectedly".into());
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("worker answer ({e}): {line}"))?;
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            return Err(e.to_string());
        }
        let wall = Duration::from_nanos(
            v.get("wall_ns")
                .and_then(|w| w.as_u64())
                .ok_or_else(|| format!("worker answer without wall_ns: {line}"))?,
        );
        let mut outs = Vec::new();
        for o in v
            .get("outs")
            .and_then(|o| o.as_array())
            .ok_or_else(|| format!("worker answer without outs: {line}"))?
        {
            let field = |k: &str| o.get(k).and_then(|x| x.as_str()).unwrap_or("");
            outs.push(Outcome {
                ok: o.get("ok").and_then(|x| x.as_bool()).unwrap_or(false),
                stdout: field("stdout").as_bytes().to_vec(),
                stderr: field("stderr").as_bytes().to_vec(),
                status: field("status").to_string(),
            });
        }
        if outs.len() != calls.len() {
            return Err(format!(
                "worker returned {} outcomes for {} calls",
                outs.len(),
                calls.len()
            ));
        }
        Ok(Batch { wall, outs })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // End of input makes the worker exit once its current batch is done.
        drop(self.stdin.take());
        let deadline = Instant::now() + BATCH_TIMEOUT + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

// One implementation under test ----------------------------------------------------------------

#[derive(Debug)]
struct Side {
    label: &'static str,
    dir: PathBuf,
    bridge: PathBuf,
    host_local: PathBuf,
    host_ns: String,
    /// Container netns names; `pods[0]` also serves (a) and (c).
    pods: Vec<String>,
    data: tempfile::TempDir,
    config: String,
    masq_config: String,
    worker: Worker,
}

impl Side {
    fn store(&self) -> PathBuf {
        self.data.path().join(BR_NET)
    }

    fn call(&self, id: String, pod: usize) -> Call {
        Call {
            id,
            netns: netns_path(&self.pods[pod]),
        }
    }

    /// Runs a batch of bridge calls; fails unless every call succeeded.
    fn batch(&mut self, cmd: &str, masq: bool, calls: &[Call]) -> Res<Batch> {
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
    fn one(&mut self, cmd: &str, masq: bool, call: &Call) -> Res<(Vec<u8>, Duration)> {
        let mut b = self.batch(cmd, masq, std::slice::from_ref(call))?;
        let out = b.outs.pop().ok_or("empty batch")?;
        Ok((out.stdout, b.wall))
    }

    /// The same batch with /bin/true in place of the plugin: the harness floor.
    fn floor(&mut self, true_bin: &Path, calls: &[Call]) -> Res<Duration> {
        let b = self
            .worker
            .run(true_bin, "ADD", &self.config, &self.dir, calls)?;
        Ok(b.wall)
    }
}

/// `ip <args>`; its stdout, or an error with its stderr.
fn run_ip(args: &[&str]) -> Res<String> {
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
fn link_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

fn host_links(side: &Side, filter: &[&str]) -> Res<Vec<String>> {
    let mut args = vec!["-n", side.host_ns.as_str(), "-o", "link", "show"];
    args.extend_from_slice(filter);
    Ok(link_names(&run_ip(&args)?))
}

/// What a bridge ADD result must say: one address in 10.99.0.0/16 with gateway 10.99.0.1, and
/// interfaces [cbr0, host veth, eth0 in `netns`]. Returns the address and the host veth name.
fn bridge_result(stdout: &[u8], netns: &str) -> Res<(Ipv4Addr, String)> {
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
fn check_attached(side: &Side, pod: usize, ip: Ipv4Addr, veth: &str) -> Res<()> {
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
fn check_clean(side: &Side) -> Res<()> {
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
fn reset_side(side: &Side) {
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
fn cni_nat_rules(side: &Side) -> Res<Vec<String>> {
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

// The measurements -----------------------------------------------------------------------------

/// ADD, verification (untimed), DEL of one pod in `pods[0]`; returns (ADD, DEL) times.
fn br_add_del_once(side: &mut Side, masq: bool, id: &str, deep: bool) -> Res<(Duration, Duration)> {
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

fn br_warm_up(side: &mut Side) -> Res<()> {
    for i in 0..BR_WARMUP {
        br_add_del_once(side, false, &format!("warm-{i}"), true)?;
    }
    Ok(())
}

/// Per implementation (index 0 ours, 1 reference): the samples, or the error that stopped it.
type PerSide<T> = [Result<Vec<T>, String>; 2];

/// The per-side samples of a measurement and its harness-floor samples.
type Interleaved<T, F> = (PerSide<T>, Vec<F>);

fn labelled(side: &Side, e: String) -> String {
    if e.starts_with(&format!("{}:", side.label)) {
        e
    } else {
        format!("{}: {e}", side.label)
    }
}

/// Runs `step(side, i)` for i in 0..n on both sides, interleaved, alternating which goes first.
/// A side whose step fails stops there (its leftovers are removed) while the other goes on.
/// `floor` runs before each iteration with `sides[0]`'s worker; `None` just drops that sample.
fn interleave<T, F>(
    sides: &mut [Side; 2],
    n: usize,
    mut floor: impl FnMut(&mut Side, usize) -> Option<F>,
    mut step: impl FnMut(&mut Side, usize) -> Res<T>,
) -> Interleaved<T, F> {
    let mut res: PerSide<T> = [Ok(Vec::with_capacity(n)), Ok(Vec::with_capacity(n))];
    let mut floors = Vec::new();
    for i in 0..n {
        if res.iter().all(Result::is_err) {
            break;
        }
        if let Some(f) = floor(&mut sides[0], i) {
            floors.push(f);
        }
        for k in 0..2 {
            let s = (i + k) % 2;
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
fn post_check<T>(res: &mut PerSide<T>, sides: &[Side; 2], check: impl Fn(&Side) -> Res<()>) {
    for (r, side) in res.iter_mut().zip(sides) {
        if r.is_ok() {
            if let Err(e) = check(side) {
                *r = Err(labelled(side, e));
                reset_side(side);
            }
        }
    }
}

/// (a) and (a'): per side (ADD, DEL) times; floor = two /bin/true execs.
fn br_bench_add_del(
    sides: &mut [Side; 2],
    n: usize,
    masq: bool,
) -> Interleaved<(Duration, Duration), Duration> {
    let tag = if masq { "m" } else { "a" };
    let (mut res, floor) = interleave(
        sides,
        n,
        |s, i| {
            let t = true_binary()?;
            let call = s.call(format!("bench-{tag}-{i}"), 0);
            let calls = std::slice::from_ref(&call);
            Some(s.floor(t, calls).ok()? + s.floor(t, calls).ok()?)
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

/// (b): per side (ADD wall, DEL wall) per round; floor = 50 concurrent /bin/true.
fn br_bench_parallel(sides: &mut [Side; 2]) -> Interleaved<(Duration, Duration), Duration> {
    interleave(
        sides,
        PARALLEL_ROUNDS,
        |s, _| {
            let t = true_binary()?;
            let calls: Vec<Call> = (0..PARALLEL_PODS)
                .map(|k| s.call(format!("bench-b-true-{k}"), k))
                .collect();
            s.floor(t, &calls).ok()
        },
        br_parallel_round,
    )
}

/// (b) one round for one side: 50 ADDs at once (timed), checks, 50 DELs at once, checks.
/// Returns (ADD wall, DEL wall).
fn br_parallel_round(side: &mut Side, round: usize) -> Res<(Duration, Duration)> {
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
    let exe = std::env::current_exe().map_err(|e| format!("locating cni-bench: {e}"))?;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &side.host_ns])
        .arg(&exe)
        .arg("rss-probe")
        .arg(plugin)
        .arg(config_file);
    if let Some(ns) = netns {
        c.arg(ns);
    }
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running rss-probe: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{}: rss-probe of {} failed ({}): {}",
            side.label,
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

/// (c) for one side: (bridge ADD, host-local ADD alone), KiB. The bridge ADD attaches
/// `pods[0]` and is undone with a DEL through the worker; host-local gets a fresh store.
fn br_rss_once(side: &mut Side) -> Res<(u64, u64)> {
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

/// (c): per side (bridge ADD KiB, host-local ADD KiB) per run; floor = the probe on /bin/true.
fn br_bench_rss(sides: &mut [Side; 2]) -> Res<Interleaved<(u64, u64), u64>> {
    let dir = tempdir("cni-bench-br-rss-floor-")?;
    let dummy = dir.path().join("config.json");
    fs::write(&dummy, "{}").map_err(|e| format!("{}: {e}", dummy.display()))?;
    Ok(interleave(
        sides,
        RSS_RUNS,
        |s, _| br_probe(s, true_binary()?, &dummy, None).ok(),
        |s, _| br_rss_once(s),
    ))
}

// Driver and report ----------------------------------------------------------------------------

/// A statistic of one side's samples, `None` when that side failed.
fn side_stat<T, S>(r: &Result<Vec<T>, String>, f: impl Fn(&[T]) -> S) -> Option<S> {
    r.as_ref().ok().map(|v| f(v))
}

/// A time row; returns reference ÷ ours when both sides have a value.
fn time_row(
    rows: &mut Vec<Row>,
    what: String,
    o: Option<Duration>,
    r: Option<Duration>,
) -> Option<f64> {
    let ra = o
        .zip(r)
        .map(|(o, r)| ratio(r.as_secs_f64(), o.as_secs_f64()));
    rows.push(Row {
        what,
        ours: o.map(fmt_dur),
        reference: r.map(fmt_dur),
        ratio: ra.map(fmt_ratio),
    });
    ra
}

/// An RSS row; returns ours ÷ reference when both sides have a value.
fn kib_row(rows: &mut Vec<Row>, what: String, o: Option<u64>, r: Option<u64>) -> Option<f64> {
    let ra = o.zip(r).map(|(o, r)| ratio(o as f64, r as f64));
    rows.push(Row {
        what,
        ours: o.map(|k| format!("{k} KiB")),
        reference: r.map(|k| format!("{k} KiB")),
        ratio: ra.map(fmt_ratio),
    });
    ra
}

fn side_failures<T>(failures: &mut Vec<String>, what: &str, res: &PerSide<T>) {
    for r in res {
        if let Err(e) = r {
            failures.push(format!("{what}: {e}"));
        }
    }
}

fn time_target(name: &'static str, ra: Option<f64>, text: &str) -> Target {
    match ra {
        Some(ra) => Target {
            name,
            text: format!("{text}: {}", fmt_ratio(ra)),
            met: Some(ra >= 3.0),
        },
        None => failed_target(name, text),
    }
}

fn sum_pairs(v: &[(Duration, Duration)]) -> Vec<Duration> {
    v.iter().map(|(a, d)| *a + *d).collect()
}

fn firsts<A: Copy, B>(v: &[(A, B)]) -> Vec<A> {
    v.iter().map(|p| p.0).collect()
}

fn seconds<A, B: Copy>(v: &[(A, B)]) -> Vec<B> {
    v.iter().map(|p| p.1).collect()
}

fn bridge(args: &[OsString]) -> Res<bool> {
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

fn bridge_run(opts: &BridgeOpts) -> Res<bool> {
    let started = *START.get_or_init(Instant::now);
    // Resolve both implementations before creating anything.
    for (dir, which) in [(&opts.ours, "our"), (&opts.reference, "reference")] {
        plugin_path(dir, "bridge", which)?;
        plugin_path(dir, "host-local", which)?;
    }
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
    let (a, floor) = br_bench_add_del(&mut sides, opts.iterations, false);
    side_failures(&mut failures, "(a)", &a);
    let [ao, ar] = &a;
    let ra = time_row(
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
            "(a) harness floor: the same two execs of /bin/true in the fake host take {} median, \
             {} p90",
            fmt_dur(median(&floor)),
            fmt_dur(percentile(&floor, 90))
        ));
    }
    targets.push(time_target("(a)", ra, "ref÷ours ≥ 3× (median)"));

    // (a') The same with ipMasq.
    if opts.masq_iterations > 0 {
        progress(&format!(
            "(a') {} × bridge ADD+DEL with ipMasq per implementation",
            opts.masq_iterations
        ));
        let (m, _) = br_bench_add_del(&mut sides, opts.masq_iterations, true);
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
    let (b, floor) = br_bench_parallel(&mut sides);
    side_failures(&mut failures, "(b)", &b);
    let [bo, br] = &b;
    let ra = time_row(
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
            "(b) harness floor: {PARALLEL_PODS} concurrent /bin/true in the fake host take {} \
             median",
            fmt_dur(median(&floor))
        ));
    }
    targets.push(time_target("(b)", ra, "ref÷ours ≥ 3×"));

    // (c) Peak RSS.
    progress(&format!(
        "(c) {RSS_RUNS} × peak RSS of one bridge ADD and one host-local ADD per implementation"
    ));
    match br_bench_rss(&mut sides) {
        Ok((c, floor)) => {
            side_failures(&mut failures, "(c)", &c);
            let [co, cr] = &c;
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
                    "(c) probe floor: a child's maxrss includes the pages fork copied from the \
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
    write_table(&mut out, &rows, &notes, &targets);
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

// ---------------------------------------------------------------------------------------------
// cri
// ---------------------------------------------------------------------------------------------
//
// `cni-bench cri [--ours DIR] [--iterations N] [--images N] [--clients C] [--seconds S]`
//
// The per-call cost of `cri-adapter serve` against calling containerd directly, in one run.
//
// Setup (root only): Debian's containerd runs inside a throwaway network namespace
// `cnibench-<pid>-cri` (`ip netns exec`, which also gives it a private mount namespace), with its
// root, state and socket in a temporary directory and a configuration rendered by
// `cri-adapter render`. `cri-adapter wait --no-network` holds the bench until CRI answers; then
// N OCI layout archives built in memory (one image each: one shared tiny layer, a distinct config
// per image, so each name is its own CRI image) are imported with `cri-adapter seed`, which makes
// `ListImages` large without a registry (see cri_seed for the retry past a verification race).
// Finally `cri-adapter serve` listens on a socket of its own in front of containerd. Everything
// (serve, containerd, mounts under the temporary root, the namespace, the directory) is removed
// on every exit path: by a guard on return or unwinding, and by the signal thread on
// SIGINT/SIGTERM/SIGHUP; serve and containerd also get SIGTERM if this process dies
// (`setpriv --pdeathsig`, when setpriv exists).
//
// Measurements, with a CRI client of ours (tonic over the unix socket, `:authority localhost`,
// one HTTP/2 connection per client):
// - latency: N sequential calls of `Version`, `ListContainers` (no containers exist) and N/4 of
//   `ListImages` per target, in blocks of CRI_BLOCK calls that alternate between direct and via
//   serve; p50 and p99 of each, and added = via serve − direct;
// - throughput: C concurrent clients (own connection each) calling as fast as they can for S
//   seconds per target and RPC (two halves, direct / serve / serve / direct); calls/s and
//   via serve ÷ direct.

const CRI_NS_SUFFIX: &str = "cri";
const CRI_DEFAULT_ITERATIONS: usize = 2000;
const CRI_DEFAULT_IMAGES: usize = 300;
const CRI_DEFAULT_CLIENTS: usize = 8;
const CRI_DEFAULT_SECONDS: f64 = 2.0;
/// Sequential calls per target before switching to the other one.
const CRI_BLOCK: usize = 100;
/// Warm-up calls per RPC on every connection.
const CRI_WARMUP: usize = 50;
/// Longest any single phase of the measurements may take (a hung runtime must not hang us).
const CRI_PHASE_TIMEOUT: Duration = Duration::from_secs(120);
const CRI_TARGET_P50_US: f64 = 50.0;
const CRI_TARGET_P99_US: f64 = 200.0;
const CRI_TARGET_THROUGHPUT: f64 = 0.90;
/// Image names seeded for `ListImages`: `<prefix><index>:latest`.
const CRI_IMAGE_PREFIX: &str = "localhost/cni-bench/img-";

#[derive(Debug)]
struct CriOpts {
    ours: PathBuf,
    iterations: usize,
    images: usize,
    clients: usize,
    seconds: f64,
}

fn workspace_release_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    workspace.join("target").join("release")
}

fn parse_cri_opts(args: &[OsString]) -> Res<CriOpts> {
    let mut opts = CriOpts {
        ours: workspace_release_dir(),
        iterations: CRI_DEFAULT_ITERATIONS,
        images: CRI_DEFAULT_IMAGES,
        clients: CRI_DEFAULT_CLIENTS,
        seconds: CRI_DEFAULT_SECONDS,
    };
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
            "--iterations" => opts.iterations = parse_count(name, &value()?)?,
            "--images" => opts.images = parse_count(name, &value()?)?,
            "--clients" => opts.clients = parse_count(name, &value()?)?,
            "--seconds" => {
                let v = value()?;
                opts.seconds = match v.to_str().and_then(|s| s.parse::<f64>().ok()) {
                    Some(s) if s > 0.0 && s <= 600.0 => s,
                    _ => return Err(format!("{name}: expected seconds in (0, 600], got {v:?}")),
                };
            }
            _ => return Err(format!("unknown argument {arg:?}\n{}", usage())),
        }
    }
    Ok(opts)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `<--ours>/cri-adapter`, else `<workspace>/target/release/cri-adapter` (scripts/bench passes
/// the static plugin build as --ours, which holds no cri-adapter). Builds nothing.
fn cri_adapter_path(ours: &Path) -> Res<PathBuf> {
    let fallback = workspace_release_dir().join("cri-adapter");
    for path in [ours.join("cri-adapter"), fallback.clone()] {
        if is_executable(&path) {
            return path
                .canonicalize()
                .map_err(|e| format!("{}: {e}", path.display()));
        }
    }
    Err(format!(
        "cri-adapter not found in {} nor at {}; build it: cargo build --release -p cri-adapter",
        ours.display(),
        fallback.display()
    ))
}

/// The first `name` on PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

// Processes and files to remove, shared with the signal thread ---------------------------------

/// What `cri_cleanup` removes: the processes (in start order) and the temporary directory.
#[derive(Debug, Default)]
struct CriResources {
    /// Name, pid, and how long it may take to exit after SIGTERM.
    pids: Vec<(&'static str, nix::unistd::Pid, Duration)>,
    dir: Option<PathBuf>,
    /// Set by the first cleanup: nothing may be registered (created) after it.
    closed: bool,
}

static CRI_RESOURCES: std::sync::Mutex<CriResources> = std::sync::Mutex::new(CriResources {
    pids: Vec::new(),
    dir: None,
    closed: false,
});

/// Set by the signal thread: the process is about to exit, from that thread.
static SIGNALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn lock_cri() -> std::sync::MutexGuard<'static, CriResources> {
    CRI_RESOURCES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SIGTERM, up to `grace` for it to exit, then SIGKILL; reaps it either way.
fn stop_process(name: &str, pid: nix::unistd::Pid, grace: Duration) {
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    if kill(pid, Signal::SIGTERM).is_err() {
        // Already gone (and possibly reaped by a `try_wait`).
        let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        return;
    }
    let deadline = Instant::now() + grace;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(WaitStatus::StillAlive) => {
                progress(&format!(
                    "{name} (pid {pid}) still running {grace:?} after SIGTERM: SIGKILL"
                ));
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return;
            }
            _ => return,
        }
    }
}

/// Decodes the octal escapes (`\040`) of a /proc/self/mountinfo field.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts (recursively) every mount point at or under `dir` in our mount namespace.
/// containerd runs in a mount namespace of its own (`ip netns exec`), so normally there is none.
fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first; `-R` takes what is below each anyway.
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points.dedup();
    for p in points {
        let st = Command::new("umount")
            .args(["-R", "-l"])
            .arg(&p)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !st.is_ok_and(|s| s.success()) && p.exists() {
            eprintln!("cni-bench: WARNING: could not unmount {}", p.display());
        }
    }
}

/// Stops serve and containerd, unmounts and removes the temporary directory. Idempotent; called
/// by the guard and by the signal thread (the namespace goes with the namespace bookkeeping).
///
/// The lock is held throughout, so a second caller (the guard while the signal thread cleans up,
/// or the reverse) waits until everything is gone, and nothing new is started meanwhile.
fn cri_cleanup() {
    let mut res = lock_cri();
    res.closed = true;
    let pids = std::mem::take(&mut res.pids);
    for (name, pid, grace) in pids.iter().rev() {
        stop_process(name, *pid, *grace);
    }
    if let Some(dir) = res.dir.take() {
        unmount_under(&dir);
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("cni-bench: WARNING: removing {}: {e}", dir.display());
            }
        }
    }
}

/// Runs `cri_cleanup` when dropped (every return path, and unwinding).
#[derive(Debug)]
struct CriGuard;

impl Drop for CriGuard {
    fn drop(&mut self) {
        cri_cleanup();
    }
}

/// Spawns `command` with stdout and stderr appended to `log`, and registers it for cleanup.
fn spawn_logged(
    name: &'static str,
    mut command: Command,
    log: &Path,
    grace: Duration,
) -> Res<Child> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let file2 = file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut res = lock_cri();
    if res.closed {
        return Err(format!("not starting {name}: interrupted"));
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(file2))
        .spawn()
        .map_err(|e| format!("spawn {name} ({:?}): {e}", command.get_program()))?;
    let pid = i32::try_from(child.id()).map_err(|e| format!("{name}: pid: {e}"))?;
    res.pids
        .push((name, nix::unistd::Pid::from_raw(pid), grace));
    Ok(child)
}

/// The last lines of a log file, for error messages.
fn log_tail(log: &Path, lines: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n    ");
    format!("last lines of {}:\n    {tail}", log.display())
}

/// Runs a command to completion; its stdout on success, else an error with its output.
fn run_checked(mut command: Command, what: &str) -> Res<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: spawn {:?}: {e}", command.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n  stdout: {}\n  stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// The image archive ----------------------------------------------------------------------------

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn tar_append(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) -> Res<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    builder
        .append_data(&mut header, path, data)
        .map_err(|e| format!("building the image archive ({path}): {e}"))
}

/// `n` OCI image layout archives (tar), one image each, named `<CRI_IMAGE_PREFIX><i>:latest`:
/// one shared tiny layer, and a config per image that differs by a label, so every name is a
/// distinct image (containerd's CRI groups names by config digest). Returns (name, archive).
fn cri_image_archives(n: usize) -> Res<Vec<(String, Vec<u8>)>> {
    let mut layer = tar::Builder::new(Vec::new());
    tar_append(
        &mut layer,
        "cni-bench.txt",
        b"cni-bench cri ListImages filler\n",
    )?;
    let layer = layer
        .into_inner()
        .map_err(|e| format!("building the layer: {e}"))?;
    let layer_digest = sha256_hex(&layer);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let config = serde_json::json!({
            "architecture": oci_arch(),
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Cmd": ["/cni-bench.txt"],
                "Labels": { "io.k8s-shims.cni-bench.index": i.to_string() },
            },
            "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] },
        })
        .to_string();
        let config_digest = sha256_hex(config.as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{config_digest}"),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{layer_digest}"),
                "size": layer.len(),
            }],
        })
        .to_string();
        let manifest_digest = sha256_hex(manifest.as_bytes());
        let name = format!("{CRI_IMAGE_PREFIX}{i:04}:latest");
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{manifest_digest}"),
                "size": manifest.len(),
                "annotations": { "io.containerd.image.name": name },
            }],
        })
        .to_string();
        let mut archive = tar::Builder::new(Vec::new());
        for (path, data) in [
            (
                "oci-layout".to_string(),
                &br#"{"imageLayoutVersion":"1.0.0"}"#[..],
            ),
            (format!("blobs/sha256/{layer_digest}"), &layer[..]),
            (format!("blobs/sha256/{config_digest}"), config.as_bytes()),
            (
                format!("blobs/sha256/{manifest_digest}"),
                manifest.as_bytes(),
            ),
            ("index.json".to_string(), index.as_bytes()),
        ] {
            tar_append(&mut archive, &path, data)?;
        }
        let archive = archive
            .into_inner()
            .map_err(|e| format!("building the image archive: {e}"))?;
        out.push((name, archive));
    }
    Ok(out)
}

// Setup ------------------------------------------------------------------------------------------

/// The running bench environment.
#[derive(Debug)]
struct CriEnv {
    adapter: PathBuf,
    netns: String,
    /// containerd's socket.
    direct: PathBuf,
    /// serve's socket.
    proxied: PathBuf,
    containerd: Child,
    serve: Child,
    containerd_log: PathBuf,
    serve_log: PathBuf,
    seed_time: Duration,
    /// `cri-adapter seed` runs it took (see the retry in cri_setup).
    seed_attempts: usize,
    images: Vec<String>,
    archive_len: usize,
}

/// Appends `setpriv --pdeathsig TERM` (when setpriv exists) to a command whose next argument
/// is the program to run: the process is then terminated if this one dies without cleaning up
/// (the children are spawned by the main thread, which lives as long as the process).
fn pdeathsig_prefix(cmd: &mut Command) {
    if let Some(setpriv) = find_on_path("setpriv") {
        cmd.arg(setpriv).args(["--pdeathsig", "TERM"]);
    }
}

/// Waits until `socket` accepts a connection, failing early if `child` exits.
fn wait_for_socket(socket: &Path, child: &mut Child, log: &Path, timeout: Duration) -> Res<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!(
                "the process for {} exited ({st}); {}",
                socket.display(),
                log_tail(log, 15)
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not accept connections within {timeout:?}; {}",
                socket.display(),
                log_tail(log, 15)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Imports the archives (`paths[i]` holds `images[i]`) with `cri-adapter seed`, all in one run
/// when it succeeds. A seed whose CRI ImageStatus check runs before containerd's CRI plugin has
/// processed the image event fails with "image NAME was imported but CRI ImageStatus does not
/// find it" (the image is in containerd by then); the next run starts at that image, which is
/// then a no-op. Returns the time taken and the number of runs.
fn cri_seed(
    adapter: &Path,
    endpoint: &str,
    images: &[String],
    paths: &[PathBuf],
) -> Res<(Duration, usize)> {
    let started = Instant::now();
    let mut from = 0;
    let mut runs = 0;
    let max_runs = 3 * images.len() + 3;
    while from < paths.len() {
        runs += 1;
        let mut seed = Command::new(adapter);
        seed.args(["seed", "--endpoint", endpoint])
            .args(&paths[from..]);
        match run_checked(seed, "cri-adapter seed") {
            Ok(out) => {
                let seeded = out.lines().filter(|l| !l.trim().is_empty()).count();
                if seeded != paths.len() - from {
                    return Err(format!(
                        "cri-adapter seed reported {seeded} images, expected {}:\n{out}",
                        paths.len() - from
                    ));
                }
                from = paths.len();
            }
            Err(e) if runs < max_runs => {
                let raced = e
                    .split("image ")
                    .filter_map(|t| t.split_once(" was imported but CRI ImageStatus"))
                    .map(|(name, _)| name)
                    .find_map(|name| images.iter().position(|n| n == name));
                match raced {
                    Some(i) if i >= from => {
                        from = i;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(format!("{e}\n(after {runs} runs)")),
        }
    }
    Ok((started.elapsed(), runs))
}

fn cri_setup(opts: &CriOpts, adapter: &Path, containerd: &Path) -> Res<CriEnv> {
    // From its creation on, the directory belongs to cri_cleanup (every path, signals too).
    let dir = {
        let mut res = lock_cri();
        if res.closed {
            return Err("interrupted".into());
        }
        let dir = tempdir("cni-bench-cri-")?.keep();
        res.dir = Some(dir.clone());
        dir
    };
    let root = dir.join("root");
    let state = dir.join("state");
    let net_d = dir.join("net.d");
    for d in [&root, &state, &net_d] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let direct = dir.join("containerd.sock");
    let proxied = dir.join("cri.sock");
    let config = dir.join("containerd.toml");
    let containerd_log = dir.join("containerd.log");
    let serve_log = dir.join("serve.log");
    let endpoint = format!("unix://{}", direct.display());
    let bin_dir = adapter.parent().unwrap_or_else(|| Path::new("/"));

    progress("rendering the containerd configuration with cri-adapter render");
    let mut render = Command::new(adapter);
    render
        .args(["render", "--runtime", "containerd", "--root"])
        .arg(&root)
        .arg("--state")
        .arg(&state)
        .arg("--address")
        .arg(&direct)
        .arg("--cni-bin-dir")
        .arg(bin_dir)
        .arg("--cni-conf-dir")
        .arg(&net_d)
        .arg("--output")
        .arg(&config);
    run_checked(render, "cri-adapter render")?;

    let netns = format!("{NS_PREFIX}-{}-{CRI_NS_SUFFIX}", std::process::id());
    progress(&format!("starting containerd in network namespace {netns}"));
    create_namespaces(std::slice::from_ref(&netns))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &netns]);
    pdeathsig_prefix(&mut cmd);
    cmd.arg(containerd).arg("--config").arg(&config);
    let mut containerd_child =
        spawn_logged("containerd", cmd, &containerd_log, Duration::from_secs(10))?;

    let mut wait = Command::new(adapter);
    wait.args([
        "wait",
        "--endpoint",
        &endpoint,
        "--no-network",
        "--timeout",
        "30",
    ]);
    if let Err(e) = run_checked(wait, "cri-adapter wait") {
        let exited = match containerd_child.try_wait() {
            Ok(Some(st)) => format!(" (containerd exited: {st})"),
            _ => String::new(),
        };
        return Err(format!("{e}{exited}\n{}", log_tail(&containerd_log, 20)));
    }

    progress(&format!(
        "seeding {} images (one OCI archive each) with cri-adapter seed",
        opts.images
    ));
    let archives = cri_image_archives(opts.images)?;
    let images_dir = dir.join("images");
    fs::create_dir_all(&images_dir).map_err(|e| format!("{}: {e}", images_dir.display()))?;
    let mut paths = Vec::with_capacity(archives.len());
    let mut archive_len = 0;
    for (i, (_, data)) in archives.iter().enumerate() {
        let path = images_dir.join(format!("img-{i:04}.tar"));
        fs::write(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
        archive_len += data.len();
        paths.push(path);
    }
    let images: Vec<String> = archives.into_iter().map(|(name, _)| name).collect();
    let (seed_time, seed_attempts) = cri_seed(adapter, &endpoint, &images, &paths)?;
    progress(&format!(
        "seeded {} images in {:.1} s ({seed_attempts} cri-adapter seed runs)",
        images.len(),
        seed_time.as_secs_f64()
    ));

    progress("starting cri-adapter serve");
    let mut cmd = match find_on_path("setpriv") {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "TERM"]).arg(adapter);
            c
        }
        None => Command::new(adapter),
    };
    cmd.args(["serve", "--listen"])
        .arg(&proxied)
        .args(["--upstream", &endpoint]);
    let mut serve = spawn_logged("cri-adapter serve", cmd, &serve_log, Duration::from_secs(2))?;
    wait_for_socket(&proxied, &mut serve, &serve_log, Duration::from_secs(10))?;

    Ok(CriEnv {
        adapter: adapter.to_path_buf(),
        netns,
        direct,
        proxied,
        containerd: containerd_child,
        serve,
        containerd_log,
        serve_log,
        seed_time,
        seed_attempts,
        images,
        archive_len,
    })
}

// The CRI client ---------------------------------------------------------------------------------

/// A unix stream that counts the bytes read from it (to report response sizes on the wire).
#[derive(Debug)]
struct CountingStream {
    inner: tokio::net::UnixStream,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl tokio::io::AsyncRead for CountingStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            self.read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

impl tokio::io::AsyncWrite for CountingStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One CRI client: its own HTTP/2 connection (`:authority localhost`), 16 MiB messages.
#[derive(Debug, Clone)]
struct CriClient {
    runtime: k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    images: k8s_cri::v1::image_service_client::ImageServiceClient<tonic::transport::Channel>,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

const CRI_MAX_MESSAGE: usize = 16 << 20;

async fn cri_connect(socket: &Path) -> Res<CriClient> {
    let path = socket.to_path_buf();
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = read.clone();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            let read = counter.clone();
            async move {
                let inner = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(CountingStream {
                    inner,
                    read,
                }))
            }
        }))
        .await
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    Ok(CriClient {
        runtime: k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(CRI_MAX_MESSAGE)
            .max_encoding_message_size(CRI_MAX_MESSAGE),
        images: k8s_cri::v1::image_service_client::ImageServiceClient::new(channel)
            .max_decoding_message_size(CRI_MAX_MESSAGE)
            .max_encoding_message_size(CRI_MAX_MESSAGE),
        read,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Version,
    ListContainers,
    ListImages,
}

impl Rpc {
    const ALL: [Rpc; 3] = [Rpc::Version, Rpc::ListContainers, Rpc::ListImages];

    fn name(self) -> &'static str {
        match self {
            Rpc::Version => "Version",
            Rpc::ListContainers => "ListContainers",
            Rpc::ListImages => "ListImages",
        }
    }
}

/// One call; returns the number of items in the response (1 for Version).
async fn cri_call(c: &mut CriClient, rpc: Rpc) -> Res<usize> {
    let err = |e: tonic::Status| format!("CRI {}: {e}", rpc.name());
    match rpc {
        Rpc::Version => {
            let r = c
                .runtime
                .version(k8s_cri::v1::VersionRequest {
                    version: "v1".into(),
                })
                .await
                .map_err(err)?;
            Ok(usize::from(!r.get_ref().runtime_version.is_empty()))
        }
        Rpc::ListContainers => {
            let r = c
                .runtime
                .list_containers(k8s_cri::v1::ListContainersRequest { filter: None })
                .await
                .map_err(err)?;
            Ok(r.get_ref().containers.len())
        }
        Rpc::ListImages => {
            let r = c
                .images
                .list_images(k8s_cri::v1::ListImagesRequest { filter: None })
                .await
                .map_err(err)?;
            Ok(r.get_ref().images.len())
        }
    }
}

/// One call whose response must hold `want` items (checked on every call: it is cheap).
async fn cri_checked_call(c: &mut CriClient, rpc: Rpc, want: usize) -> Res<()> {
    let n = cri_call(c, rpc).await?;
    if n != want {
        return Err(format!(
            "CRI {}: {n} items in the response, expected {want}",
            rpc.name()
        ));
    }
    Ok(())
}

async fn with_phase_timeout<T>(what: &str, f: impl std::future::Future<Output = Res<T>>) -> Res<T> {
    tokio::time::timeout(CRI_PHASE_TIMEOUT, f)
        .await
        .map_err(|_| format!("{what}: no answer within {CRI_PHASE_TIMEOUT:?}"))?
}

/// The two targets, direct (containerd) first, via serve second.
type Pair<T> = [T; 2];
const TARGETS: Pair<&str> = ["direct", "via serve"];

/// Sequential latency samples of `n` calls per target, in alternating blocks.
async fn cri_latency(
    clients: &mut Pair<CriClient>,
    rpc: Rpc,
    n: usize,
    want: usize,
) -> Res<Pair<Vec<Duration>>> {
    let mut samples: Pair<Vec<Duration>> = [Vec::with_capacity(n), Vec::with_capacity(n)];
    let mut done = 0;
    let mut block = 0;
    while done < n {
        let len = CRI_BLOCK.min(n - done);
        let order = if block % 2 == 0 { [0, 1] } else { [1, 0] };
        for t in order {
            for _ in 0..len {
                let start = Instant::now();
                let got = cri_call(&mut clients[t], rpc).await;
                let took = start.elapsed();
                match got {
                    Ok(k) if k == want => samples[t].push(took),
                    Ok(k) => {
                        return Err(format!(
                            "{}: CRI {}: {k} items in the response, expected {want}",
                            TARGETS[t],
                            rpc.name()
                        ))
                    }
                    Err(e) => return Err(format!("{}: {e}", TARGETS[t])),
                }
            }
        }
        done += len;
        block += 1;
    }
    Ok(samples)
}

/// `clients.len()` concurrent callers for `time`; returns the calls completed and the elapsed
/// wall time.
async fn cri_throughput_slice(
    clients: &[CriClient],
    rpc: Rpc,
    want: usize,
    time: Duration,
) -> Res<(u64, Duration)> {
    let start = Instant::now();
    let deadline = start + time;
    let mut tasks = tokio::task::JoinSet::new();
    for c in clients {
        let mut c = c.clone();
        tasks.spawn(async move {
            let mut calls = 0u64;
            while Instant::now() < deadline {
                cri_checked_call(&mut c, rpc, want).await?;
                calls += 1;
            }
            Ok::<u64, String>(calls)
        });
    }
    let mut total = 0;
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(format!("client task: {e}"));
            }
        }
    }
    let elapsed = start.elapsed();
    match first_err {
        Some(e) => Err(e),
        None => Ok((total, elapsed)),
    }
}

/// Calls per second per target: halves in the order direct, serve, serve, direct.
async fn cri_throughput(
    pools: &Pair<Vec<CriClient>>,
    rpc: Rpc,
    want: usize,
    seconds: f64,
) -> Res<Pair<f64>> {
    let half = Duration::from_secs_f64(seconds / 2.0);
    let mut calls = [0u64; 2];
    let mut time = [Duration::ZERO; 2];
    for t in [0, 1, 1, 0] {
        let (n, d) = cri_throughput_slice(&pools[t], rpc, want, half)
            .await
            .map_err(|e| format!("{}: {e}", TARGETS[t]))?;
        calls[t] += n;
        time[t] += d;
    }
    Ok([0, 1].map(|t| ratio(calls[t] as f64, time[t].as_secs_f64())))
}

/// Per target, the sequential latencies of one RPC.
type LatencySamples = Res<Pair<Vec<Duration>>>;

/// What the measurements produced.
#[derive(Debug)]
struct CriResults {
    runtime: String,
    list_images_bytes: Pair<u64>,
    latency: Vec<(Rpc, usize, LatencySamples)>,
    throughput: Vec<(Rpc, Res<Pair<f64>>)>,
}

async fn cri_measure(env: &CriEnv, opts: &CriOpts) -> Res<CriResults> {
    let sockets = [&env.direct, &env.proxied];
    let mut pools: Pair<Vec<CriClient>> = [Vec::new(), Vec::new()];
    for (t, socket) in sockets.iter().enumerate() {
        for _ in 0..opts.clients {
            pools[t].push(
                cri_connect(socket)
                    .await
                    .map_err(|e| format!("{}: {e}", TARGETS[t]))?,
            );
        }
    }
    let mut one = [pools[0][0].clone(), pools[1][0].clone()];

    // What the runtime says it is, and the expected item counts.
    let version = with_phase_timeout("Version", async {
        one[0]
            .runtime
            .version(k8s_cri::v1::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(|e| format!("CRI Version: {e}"))
    })
    .await?
    .into_inner();
    let runtime = format!(
        "{} {} (CRI {})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    );
    let n_images = with_phase_timeout("ListImages", cri_call(&mut one[0], Rpc::ListImages)).await?;
    let n_containers =
        with_phase_timeout("ListContainers", cri_call(&mut one[0], Rpc::ListContainers)).await?;
    if n_images < env.images.len() {
        return Err(format!(
            "ListImages returns {n_images} images, fewer than the {} seeded",
            env.images.len()
        ));
    }
    // Every seeded name must be listed (and the count is what every later call must return).
    let listed = with_phase_timeout("ListImages", async {
        one[0]
            .images
            .list_images(k8s_cri::v1::ListImagesRequest { filter: None })
            .await
            .map_err(|e| format!("CRI ListImages: {e}"))
    })
    .await?
    .into_inner();
    let tags: HashSet<&str> = listed
        .images
        .iter()
        .flat_map(|i| i.repo_tags.iter().map(String::as_str))
        .collect();
    if let Some(missing) = env.images.iter().find(|n| !tags.contains(n.as_str())) {
        return Err(format!(
            "ListImages does not list the seeded image {missing}"
        ));
    }
    let want = |rpc: Rpc| match rpc {
        Rpc::Version => 1,
        Rpc::ListContainers => n_containers,
        Rpc::ListImages => n_images,
    };

    // Warm every connection up (and check both targets answer the same).
    progress(&format!(
        "warming up {} connections per target",
        opts.clients
    ));
    with_phase_timeout("warm-up", async {
        for (t, pool) in pools.iter_mut().enumerate() {
            for c in pool.iter_mut() {
                for rpc in Rpc::ALL {
                    for _ in 0..CRI_WARMUP {
                        cri_checked_call(c, rpc, want(rpc))
                            .await
                            .map_err(|e| format!("{}: {e}", TARGETS[t]))?;
                    }
                }
            }
        }
        Ok(())
    })
    .await?;

    // Response size on the wire: bytes read by one ListImages call on each target.
    let mut list_images_bytes = [0u64; 2];
    for t in 0..2 {
        let before = one[t].read.load(std::sync::atomic::Ordering::Relaxed);
        with_phase_timeout(
            "ListImages",
            cri_checked_call(&mut one[t], Rpc::ListImages, n_images),
        )
        .await?;
        list_images_bytes[t] = one[t].read.load(std::sync::atomic::Ordering::Relaxed) - before;
    }

    let mut latency = Vec::new();
    for rpc in Rpc::ALL {
        let n = if rpc == Rpc::ListImages {
            opts.iterations.div_ceil(4)
        } else {
            opts.iterations
        };
        progress(&format!(
            "latency: {n} sequential {} calls per target, blocks of {CRI_BLOCK}",
            rpc.name()
        ));
        let r = with_phase_timeout(rpc.name(), cri_latency(&mut one, rpc, n, want(rpc))).await;
        latency.push((rpc, n, r));
    }
    let mut throughput = Vec::new();
    for rpc in Rpc::ALL {
        progress(&format!(
            "throughput: {} concurrent clients calling {} for {:.1} s per target",
            opts.clients,
            rpc.name(),
            opts.seconds
        ));
        let r = with_phase_timeout(
            rpc.name(),
            cri_throughput(&pools, rpc, want(rpc), opts.seconds),
        )
        .await;
        throughput.push((rpc, r));
    }
    Ok(CriResults {
        runtime,
        list_images_bytes,
        latency,
        throughput,
    })
}

// Driver and report ------------------------------------------------------------------------------

fn fmt_us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 {
        format!("{us:.1} µs")
    } else {
        fmt_dur(d)
    }
}

fn fmt_kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn cri(args: &[OsString]) -> Res<bool> {
    let result = cri_run(args);
    if SIGNALLED.load(std::sync::atomic::Ordering::SeqCst) {
        // The signal thread cleans up and exits the process; failures caused by its killing
        // serve and containerd are not worth reporting.
        loop {
            std::thread::park();
        }
    }
    result
}

fn cri_run(args: &[OsString]) -> Res<bool> {
    let opts = parse_cri_opts(args)?;
    let started = *START.get_or_init(Instant::now);
    let adapter = cri_adapter_path(&opts.ours)?;
    let containerd = find_on_path("containerd")
        .ok_or("containerd not found on PATH (Debian: apt-get install containerd)")?;
    if !is_root() {
        return Err("cni-bench cri needs root (network namespace, containerd)".into());
    }
    // Before any thread exists, so that every later thread inherits the blocked mask.
    install_signal_cleanup()?;
    delete_stale_namespaces();
    // Dropped in reverse order: serve and containerd stop first, then the namespace goes.
    let _ns_guard = NamespaceGuard;
    let _cri_guard = CriGuard;
    let mut env = cri_setup(&opts, &adapter, &containerd)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("building the tokio runtime: {e}"))?;
    let measured = runtime.block_on(cri_measure(&env, &opts));
    drop(runtime);
    if SIGNALLED.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(false);
    }
    // Both must still be running: a crash mid-run would make the numbers meaningless.
    let mut failures: Vec<String> = Vec::new();
    for (name, child, log) in [
        ("containerd", &mut env.containerd, &env.containerd_log),
        ("cri-adapter serve", &mut env.serve, &env.serve_log),
    ] {
        if let Ok(Some(st)) = child.try_wait() {
            failures.push(format!(
                "{name} exited during the bench ({st}); {}",
                log_tail(log, 15)
            ));
        }
    }
    let res = match measured {
        Ok(r) => r,
        Err(e) => {
            failures.push(e);
            for f in &failures {
                eprintln!("cni-bench: FAILURE {f}");
            }
            return Ok(false);
        }
    };
    let adapter_version = run_checked(
        {
            let mut c = Command::new(&env.adapter);
            c.arg("--version");
            c
        },
        "cri-adapter --version",
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_else(|_| "cri-adapter (version unknown)".into());

    let mut rows: Vec<Row> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let n_images = env.images.len();
    for (rpc, n, r) in &res.latency {
        let label = match rpc {
            Rpc::ListImages => format!(
                "ListImages ({n_images} images, {} response)",
                fmt_kib(res.list_images_bytes[0])
            ),
            _ => rpc.name().to_string(),
        };
        let (p50_name, p99_name) = match rpc {
            Rpc::Version => ("Version p50", "Version p99"),
            Rpc::ListContainers => ("ListContainers p50", "ListContainers p99"),
            Rpc::ListImages => ("ListImages p50", "ListImages p99"),
        };
        for (pct, name, limit) in [
            (50, p50_name, CRI_TARGET_P50_US),
            (99, p99_name, CRI_TARGET_P99_US),
        ] {
            let what = format!("{label}: p{pct} of {n} sequential calls");
            let text = format!("added ≤ {limit:.0} µs");
            match r {
                Ok([d, p]) => {
                    let (d, p) = (percentile(d, pct), percentile(p, pct));
                    let added = (p.as_secs_f64() - d.as_secs_f64()) * 1e6;
                    rows.push(Row {
                        what,
                        ours: Some(fmt_us(d)),
                        reference: Some(fmt_us(p)),
                        ratio: Some(format!("{added:+.1} µs")),
                    });
                    targets.push(Target {
                        name,
                        text: format!("{text}: {added:+.1} µs"),
                        met: Some(added <= limit),
                    });
                }
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    rows.push(failed_row(&what));
                    targets.push(failed_target(name, &text));
                }
            }
        }
    }
    for (rpc, r) in &res.throughput {
        let name = match rpc {
            Rpc::Version => "Version throughput",
            Rpc::ListContainers => "ListContainers throughput",
            Rpc::ListImages => "ListImages throughput",
        };
        let what = format!(
            "{} throughput, {} concurrent clients, calls/s",
            rpc.name(),
            opts.clients
        );
        let text = format!(
            "via serve ≥ {:.0}% of direct",
            CRI_TARGET_THROUGHPUT * 100.0
        );
        match r {
            Ok([d, p]) => {
                let ra = ratio(*p, *d);
                rows.push(Row {
                    what,
                    ours: Some(format!("{d:.0}")),
                    reference: Some(format!("{p:.0}")),
                    ratio: Some(fmt_ratio(ra)),
                });
                targets.push(Target {
                    name,
                    text: format!("{text}: {:.1}%", ra * 100.0),
                    met: Some(ra >= CRI_TARGET_THROUGHPUT),
                });
            }
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                rows.push(failed_row(&what));
                targets.push(failed_target(name, &text));
            }
        }
    }

    // Report.
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## cri-adapter serve: containerd direct vs via serve\n"
    );
    let _ = writeln!(out, "- machine: {}", machine());
    let _ = writeln!(
        out,
        "- runtime: {} in netns `{}`, socket `{}`",
        res.runtime,
        env.netns,
        env.direct.display()
    );
    let _ = writeln!(
        out,
        "- serve: `{}` ({adapter_version}), socket `{}`",
        env.adapter.display(),
        env.proxied.display()
    );
    let _ = writeln!(
        out,
        "- images: {n_images} seeded from as many OCI archives ({} in all) in {:.1} s ({} `cri-adapter seed` \
         run{}); one ListImages response is {} on the wire direct, {} via serve; ListContainers \
         lists no containers",
        fmt_kib(env.archive_len as u64),
        env.seed_time.as_secs_f64(),
        env.seed_attempts,
        if env.seed_attempts == 1 { "" } else { "s" },
        fmt_kib(res.list_images_bytes[0]),
        fmt_kib(res.list_images_bytes[1])
    );
    let _ = writeln!(
        out,
        "- client: tonic over the unix socket, one HTTP/2 connection per client, {CRI_WARMUP} \
         warm-up calls per RPC and connection; latency: sequential calls in blocks of \
         {CRI_BLOCK} alternating direct / via serve; throughput: {} clients for {:.1} s per \
         target and RPC; total bench time {:.1} s\n",
        opts.clients,
        opts.seconds,
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| measurement | direct | via serve | added / ratio |\n|---|---:|---:|---:|"
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
        "\nadded = via serve − direct at the same percentile (lower is better); ratio = via \
         serve ÷ direct calls/s (higher is better)."
    );
    write_targets(&mut out, &targets);
    progress("stopping serve and containerd");
    drop(env);
    cri_cleanup();
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

/// The ours / reference / ratio table, the notes and the targets line.
fn write_table(out: &mut String, rows: &[Row], notes: &[String], targets: &[Target]) {
    let _ = writeln!(
        out,
        "| measurement | ours | reference | ratio |\n|---|---:|---:|---:|"
    );
    for r in rows {
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
    for n in notes {
        let _ = writeln!(out, "{n}");
    }
    write_targets(out, targets);
}

/// The targets line: each target, met or MISSED (FAILED when not measured).
fn write_targets(out: &mut String, targets: &[Target]) {
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
}
