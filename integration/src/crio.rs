//! Harness for the CRI-O end-to-end tests: a real CRI-O (given by
//! `CRIO_BIN`; CRI-O is not packaged for Debian 12, so CI has none) in a
//! throwaway network namespace and a private mount namespace, configured by
//! `cri-adapter render` plus a drop-in that only moves CRI-O's own files
//! into the test's temporary directory.
//!
//! Environment: `CRIO_BIN` (crio), `CRIO_PINNS` (default: `pinns` next to
//! `CRIO_BIN`), `CRIO_CONMON` (default `/usr/bin/conmon`); runc from
//! `/usr/sbin/runc`. Storage uses the `vfs` driver (no mounts) at a
//! non-default root and runroot, so `seed` must find CRI-O's store to work.
//!
//! CRI-O runs as `nsenter --net=<ns> unshare --mount --propagation private
//! sh -c '<remount /sys, keep the cgroup tree, shadow /var/lib/cni>; exec
//! crio ...'`: its pinned namespaces, runc state, CNI result cache and mounts
//! all stay out of the host's.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cri::{adapter_ok, link_our_plugins, runtime_home, subdir, unix, NET_NAME, SUBNET};
use crate::netns::Netns;
use crate::{Store, PATH};

/// The CRI-O binary from `CRIO_BIN`, if set.
pub fn crio_bin() -> Option<PathBuf> {
    std::env::var_os("CRIO_BIN").map(PathBuf::from)
}

/// A CRI-O of our own.
#[derive(Debug)]
pub struct Crio {
    pub ns: Netns,
    pub tmp: tempfile::TempDir,
    pub socket: PathBuf,
    pub storage_root: PathBuf,
    pub storage_runroot: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub ipam_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub log: PathBuf,
    pub pod_logs: PathBuf,
    child: Option<Child>,
}

impl Crio {
    /// Prepares the directories and writes the test's environment drop-in
    /// (`00-test-env.conf`) and our rendered drop-in (`10-k8s-shims.conf`,
    /// last, so it is taken as it is); CRI-O is not started yet and no CNI
    /// config exists yet.
    pub fn prepare(tag: &str) -> Crio {
        let (ns, tmp) = runtime_home(tag, "crio-it");
        let d = tmp.path();
        let sub = |n: &str| subdir(d, n);
        let storage_root = sub("storage");
        let storage_runroot = sub("run/storage");
        let cni_conf_dir = sub("net.d");
        let cni_bin_dir = sub("cni-bin");
        let ipam_dir = sub("ipam");
        let conf_dir = sub("crio.conf.d");
        let pod_logs = sub("pod-logs");
        for n in ["logs", "ns", "exits", "attach", "hooks", "cni-cache", ".cg"] {
            sub(n);
        }
        link_our_plugins(&cni_bin_dir);
        let socket = d.join("crio.sock");
        let pinns = std::env::var_os("CRIO_PINNS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                crio_bin()
                    .and_then(|b| b.parent().map(|p| p.join("pinns")))
                    .unwrap_or_else(|| PathBuf::from("pinns"))
            });
        let conmon = std::env::var("CRIO_CONMON").unwrap_or_else(|_| "/usr/bin/conmon".into());
        let p = |x: &Path| x.to_string_lossy().into_owned();
        // Only where CRI-O keeps its own files, and no host integration.
        let env = format!(
            "[crio]\nlog_dir = \"{logs}\"\nversion_file = \"{run}/version\"\n\
             version_file_persist = \"{d}/version\"\nclean_shutdown_file = \"{d}/clean.shutdown\"\n\
             \n[crio.api]\nstream_address = \"127.0.0.1\"\nstream_port = \"0\"\n\
             \n[crio.runtime]\nconmon = \"{conmon}\"\npinns_path = \"{pinns}\"\n\
             namespaces_dir = \"{d}/ns\"\ncontainer_exits_dir = \"{d}/exits\"\n\
             container_attach_socket_dir = \"{d}/attach\"\nhooks_dir = [\"{d}/hooks\"]\n\
             default_mounts_file = \"\"\nlog_to_journald = false\nselinux = false\n\
             seccomp_profile = \"\"\napparmor_profile = \"\"\n\
             \n[crio.image]\npause_command = \"/pause\"\n\
             \n[crio.metrics]\nenable_metrics = false\n",
            logs = p(&d.join("logs")),
            run = p(&d.join("run")),
            d = p(d),
            pinns = p(&pinns),
        );
        std::fs::write(conf_dir.join("00-test-env.conf"), env).expect("env drop-in");
        let c = Crio {
            ns,
            socket,
            storage_root,
            storage_runroot,
            cni_conf_dir,
            cni_bin_dir,
            ipam_dir,
            conf_dir,
            log: d.join("crio.log"),
            pod_logs,
            tmp,
            child: None,
        };
        let args = c.render_args();
        adapter_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        c
    }

    /// `cri-adapter render` for this CRI-O, writing `10-k8s-shims.conf`.
    pub fn render_args(&self) -> Vec<String> {
        let p = |x: &Path| x.to_string_lossy().into_owned();
        let runc_root = self.tmp.path().join("run/runc");
        [
            "render",
            "--runtime",
            "cri-o",
            // This host may lack CAP_SYS_RESOURCE: CRI-O cannot clamp, so
            // say so explicitly (pods here use no infra container and
            // oom_score_adj 0).
            "--restrict-oom-score-adj",
            "false",
            "--listen",
            &p(&self.socket),
            "--root",
            &p(&self.storage_root),
            "--runroot",
            &p(&self.storage_runroot),
            "--storage-driver",
            "vfs",
            "--runc-path",
            "/usr/sbin/runc",
            "--runc-root",
            &p(&runc_root),
            "--cni-bin-dir",
            &p(&self.cni_bin_dir),
            "--cni-conf-dir",
            &p(&self.cni_conf_dir),
            "--pause-image",
            crate::oci::PAUSE_NAME,
            "--output",
            &p(&self.conf_dir.join("10-k8s-shims.conf")),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    }

    /// Re-renders our drop-in with OOM scores clamped by the
    /// `cri-adapter-runc` wrapper (a symlink to our binary in the temporary
    /// directory) instead of plain runc; returns the wrapper's path.
    pub fn render_with_wrapper(&self) -> PathBuf {
        let wrapper = self.tmp.path().join("cri-adapter-runc");
        symlink(crate::cri::adapter_bin(), &wrapper).expect("symlink the wrapper");
        let mut args = self.render_args();
        let at = args
            .iter()
            .position(|a| a == "--restrict-oom-score-adj")
            .expect("oom flag");
        args[at + 1] = "true".into();
        let at = args
            .iter()
            .position(|a| a == "--runc-path")
            .expect("runc flag");
        args.drain(at..at + 2);
        args.extend([
            "--runc-wrapper".into(),
            wrapper.to_string_lossy().into_owned(),
        ]);
        adapter_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        wrapper
    }

    /// Writes the pod network's conflist (our bridge and host-local).
    pub fn write_conflist(&self) {
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NET_NAME,
            "plugins": [{
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": self.ipam_dir,
                    "ranges": [[{"subnet": SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }],
        });
        // Atomically: CRI-O watches the directory and must never read half
        // a file.
        let tmp = self.tmp.path().join("10-podnet.conflist.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&conflist).expect("conflist"),
        )
        .expect("write conflist");
        std::fs::rename(&tmp, self.cni_conf_dir.join("10-podnet.conflist"))
            .expect("move conflist into place");
    }

    /// Starts CRI-O (`--config` an empty file, `--config-dir` ours) and
    /// returns once its socket accepts connections, or once it exited.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "CRI-O already running");
        let bin = crio_bin().expect("CRIO_BIN");
        let empty = self.tmp.path().join("crio.conf");
        std::fs::write(&empty, "").expect("empty main config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open CRI-O log");
        let d = self.tmp.path().to_string_lossy().into_owned();
        let mut cmd = Command::new("nsenter");
        cmd.env_clear()
            .env("PATH", PATH)
            .arg(format!("--net={}", self.ns.path()))
            .args(["--", "unshare", "--mount", "--propagation", "private"])
            .args([
                "sh",
                "-c",
                "set -e; D=\"$1\"; shift\n\
                 mount --rbind /sys/fs/cgroup \"$D/.cg\"\n\
                 mount -t sysfs sysfs /sys\n\
                 mount --move \"$D/.cg\" /sys/fs/cgroup\n\
                 mkdir -p /var/lib/cni; mount --bind \"$D/cni-cache\" /var/lib/cni\n\
                 exec \"$@\"",
                "sh",
                &d,
            ])
            .arg(bin)
            .arg("--config")
            .arg(&empty)
            .arg("--config-dir")
            .arg(&self.conf_dir)
            .args(["--log-level", "info"]);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start CRI-O"));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() || !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("CRI-O did not listen within 60 s:\n{}", self.log_text());
    }

    /// Whether the CRI-O process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `unix://<socket>`.
    pub fn endpoint(&self) -> String {
        unix(&self.socket)
    }

    /// host-local's store of the pod network.
    pub fn ipam(&self) -> Store {
        Store::new(&self.ipam_dir, NET_NAME)
    }

    /// The CRI-O log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops CRI-O (SIGTERM, SIGKILL after 10 s) and every process left in
    /// its network namespace (conmon, containers).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let pids = Command::new("ip")
            .env("PATH", PATH)
            .args(["netns", "pids", self.ns.name()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for p in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

impl Drop for Crio {
    fn drop(&mut self) {
        self.stop();
    }
}
