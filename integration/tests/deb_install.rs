//! The Debian node package on this machine: `dpkg -i` of the `.deb` that
//! `scripts/package-deb` built (`K8S_SHIMS_DEB`), its files and `dpkg -L`,
//! a containerd of the test's own configured by the installed `cri-adapter
//! render` with the installed plugin dir, a pod whose address comes from the
//! installed host-local, and `dpkg -r` removing everything again.
//!
//! `#[ignore]`d: it installs a package system-wide. Needs root, the `.deb`,
//! Debian's containernetworking-plugins, containerd, runc, gcc; `scripts/test`
//! builds the package and runs it with `--include-ignored`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use integration::cri::{channel, pod_config, runtime_client, Containerd, Installed, SUBNET};
use integration::oci;
use integration::PATH;
use k8s_cri::v1::{
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};

const PKG: &str = "k8s-shims";
const BIN_DIR: &str = "/usr/lib/k8s-shims/cni";
const FILES: &[&str] = &[
    "/usr/bin/cri-adapter",
    "/usr/lib/k8s-shims/cni/k8s-shims-cni",
    "/usr/lib/k8s-shims/cni/bridge",
    "/usr/lib/k8s-shims/cni/host-local",
    "/usr/lib/k8s-shims/cni/loopback",
    "/usr/lib/k8s-shims/cni/portmap",
    "/usr/lib/systemd/system/k8s-shims-cri-wait.service",
    "/usr/lib/systemd/system/k8s-shims-cri-serve.service",
    "/etc/default/k8s-shims",
    "/usr/share/doc/k8s-shims/examples/10-k8s-shims.conflist",
    "/usr/share/doc/k8s-shims/README.Debian",
];

fn sh(prog: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(prog)
        .env("PATH", PATH)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("exec {prog}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn installed() -> bool {
    sh("dpkg-query", &["-W", "-f", "${Status}", PKG])
        .1
        .contains("install ok installed")
}

/// Removes the package when the test ends, however it ends.
struct Removal;
impl Drop for Removal {
    fn drop(&mut self) {
        if installed() {
            let _ = sh("dpkg", &["--purge", PKG]);
        }
    }
}

fn deb() -> PathBuf {
    let p = std::env::var_os("K8S_SHIMS_DEB")
        .map(PathBuf::from)
        .expect("K8S_SHIMS_DEB is not set: build the package with scripts/package-deb and set it");
    assert!(p.is_file(), "K8S_SHIMS_DEB={} is no file", p.display());
    p
}

/// Whether a 64-bit little-endian ELF file names a program interpreter.
fn has_interp(elf: &[u8]) -> bool {
    assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "no 64-bit LE ELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, num) = (u16_at(0x36), u16_at(0x38));
    (0..num).any(|i| {
        let o = phoff + i * size;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}

/// Each unit's `ExecStart`, with the values of /etc/default/k8s-shims put
/// in, is a command line the installed `cri-adapter` accepts (`--help`
/// appended: clap checks every flag and value before it).
fn check_unit_commands() {
    let defaults = std::fs::read_to_string("/etc/default/k8s-shims").unwrap();
    let vars: Vec<(String, String)> = defaults
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("${{{k}}}"), v.trim().to_string()))
        .collect();
    assert!(vars.len() >= 3, "{defaults}");
    for unit in ["k8s-shims-cri-wait.service", "k8s-shims-cri-serve.service"] {
        let text =
            std::fs::read_to_string(Path::new("/usr/lib/systemd/system").join(unit)).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
        let line = vars
            .iter()
            .fold(exec.to_string(), |l, (k, v)| l.replace(k, v));
        assert!(!line.contains("${"), "{unit}: unset variable in {line}");
        let mut words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"/usr/bin/cri-adapter"), "{unit}");
        words.push("--help");
        let (ok, out) = sh(words[0], &words[1..]);
        assert!(ok, "{unit}: {line} is refused: {out}");
    }
}

fn check_files() {
    let (ok, listed) = sh("dpkg", &["-L", PKG]);
    assert!(ok, "dpkg -L {PKG}: {listed}");
    for f in FILES {
        assert!(Path::new(f).exists(), "{f} missing after dpkg -i");
        assert!(
            listed.lines().any(|l| l == *f),
            "dpkg -L does not list {f}:\n{listed}"
        );
    }
    // Every plugin is a link to the one multi-call executable (so bridge
    // runs host-local in-process).
    for link in ["bridge", "host-local", "loopback", "portmap"] {
        let at = Path::new(BIN_DIR).join(link);
        assert!(
            std::fs::symlink_metadata(&at).unwrap().is_symlink(),
            "{at:?}"
        );
        let target = std::fs::canonicalize(&at).unwrap();
        assert_eq!(target, Path::new(BIN_DIR).join("k8s-shims-cni"));
    }
    // /usr/lib/cni stays Debian's.
    let (_, owner) = sh("dpkg", &["-S", "/usr/lib/cni/bridge"]);
    assert!(owner.starts_with("containernetworking-plugins:"), "{owner}");
    // The plugins are ours and static: VERSION answers 1.1.0, no interpreter.
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        let out = Command::new(Path::new(BIN_DIR).join(p))
            .env_clear()
            .env("CNI_COMMAND", "VERSION")
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0", "{p} VERSION: {v}");
        let elf = std::fs::read(Path::new(BIN_DIR).join(p)).unwrap();
        assert!(!has_interp(&elf), "{p} is dynamically linked (PT_INTERP)");
    }
    check_unit_commands();
    // The check itself tells a dynamic binary (cri-adapter links glibc).
    assert!(has_interp(&std::fs::read("/usr/bin/cri-adapter").unwrap()));
    let (ok, help) = sh("/usr/bin/cri-adapter", &["render", "--help"]);
    assert!(ok && help.contains("loopback"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "installs the .deb system-wide (K8S_SHIMS_DEB, root): scripts/test runs it"]
async fn deb_installs_runs_a_pod_and_removes_cleanly() {
    let deb = deb();
    assert!(
        !installed(),
        "{PKG} is installed already: dpkg -r {PKG} first (the test removes it at the end)"
    );
    let _removal = Removal;
    let (ok, out) = sh("dpkg", &["-i", deb.to_str().unwrap()]);
    assert!(ok, "dpkg -i {}: {out}", deb.display());
    check_files();

    // The test's containerd keeps its shim sockets and runc state out of the
    // system containerd's /run/containerd (see Containerd::spawn).
    let system_dirs = ["/run/containerd/s", "/run/containerd/runc/k8s.io"];
    let existed: Vec<bool> = system_dirs.iter().map(|d| Path::new(d).exists()).collect();

    // A containerd of our own, configured by the installed render, with the
    // installed bin dir; a pod's address comes from the installed host-local.
    let cd = Containerd::start_with(
        "deb",
        &Installed {
            adapter: Some("/usr/bin/cri-adapter".into()),
            cni_bin_dir: Some(BIN_DIR.into()),
        },
    );
    let conf = std::fs::read_to_string(&cd.config).unwrap();
    assert!(
        conf.contains(&format!("bin_dir = \"{BIN_DIR}\"")),
        "rendered config lacks the installed bin dir:\n{conf}"
    );
    let pause = oci::pause_image().write_oci(cd.tmp.path(), "pause.oci.tar");
    let sock = format!("unix://{}", cd.socket.display());
    let (ok, out) = sh(
        "/usr/bin/cri-adapter",
        &["seed", "--endpoint", &sock, pause.to_str().unwrap()],
    );
    assert!(ok, "installed cri-adapter seed: {out}");

    let mut rt = runtime_client(channel(&cd.socket).await);
    let pod_id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("deb-pod", &cd.pod_logs)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", cd.log_text()))
        .into_inner()
        .pod_sandbox_id;
    let ip = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    assert!(ip.starts_with("10.88."), "pod ip {ip:?} not in {SUBNET}");
    let store = cd.ipam();
    assert_eq!(store.ip_names(), vec![ip.clone()]);
    // Only our host-local keeps an attachment index next to the reservation.
    let net_dir = cd.ipam_dir.join(integration::cri::NET_NAME);
    let index = std::fs::read_dir(&net_dir)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(".attachment."));
    assert!(
        index,
        "no .attachment. index in {}: not our host-local",
        net_dir.display()
    );
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    assert!(store.ip_names().is_empty(), "address not released");
    drop(cd);
    for (d, before) in system_dirs.iter().zip(existed) {
        assert!(
            before || !Path::new(d).exists(),
            "{d} appeared: the test's containerd used the system's directories"
        );
    }

    let (ok, out) = sh("dpkg", &["-r", PKG]);
    assert!(ok, "dpkg -r {PKG}: {out}");
    for f in FILES.iter().filter(|f| !f.starts_with("/etc/")) {
        assert!(
            std::fs::symlink_metadata(f).is_err(),
            "{f} left after dpkg -r"
        );
    }
    assert!(!Path::new(BIN_DIR).exists(), "{BIN_DIR} left after dpkg -r");
    // The conffile stays until the package is purged.
    assert!(Path::new("/etc/default/k8s-shims").is_file());
    let (ok, out) = sh("dpkg", &["--purge", PKG]);
    assert!(ok, "dpkg --purge {PKG}: {out}");
    assert!(!Path::new("/etc/default/k8s-shims").exists());
    assert!(
        Path::new("/usr/lib/cni/loopback").is_file(),
        "Debian's loopback gone"
    );
}
