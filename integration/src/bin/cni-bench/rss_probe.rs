//! `cni-bench rss-probe` (internal): one ADD, then the peak RSS of the waited-for children;
//! and the parent side that runs it.

use std::ffi::OsString;
use std::fs;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::resource::{getrusage, UsageWho};

use crate::plugin::plugin_command;
use crate::{usage, Res};

/// Runs of every peak-RSS measurement (the median is reported).
pub(crate) const RSS_RUNS: usize = 5;

/// Runs `cni-bench rss-probe <plugin> <config> [netns]` (inside the netns `host_ns` through
/// `ip netns exec` when given) and returns the KiB it reports.
pub(crate) fn probe_rss(
    host_ns: Option<&str>,
    plugin: &Path,
    config_file: &Path,
    netns: Option<&str>,
) -> Res<u64> {
    let exe = std::env::current_exe().map_err(|e| format!("locating cni-bench: {e}"))?;
    let mut c = match host_ns {
        Some(host_ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", host_ns]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    c.arg("rss-probe").arg(plugin).arg(config_file);
    if let Some(ns) = netns {
        c.arg(ns);
    }
    let out = c
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

/// `cni-bench rss-probe PLUGIN CONFIG_FILE [NETNS]`: runs one ADD (id `bench-rss`, CNI_NETNS
/// NETNS when given) with stdin from CONFIG_FILE and prints the peak RSS of its waited-for
/// children, in KiB.
///
/// This process is kept as small as possible: at exec, Linux folds the spawning process's
/// resident size into the child's maxrss, so this process's own RSS is the measurement floor.
pub(crate) fn rss_probe(args: &[OsString]) -> Res<bool> {
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
