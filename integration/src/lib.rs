//! Black-box test harness for CNI plugin binaries.
//!
//! The harness runs plugin binaries as a container runtime would: a cleared
//! environment holding only `CNI_*` variables and `PATH`, the network
//! configuration on stdin, and the result (or a JSON error) read back from
//! stdout.
//!
//! Binaries:
//! * ours: `$CNI_BIN_DIR/<name>`, default `<workspace root>/target/debug/<name>`;
//! * reference: `$REF_CNI_DIR/<name>`, default `/usr/lib/cni/<name>`
//!   (Debian package `containernetworking-plugins`).
//!
//! A missing binary is a hard failure (panic with a hint), never a skip.

pub mod archives;
pub mod bridge_state;
pub mod cri;
pub mod crio;
pub mod critest;
pub mod h2raw;
pub mod initramfs;
pub mod netns;
pub mod oci;
pub mod portmap;
pub mod seed_bench;
pub mod verdicts;
pub mod vm;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

/// Every CNI spec version our plugin supports, oldest first.
pub const ALL_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// Spec versions the reference v1.1.1 binary supports (no 1.1.0).
pub const REF_VERSIONS: [&str; 6] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// `CNI_NETNS` value given to ADD and CHECK.
pub const NETNS: &str = "/var/run/netns/x-test";

/// `PATH` given to every plugin run.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A plugin run that takes longer than this is killed and the test fails.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// GC key of spec 1.1.0 as corrected upstream.
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";
/// GC key as first published in the `spec-v1.1.0` tag.
pub const LEGACY_ATTACHMENTS: &str = "cni.dev/attachments";

// ---------------------------------------------------------------------------
// Locating binaries
// ---------------------------------------------------------------------------

/// Root of the cargo workspace (parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// Directory of our built plugin binaries (`CNI_BIN_DIR`, default `target/debug`).
pub fn ours_dir() -> PathBuf {
    match std::env::var_os("CNI_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_root().join("target").join("debug"),
    }
}

/// Directory of the reference plugin binaries (`REF_CNI_DIR`, default `/usr/lib/cni`).
pub fn ref_dir() -> PathBuf {
    match std::env::var_os("REF_CNI_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/usr/lib/cni"),
    }
}

fn locate(dir: PathBuf, name: &str, label: &'static str, hint: &str) -> Plugin {
    let path = dir.join(name);
    let meta = fs::metadata(&path).unwrap_or_else(|e| {
        panic!(
            "{label} plugin binary {} not found ({e}): {hint}",
            path.display()
        )
    });
    assert!(
        meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        "{label} plugin binary {} is not an executable file: {hint}",
        path.display()
    );
    Plugin { label, path, dir }
}

/// Our `host-local` binary.
pub fn ours() -> Plugin {
    locate(
        ours_dir(),
        "host-local",
        "ours",
        "build first: cargo build --workspace --bins (or set CNI_BIN_DIR)",
    )
}

/// Our plugin binary `name` (from `CNI_BIN_DIR`).
pub fn ours_named(name: &str) -> Plugin {
    locate(
        ours_dir(),
        name,
        "ours",
        "build first: cargo build --workspace --bins (or set CNI_BIN_DIR)",
    )
}

/// The reference plugin binary `name` (v1.1.1).
pub fn reference_named(name: &str) -> Plugin {
    locate(
        ref_dir(),
        name,
        "reference",
        "install containernetworking-plugins (or set REF_CNI_DIR)",
    )
}

/// The reference `host-local` binary (v1.1.1).
pub fn reference() -> Plugin {
    locate(
        ref_dir(),
        "host-local",
        "reference",
        "install containernetworking-plugins (or set REF_CNI_DIR)",
    )
}

// ---------------------------------------------------------------------------
// Running plugins
// ---------------------------------------------------------------------------

/// Captured outcome of one plugin run.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// Exit code (None when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Parses stdout as JSON (panics with the full output when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}); status {:?}\nstdout: {}\nstderr: {}",
                self.status,
                self.stdout_str(),
                self.stderr_str()
            )
        })
    }

    /// Interprets the run following the CNI conventions: exit 0 → `Ok(result)`
    /// (`Value::Null` for empty stdout); exit 1 → `Err(error JSON)`. Anything
    /// else (another exit status, a signal, a non-JSON error) panics.
    pub fn into_result(self) -> Result<Value, Value> {
        match self.status.code() {
            Some(0) => {
                if self.stdout.iter().all(u8::is_ascii_whitespace) {
                    Ok(Value::Null)
                } else {
                    Ok(self.json())
                }
            }
            Some(1) => {
                let v = self.json();
                assert!(
                    v.get("code").is_some_and(Value::is_u64)
                        && v.get("msg").is_some_and(Value::is_string),
                    "error JSON lacks numeric code / string msg: {v}\nstderr: {}",
                    self.stderr_str()
                );
                Err(v)
            }
            other => panic!(
                "unexpected exit status {other:?} ({:?})\nstdout: {}\nstderr: {}",
                self.status,
                self.stdout_str(),
                self.stderr_str()
            ),
        }
    }
}

/// Environment changes for one run: `Some(v)` sets, `None` removes.
pub type EnvOverrides<'a> = &'a [(&'a str, Option<&'a str>)];

/// A plugin binary.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// "ours" or "reference" (for messages).
    pub label: &'static str,
    /// Path of the executable.
    pub path: PathBuf,
    /// Its directory (given as `CNI_PATH`).
    pub dir: PathBuf,
}

impl Plugin {
    fn command(&self, command: Option<&str>, env: EnvOverrides<'_>) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.env_clear().env("PATH", PATH);
        if let Some(c) = command {
            cmd.env("CNI_COMMAND", c);
        }
        cmd.env("CNI_PATH", &self.dir);
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts the plugin, writes `stdin` and closes it; the caller owns the child.
    /// Base environment: `PATH`, `CNI_PATH=<dir>`, `CNI_COMMAND=<command>` (unset
    /// when `None`), then `env` applied on top.
    pub fn spawn(&self, command: Option<&str>, env: EnvOverrides<'_>, stdin: &[u8]) -> Child {
        let mut child = self
            .command(command, env)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.path.display()));
        if let Some(mut pipe) = child.stdin.take() {
            // The plugin may exit (or be killed) without reading stdin: ignore EPIPE.
            let _ = pipe.write_all(stdin);
        }
        child
    }

    /// Runs the plugin to completion (killed after [`EXEC_TIMEOUT`]).
    pub fn exec(&self, command: Option<&str>, env: EnvOverrides<'_>, stdin: &[u8]) -> Output {
        let child = self.spawn(command, env, stdin);
        let pid =
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid does not fit in i32"));
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(EXEC_TIMEOUT) {
            Ok(r) => r,
            Err(_) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let r = rx.recv().expect("waiter thread vanished");
                let o = r
                    .as_ref()
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned());
                panic!(
                    "{} plugin {} timed out after {EXEC_TIMEOUT:?}; stderr: {o:?}",
                    self.label,
                    self.path.display()
                );
            }
        };
        waiter.join().expect("waiter thread panicked");
        let out = out.unwrap_or_else(|e| panic!("waiting for {}: {e}", self.path.display()));
        Output {
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }

    fn attachment_env<'a>(
        id: &'a str,
        ifname: &'a str,
        netns: bool,
        extra: &'a [(&'a str, &'a str)],
    ) -> Vec<(&'a str, Option<&'a str>)> {
        let mut env = vec![("CNI_CONTAINERID", Some(id)), ("CNI_IFNAME", Some(ifname))];
        if netns {
            env.push(("CNI_NETNS", Some(NETNS)));
        }
        env.extend(extra.iter().map(|(k, v)| (*k, Some(*v))));
        env
    }

    /// Raw ADD run.
    pub fn add_output(
        &self,
        conf: &Value,
        id: &str,
        ifname: &str,
        extra_env: &[(&str, &str)],
    ) -> Output {
        let env = Self::attachment_env(id, ifname, true, extra_env);
        self.exec(Some("ADD"), &env, conf.to_string().as_bytes())
    }

    /// ADD: `Ok(result)` or `Err(error JSON)`.
    pub fn add(
        &self,
        conf: &Value,
        id: &str,
        ifname: &str,
        extra_env: &[(&str, &str)],
    ) -> Result<Value, Value> {
        let out = self.add_output(conf, id, ifname, extra_env);
        let stderr = out.stderr_str();
        let r = out.into_result();
        if let Ok(v) = &r {
            assert!(
                v.is_object(),
                "{} ADD succeeded without a result object: {v}\nstderr: {stderr}",
                self.label
            );
        }
        r
    }

    /// Raw DEL run (no `CNI_NETNS`).
    pub fn del_output(
        &self,
        conf: &Value,
        id: &str,
        ifname: &str,
        extra_env: &[(&str, &str)],
    ) -> Output {
        let env = Self::attachment_env(id, ifname, false, extra_env);
        self.exec(Some("DEL"), &env, conf.to_string().as_bytes())
    }

    /// DEL (without `CNI_NETNS`). Success must print nothing.
    pub fn del(
        &self,
        conf: &Value,
        id: &str,
        ifname: &str,
        extra_env: &[(&str, &str)],
    ) -> Result<(), Value> {
        let out = self.del_output(conf, id, ifname, extra_env);
        self.no_output(out, "DEL")
    }

    /// CHECK. Success must print nothing.
    pub fn check(
        &self,
        conf: &Value,
        id: &str,
        ifname: &str,
        extra_env: &[(&str, &str)],
    ) -> Result<(), Value> {
        let env = Self::attachment_env(id, ifname, true, extra_env);
        let out = self.exec(Some("CHECK"), &env, conf.to_string().as_bytes());
        self.no_output(out, "CHECK")
    }

    /// GC (only `CNI_COMMAND` and `CNI_PATH` set). `conf` must already carry the
    /// attachment list (see [`with_attachments`]). Success must print nothing.
    pub fn gc(&self, conf: &Value) -> Result<(), Value> {
        let out = self.exec(Some("GC"), &[], conf.to_string().as_bytes());
        self.no_output(out, "GC")
    }

    /// STATUS (only `CNI_COMMAND` and `CNI_PATH` set). Success must print nothing.
    pub fn status(&self, conf: &Value) -> Result<(), Value> {
        let out = self.exec(Some("STATUS"), &[], conf.to_string().as_bytes());
        self.no_output(out, "STATUS")
    }

    /// VERSION run.
    pub fn version(&self, stdin: &[u8]) -> Output {
        self.exec(Some("VERSION"), &[], stdin)
    }

    fn no_output(&self, out: Output, what: &str) -> Result<(), Value> {
        let stderr = out.stderr_str();
        match out.into_result()? {
            Value::Null => Ok(()),
            other => panic!(
                "{} {what} succeeded but printed {other}\nstderr: {stderr}",
                self.label
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------

/// Builds a host-local network configuration. `version == ""` leaves out
/// `cniVersion`. `ipam` keys are merged over `{"type":"host-local","dataDir":..}`.
pub fn net_conf(version: &str, name: &str, data_dir: &Path, ipam: Value) -> Value {
    let mut ipam_obj = serde_json::Map::new();
    ipam_obj.insert("type".into(), json!("host-local"));
    ipam_obj.insert(
        "dataDir".into(),
        json!(data_dir.to_str().expect("dataDir is not UTF-8")),
    );
    match ipam {
        Value::Object(m) => ipam_obj.extend(m),
        Value::Null => {}
        other => panic!("ipam must be an object, got {other}"),
    }
    let mut conf = serde_json::Map::new();
    if !version.is_empty() {
        conf.insert("cniVersion".into(), json!(version));
    }
    conf.insert("name".into(), json!(name));
    conf.insert("type".into(), json!("host-local"));
    conf.insert("ipam".into(), Value::Object(ipam_obj));
    Value::Object(conf)
}

/// A `ranges` ipam fragment from a list of range sets of subnets:
/// `ranges(&[&["10.1.2.0/24"], &["2001:db8::/64"]])`.
pub fn ranges(sets: &[&[&str]]) -> Value {
    let sets: Vec<Value> = sets
        .iter()
        .map(|set| Value::Array(set.iter().map(|s| json!({ "subnet": s })).collect()))
        .collect();
    json!({ "ranges": sets })
}

/// Returns `conf` with a top-level key set.
pub fn with_key(conf: &Value, key: &str, value: Value) -> Value {
    let mut c = conf.clone();
    c.as_object_mut()
        .expect("config is not an object")
        .insert(key.to_string(), value);
    c
}

/// Returns `conf` with `cniVersion` replaced.
pub fn with_version(conf: &Value, version: &str) -> Value {
    with_key(conf, "cniVersion", json!(version))
}

/// Returns `conf` carrying a GC attachment list under `key`.
pub fn with_attachments(conf: &Value, key: &str, attachments: &[(&str, &str)]) -> Value {
    let list: Vec<Value> = attachments
        .iter()
        .map(|(id, ifname)| json!({ "containerID": id, "ifname": ifname }))
        .collect();
    with_key(conf, key, Value::Array(list))
}

/// A temporary dataDir plus a network name: one per test.
#[derive(Debug)]
pub struct TestNet {
    pub tmp: tempfile::TempDir,
    pub name: String,
}

impl TestNet {
    pub fn new(name: &str) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("cni-it-")
            .tempdir()
            .expect("cannot create temporary dataDir");
        TestNet {
            tmp,
            name: name.to_string(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Configuration for this network (see [`net_conf`]).
    pub fn conf(&self, version: &str, ipam: Value) -> Value {
        net_conf(version, &self.name, self.data_dir(), ipam)
    }

    /// View of `<dataDir>/<name>/`.
    pub fn store(&self) -> Store {
        Store::new(self.data_dir(), &self.name)
    }
}

// ---------------------------------------------------------------------------
// Store view
// ---------------------------------------------------------------------------

/// View of a host-local network directory `<dataDir>/<name>/`.
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn new(data_dir: &Path, name: &str) -> Self {
        Store {
            dir: data_dir.join(name),
        }
    }

    /// All entry names, sorted (empty when the directory does not exist).
    pub fn entries(&self) -> Vec<String> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("read_dir {}: {e}", self.dir.display()),
        };
        let mut names: Vec<String> = rd
            .map(|e| {
                e.expect("read_dir entry")
                    .file_name()
                    .into_string()
                    .expect("non UTF-8 file name in store")
            })
            .collect();
        names.sort();
        names
    }

    /// Names of the reservation files (names that parse as an IP address), sorted.
    pub fn ip_names(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|n| n.parse::<IpAddr>().is_ok())
            .collect()
    }

    /// Reserved addresses.
    pub fn ips(&self) -> BTreeSet<IpAddr> {
        self.ip_names()
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect()
    }

    /// Names starting with `.`.
    pub fn dotfiles(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    /// Entries that are neither reservations, `lock`, `last_reserved_ip.<N>` nor dotfiles.
    pub fn unexpected(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|n| {
                !(n.parse::<IpAddr>().is_ok()
                    || n == "lock"
                    || n.starts_with('.')
                    || n.strip_prefix("last_reserved_ip.")
                        .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit())))
            })
            .collect()
    }

    /// Everything except `lock`, `last_reserved_ip.*` and our host-local's
    /// `.spare` (a released inode kept for reuse, which holds no address).
    pub fn non_bookkeeping(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|n| n != "lock" && n != ".spare" && !n.starts_with("last_reserved_ip."))
            .collect()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Raw content of an entry (None when absent).
    pub fn read(&self, name: &str) -> Option<String> {
        match fs::read(self.path(name)) {
            Ok(b) => Some(String::from_utf8(b).expect("store file is not UTF-8")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("read {name}: {e}"),
        }
    }

    /// Content of the reservation file of `ip` (given as text, e.g. "10.1.2.2").
    pub fn read_ip(&self, ip: &str) -> Option<String> {
        let ip: IpAddr = ip.parse().expect("not an IP");
        self.read(&ip.to_string())
    }

    /// Content of `last_reserved_ip.<n>`.
    pub fn last_reserved(&self, n: usize) -> Option<String> {
        self.read(&format!("last_reserved_ip.{n}"))
    }

    /// Permission bits of an entry.
    pub fn mode(&self, name: &str) -> Option<u32> {
        fs::metadata(self.path(name))
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }

    /// Writes a file into the store (creating the directory) with `mode`.
    pub fn write(&self, name: &str, content: &[u8], mode: u32) {
        fs::create_dir_all(&self.dir).expect("create store dir");
        let p = self.path(name);
        fs::write(&p, content).expect("write store file");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod store file");
    }
}

/// Runs `f(i)` for `0..n` in `n` threads at once and returns the results in
/// order of `i`.
pub fn parallel<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..n).map(|i| s.spawn(move || f(i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a parallel worker panicked"))
            .collect()
    })
}

/// The content host-local writes for an attachment.
pub fn owner(id: &str, ifname: &str) -> String {
    format!("{id}\r\n{ifname}")
}

// ---------------------------------------------------------------------------
// Results and errors
// ---------------------------------------------------------------------------

/// `(address with prefix, gateway)` pairs of a result of any version
/// (0.1.0/0.2.0 `ip4`/`ip6`, or `ips[]`).
pub fn result_ips(result: &Value) -> Vec<(String, Option<String>)> {
    let pair = |addr: &Value, gw: Option<&Value>| {
        (
            addr.as_str().expect("address is not a string").to_string(),
            gw.and_then(Value::as_str).map(str::to_string),
        )
    };
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        return ips
            .iter()
            .map(|i| pair(&i["address"], i.get("gateway")))
            .collect();
    }
    ["ip4", "ip6"]
        .iter()
        .filter_map(|k| result.get(*k))
        .map(|i| pair(&i["ip"], i.get("gateway")))
        .collect()
}

/// The addresses (without prefix) of a result.
pub fn result_addrs(result: &Value) -> Vec<IpAddr> {
    result_ips(result)
        .iter()
        .map(|(a, _)| {
            a.split('/')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad address {a} in {result}"))
        })
        .collect()
}

/// The single address of a one-IP result.
pub fn single_addr(result: &Value) -> IpAddr {
    let a = result_addrs(result);
    assert_eq!(a.len(), 1, "expected exactly one address in {result}");
    a[0]
}

/// Whether results of `version` carry `ips[].version`.
pub fn has_ip_version(version: &str) -> bool {
    matches!(version, "0.3.0" | "0.3.1" | "0.4.0")
}

/// Whether `version` uses the 0.1.0/0.2.0 result shape (missing cniVersion = 0.1.0).
pub fn is_legacy(version: &str) -> bool {
    matches!(version, "" | "0.1.0" | "0.2.0")
}

/// Whether `version` has CHECK.
pub fn has_check(version: &str) -> bool {
    matches!(version, "0.4.0" | "1.0.0" | "1.1.0")
}

/// The result our plugin must print for `version`: `ips` as `(address/prefix,
/// gateway)`, `routes` as configured (a JSON array, or None), `dns` (None = empty).
///
/// 0.1.0/0.2.0 put the first v4 and v6 address under `ip4`/`ip6` with the routes
/// of that family; ≤1.0.0 always carry `"dns":{}`; 1.1.0 omits an empty dns.
pub fn expected_result(
    version: &str,
    ips: &[(&str, &str)],
    routes: Option<&Value>,
    dns: Option<&Value>,
) -> Value {
    let dns_v = dns.cloned().unwrap_or_else(|| json!({}));
    let is_v6 = |a: &str| a.contains(':');
    let mut m = serde_json::Map::new();
    let shown_version = if version.is_empty() { "0.1.0" } else { version };
    m.insert("cniVersion".into(), json!(shown_version));
    if is_legacy(version) {
        for (key, v6) in [("ip4", false), ("ip6", true)] {
            let Some((addr, gw)) = ips.iter().find(|(a, _)| is_v6(a) == v6) else {
                continue;
            };
            let mut o = serde_json::Map::new();
            o.insert("ip".into(), json!(addr));
            o.insert("gateway".into(), json!(gw));
            let fam_routes: Vec<Value> = routes
                .and_then(Value::as_array)
                .map(|rs| {
                    rs.iter()
                        .filter(|r| r["dst"].as_str().is_some_and(|d| is_v6(d) == v6))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if !fam_routes.is_empty() {
                o.insert("routes".into(), Value::Array(fam_routes));
            }
            m.insert(key.into(), Value::Object(o));
        }
        m.insert("dns".into(), dns_v);
        return Value::Object(m);
    }
    let list: Vec<Value> = ips
        .iter()
        .map(|(addr, gw)| {
            let mut o = serde_json::Map::new();
            if has_ip_version(version) {
                o.insert("version".into(), json!(if is_v6(addr) { "6" } else { "4" }));
            }
            o.insert("address".into(), json!(addr));
            o.insert("gateway".into(), json!(gw));
            Value::Object(o)
        })
        .collect();
    m.insert("ips".into(), Value::Array(list));
    if let Some(r) = routes {
        if r.as_array().is_some_and(|a| !a.is_empty()) {
            m.insert("routes".into(), r.clone());
        }
    }
    let dns_empty = dns_v.as_object().is_some_and(serde_json::Map::is_empty);
    if version != "1.1.0" || !dns_empty {
        m.insert("dns".into(), dns_v);
    }
    Value::Object(m)
}

/// `code` of an error JSON.
pub fn err_code(err: &Value) -> u64 {
    err["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("error without numeric code: {err}"))
}

/// `msg` of an error JSON.
pub fn err_msg(err: &Value) -> &str {
    err["msg"]
        .as_str()
        .unwrap_or_else(|| panic!("error without msg: {err}"))
}

/// Asserts an error JSON has `code` and `msg`.
#[track_caller]
pub fn assert_err(err: &Value, code: u64, msg: &str) {
    assert_eq!(
        (err_code(err), err_msg(err)),
        (code, msg),
        "unexpected error JSON: {err}"
    );
}

/// Unwraps an `Ok`, panicking with the error JSON otherwise.
#[track_caller]
pub fn ok<T: std::fmt::Debug>(r: Result<T, Value>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

/// Unwraps an `Err`, panicking with the result otherwise.
#[track_caller]
pub fn fails<T: std::fmt::Debug>(r: Result<T, Value>, what: &str) -> Value {
    match r {
        Ok(v) => panic!("{what} unexpectedly succeeded: {v:?}"),
        Err(e) => e,
    }
}

/// A small xorshift64* generator for reproducible randomness without extra crates.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Seed from the clock (print it so failures can be replayed).
    pub fn seed_from_time() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
