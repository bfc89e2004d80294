//! `cni-bench seed`: the memory and time of importing one large image into
//! containerd, `cri-adapter seed` against `ctr images import` of the same
//! archive, each into a containerd of its own (both unpack the layer).

use crate::archives::{write_docker_archive, write_layer};
use crate::cri::{adapter_bin, unix, Containerd};
use crate::PATH;
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A process's exit status, its peak resident set (KiB, from the kernel's
/// high-water mark `VmHWM`, read every 2 ms until it exits) and its wall
/// time.
///
/// # Errors
/// The command cannot be started or waited for.
pub fn run_measured(mut cmd: Command) -> Result<(ExitStatus, u64, Duration), String> {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
            if let Some(h) = hwm {
                peak = peak.max(h);
            }
        }
        match child.try_wait() {
            Ok(Some(st)) => {
                if !st.success() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    return Err(format!("{cmd:?} failed ({st}): {err}"));
                }
                return Ok((st, peak, start.elapsed()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    }
}

fn usage() -> String {
    "usage: cni-bench seed [--size MIB]   (default 300; needs root and Debian's containerd)".into()
}

/// Runs the benchmark; `Ok(true)` when it completed.
///
/// # Errors
/// Bad arguments, or a step that failed.
pub fn run(args: &[OsString]) -> Result<bool, String> {
    let mut size_mib: u64 = 300;
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size" => {
                size_mib = it.next().and_then(|v| v.parse().ok()).ok_or_else(usage)?;
            }
            _ => return Err(usage()),
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("seed-bench-")
        .tempdir_in("/var/tmp")
        .map_err(|e| format!("temp dir: {e}"))?;
    let d = dir.path();
    let layer = d.join("layer.tar");
    let hex = write_layer(&layer, size_mib << 20).map_err(|e| format!("layer: {e}"))?;
    let archive = d.join("big.docker.tar");
    let name = "example.com/k8s-shims/seed-bench:1";
    write_docker_archive(&archive, name, &layer, &hex, 1).map_err(|e| format!("archive: {e}"))?;
    drop(std::fs::remove_file(&layer));
    let archive_mib = std::fs::metadata(&archive)
        .map(|m| m.len() >> 20)
        .unwrap_or(0);

    let ours_cd = Containerd::start("seedbench-ours");
    let mut ours = Command::new(adapter_bin());
    ours.env_clear()
        .env("PATH", PATH)
        .env("RUST_LOG", "warn")
        .args(["seed", "--runtime", "containerd", "--endpoint"])
        .arg(unix(&ours_cd.socket))
        .arg(&archive);
    let (_, ours_kib, ours_t) = run_measured(ours)?;
    drop(ours_cd);

    let ctr_cd = Containerd::start("seedbench-ctr");
    let mut ctr = Command::new("ctr");
    ctr.env_clear()
        .env("PATH", PATH)
        .arg("--address")
        .arg(&ctr_cd.socket)
        .args(["-n", "k8s.io", "images", "import"])
        .arg(&archive);
    let (_, ctr_kib, ctr_t) = run_measured(ctr)?;
    drop(ctr_cd);

    print_table(
        archive_mib,
        (ours_kib, ours_t),
        (ctr_kib, ctr_t),
        Path::new(&archive),
    );
    Ok(true)
}

// A benchmark's table is its output.
#[allow(clippy::print_stdout)]
fn print_table(archive_mib: u64, ours: (u64, Duration), ctr: (u64, Duration), archive: &Path) {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "seed: one {archive_mib} MiB docker archive ({}), imported and unpacked into containerd",
        archive.display()
    );
    println!("| measurement | cri-adapter seed | ctr images import | ours / ctr |");
    println!("|---|---:|---:|---:|");
    println!(
        "| peak RSS | {:.1} MiB | {:.1} MiB | {:.2}x |",
        ours.0 as f64 / 1024.0,
        ctr.0 as f64 / 1024.0,
        ratio(ours.0 as f64, ctr.0 as f64)
    );
    println!(
        "| wall time | {:.2} s | {:.2} s | {:.2}x |",
        ours.1.as_secs_f64(),
        ctr.1.as_secs_f64(),
        ratio(ours.1.as_secs_f64(), ctr.1.as_secs_f64())
    );
}
