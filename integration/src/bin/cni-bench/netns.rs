//! Network namespaces of a run: creation, deletion on every exit path (guard and signal
//! thread), and removal of those left by a killed earlier run.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::cri::env::{cri_cleanup, SIGNALLED};
use crate::report::progress;
use crate::Res;

pub(crate) const NS_PREFIX: &str = "cnibench";
pub(crate) const NETNS_DIR: &str = "/var/run/netns";
pub(crate) fn netns_path(name: &str) -> String {
    format!("{NETNS_DIR}/{name}")
}

// Namespace bookkeeping ------------------------------------------------------------------------

/// Every namespace this run created (or is about to create). Creation and deletion both hold
/// the lock, so the signal thread never races a half-done creation.
pub(crate) static NAMESPACES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

pub(crate) fn lock_namespaces() -> std::sync::MutexGuard<'static, Vec<String>> {
    NAMESPACES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `ip -force -batch -` with the given lines (it keeps going past a failing line).
pub(crate) fn ip_batch(lines: &[String]) -> Res<()> {
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

pub(crate) fn create_namespaces(names: &[String]) -> Res<()> {
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
pub(crate) fn delete_namespaces() -> Vec<String> {
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
pub(crate) struct NamespaceGuard;

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
pub(crate) fn install_signal_cleanup() -> Res<()> {
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
pub(crate) fn delete_stale_namespaces() {
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
