//! Harness for the `cri-adapter` tests: a real containerd in a throwaway
//! network namespace, our `cri-adapter` binary (CLI runs and a `serve`
//! process), and a CRI client over unix sockets.
//!
//! [`Containerd`] owns a temporary directory (root, state, socket, CNI conf
//! dir, IPAM dataDir, CNI bin dir, logs) and a named network namespace
//! ([`Netns`]); containerd runs as `nsenter --net=/run/netns/<ns> unshare
//! --mount --propagation slave containerd --config <rendered>`, so the `cni0`
//! bridge our plugin creates, every veth and all pod traffic stay out of the
//! test's network namespace, and its mounts stay in a private mount namespace
//! that vanishes with it. (`ip netns exec` is not usable: it remounts `/sys`,
//! which hides the cgroup mounts, and runc then fails with "no cgroup mount
//! found in mountinfo".) The config is
//! rendered by `cri-adapter render`. On drop: pods still present are stopped
//! and removed through CRI, containerd and its shims are killed, the
//! namespace and the temporary directory removed.
//!
//! The CNI bin dir holds symlinks to our `bridge`, `host-local`, `loopback`
//! and `portmap` (`CNI_BIN_DIR`, default `target/debug`; containerd 1.6
//! always adds a loopback network of its own), unless [`Installed`] names
//! another bin dir (an installed package's, the multi-call executable's,
//! the reference's).

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, LinuxPodSandboxConfig, ListPodSandboxRequest,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatus, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::netns::{run_with_timeout, Netns};
use crate::{ours_dir, Output, Store, PATH};

/// CNI network name of the test conflist.
pub const NET_NAME: &str = "podnet";
/// Pod subnet of the test conflist.
pub const SUBNET: &str = "10.88.0.0/16";
/// Largest message the test clients accept (more than kubelet's 16 MiB).
pub const MAX_MESSAGE: usize = 32 << 20;

/// Our `cri-adapter` binary.
pub fn adapter_bin() -> PathBuf {
    let p = ours_dir().join("cri-adapter");
    assert!(
        p.is_file(),
        "{} not found: build first (cargo build --workspace --bins) or set CNI_BIN_DIR",
        p.display()
    );
    p
}

/// Runs `cri-adapter <args>` (60 s limit) and returns its output.
pub fn adapter(args: &[&str]) -> Output {
    let mut cmd = Command::new(adapter_bin());
    cmd.env_clear()
        .env("PATH", PATH)
        .env("RUST_LOG", "warn")
        .args(args);
    run_with_timeout(
        cmd,
        b"",
        Duration::from_secs(60),
        &format!("cri-adapter {}", args.join(" ")),
    )
}

/// Runs `cri-adapter <args>` with extra environment variables.
pub fn adapter_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(adapter_bin());
    cmd.env_clear()
        .env("PATH", PATH)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .args(args);
    run_with_timeout(
        cmd,
        b"",
        Duration::from_secs(60),
        &format!("cri-adapter {}", args.join(" ")),
    )
}

/// A unix socket answering HTTP like CRI-O's inspect endpoints (`GET /info`
/// JSON, `GET /config` TOML, 404 otherwise), served by a thread for the
/// life of the process. For `seed`'s store discovery without CRI-O.
pub fn fake_crio_http(socket: &Path, info: &str, config: &str) {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind fake CRI-O");
    let (info, config) = (info.to_string(), config.to_string());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let req = String::from_utf8_lossy(&req);
            let (status, body) = if req.starts_with("GET /info ") {
                ("200 OK", info.as_str())
            } else if req.starts_with("GET /config ") {
                ("200 OK", config.as_str())
            } else {
                ("404 Not Found", "404 page not found\n")
            };
            let _ = write!(
                c,
                "HTTP/1.0 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

/// Runs `cri-adapter <args>`, panicking unless it succeeds; returns stdout.
#[track_caller]
pub fn adapter_ok(args: &[&str]) -> String {
    let out = adapter(args);
    assert!(
        out.status.success(),
        "cri-adapter {} failed ({:?})\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        out.stdout_str(),
        out.stderr_str()
    );
    out.stdout_str()
}

/// Runs `cri-adapter <args>`, panicking unless it fails; returns stderr.
#[track_caller]
pub fn adapter_fails(args: &[&str]) -> String {
    let out = adapter(args);
    assert!(
        !out.status.success() && out.code().is_some(),
        "cri-adapter {} should exit non-zero, got {:?}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        out.stdout_str(),
        out.stderr_str()
    );
    out.stderr_str()
}

/// `unix://<path>`.
pub fn unix(path: &Path) -> String {
    format!("unix://{}", path.display())
}

fn kill_and_reap(child: &mut Child, first: Signal, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
    let _ = kill(pid, first);
    let start = Instant::now();
    while start.elapsed() < grace {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `(pid, ppid)` of every process.
fn process_table() -> Vec<(i32, i32)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let rest = &stat[stat.rfind(')')? + 2..];
        let ppid: i32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        Some((pid, ppid))
    })
    .collect()
}

/// Kills `roots` and all their descendants with SIGKILL.
fn kill_trees(roots: &[i32]) {
    let table = process_table();
    let mut all: BTreeSet<i32> = roots.iter().copied().collect();
    loop {
        let before = all.len();
        for (pid, ppid) in &table {
            if all.contains(ppid) {
                all.insert(*pid);
            }
        }
        if all.len() == before {
            break;
        }
    }
    for pid in all {
        if pid > 1 && pid != std::process::id() as i32 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A runtime's own network namespace and temporary directory
/// (`<prefix>-<tag>-...`).
pub fn runtime_home(tag: &str, prefix: &str) -> (Netns, tempfile::TempDir) {
    let ns = Netns::new(tag);
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{prefix}-{tag}-"))
        .tempdir()
        .expect("temp dir");
    (ns, tmp)
}

/// Creates `dir/name` and returns it.
pub fn subdir(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).expect("mkdir");
    p
}

/// Links our `bridge`, `host-local`, `loopback` and `portmap` into a
/// runtime's CNI bin dir.
pub fn link_our_plugins(cni_bin_dir: &Path) {
    for name in CHAIN_PLUGINS {
        let target = ours_dir().join(name);
        assert!(
            target.is_file(),
            "CNI plugin {} missing (cargo build --workspace --bins)",
            target.display()
        );
        symlink(&target, cni_bin_dir.join(name)).expect("symlink plugin");
    }
}

/// The plugin names a node's CNI bin dir holds for our chain.
pub const CHAIN_PLUGINS: [&str; 4] = ["bridge", "host-local", "loopback", "portmap"];

/// Links every name of [`CHAIN_PLUGINS`] in `cni_bin_dir` to the multi-call
/// executable `exe` (`k8s-shims-cni`), as `scripts/build-plugins` lays out a
/// node's bin dir.
pub fn link_multicall(cni_bin_dir: &Path, exe: &Path) {
    assert!(
        exe.is_file(),
        "multi-call executable {} missing (cargo build --workspace --bins, or scripts/build-plugins)",
        exe.display()
    );
    for name in CHAIN_PLUGINS {
        symlink(exe, cni_bin_dir.join(name)).expect("symlink plugin");
    }
}

/// What [`Containerd::start_with`] takes from an installation instead of
/// the workspace's build.
#[derive(Debug, Default, Clone)]
pub struct Installed {
    /// The `cri-adapter` that renders the config.
    pub adapter: Option<PathBuf>,
    /// The CNI bin dir (bridge, host-local, loopback, portmap) as it is.
    pub cni_bin_dir: Option<PathBuf>,
}

/// A containerd of our own, in a throwaway network namespace.
#[derive(Debug)]
pub struct Containerd {
    pub ns: Netns,
    pub tmp: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub ipam_dir: PathBuf,
    pub log: PathBuf,
    pub pod_logs: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Prepares the directories, renders the config with `cri-adapter
    /// render` and starts containerd; returns once `cri-adapter wait`
    /// reports it ready (RuntimeReady and NetworkReady).
    pub fn start(tag: &str) -> Containerd {
        Containerd::start_with(tag, &Installed::default())
    }

    /// As [`Containerd::start`], with the `cri-adapter` that renders the
    /// config and the CNI bin dir taken from `inst` where set (an
    /// installed package's), instead of the workspace's build.
    pub fn start_with(tag: &str, inst: &Installed) -> Containerd {
        let (ns, tmp) = runtime_home(tag, "cri-it");
        let d = tmp.path();
        let sub = |n: &str| subdir(d, n);
        let root = sub("root");
        let state = sub("state");
        let cni_conf_dir = sub("net.d");
        let cni_bin_dir = match &inst.cni_bin_dir {
            Some(d) => d.clone(),
            None => sub("cni-bin"),
        };
        let ipam_dir = sub("ipam");
        let pod_logs = sub("pod-logs");
        let socket = d.join("containerd.sock");
        if inst.cni_bin_dir.is_none() {
            link_our_plugins(&cni_bin_dir);
        }
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NET_NAME,
            // The default Kubernetes chain: a main plugin, then portmap
            // for hostPort.
            "plugins": [{
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir,
                    "ranges": [[{"subnet": SUBNET}]],
                },
            }, {
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true,
            }],
        });
        std::fs::write(
            cni_conf_dir.join("10-podnet.conflist"),
            serde_json::to_vec_pretty(&conflist).expect("conflist"),
        )
        .expect("write conflist");
        let config = d.join("config.toml");
        let args = Self::render_args(&root, &state, &socket, &cni_bin_dir, &cni_conf_dir, &config);
        match &inst.adapter {
            None => {
                adapter_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
            }
            Some(bin) => {
                let mut cmd = Command::new(bin);
                cmd.env_clear().env("PATH", PATH).args(&args);
                let out = run_with_timeout(cmd, b"", Duration::from_secs(60), "render");
                assert!(
                    out.status.success(),
                    "{} render failed: {}",
                    bin.display(),
                    out.stderr_str()
                );
            }
        }
        let log = d.join("containerd.log");
        let mut c = Containerd {
            ns,
            tmp,
            config,
            socket,
            root,
            state,
            cni_conf_dir,
            cni_bin_dir,
            ipam_dir,
            log,
            pod_logs,
            child: None,
        };
        c.spawn();
        c
    }

    /// The `render` arguments for these paths (output to `out`).
    pub fn render_args(
        root: &Path,
        state: &Path,
        socket: &Path,
        bin: &Path,
        conf: &Path,
        out: &Path,
    ) -> Vec<String> {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        [
            "render",
            "--runtime",
            "containerd",
            "--root",
            &s(root),
            "--state",
            &s(state),
            "--address",
            &s(socket),
            "--cni-bin-dir",
            &s(bin),
            "--cni-conf-dir",
            &s(conf),
            "--sandbox-image",
            crate::oci::PAUSE_NAME,
            "--output",
            &s(out),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    }

    /// Starts (or restarts) the containerd process with the same config and
    /// waits until it is ready.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "containerd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open containerd log");
        // Network namespace: ours; mount namespace: a private copy (slave)
        // that keeps /sys/fs/cgroup (`ip netns exec` remounts /sys, which
        // hides the cgroup mounts runc needs), with a tmpfs of its own on
        // /run: containerd 1.6 puts its shims' sockets in
        // /run/containerd/s whatever the config says, and the runc shim
        // keeps runc's state in /run/containerd/runc/<namespace> unless the
        // runtime's options set `Root`; on a node those are the system
        // containerd's directories. The tmpfs (and the pods' netns files
        // under /run/netns) vanish with the mount namespace.
        assert!(
            !self.config.starts_with("/run"),
            "the test's directory must not be under /run (TMPDIR): a tmpfs hides it"
        );
        let mut cmd = Command::new("nsenter");
        cmd.env_clear()
            .env("PATH", PATH)
            .arg(format!("--net={}", self.ns.path()))
            .args(["--", "unshare", "--mount", "--propagation", "slave"])
            .args([
                "sh",
                "-c",
                "mount -t tmpfs -o mode=0755 k8s-shims-test /run && exec containerd --config \"$0\"",
            ])
            .arg(&self.config);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start containerd"));
        let out = adapter(&["wait", "--endpoint", &unix(&self.socket), "--timeout", "60"]);
        if !out.status.success() {
            panic!(
                "containerd did not become ready: {}\n--- containerd log ---\n{}",
                out.stderr_str(),
                self.log_text()
            );
        }
    }

    /// Whether the containerd process is running.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills containerd (SIGKILL), leaving its shims and state behind, as a
    /// crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c, Signal::SIGKILL, Duration::from_secs(5));
        }
    }

    /// Stops containerd with SIGTERM (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c, Signal::SIGTERM, Duration::from_secs(10));
        }
    }

    /// `unix://<socket>`.
    pub fn endpoint(&self) -> String {
        unix(&self.socket)
    }

    /// host-local's store of the pod network.
    pub fn ipam(&self) -> Store {
        Store::new(&self.ipam_dir, NET_NAME)
    }

    /// The containerd log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `ctr --address <socket> -n k8s.io <args>`; panics on failure.
    pub fn ctr(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("ctr");
        cmd.env_clear()
            .env("PATH", PATH)
            .args(["--address", self.socket.to_str().expect("utf-8")])
            .args(["-n", "k8s.io"])
            .args(args);
        let out = run_with_timeout(cmd, b"", Duration::from_secs(30), "ctr");
        assert!(
            out.status.success(),
            "ctr {} failed: {}",
            args.join(" "),
            out.stderr_str()
        );
        out.stdout_str()
    }

    /// Image names (`ctr images ls -q`), sorted.
    pub fn image_names(&self) -> BTreeSet<String> {
        self.ctr(&["images", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Content digests (`ctr content ls -q`), sorted.
    pub fn content_digests(&self) -> BTreeSet<String> {
        self.ctr(&["content", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Snapshot keys in the overlayfs snapshotter, sorted.
    pub fn snapshots(&self) -> BTreeSet<String> {
        self.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// Seeds `archives` with `cri-adapter seed` (CRI endpoint `cri`, content
    /// through this containerd's socket).
    pub fn seed(&self, cri: &Path, archives: &[&Path]) -> Output {
        let mut args: Vec<String> = vec![
            "seed".into(),
            "--runtime".into(),
            "containerd".into(),
            "--endpoint".into(),
            unix(cri),
            "--containerd-socket".into(),
            self.socket.to_string_lossy().into_owned(),
        ];
        args.extend(archives.iter().map(|a| a.to_string_lossy().into_owned()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        adapter(&refs)
    }
}

impl Containerd {
    /// Seeds one archive after the other and returns the output line of
    /// each.
    pub fn seed_each(&self, cri: &Path, archives: &[&Path]) -> Vec<String> {
        let mut lines = Vec::new();
        for a in archives {
            let out = self.seed(cri, &[a]);
            assert!(
                out.status.success(),
                "seed {} failed: {}\n--- containerd log ---\n{}",
                a.display(),
                out.stderr_str(),
                self.log_text()
            );
            lines.extend(out.stdout_str().lines().map(str::to_string));
        }
        lines
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let sock = self.socket.clone();
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(async {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(30), remove_all_pods(&sock))
                                .await;
                    });
                }
            })
            .join();
        }
        self.stop();
        // Shims (and anything they left running) live in our namespace.
        let pids: Vec<i32> = Command::new("ip")
            .env("PATH", PATH)
            .args(["netns", "pids", self.ns.name()])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        kill_trees(&pids);
        // Our mounts live in containerd's private mount namespace; unmount
        // anything that still shows up under the temporary root anyway.
        let prefix = self.tmp.path().to_string_lossy().into_owned();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| m.starts_with(&prefix))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").args(["-l", p]).status();
            }
        }
    }
}

/// `cri-adapter serve` in the background.
#[derive(Debug)]
pub struct Serve {
    pub socket: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl Serve {
    /// Starts `serve --listen <listen> --upstream unix://<upstream> <extra>`
    /// and waits until the socket accepts connections.
    pub fn start(listen: &Path, upstream: &Path, extra: &[&str]) -> Serve {
        Serve::start_under(&[], listen, upstream, extra)
    }

    /// As [`Serve::start`], run under `wrapper` (e.g. `prlimit --nofile=64`).
    pub fn start_under(wrapper: &[&str], listen: &Path, upstream: &Path, extra: &[&str]) -> Serve {
        let log = listen.with_extension("log");
        let f = std::fs::File::create(&log).expect("serve log");
        let bin = adapter_bin();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .env_clear()
            .env("PATH", PATH)
            .env("RUST_LOG", "info")
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--upstream")
            .arg(unix(upstream))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("fd"))
            .stderr(f)
            .spawn()
            .expect("start cri-adapter serve");
        let mut s = Serve {
            socket: listen.to_path_buf(),
            log,
            child,
        };
        let start = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(listen).is_ok() {
                return s;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("cri-adapter serve exited early ({st}): {}", s.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "cri-adapter serve did not listen on {}: {}",
                listen.display(),
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"));
        kill(pid, sig).expect("signal cri-adapter serve");
    }

    /// Waits up to `within` for the process to exit; its status, if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if start.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/<pid>/stat");
        // Fields after `(comm)`: state is field 3, utime 14 and stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// `Max open files` (soft, hard) from /proc/<pid>/limits.
    pub fn nofile(&self) -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id()))
            .expect("read /proc/<pid>/limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("no Max open files line");
        let mut f = line["Max open files".len()..].split_whitespace();
        (
            f.next().unwrap_or_default().to_string(),
            f.next().unwrap_or_default().to_string(),
        )
    }

    /// The process id (to check it was never restarted).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child, Signal::SIGTERM, Duration::from_secs(5));
    }
}

// ---------------------------------------------------------------------------
// CRI client
// ---------------------------------------------------------------------------

/// A gRPC channel to the unix socket `path`, sending `:authority localhost`.
pub async fn channel(path: &Path) -> Channel {
    try_channel(path)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()))
}

/// Like [`channel`], returning the error.
pub async fn try_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    Endpoint::try_from("http://localhost")
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}

/// A channel that connects lazily (and reconnects) to `path`.
pub fn lazy_channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    Endpoint::try_from("http://localhost")
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
}

/// CRI RuntimeService client with 32 MiB limits.
pub fn runtime_client<T>(ch: T) -> RuntimeServiceClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    RuntimeServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// CRI ImageService client with 32 MiB limits.
pub fn image_client(ch: Channel) -> ImageServiceClient<Channel> {
    ImageServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// RunPodSandbox with `cfg`; its ID. On failure it panics with `log()`
/// (the runtime's log).
pub async fn run_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    cfg: PodSandboxConfig,
    log: impl FnOnce() -> String,
) -> String {
    match rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        })
        .await
    {
        Ok(r) => r.into_inner().pod_sandbox_id,
        Err(e) => panic!("RunPodSandbox: {e}\n{}", log()),
    }
}

/// PodSandboxStatus of `id`.
pub async fn pod_status(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> PodSandboxStatus {
    rt.pod_sandbox_status(PodSandboxStatusRequest {
        pod_sandbox_id: id.to_string(),
        verbose: false,
    })
    .await
    .expect("PodSandboxStatus")
    .into_inner()
    .status
    .expect("PodSandboxStatus without a status")
}

/// A Linux pod config (no cgroup parent), logs under `log_dir`.
pub fn pod_config(name: &str, log_dir: &Path) -> PodSandboxConfig {
    let uid = format!("{name}-uid-{}", std::process::id());
    let dir = log_dir.join(&uid);
    std::fs::create_dir_all(&dir).expect("pod log dir");
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid,
            namespace: "k8s-shims-test".into(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: dir.to_string_lossy().into_owned(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..PodSandboxConfig::default()
    }
}

/// A busybox container running `cmd`.
pub fn busybox_container(name: &str, cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: crate::oci::BUSYBOX_NAME.into(),
            ..ImageSpec::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        ..ContainerConfig::default()
    }
}

/// Stops and removes every pod sandbox (errors ignored).
pub async fn remove_all_pods(socket: &Path) {
    let Ok(ch) = try_channel(socket).await else {
        return;
    };
    let mut rt = runtime_client(ch);
    let Ok(list) = rt
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
    else {
        return;
    };
    for p in list.into_inner().items {
        let _ = rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: p.id.clone(),
            })
            .await;
        let _ = rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: p.id,
            })
            .await;
    }
}
