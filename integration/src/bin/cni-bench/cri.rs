//! `cni-bench cri`: `cri-adapter serve` against calling containerd directly, and a bare relay.
//!
//! `cni-bench cri [--ours DIR] [--iterations N] [--images N] [--clients C] [--seconds S]`
//!
//! The per-call cost of `cri-adapter serve` against calling containerd directly, in one run,
//! with a third target beside them: a bare relay (`cni-bench relay`, relay.rs: one thread,
//! epoll, one read and one write per readiness, no parsing), the floor of any user-space hop.
//! It tells whether a goal serve misses is out of reach of any hop, or serve's own cost.
//!
//! Setup (root only): Debian's containerd runs inside a throwaway network namespace
//! `cnibench-<pid>-cri` (`ip netns exec`, which also gives it a private mount namespace), with its
//! root, state and socket in a temporary directory and a configuration rendered by
//! `cri-adapter render`. `cri-adapter wait --no-network` holds the bench until CRI answers; then
//! N OCI layout archives built in memory (one image each: one shared tiny layer, a distinct config
//! per image, so each name is its own CRI image) are imported with `cri-adapter seed`, which makes
//! `ListImages` large without a registry (see cri_seed for the retry past a verification race).
//! Finally `cri-adapter serve` and the relay (this program, re-executed: a process of its own,
//! so its CPU time is its own) listen on sockets of their own in front of containerd.
//! Everything (the relay, serve, containerd, mounts under the temporary root, the namespace, the
//! directory) is removed on every exit path: by a guard on return or unwinding, and by the
//! signal thread on SIGINT/SIGTERM/SIGHUP; the relay, serve and containerd also get SIGTERM if
//! this process dies (`setpriv --pdeathsig`, when setpriv exists).
//!
//! Measurements, with a CRI client of ours (tonic over the unix socket, `:authority localhost`,
//! one HTTP/2 connection per client):
//! - latency: N sequential calls of `Version`, `ListContainers` (no containers exist) and N/4 of
//!   `ListImages` per target, in blocks of CRI_BLOCK calls that rotate among direct, via serve
//!   and via relay (client::block_order); p50 and p99 of each, and added = via X − direct;
//! - throughput: C concurrent clients (own connection each) calling as fast as they can for S
//!   seconds per target and RPC (two halves each, direct / serve / relay / relay / serve /
//!   direct); calls/s and via X ÷ direct; the CPU per call of the client, containerd, serve
//!   and the relay meanwhile.
//!
//! Direct is the floor of serve: the table prints via serve ÷ direct per call as ours ÷ floor,
//! then the relay's figures and serve ÷ relay (table.rs), and per RPC what the relay shows.

mod client;
pub(crate) mod env;
mod image;
pub(crate) mod relay;
mod table;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::*;
use crate::plugin::*;
use crate::report::*;
use crate::Res;
use client::*;
use env::*;
use table::*;

pub(crate) const CRI_NS_SUFFIX: &str = "cri";
pub(crate) const CRI_DEFAULT_ITERATIONS: usize = 2000;
pub(crate) const CRI_DEFAULT_IMAGES: usize = 300;
pub(crate) const CRI_DEFAULT_CLIENTS: usize = 8;
pub(crate) const CRI_DEFAULT_SECONDS: f64 = 2.0;
/// Sequential calls per target before switching to the next one.
pub(crate) const CRI_BLOCK: usize = 100;
/// Warm-up calls per RPC on every connection.
pub(crate) const CRI_WARMUP: usize = 50;
/// Longest any single phase of the measurements may take (a hung runtime must not hang us).
pub(crate) const CRI_PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// The speed issue's goals: added p50 latency, added p99, and via ÷ direct calls/s.
pub(crate) const CRI_TARGET_P50_US: f64 = 20.0;
pub(crate) const CRI_TARGET_P99_US: f64 = 200.0;
pub(crate) const CRI_TARGET_THROUGHPUT: f64 = 0.90;
/// Image names seeded for `ListImages`: `<prefix><index>:latest`.
pub(crate) const CRI_IMAGE_PREFIX: &str = "localhost/cni-bench/img-";

#[derive(Debug)]
pub(crate) struct CriOpts {
    pub(crate) ours: PathBuf,
    pub(crate) iterations: usize,
    pub(crate) images: usize,
    pub(crate) clients: usize,
    pub(crate) seconds: f64,
}

pub(crate) fn parse_cri_opts(args: &[OsString]) -> Res<CriOpts> {
    let mut opts = CriOpts {
        ours: workspace_release_dir(),
        iterations: CRI_DEFAULT_ITERATIONS,
        images: CRI_DEFAULT_IMAGES,
        clients: CRI_DEFAULT_CLIENTS,
        seconds: CRI_DEFAULT_SECONDS,
    };
    for_each_option(args, |name, value| {
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
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(opts)
}

/// `<--ours>/cri-adapter`, else `<workspace>/target/release/cri-adapter` (scripts/bench passes
/// the static plugin build as --ours, which holds no cri-adapter). Builds nothing.
pub(crate) fn cri_adapter_path(ours: &Path) -> Res<PathBuf> {
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

pub(crate) fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub(crate) fn cri(args: &[OsString]) -> Res<bool> {
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

pub(crate) fn cri_run(args: &[OsString]) -> Res<bool> {
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
    // Dropped in reverse order: the relay, serve and containerd stop first, then the namespace.
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
    // All must still be running: a crash mid-run would make the numbers meaningless.
    let mut failures: Vec<String> = Vec::new();
    for (name, child, log) in [
        ("containerd", &mut env.containerd, &env.containerd_log),
        ("cri-adapter serve", &mut env.serve, &env.serve_log),
        ("cni-bench relay", &mut env.relay, &env.relay_log),
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

    let n_images = env.images.len();
    let (rows, targets) = cri_rows(&res, n_images, opts.clients, &mut failures);
    let cpu_notes: Vec<String> = res
        .throughput
        .iter()
        .filter_map(|(rpc, r)| r.as_ref().ok().map(|tp| cpu_note(*rpc, tp)))
        .collect();

    // Report.
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## cri-adapter serve: containerd direct vs via serve (and via a bare relay)\n"
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
        "- bare relay: `cni-bench relay`, socket `{}`",
        env.relayed.display()
    );
    let _ = writeln!(
        out,
        "- images: {n_images} seeded from as many OCI archives ({} in all) in {:.1} s ({} `cri-adapter seed` \
         run{}); one ListImages response is {} on the wire direct, {} via serve, {} via relay; \
         ListContainers lists no containers",
        fmt_kib(env.archive_len as u64),
        env.seed_time.as_secs_f64(),
        env.seed_attempts,
        if env.seed_attempts == 1 { "" } else { "s" },
        fmt_kib(res.list_images_bytes[DIRECT]),
        fmt_kib(res.list_images_bytes[SERVE]),
        fmt_kib(res.list_images_bytes[RELAY])
    );
    let _ = writeln!(
        out,
        "- client: tonic over the unix socket, one HTTP/2 connection per client, {CRI_WARMUP} \
         warm-up calls per RPC and connection; latency: sequential calls in blocks of \
         {CRI_BLOCK} rotating among direct / via serve / via relay; throughput: {} clients \
         for {:.1} s per target and RPC; total bench time {:.1} s\n",
        opts.clients,
        opts.seconds,
        started.elapsed().as_secs_f64()
    );
    write_cri_table(&mut out, &rows);
    write_cri_closing(
        &mut out,
        &cpu_notes,
        &relay_notes(&rows, &res.throughput),
        &targets,
    );
    progress("stopping the relay, serve and containerd");
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
