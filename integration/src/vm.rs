//! A throw-away Linux VM for kernel features this machine lacks: Debian's
//! own kernel (`linux-image-amd64`, fetched with `apt-get download`) booted
//! under qemu's software emulation (TCG: KVM guests do not boot on these
//! machines) with an [`Initramfs`](crate::initramfs::Initramfs) whose
//! `/init` runs the checks and powers off. The guest reports on the serial
//! console, one `FACT <key> <value>` line per observation, then `VM-DONE`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The qemu binary the VM needs (Debian package `qemu-system-x86`).
pub const QEMU: &str = "qemu-system-x86_64";

/// Line the guest prints after its last fact.
pub const DONE: &str = "VM-DONE";

/// Debian's kernel image and some of its modules, extracted from the
/// package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `linux-image-<version>-amd64`.
    pub package: String,
    pub vmlinuz: PathBuf,
    /// `(module name, uncompressed .ko)`, in the order asked for.
    pub modules: Vec<(String, PathBuf)>,
}

fn run(cmd: &mut Command, what: &str) -> Result<Vec<u8>, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// The real package behind the `linux-image-amd64` metapackage.
pub fn kernel_package() -> Result<String, String> {
    let out = run(
        Command::new("apt-cache").args(["depends", "linux-image-amd64"]),
        "apt-cache depends linux-image-amd64",
    )?;
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| {
            "apt-cache knows no linux-image-amd64 dependency (run apt-get update)".to_string()
        })
}

/// Fetches Debian's current kernel package (once per version: kept under
/// `cache`) and extracts `vmlinuz` and the named modules (`.ko`, or
/// `.ko.xz` decompressed with `xz`, which busybox `insmod` cannot read).
/// Package lists that are missing or stale (the version they name is gone
/// from the archive) are refreshed with `apt-get update` once.
pub fn debian_kernel(cache: &Path, modules: &[&str]) -> Result<Kernel, String> {
    fetch_kernel(cache, modules).or_else(|first| {
        run(
            Command::new("apt-get").args(["update", "-q"]),
            "apt-get update",
        )
        .map_err(|e| format!("{first}; then {e}"))?;
        fetch_kernel(cache, modules).map_err(|e| format!("{first}; after apt-get update: {e}"))
    })
}

fn fetch_kernel(cache: &Path, modules: &[&str]) -> Result<Kernel, String> {
    let package = kernel_package()?;
    let dir = cache.join(&package);
    let kernel = Kernel {
        package: package.clone(),
        vmlinuz: dir.join("vmlinuz"),
        modules: modules
            .iter()
            .map(|m| (m.to_string(), dir.join(format!("{m}.ko"))))
            .collect(),
    };
    if kernel.vmlinuz.is_file() && kernel.modules.iter().all(|(_, p)| p.is_file()) {
        return Ok(kernel);
    }
    std::fs::create_dir_all(cache).map_err(|e| format!("mkdir {}: {e}", cache.display()))?;
    let work = tempfile::Builder::new()
        .prefix("kernel-")
        .tempdir_in(cache)
        .map_err(|e| format!("temp dir in {}: {e}", cache.display()))?;
    run(
        Command::new("apt-get")
            .args(["download", "-q", &package])
            .current_dir(work.path()),
        &format!("apt-get download {package}"),
    )?;
    let deb = std::fs::read_dir(work.path())
        .map_err(|e| format!("read {}: {e}", work.path().display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download {package} left no .deb"))?;
    let staged = work.path().join("out");
    std::fs::create_dir(&staged).map_err(|e| format!("mkdir: {e}"))?;
    extract(&deb, &staged, modules)?;
    // Whole or nothing: a half-extracted cache is never taken for a good one.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staged, &dir).map_err(|e| format!("rename to {}: {e}", dir.display()))?;
    Ok(kernel)
}

/// Streams the package's file tree (`dpkg-deb --fsys-tarfile`) and writes
/// `vmlinuz` and `<module>.ko` for each module into `out`.
fn extract(deb: &Path, out: &Path, modules: &[&str]) -> Result<(), String> {
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start dpkg-deb: {e}"))?;
    let stdout = child.stdout.take().ok_or("dpkg-deb: no stdout")?;
    let mut found: BTreeMap<String, ()> = BTreeMap::new();
    let mut archive = tar::Archive::new(stdout);
    let entries = archive
        .entries()
        .map_err(|e| format!("{}: {e}", deb.display()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("{}: {e}", deb.display()))?;
        let path = entry
            .path()
            .map_err(|e| format!("{}: {e}", deb.display()))?
            .to_string_lossy()
            .into_owned();
        let base = path.rsplit('/').next().unwrap_or_default().to_string();
        let target = if path.starts_with("./boot/vmlinuz-") {
            "vmlinuz".to_string()
        } else if let Some(m) = modules
            .iter()
            .find(|m| base == format!("{m}.ko") || base == format!("{m}.ko.xz"))
        {
            format!("{m}.ko")
        } else {
            continue;
        };
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| format!("{path}: {e}"))?;
        if base.ends_with(".xz") {
            data = unxz(&data)?;
        }
        std::fs::write(out.join(&target), data).map_err(|e| format!("write {target}: {e}"))?;
        found.insert(target, ());
    }
    let status = child.wait().map_err(|e| format!("dpkg-deb: {e}"))?;
    if !status.success() {
        return Err(format!(
            "dpkg-deb --fsys-tarfile {}: {status}",
            deb.display()
        ));
    }
    let missing: Vec<String> = std::iter::once("vmlinuz".to_string())
        .chain(modules.iter().map(|m| format!("{m}.ko")))
        .filter(|f| !found.contains_key(f))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("{} lacks {missing:?}", deb.display()))
    }
}

fn unxz(data: &[u8]) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let f = dir.path().join("m.xz");
    std::fs::write(&f, data).map_err(|e| format!("write: {e}"))?;
    run(Command::new("xz").arg("-dc").arg(&f), "xz -dc (xz-utils)")
}

/// What the guest printed.
#[derive(Debug, Clone)]
pub struct Console {
    /// Every line, `\r` removed.
    pub lines: Vec<String>,
    pub elapsed: Duration,
    /// Whether the guest printed [`DONE`] (it ran to the end).
    pub done: bool,
}

impl Console {
    /// `FACT <key> <value>` lines as a map (a repeated key keeps the last).
    pub fn facts(&self) -> BTreeMap<String, String> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("FACT "))
            .map(|l| match l.split_once(' ') {
                Some((k, v)) => (k.to_string(), v.trim().to_string()),
                None => (l.trim().to_string(), String::new()),
            })
            .collect()
    }

    /// The last `n` lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let start = self.lines.len().saturating_sub(n);
        self.lines[start..].join("\n")
    }
}

/// Boots `kernel` with `initrd` under TCG, one CPU, `mem_mib` of memory, and
/// returns the serial console once qemu exits (the guest powers off) or
/// `timeout` passes (qemu is then killed and `done` is false).
pub fn boot(
    kernel: &Path,
    initrd: &Path,
    mem_mib: u32,
    timeout: Duration,
) -> Result<Console, String> {
    let start = Instant::now();
    let mut child = Command::new(QEMU)
        .args(["-accel", "tcg", "-m", &mem_mib.to_string(), "-smp", "1"])
        .args(["-nodefaults", "-display", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
    let stdout = child.stdout.take().ok_or("qemu: no stdout")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line).replace('\r', "");
            if tx.send(text).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut done = false;
    let deadline = start + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                done |= l.trim() == DONE;
                lines.push(l);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                lines.push(format!("(killed after {timeout:?})"));
                break;
            }
        }
    }
    let status = child.wait().map_err(|e| format!("qemu: {e}"))?;
    let _ = reader.join();
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() && !done {
        lines.push(format!("(qemu {status}: {})", err.trim()));
    }
    Ok(Console {
        lines,
        elapsed: start.elapsed(),
        done,
    })
}
