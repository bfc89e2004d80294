//! Network-namespace harness for the black-box `bridge` tests.
//!
//! Every test builds its own world out of throw-away *named* network
//! namespaces (`ip netns add k8s-shims-t-<pid>-<n>-<tag>`):
//! * one "fake host" per implementation under test, inside which the plugin
//!   runs (`ip netns exec <host> <dir>/bridge`, cleared environment);
//! * one namespace per container ([`Pod`]), given as `CNI_NETNS=/run/netns/<ns>`;
//! * for traffic tests, extra namespaces ("outside host", "switch", nodes).
//!
//! Cleanup is structural: [`Netns`] deletes its namespace on `Drop` (also
//! when the test panics), which takes every link, address, route, sysctl and
//! iptables/nftables rule inside it along. Nothing here ever creates a link
//! or a rule in the namespace the tests run in: every state-changing command
//! goes through `ip netns exec <test ns>` or `ip -n <test ns>`.
//!
//! State is read back through an independent oracle: `ip -j`, `bridge -j`,
//! `iptables-save`, `ip6tables-save`, `nft -j`, `/proc/sys` and `/sys`, each
//! run inside the namespace concerned and parsed with `serde_json`.
//!
//! Implementation sets ([`Impl`]) are directories given as `CNI_PATH` that
//! hold a `bridge` and a `host-local`: ours (`CNI_BIN_DIR`, default
//! `<workspace>/target/debug`), the reference (`REF_CNI_DIR`, default
//! `/usr/lib/cni`), and the two mixes (a temporary directory of symlinks).
//! A missing binary is a panic with a hint, never a skip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{ours_dir, ref_dir, Output, Store, EXEC_TIMEOUT, PATH};

/// Prefix of every namespace the tests create.
pub const NS_PREFIX: &str = "k8s-shims-t-";

/// Default network name of [`Host::conf`].
pub const NET: &str = "brnet";

/// Default bridge name of [`Host::conf`].
pub const BRIDGE: &str = "cni0";

/// Default container interface name.
pub const IFNAME: &str = "eth0";

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// Runs `cmd` (stdin written then closed, stdout/stderr captured), killing it
/// after `timeout`.
pub fn run_with_timeout(mut cmd: Command, stdin: &[u8], timeout: Duration, what: &str) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    if let Some(mut pipe) = child.stdin.take() {
        // The process may exit without reading stdin: ignore EPIPE.
        let _ = pipe.write_all(stdin);
    }
    let pid =
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid does not fit in i32"));
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let r = rx.recv().expect("waiter thread vanished");
            let err = r
                .as_ref()
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned());
            panic!("{what} timed out after {timeout:?}; stderr: {err:?}");
        }
    };
    waiter.join().expect("waiter thread panicked");
    let out = out.unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    Output {
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// Runs a plain tool (not inside any namespace), panicking on failure.
fn tool(args: &[&str], stdin: &[u8]) -> String {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]).env("PATH", PATH);
    let out = run_with_timeout(cmd, stdin, Duration::from_secs(20), &args.join(" "));
    assert!(
        out.status.success(),
        "`{}` failed ({:?}): {}{}",
        args.join(" "),
        out.status,
        out.stdout_str(),
        out.stderr_str()
    );
    out.stdout_str()
}

/// Lowercase hex SHA-512 of `s`, computed by coreutils `sha512sum` (an oracle
/// independent of the plugin's own hashing).
pub fn sha512_hex(s: &str) -> String {
    let out = tool(&["sha512sum", "-"], s.as_bytes());
    out.split_whitespace()
        .next()
        .expect("sha512sum printed nothing")
        .to_string()
}

/// iptables masquerade chain of an attachment: `CNI-` + sha512(name + id)[:24].
pub fn masq_chain(net: &str, id: &str) -> String {
    format!("CNI-{}", &sha512_hex(&format!("{net}{id}"))[..24])
}

/// iptables masquerade comment: `name: "<net>" id: "<id>"`.
pub fn masq_comment(net: &str, id: &str) -> String {
    format!("name: \"{net}\" id: \"{id}\"")
}

/// nftables masquerade comment (HEAD scheme):
/// `<h(net)>-<h(ifname:id)>, net: <net>, if: <ifname>, id: <id>`, h = sha512[:16].
pub fn nft_masq_comment(net: &str, ifname: &str, id: &str) -> String {
    let c = format!(
        "{}-{}, net: {}, if: {}, id: {}",
        &sha512_hex(net)[..16],
        &sha512_hex(&format!("{ifname}:{id}"))[..16],
        net.replace('"', ""),
        ifname.replace('"', ""),
        id.replace('"', "")
    );
    c.chars().take(128).collect()
}

// ---------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    alive: bool,
}

impl Netns {
    /// Creates `k8s-shims-t-<pid>-<n>-<tag>` with `lo` up.
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NS_PREFIX}{}-{n}-{tag}", std::process::id());
        // `ip netns add` may race on the first mount of /run/netns: retry.
        let mut last = String::new();
        for _ in 0..5 {
            let out = Command::new("ip")
                .args(["netns", "add", &name])
                .env("PATH", PATH)
                .output()
                .expect("cannot run ip");
            if out.status.success() {
                let ns = Netns { name, alive: true };
                ns.ip(&["link", "set", "lo", "up"]);
                return ns;
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("ip netns add {name} failed: {last}");
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// False once [`Netns::delete`] ran.
    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// `/run/netns/<name>`: the `CNI_NETNS` value.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Deletes the namespace now (e.g. "netns gone before DEL").
    pub fn delete(&mut self) {
        if self.alive {
            self.alive = false;
            let out = Command::new("ip")
                .args(["netns", "del", &self.name])
                .env("PATH", PATH)
                .output()
                .expect("cannot run ip");
            assert!(
                out.status.success(),
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// `ip netns exec <ns> <args>` with a minimal environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.env_clear()
            .env("PATH", PATH)
            .args(["netns", "exec", &self.name])
            .args(args);
        cmd
    }

    /// Runs `args` inside the namespace; returns the raw output.
    pub fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(
            self.command(args),
            b"",
            Duration::from_secs(30),
            &format!("[{}] {}", self.name, args.join(" ")),
        )
    }

    /// Runs `args` inside the namespace; panics on failure; returns stdout.
    pub fn sh(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "[{}] `{}` failed ({:?}): {}{}",
            self.name,
            args.join(" "),
            out.status,
            out.stdout_str(),
            out.stderr_str()
        );
        out.stdout_str()
    }

    /// `ip -n <ns> <args>` (no mount namespace needed); panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        tool(&full, b"")
    }

    /// `ip -n <ns> -j <args>` parsed; an empty output is an empty array.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        parse_json_or_empty(&self.ip(&full))
    }

    /// `bridge -n <ns> -j <args>` parsed.
    pub fn bridge_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["bridge", "-n", &self.name, "-j"];
        full.extend_from_slice(args);
        parse_json_or_empty(&tool(&full, b""))
    }

    /// All links (`ip -j -d link show`).
    pub fn links(&self) -> Vec<Value> {
        as_vec(self.ip_json(&["-d", "link", "show"]))
    }

    /// One link by name (`None` when absent).
    pub fn link(&self, name: &str) -> Option<Value> {
        self.links().into_iter().find(|l| l["ifname"] == name)
    }

    /// One link by name; panics when absent.
    #[track_caller]
    pub fn must_link(&self, name: &str) -> Value {
        self.link(name)
            .unwrap_or_else(|| panic!("[{}] no link {name}: {:?}", self.name, self.link_names()))
    }

    /// The link `name` once its `operstate` is `state`, or as it is when
    /// `within` has passed. The kernel's linkwatch sets operstate after a
    /// carrier change up to 1 s late (events of a link's master, such as a
    /// bridge, wait for its once-a-second run, shared by every namespace),
    /// so a plugin that waited for its own port cannot have waited for it.
    #[track_caller]
    pub fn link_when_operstate(&self, name: &str, state: &str, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            let l = self.must_link(name);
            if l["operstate"] == state || start.elapsed() >= within {
                return l;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn link_names(&self) -> Vec<String> {
        self.links()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Adds a link that is neither a bridge nor a veth (`ifb`: this kernel
    /// has no `dummy` module).
    pub fn add_plain_link(&self, name: &str) {
        self.ip(&["link", "add", name, "type", "ifb"]);
    }

    /// Waits until no veth is left in this namespace (a deleted netns is torn
    /// down asynchronously, taking the peer of its veths with it).
    #[track_caller]
    pub fn wait_no_veths(&self, within: Duration) {
        let start = Instant::now();
        while !self.veths().is_empty() {
            assert!(
                start.elapsed() < within,
                "[{}] veths still present after {within:?}: {:?}",
                self.name,
                self.veths()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Names of the links of kind veth.
    pub fn veths(&self) -> Vec<String> {
        self.links()
            .iter()
            .filter(|l| link_kind(l) == "veth")
            .map(|l| l["ifname"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// `addr_info` entries of `dev` (empty when the link is absent).
    pub fn addr_info(&self, dev: &str) -> Vec<Value> {
        if self.link(dev).is_none() {
            return Vec::new();
        }
        as_vec(self.ip_json(&["addr", "show", "dev", dev]))
            .into_iter()
            .flat_map(|l| as_vec(l["addr_info"].clone()))
            .collect()
    }

    /// Every address of `dev` (any scope) as `addr/prefix`, sorted.
    pub fn all_addrs(&self, dev: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .addr_info(dev)
            .iter()
            .map(|a| {
                format!(
                    "{}/{}",
                    a["local"].as_str().unwrap_or_default(),
                    a["prefixlen"]
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Global-scope addresses of `dev` as `addr/prefix`, sorted.
    pub fn global_addrs(&self, dev: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .addr_info(dev)
            .iter()
            .filter(|a| a["scope"] == "global")
            .map(|a| {
                format!(
                    "{}/{}",
                    a["local"].as_str().unwrap_or_default(),
                    a["prefixlen"]
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Routes of one family (`ip -j [-6] route show`), main table.
    pub fn routes(&self, v6: bool) -> Vec<Value> {
        let fam = if v6 { "-6" } else { "-4" };
        as_vec(self.ip_json(&[fam, "route", "show"]))
    }

    /// Bridge ports with details (`bridge -j -d link show`).
    pub fn bridge_ports(&self) -> Vec<Value> {
        as_vec(self.bridge_json(&["-d", "link", "show"]))
    }

    /// The bridge port entry of `dev`.
    #[track_caller]
    pub fn bridge_port(&self, dev: &str) -> Value {
        self.bridge_ports()
            .into_iter()
            .find(|p| p["ifname"] == dev)
            .unwrap_or_else(|| panic!("[{}] {dev} is not a bridge port", self.name))
    }

    /// A sysctl inside the namespace (key with dots or slashes), read from
    /// `/proc/sys` (no `procps` needed).
    pub fn sysctl(&self, key: &str) -> String {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.sh(&["cat", &path]).trim().to_string()
    }

    /// A `/sys/class/net/<dev>/<attr>` value, read inside the namespace.
    pub fn sys_net(&self, dev: &str, attr: &str) -> String {
        self.sh(&["cat", &format!("/sys/class/net/{dev}/{attr}")])
            .trim()
            .to_string()
    }

    /// `iptables-save -t nat` (or `ip6tables-save`) as normalised rule lines:
    /// `-N <chain>` for user chains (`:CHAIN - [..]`) and `-A ...` rules;
    /// built-in chain policies and comments/counters are dropped.
    pub fn nat_rules(&self, v6: bool) -> Vec<String> {
        let bin = if v6 {
            "ip6tables-save"
        } else {
            "iptables-save"
        };
        let out = self.sh(&[bin, "-t", "nat"]);
        out.lines()
            .filter_map(|l| {
                if let Some(rest) = l.strip_prefix(':') {
                    let mut it = rest.split_whitespace();
                    let chain = it.next()?;
                    let policy = it.next()?;
                    (policy == "-").then(|| format!("-N {chain}"))
                } else if l.starts_with("-A ") {
                    Some(l.to_string())
                } else {
                    None
                }
            })
            .collect()
    }

    /// Every nat rule line (v4 and v6) that mentions a `CNI-` chain.
    pub fn cni_nat_rules(&self) -> Vec<String> {
        let mut v = self.nat_rules(false);
        v.extend(self.nat_rules(true));
        v.into_iter().filter(|l| l.contains("CNI-")).collect()
    }

    /// The nat rules of portmap attachments (their `CNI-DN-` chains and the
    /// `dnat name` entry rules), both families: empty once every pod is gone.
    pub fn portmap_attachment_rules(&self) -> Vec<String> {
        self.cni_nat_rules()
            .into_iter()
            .filter(|r| r.contains("CNI-DN-") || r.contains("dnat name"))
            .collect()
    }

    /// Accepts RELATED,ESTABLISHED in `tool`'s (`iptables` or `ip6tables`)
    /// INPUT chain: a stateful rule, as every real node has, which is what
    /// turns connection tracking on in this namespace.
    pub fn accept_established(&self, tool: &str) {
        self.sh(&[
            tool,
            "-w",
            "-A",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ]);
    }

    /// `nft -j list ruleset`: the array under `nftables`.
    pub fn nft(&self) -> Vec<Value> {
        let out = self.sh(&["nft", "-j", "list", "ruleset"]);
        let v = parse_json_or_empty(&out);
        as_vec(v["nftables"].clone())
    }

    /// nft objects of `kind` ("table", "chain", "rule") in `family`/`table`.
    pub fn nft_objects(&self, kind: &str, family: &str, table: &str) -> Vec<Value> {
        self.nft()
            .into_iter()
            .filter_map(|o| o.get(kind).cloned())
            .filter(|o| o["family"] == family && o["table"] == table)
            .collect()
    }

    /// Rules of the `inet cni_plugins_masquerade` table's `masq_checks` chain.
    pub fn nft_masq_rules(&self) -> Vec<Value> {
        self.nft_objects("rule", "inet", "cni_plugins_masquerade")
            .into_iter()
            .filter(|r| r["chain"] == "masq_checks")
            .collect()
    }

    /// Names of the `bridge nat` chains that start with `cni-br-iface-`
    /// (mac spoof check), plus the PREROUTING rules that carry a macspoofchk comment.
    pub fn spoofchk_objects(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .nft_objects("chain", "bridge", "nat")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .filter(|n| n.starts_with("cni-br-iface-"))
            .map(|n| format!("chain {n}"))
            .collect();
        v.extend(
            self.nft_objects("rule", "bridge", "nat")
                .iter()
                .filter(|r| {
                    r["comment"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("macspoofchk-"))
                })
                .map(|r| format!("rule in {}: {}", r["chain"], r["comment"])),
        );
        v
    }

    /// Whether a TCP connection attempt from this namespace to `addr` gets an
    /// answer (a RST for the closed port 9 counts: the SYN arrived and the
    /// reply came back). No `ping` binary is needed. Tries until `within`.
    pub fn reach(&self, addr: &str, within: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.probe_once(addr) {
                return true;
            }
            if start.elapsed() >= within {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn probe_once(&self, addr: &str) -> bool {
        let script = format!("exec 3<>/dev/tcp/{addr}/9");
        let out = self.run(&["timeout", "1", "bash", "-c", &script]);
        if out.status.success() {
            return true;
        }
        out.stderr_str().contains("Connection refused")
    }

    /// Asserts `addr` is reachable from this namespace (within 5 s).
    #[track_caller]
    pub fn assert_reaches(&self, addr: &str) {
        assert!(
            self.reach(addr, Duration::from_secs(5)),
            "[{}] cannot reach {addr}",
            self.name
        );
    }

    /// Asserts `addr` is not reachable (one 1 s attempt plus one retry).
    #[track_caller]
    pub fn assert_unreachable(&self, addr: &str) {
        assert!(
            !self.reach(addr, Duration::from_millis(1)),
            "[{}] unexpectedly reached {addr}",
            self.name
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.alive {
            self.alive = false;
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .env("PATH", PATH)
                .output();
        }
    }
}

fn parse_json_or_empty(s: &str) -> Value {
    if s.trim().is_empty() {
        return json!([]);
    }
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn as_vec(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// Links two test namespaces with a veth pair (`a_if` in `a`, `b_if` in `b`),
/// both ends up, with optional addresses. Created from inside `a`, so the
/// namespace the tests run in never sees it.
pub fn veth_between(
    a: &Netns,
    a_if: &str,
    a_addr: Option<&str>,
    b: &Netns,
    b_if: &str,
    b_addr: Option<&str>,
) {
    a.sh(&[
        "ip",
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    for (ns, ifn, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        if let Some(addr) = addr {
            ns.ip(&["addr", "add", addr, "dev", ifn]);
        }
        ns.ip(&["link", "set", ifn, "up"]);
    }
}

/// Packet counter of the first `iptables-save -c` filter rule containing
/// `needle` (e.g. `-A INPUT -s 192.168.100.1/32`).
pub fn iptables_counter(ns: &Netns, needle: &str) -> u64 {
    let out = ns.sh(&["iptables-save", "-c", "-t", "filter"]);
    let line = out
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("[{}] no rule containing {needle}: {out}", ns.name()));
    line.trim_start_matches('[')
        .split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {line}"))
}

/// `linkinfo.info_kind` of an `ip -j -d link` entry ("" when none).
pub fn link_kind(l: &Value) -> &str {
    l["linkinfo"]["info_kind"].as_str().unwrap_or("")
}

/// Whether an `ip -j link` entry has `flag` (e.g. "UP").
pub fn has_flag(l: &Value, flag: &str) -> bool {
    l["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == flag))
}

/// Whether the running kernel can create a bridge with `vlan_filtering 1`
/// (checked in a scratch namespace). Returns the kernel's error text when not.
pub fn vlan_filtering_support() -> Result<(), String> {
    let ns = Netns::new("vlanprobe");
    let out = ns.run(&[
        "ip",
        "link",
        "add",
        "vbr",
        "type",
        "bridge",
        "vlan_filtering",
        "1",
    ]);
    if out.status.success() {
        Ok(())
    } else {
        Err(out.stderr_str().trim().to_string())
    }
}

// ---------------------------------------------------------------------------
// Implementation sets
// ---------------------------------------------------------------------------

/// A `CNI_PATH` directory holding a `bridge` and a `host-local`.
#[derive(Debug, Clone)]
pub struct Impl {
    /// For messages: "ours", "reference", "ours-bridge+ref-ipam", ...
    pub label: String,
    /// The `CNI_PATH` directory.
    pub dir: PathBuf,
    _links: Option<Arc<tempfile::TempDir>>,
}

fn require_bin(dir: &Path, name: &str, label: &str, hint: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    let meta = std::fs::metadata(&p)
        .unwrap_or_else(|e| panic!("{label} binary {} not found ({e}): {hint}", p.display()));
    assert!(
        meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        "{label} binary {} is not an executable file: {hint}",
        p.display()
    );
    p
}

const OURS_HINT: &str = "build first: cargo build --workspace --bins (or set CNI_BIN_DIR)";
const REF_HINT: &str = "install containernetworking-plugins (or set REF_CNI_DIR)";

impl Impl {
    /// Our `bridge` + our `host-local` (`CNI_BIN_DIR`, default `target/debug`).
    pub fn ours() -> Impl {
        let dir = ours_dir();
        require_bin(&dir, "bridge", "our", OURS_HINT);
        require_bin(&dir, "host-local", "our", OURS_HINT);
        Impl {
            label: "ours".into(),
            dir,
            _links: None,
        }
    }

    /// The reference v1.1.1 `bridge` + `host-local` (`REF_CNI_DIR`).
    pub fn reference() -> Impl {
        let dir = ref_dir();
        require_bin(&dir, "bridge", "reference", REF_HINT);
        require_bin(&dir, "host-local", "reference", REF_HINT);
        Impl {
            label: "reference".into(),
            dir,
            _links: None,
        }
    }

    fn mixed(label: &str, bridge: PathBuf, ipam: PathBuf) -> Impl {
        let tmp = tempfile::Builder::new()
            .prefix("cni-mixed-")
            .tempdir()
            .expect("cannot create temporary CNI_PATH");
        std::os::unix::fs::symlink(&bridge, tmp.path().join("bridge")).expect("symlink bridge");
        std::os::unix::fs::symlink(&ipam, tmp.path().join("host-local"))
            .expect("symlink host-local");
        Impl {
            label: label.into(),
            dir: tmp.path().to_path_buf(),
            _links: Some(Arc::new(tmp)),
        }
    }

    /// Our `bridge` delegating to the reference `host-local`.
    pub fn ours_bridge_ref_ipam() -> Impl {
        let b = require_bin(&ours_dir(), "bridge", "our", OURS_HINT);
        let i = require_bin(&ref_dir(), "host-local", "reference", REF_HINT);
        Impl::mixed("ours-bridge+ref-host-local", b, i)
    }

    /// The reference `bridge` delegating to our `host-local`.
    pub fn ref_bridge_ours_ipam() -> Impl {
        let b = require_bin(&ref_dir(), "bridge", "reference", REF_HINT);
        let i = require_bin(&ours_dir(), "host-local", "our", OURS_HINT);
        Impl::mixed("ref-bridge+ours-host-local", b, i)
    }

    /// The multi-call executable (`k8s-shims-cni`) as both `bridge` and
    /// `host-local`: the IPAM runs in-process.
    pub fn multicall() -> Impl {
        let m = require_bin(&ours_dir(), "k8s-shims-cni", "our", OURS_HINT);
        Impl::mixed("multicall", m.clone(), m)
    }

    /// The multi-call executable laid out as the Nix package and the NixOS
    /// module install it: a package whose `bin/<plugin>` are relative links
    /// to `bin/k8s-shims-cni`, and a bin dir (the module's link farm) whose
    /// entries are absolute links to those.
    pub fn multicall_nix_layout() -> Impl {
        let m = require_bin(&ours_dir(), "k8s-shims-cni", "our", OURS_HINT);
        let tmp = tempfile::Builder::new()
            .prefix("cni-nix-layout-")
            .tempdir()
            .expect("cannot create temporary CNI_PATH");
        let pkg = tmp.path().join("pkg/bin");
        let farm = tmp.path().join("farm/bin");
        for d in [&pkg, &farm] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::os::unix::fs::symlink(&m, pkg.join("k8s-shims-cni")).expect("symlink executable");
        for p in ["bridge", "host-local"] {
            std::os::unix::fs::symlink("k8s-shims-cni", pkg.join(p)).expect("symlink plugin");
            std::os::unix::fs::symlink(pkg.join(p), farm.join(p)).expect("symlink farm entry");
        }
        Impl {
            label: "multicall-nix-layout".into(),
            dir: farm,
            _links: Some(Arc::new(tmp)),
        }
    }

    /// The multi-call executable as `bridge`, the reference `host-local`
    /// (exec'd: it is another file).
    pub fn multicall_ref_ipam() -> Impl {
        let m = require_bin(&ours_dir(), "k8s-shims-cni", "our", OURS_HINT);
        let i = require_bin(&ref_dir(), "host-local", "reference", REF_HINT);
        Impl::mixed("multicall-bridge+ref-host-local", m, i)
    }

    /// Path of this set's `bridge`.
    pub fn bridge(&self) -> PathBuf {
        self.dir.join("bridge")
    }

    /// Whether `version` is supported by this set (the reference stops at 1.0.0).
    pub fn supports(&self, version: &str) -> bool {
        self.label == "ours" || self.label == "multicall" || version != "1.1.0"
    }
}

// ---------------------------------------------------------------------------
// Fake host, pods, configurations
// ---------------------------------------------------------------------------

/// A container: its namespace plus the attachment key.
#[derive(Debug)]
pub struct Pod {
    pub ns: Netns,
    pub id: String,
    pub ifname: String,
}

impl Pod {
    pub fn new(id: &str) -> Pod {
        Pod {
            ns: Netns::new("c"),
            id: id.to_string(),
            ifname: IFNAME.to_string(),
        }
    }

    /// The container interface (panics when absent).
    #[track_caller]
    pub fn iface(&self) -> Value {
        self.ns.must_link(&self.ifname)
    }

    /// Global addresses of the container interface.
    pub fn addrs(&self) -> Vec<String> {
        self.ns.global_addrs(&self.ifname)
    }

    /// The first global address (without prefix) of `family` ('4' or '6').
    #[track_caller]
    pub fn addr(&self, v6: bool) -> String {
        self.addrs()
            .iter()
            .map(|a| a.split('/').next().unwrap_or_default().to_string())
            .find(|a| a.contains(':') == v6)
            .unwrap_or_else(|| panic!("pod {} has no v{} address", self.id, if v6 { 6 } else { 4 }))
    }
}

/// One fake host running one implementation set, with its own IPAM dataDir.
#[derive(Debug)]
pub struct Host {
    pub ns: Netns,
    pub imp: Impl,
    pub data: tempfile::TempDir,
}

impl Host {
    pub fn new(imp: &Impl) -> Host {
        let data = tempfile::Builder::new()
            .prefix("cni-br-it-")
            .tempdir()
            .expect("cannot create temporary dataDir");
        Host {
            ns: Netns::new("h"),
            imp: imp.clone(),
            data,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// The host-local store of network `net`.
    pub fn store(&self, net: &str) -> Store {
        Store::new(self.data_dir(), net)
    }

    /// A bridge configuration: `{"cniVersion","name":NET,"type":"bridge",
    /// "bridge":BRIDGE}` with `extra` merged on top. A `ipam` of type
    /// `host-local` without `dataDir` gets this host's dataDir.
    /// `version == ""` leaves `cniVersion` out.
    pub fn conf(&self, version: &str, extra: Value) -> Value {
        let mut m = serde_json::Map::new();
        if !version.is_empty() {
            m.insert("cniVersion".into(), json!(version));
        }
        m.insert("name".into(), json!(NET));
        m.insert("type".into(), json!("bridge"));
        m.insert("bridge".into(), json!(BRIDGE));
        match extra {
            Value::Object(e) => m.extend(e),
            Value::Null => {}
            other => panic!("extra config must be an object, got {other}"),
        }
        if let Some(Value::Object(ipam)) = m.get_mut("ipam") {
            if ipam.get("type").is_some_and(|t| t == "host-local") && !ipam.contains_key("dataDir")
            {
                ipam.insert(
                    "dataDir".into(),
                    json!(self.data_dir().to_str().expect("dataDir is not UTF-8")),
                );
            }
        }
        Value::Object(m)
    }

    /// Runs this host's `bridge` inside the fake host with a cleared
    /// environment: `PATH`, `CNI_PATH`, `CNI_COMMAND` (if any), then `env`.
    pub fn exec(&self, command: Option<&str>, env: &[(&str, &str)], stdin: &[u8]) -> Output {
        let bridge = self.imp.bridge();
        let mut cmd = Command::new("ip");
        cmd.env_clear()
            .env("PATH", PATH)
            .args(["netns", "exec", self.ns.name()])
            .arg(&bridge)
            .env("CNI_PATH", &self.imp.dir);
        if let Some(c) = command {
            cmd.env("CNI_COMMAND", c);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_timeout(
            cmd,
            stdin,
            EXEC_TIMEOUT,
            &format!("{} bridge {command:?}", self.imp.label),
        )
    }

    /// Runs an attachment command with `CNI_CONTAINERID`, `CNI_IFNAME`,
    /// `CNI_NETNS` (when `netns` is Some) and `extra` env.
    pub fn cni(
        &self,
        command: &str,
        conf: &Value,
        id: &str,
        ifname: &str,
        netns: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Output {
        let mut env: Vec<(&str, &str)> = vec![("CNI_CONTAINERID", id), ("CNI_IFNAME", ifname)];
        if let Some(n) = netns {
            env.push(("CNI_NETNS", n));
        }
        env.extend_from_slice(extra);
        self.exec(Some(command), &env, conf.to_string().as_bytes())
    }

    /// ADD for `pod`: `Ok(result)` or `Err(error JSON)`.
    pub fn add(&self, conf: &Value, pod: &Pod, extra: &[(&str, &str)]) -> Result<Value, Value> {
        let path = pod.ns.path();
        let out = self.cni("ADD", conf, &pod.id, &pod.ifname, Some(&path), extra);
        let stderr = out.stderr_str();
        let r = out.into_result();
        if let Ok(v) = &r {
            assert!(
                v.is_object(),
                "{} ADD succeeded without a result object: {v}\nstderr: {stderr}",
                self.imp.label
            );
        }
        r
    }

    /// ADD that must succeed.
    #[track_caller]
    pub fn must_add(&self, conf: &Value, pod: &Pod) -> Value {
        match self.add(conf, pod, &[]) {
            Ok(v) => v,
            Err(e) => panic!("{} ADD failed: {e}\nconf: {conf}", self.imp.label),
        }
    }

    /// DEL for `pod` with `CNI_NETNS` set to its namespace path.
    pub fn del(&self, conf: &Value, pod: &Pod, extra: &[(&str, &str)]) -> Result<(), Value> {
        let path = pod.ns.path();
        let out = self.cni("DEL", conf, &pod.id, &pod.ifname, Some(&path), extra);
        no_output(out, &self.imp.label, "DEL")
    }

    /// DEL that must succeed.
    #[track_caller]
    pub fn must_del(&self, conf: &Value, pod: &Pod) {
        if let Err(e) = self.del(conf, pod, &[]) {
            panic!("{} DEL failed: {e}\nconf: {conf}", self.imp.label);
        }
    }

    /// CHECK for `pod`.
    pub fn check(&self, conf: &Value, pod: &Pod, extra: &[(&str, &str)]) -> Result<(), Value> {
        let path = pod.ns.path();
        let out = self.cni("CHECK", conf, &pod.id, &pod.ifname, Some(&path), extra);
        no_output(out, &self.imp.label, "CHECK")
    }

    /// GC (only `CNI_COMMAND` and `CNI_PATH`).
    pub fn gc(&self, conf: &Value) -> Result<(), Value> {
        let out = self.exec(Some("GC"), &[], conf.to_string().as_bytes());
        no_output(out, &self.imp.label, "GC")
    }

    /// STATUS (only `CNI_COMMAND` and `CNI_PATH`).
    pub fn status(&self, conf: &Value) -> Result<(), Value> {
        let out = self.exec(Some("STATUS"), &[], conf.to_string().as_bytes());
        no_output(out, &self.imp.label, "STATUS")
    }

    /// Everything an attachment can leave behind, as descriptions: plugin
    /// veths (`veth` + 8 hex) in the host, a veth named `ifname` in each pod namespace still alive,
    /// IPAM reservations of network `net`, CNI iptables/ip6tables nat
    /// state, nftables masquerade rules, mac spoof-check chains.
    pub fn leftovers(&self, net: &str, pods: &[&Pod]) -> Vec<String> {
        let mut v: Vec<String> = self
            .ns
            .veths()
            .into_iter()
            .filter(|n| is_veth_name(n))
            .map(|n| format!("host veth {n}"))
            .collect();
        for p in pods.iter().filter(|p| p.ns.is_alive()) {
            if let Some(l) = p.ns.link(&p.ifname) {
                if link_kind(&l) == "veth" {
                    v.push(format!("container {} veth {}", p.id, p.ifname));
                }
            }
        }
        v.extend(
            self.store(net)
                .ip_names()
                .into_iter()
                .map(|n| format!("IPAM reservation {n}")),
        );
        v.extend(
            self.ns
                .cni_nat_rules()
                .into_iter()
                .map(|r| format!("nat rule {r}")),
        );
        v.extend(
            self.ns
                .nft_masq_rules()
                .iter()
                .map(|r| format!("nft masq rule {}", r["comment"])),
        );
        v.extend(self.ns.spoofchk_objects());
        v
    }

    /// Asserts [`Host::leftovers`] is empty.
    #[track_caller]
    pub fn assert_clean(&self, net: &str, pods: &[&Pod], what: &str) {
        let l = self.leftovers(net, pods);
        assert!(
            l.is_empty(),
            "{} {what}: left behind {l:#?}",
            self.imp.label
        );
    }
}

/// Interprets a DEL/CHECK/GC/STATUS run: success must print nothing.
pub fn no_output(out: Output, label: &str, what: &str) -> Result<(), Value> {
    let stderr = out.stderr_str();
    match out.into_result()? {
        Value::Null => Ok(()),
        other => panic!("{label} {what} succeeded but printed {other}\nstderr: {stderr}"),
    }
}

/// An `ipam` section for host-local with one range set per subnet given.
pub fn host_local(subnets: &[&str]) -> Value {
    let sets: Vec<Value> = subnets.iter().map(|s| json!([{ "subnet": s }])).collect();
    json!({ "type": "host-local", "ranges": sets })
}

/// Returns `conf` with `prevResult` (its `cniVersion` kept as is).
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    crate::with_key(conf, "prevResult", prev.clone())
}

/// Whether `s` looks like `veth` + 8 lowercase hex digits.
pub fn is_veth_name(s: &str) -> bool {
    s.len() == 12
        && s.starts_with("veth")
        && s[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `s` is a 17-character colon-separated MAC.
pub fn is_mac(s: &str) -> bool {
    s.len() == 17
        && s.split(':').count() == 6
        && s.split(':')
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A result with the random parts replaced, for comparing two runs: host veth
/// name → `veth*`, every `mac` → `<mac>`, `sandbox` → `<sandbox>`, and an
/// empty `dns` removed.
pub fn normalize_result(r: &Value) -> Value {
    let mut r = r.clone();
    if let Some(ifs) = r.get_mut("interfaces").and_then(Value::as_array_mut) {
        for i in ifs {
            if let Some(o) = i.as_object_mut() {
                if o.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(is_veth_name)
                {
                    o.insert("name".into(), json!("veth*"));
                }
                if o.contains_key("mac") {
                    o.insert("mac".into(), json!("<mac>"));
                }
                if o.contains_key("sandbox") {
                    o.insert("sandbox".into(), json!("<sandbox>"));
                }
            }
        }
    }
    if let Some(o) = r.as_object_mut() {
        if o.get("dns")
            .is_some_and(|d| d.as_object().is_some_and(serde_json::Map::is_empty))
        {
            o.remove("dns");
        }
    }
    r
}

/// Lower-cased `msg` + `details` of an error JSON.
pub fn err_text(e: &Value) -> String {
    format!(
        "{} {}",
        e["msg"].as_str().unwrap_or_default(),
        e["details"].as_str().unwrap_or_default()
    )
    .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_name_matches_the_reference_observation() {
        assert_eq!(masq_chain("brnet", "ctrA"), "CNI-cf7b292a3456547459e1c807");
    }

    #[test]
    fn veth_and_mac_shapes() {
        assert!(is_veth_name("vethc805f203"));
        assert!(!is_veth_name("vethC805f203"));
        assert!(!is_veth_name("eth0"));
        assert!(is_mac("e2:fc:0a:05:34:02"));
        assert!(!is_mac("e2:fc:0a:05:34"));
    }
}
