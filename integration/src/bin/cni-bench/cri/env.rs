//! The cri bench environment: containerd in a throwaway netns, seeded images, `serve` in front;
//! and its cleanup on every exit path.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::image::cri_image_archives;
use super::*;
use crate::netns::{create_namespaces, NS_PREFIX};
use crate::plugin::tempdir;
use crate::report::progress;
use crate::Res;

// Processes and files to remove, shared with the signal thread ---------------------------------

/// What `cri_cleanup` removes: the processes (in start order) and the temporary directory.
#[derive(Debug, Default)]
pub(crate) struct CriResources {
    /// Name, pid, and how long it may take to exit after SIGTERM.
    pub(crate) pids: Vec<(&'static str, nix::unistd::Pid, Duration)>,
    pub(crate) dir: Option<PathBuf>,
    /// Set by the first cleanup: nothing may be registered (created) after it.
    pub(crate) closed: bool,
}

pub(crate) static CRI_RESOURCES: std::sync::Mutex<CriResources> =
    std::sync::Mutex::new(CriResources {
        pids: Vec::new(),
        dir: None,
        closed: false,
    });

/// Set by the signal thread: the process is about to exit, from that thread.
pub(crate) static SIGNALLED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

pub(crate) fn lock_cri() -> std::sync::MutexGuard<'static, CriResources> {
    CRI_RESOURCES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SIGTERM, up to `grace` for it to exit, then SIGKILL; reaps it either way.
pub(crate) fn stop_process(name: &str, pid: nix::unistd::Pid, grace: Duration) {
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
pub(crate) fn unescape_mount_path(s: &str) -> String {
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
pub(crate) fn unmount_under(dir: &Path) {
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
pub(crate) fn cri_cleanup() {
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
pub(crate) struct CriGuard;

impl Drop for CriGuard {
    fn drop(&mut self) {
        cri_cleanup();
    }
}

/// Spawns `command` with stdout and stderr appended to `log`, and registers it for cleanup.
pub(crate) fn spawn_logged(
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
pub(crate) fn log_tail(log: &Path, lines: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n    ");
    format!("last lines of {}:\n    {tail}", log.display())
}

/// Runs a command to completion; its stdout on success, else an error with its output.
pub(crate) fn run_checked(mut command: Command, what: &str) -> Res<String> {
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

// Setup ------------------------------------------------------------------------------------------

/// The running bench environment.
#[derive(Debug)]
pub(crate) struct CriEnv {
    pub(crate) adapter: PathBuf,
    pub(crate) netns: String,
    /// containerd's socket.
    pub(crate) direct: PathBuf,
    /// serve's socket.
    pub(crate) proxied: PathBuf,
    /// The bare relay's socket (`cni-bench relay`, relay.rs).
    pub(crate) relayed: PathBuf,
    pub(crate) containerd: Child,
    pub(crate) serve: Child,
    pub(crate) relay: Child,
    pub(crate) containerd_log: PathBuf,
    pub(crate) serve_log: PathBuf,
    pub(crate) relay_log: PathBuf,
    pub(crate) seed_time: Duration,
    /// `cri-adapter seed` runs it took (see the retry in cri_setup).
    pub(crate) seed_attempts: usize,
    pub(crate) images: Vec<String>,
    pub(crate) archive_len: usize,
}

/// Appends `setpriv --pdeathsig TERM` (when setpriv exists) to a command whose next argument
/// is the program to run: the process is then terminated if this one dies without cleaning up
/// (the children are spawned by the main thread, which lives as long as the process).
pub(crate) fn pdeathsig_prefix(cmd: &mut Command) {
    if let Some(setpriv) = find_on_path("setpriv") {
        cmd.arg(setpriv).args(["--pdeathsig", "TERM"]);
    }
}

/// A command running `program` under `setpriv --pdeathsig TERM` (when setpriv exists).
pub(crate) fn pdeathsig_command(program: &Path) -> Command {
    match find_on_path("setpriv") {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "TERM"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Waits until `socket` accepts a connection, failing early if `child` exits.
pub(crate) fn wait_for_socket(
    socket: &Path,
    child: &mut Child,
    log: &Path,
    timeout: Duration,
) -> Res<()> {
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
pub(crate) fn cri_seed(
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

pub(crate) fn cri_setup(opts: &CriOpts, adapter: &Path, containerd: &Path) -> Res<CriEnv> {
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
    let relayed = dir.join("relay.sock");
    let relay_log = dir.join("relay.log");
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
    let mut cmd = pdeathsig_command(adapter);
    cmd.args(["serve", "--listen"])
        .arg(&proxied)
        .args(["--upstream", &endpoint]);
    let mut serve = spawn_logged("cri-adapter serve", cmd, &serve_log, Duration::from_secs(2))?;
    wait_for_socket(&proxied, &mut serve, &serve_log, Duration::from_secs(10))?;

    progress("starting the bare relay (cni-bench relay)");
    let bench = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let mut cmd = pdeathsig_command(&bench);
    cmd.arg("relay").arg(&relayed).arg(&direct);
    let mut relay = spawn_logged("cni-bench relay", cmd, &relay_log, Duration::from_secs(2))?;
    wait_for_socket(&relayed, &mut relay, &relay_log, Duration::from_secs(10))?;

    Ok(CriEnv {
        adapter: adapter.to_path_buf(),
        netns,
        direct,
        proxied,
        relayed,
        containerd: containerd_child,
        serve,
        relay,
        containerd_log,
        serve_log,
        relay_log,
        seed_time,
        seed_attempts,
        images,
        archive_len,
    })
}
