//! Driving a CNI plugin: commands with a cleared environment, stdin, exec-to-exit timing, and
//! the checks on ADD results and host-local stores shared by the benchmarks.

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::Res;

/// Network name used in every config (and so the store subdirectory).
pub(crate) const NET: &str = "bench";
pub(crate) const IFNAME: &str = "eth0";
pub(crate) const NETNS: &str = "/var/run/netns/bench";
pub(crate) const CNI_VERSION: &str = "1.0.0";

pub(crate) fn parse_count(name: &str, v: &OsString) -> Res<usize> {
    match v.to_str().and_then(|s| s.parse::<usize>().ok()) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!("{name}: expected a positive integer, got {v:?}")),
    }
}

/// Walks `--name value` options: `apply(name, value)` takes one (calling
/// `value` for its argument) and returns `false` for a name it does not know.
pub(crate) fn for_each_option(
    args: &[OsString],
    mut apply: impl FnMut(&str, &mut dyn FnMut() -> Res<OsString>) -> Res<bool>,
) -> Res<()> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let name = arg.to_str().unwrap_or("");
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        if !apply(name, &mut value)? {
            return Err(format!("unknown argument {arg:?}\n{}", crate::usage()));
        }
    }
    Ok(())
}

/// Resolves `<dir>/<name>` to an absolute path to an executable file, or a clear error.
pub(crate) fn plugin_path(dir: &Path, name: &str, which: &str) -> Res<PathBuf> {
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
    // The directory is resolved, not the file: a plugin that is a link to
    // a multi-call executable is told apart by the name it runs under.
    dir.canonicalize()
        .map(|d| d.join(name))
        .map_err(|e| format!("{}: {e}", dir.display()))
}

// ---------------------------------------------------------------------------------------------
// Driving a plugin
// ---------------------------------------------------------------------------------------------

/// One plugin under test.
#[derive(Debug, Clone)]
pub(crate) struct Plugin {
    pub(crate) label: &'static str,
    pub(crate) path: PathBuf,
}

pub(crate) fn host_local_config(data_dir: &Path, subnet: &str) -> String {
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
pub(crate) fn plugin_command(plugin: &Path, cmd: &str, id: &str) -> Command {
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

pub(crate) fn spawn_plugin(plugin: &Path, cmd: &str, id: &str, config: &str) -> Res<Child> {
    spawn_with(
        plugin_command(plugin, cmd, id),
        config,
        &format!("{cmd} {id}"),
    )
}

/// Spawns a prepared plugin command with piped stdio and writes `config` to its stdin.
pub(crate) fn spawn_with(mut command: Command, config: &str, what: &str) -> Res<Child> {
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
pub(crate) struct Outcome {
    pub(crate) ok: bool,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) status: String,
}

pub(crate) fn finish(child: Child) -> Res<Outcome> {
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

pub(crate) fn describe_failure(plugin: &Path, cmd: &str, id: &str, o: &Outcome) -> String {
    format!(
        "{} {cmd} (id {id}) failed: {}\n  stdout: {}\n  stderr: {}",
        plugin.display(),
        o.status,
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

/// Runs one command to completion; returns its stdout and the exec-to-exit time.
pub(crate) fn run_plugin(
    plugin: &Path,
    cmd: &str,
    id: &str,
    config: &str,
) -> Res<(Vec<u8>, Duration)> {
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
pub(crate) fn result_ip(stdout: &[u8]) -> Res<Ipv4Addr> {
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
pub(crate) fn check_reserved(store: &Path, ip: Ipv4Addr, id: &str) -> Res<()> {
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
pub(crate) fn reservations(store: &Path) -> Res<usize> {
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

pub(crate) fn tempdir(prefix: &str) -> Res<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("creating a temporary directory: {e}"))
}

/// 200 children with three pipes each need more than the usual 1024 descriptors at worst.
pub(crate) fn raise_nofile_limit() {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65_536);
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}

pub(crate) fn true_binary() -> Option<&'static Path> {
    ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
}

pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) fn workspace_release_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    workspace.join("target").join("release")
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first `name` on PATH.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// The process-start floor: a static no-op (`int main(void) { return 0; }`, `cc -static`),
/// built once into `<workspace>/target/cni-bench-floor/noop` and reused. Exec'd exactly as a
/// plugin is, it costs what any plugin's exec, dynamic-loader-free start and exit cost.
pub(crate) fn static_noop() -> Res<PathBuf> {
    let dir = workspace_release_dir()
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("cni-bench-floor");
    let noop = dir.join("noop");
    if noop.is_file() {
        return Ok(noop);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let source = dir.join("noop.c");
    fs::write(&source, "int main(void) { return 0; }\n")
        .map_err(|e| format!("{}: {e}", source.display()))?;
    let tmp = dir.join(format!("noop.{}", std::process::id()));
    let out = Command::new("cc")
        .args(["-static", "-O2", "-s", "-o"])
        .arg(&tmp)
        .arg(&source)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "building the static no-op (the floor) needs cc: {e}; install gcc and libc6-dev"
            )
        })?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(format!(
            "cc -static {} failed ({}): {}; the floor needs gcc and libc6-dev (static libc)",
            source.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    fs::rename(&tmp, &noop).map_err(|e| format!("{}: {e}", noop.display()))?;
    Ok(noop)
}
