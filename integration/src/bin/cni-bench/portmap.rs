//! `cni-bench portmap`: our portmap against the reference and the floor.
//!
//! `cni-bench portmap [--ours DIR] [--ref DIR] [--iterations N] [--conntrack-entries E]`
//!
//! Isolation: three network namespaces this run creates and deletes (as the bridge bench does,
//! with the same guard, signal thread and removal of a killed run's leftovers):
//! `cnibench-<pid>-pm-ours`, `-pm-ref` and `-pm-floor`, one fake node each, with a bridge
//! `cbr0` holding 10.99.0.1/16 (so the pod address 10.99.0.5 is routed as on a node and
//! `route_localnet` applies) and `E` unreplied UDP conntrack entries to an unrelated port
//! (`conntrack -I`, default 1000: the table a UDP ADD has to read). Each has a worker (this
//! binary, `cni-bench bridge-worker`) that spawns and times the calls (exec → exit) inside it.
//!
//! Measurements: ADD then DEL of one pod (prevResult 10.99.0.5/16, `snat` on by default) with
//! (a) one TCP mapping 8080→80 and (b) one UDP mapping 5353→53 (whose ADD also deletes the
//! conntrack entries of UDP port 5353), N iterations each; per iteration the floor, ours and the
//! reference run in rotating order. Checked: every ADD result is the prevResult; in the warm-up
//! and every `CHECK_EVERY` iterations the nat table holds the DNAT after ADD and no attachment
//! chain after DEL; in the warm-up a UDP ADD removes an entry to its port and keeps the others.
//!
//! The floor: what a minimal portmap cannot avoid, per command: one process start (the static
//! no-op of the host-local bench) and the attachment's rules applied (ADD) or removed (DEL) by
//! one `iptables-restore --noflush`; for a UDP ADD also one ctnetlink dump of the IPv4
//! conntrack table (done by the worker itself, no process start: finding a port's entries
//! means the kernel walks its whole table, whatever the filter). The rules are exactly those
//! our ADD made for the same pod and mapping (read back with iptables-save in the floor
//! namespace during setup); the shared chains are in place in all three namespaces before
//! timing starts.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bridge_worker::{Call, Worker};
use crate::netns::*;
use crate::plugin::*;
use crate::report::*;
use crate::Res;

pub(crate) const PM_DEFAULT_ITERATIONS: usize = 100;
pub(crate) const PM_DEFAULT_CONNTRACK_ENTRIES: usize = 1000;
const PM_NET: &str = "benchpm";
const POD_CIDR: &str = "10.99.0.5/16";
const POD: &str = "10.99.0.5";
const NODE_CIDR: &str = "10.99.0.1/16";
const NODE: &str = "10.99.0.1";
/// The port of the seeded conntrack entries (no mapping names it).
const SEED_PORT: u16 = 9999;
const PM_WARMUP: usize = 3;
/// Verify the nat table after ADD and DEL every this many iterations.
const CHECK_EVERY: usize = 25;
/// `AF_INET`: the pod's family.
const AF_INET: u8 = 2;
/// One pod; every iteration reuses it.
const POD_ID: &str = "bench-pod";

#[derive(Debug)]
pub(crate) struct PortmapOpts {
    pub(crate) ours: PathBuf,
    pub(crate) reference: PathBuf,
    pub(crate) iterations: usize,
    pub(crate) conntrack_entries: usize,
}

pub(crate) fn parse_portmap_opts(args: &[OsString]) -> Res<PortmapOpts> {
    let mut opts = PortmapOpts {
        ours: workspace_release_dir(),
        reference: PathBuf::from("/usr/lib/cni"),
        iterations: PM_DEFAULT_ITERATIONS,
        conntrack_entries: PM_DEFAULT_CONNTRACK_ENTRIES,
    };
    for_each_option(args, |name, value| {
        match name {
            "--ours" => opts.ours = PathBuf::from(value()?),
            "--ref" => opts.reference = PathBuf::from(value()?),
            "--iterations" => opts.iterations = parse_count(name, &value()?)?,
            "--conntrack-entries" => {
                let v = value()?;
                opts.conntrack_entries = v
                    .to_str()
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|&n| n < 60_000)
                    .ok_or_else(|| format!("{name}: expected an integer below 60000, got {v:?}"))?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(opts)
}

/// The mapping of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
    fn host_port(self) -> u16 {
        match self {
            Proto::Tcp => 8080,
            Proto::Udp => 5353,
        }
    }
    fn container_port(self) -> u16 {
        match self {
            Proto::Tcp => 80,
            Proto::Udp => 53,
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Proto::Tcp => "(a)",
            Proto::Udp => "(b)",
        }
    }
    fn describe(self) -> String {
        format!(
            "one {} mapping {}→{}",
            self.name().to_uppercase(),
            self.host_port(),
            self.container_port()
        )
    }
}

/// The chained configuration: one mapping, and the prevResult of a main plugin.
fn pm_config(proto: Proto) -> String {
    serde_json::json!({
        "cniVersion": CNI_VERSION,
        "name": PM_NET,
        "type": "portmap",
        "runtimeConfig": {"portMappings": [{
            "hostPort": proto.host_port(),
            "containerPort": proto.container_port(),
            "protocol": proto.name(),
        }]},
        "prevResult": prev_result(),
    })
    .to_string()
}

fn prev_result() -> serde_json::Value {
    serde_json::json!({
        "cniVersion": CNI_VERSION,
        "interfaces": [
            {"name": "cbr0", "mac": "02:00:00:00:00:01"},
            {"name": IFNAME, "mac": "02:00:00:00:00:02", "sandbox": NETNS}
        ],
        "ips": [{"address": POD_CIDR, "gateway": NODE, "interface": 1}],
    })
}

/// Runs `args` in namespace `ns` (`ip netns exec`), from the parent; its stdout.
fn in_ns(ns: &str, args: &[&str]) -> Res<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .map_err(|e| format!("ip netns exec {ns} {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "[{ns}] {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The nat table's lines that belong to an attachment (a `CNI-DN-` chain or a rule naming one).
fn attachment_lines(ns: &str) -> Res<Vec<String>> {
    Ok(in_ns(ns, &["iptables-save", "-t", "nat"])?
        .lines()
        .filter(|l| l.contains("CNI-DN-"))
        .map(str::to_string)
        .collect())
}

/// The UDP conntrack entries to `port` in `ns`.
fn udp_entries_to(ns: &str, port: u16) -> Res<usize> {
    let p = port.to_string();
    Ok(in_ns(
        ns,
        &[
            "conntrack",
            "-L",
            "-f",
            "ipv4",
            "-p",
            "udp",
            "--orig-port-dst",
            &p,
        ],
    )?
    .lines()
    .filter(|l| l.starts_with("udp"))
    .count())
}

/// `conntrack -I` of one unreplied UDP entry from 10.99.<a>.<b>:`sport` to the node's `port`.
fn insert_entry(n: usize, sport: u16, port: u16) -> Vec<String> {
    let src = format!("10.99.{}.{}", 100 + n / 250, 1 + n % 250);
    [
        "conntrack",
        "-I",
        "-p",
        "udp",
        "-s",
        &src,
        "-d",
        NODE,
        "--sport",
        &sport.to_string(),
        "--dport",
        &port.to_string(),
        "-t",
        "3600",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A fake node: its namespace and its worker.
#[derive(Debug)]
struct Node {
    ns: String,
    worker: Worker,
}

impl Node {
    /// Starts the worker in `ns`, adds the node's `cbr0` and seeds `entries` conntrack entries.
    fn new(ns: String, entries: usize) -> Res<Node> {
        for args in [
            &["ip", "link", "add", "cbr0", "type", "bridge"][..],
            &["ip", "addr", "add", NODE_CIDR, "dev", "cbr0"],
            &["ip", "link", "set", "cbr0", "up"],
        ] {
            in_ns(&ns, args)?;
        }
        let mut worker = Worker::start(&ns)?;
        let seed: Vec<Vec<String>> = (0..entries)
            .map(|n| insert_entry(n, 10_000 + n as u16, SEED_PORT))
            .collect();
        if !seed.is_empty() {
            let b = worker.run_chains(&[seed])?;
            if let Some(o) = b.outs.iter().find(|o| !o.ok) {
                return Err(format!(
                    "[{ns}] seeding conntrack entries: {}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
        }
        let seeded = udp_entries_to(&ns, SEED_PORT)?;
        if seeded != entries {
            return Err(format!(
                "[{ns}] {seeded} seeded conntrack entries, {entries} expected"
            ));
        }
        Ok(Node { ns, worker })
    }

    /// One plugin call; its stdout and exec → exit time. Fails unless it succeeded.
    fn call(&mut self, plugin: &Path, cmd: &str, proto: Proto) -> Res<(Vec<u8>, Duration)> {
        let dir = plugin.parent().unwrap_or_else(|| Path::new("/"));
        let call = Call {
            id: POD_ID.into(),
            netns: NETNS.into(),
        };
        let mut b = self.worker.run(
            plugin,
            cmd,
            &pm_config(proto),
            dir,
            std::slice::from_ref(&call),
        )?;
        let out = b.outs.pop().ok_or("empty batch")?;
        if !out.ok {
            return Err(describe_failure(plugin, cmd, POD_ID, &out));
        }
        Ok((out.stdout, b.wall))
    }

    /// Runs `argv`s one after the other in the worker; the wall time of all.
    fn chain(&mut self, chain: Vec<Vec<String>>) -> Res<Duration> {
        let b = self.worker.run_chains(&[chain])?;
        match b.outs.first() {
            Some(o) if o.ok => Ok(b.wall),
            Some(o) => Err(format!(
                "[{}] {}: {}",
                self.ns,
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            None => Err("empty chain answer".into()),
        }
    }
}

/// One implementation under test.
#[derive(Debug)]
struct Side {
    label: &'static str,
    plugin: PathBuf,
    node: Node,
}

impl Side {
    /// ADD, checks, DEL; the (ADD, DEL) times.
    fn add_del(&mut self, proto: Proto, check: bool) -> Res<(Duration, Duration)> {
        let (stdout, t_add) = self.node.call(&self.plugin, "ADD", proto)?;
        let v: serde_json::Value = serde_json::from_slice(&stdout).map_err(|e| {
            format!(
                "{}: ADD result is not JSON ({e}): {}",
                self.label,
                String::from_utf8_lossy(&stdout)
            )
        })?;
        if v.get("ips") != prev_result().get("ips") {
            return Err(format!(
                "{}: ADD did not pass prevResult through: {v}",
                self.label
            ));
        }
        if check {
            let dnat = format!("--to-destination {POD}:{}", proto.container_port());
            let lines = attachment_lines(&self.node.ns)?;
            if !lines.iter().any(|l| l.contains(&dnat)) {
                return Err(format!(
                    "{}: no DNAT to {POD}:{} after ADD: {lines:?}",
                    self.label,
                    proto.container_port()
                ));
            }
        }
        let (_, t_del) = self.node.call(&self.plugin, "DEL", proto)?;
        if check {
            let left = attachment_lines(&self.node.ns)?;
            if !left.is_empty() {
                return Err(format!("{}: DEL left {left:?}", self.label));
            }
        }
        Ok((t_add, t_del))
    }

    /// In the warm-up: a UDP ADD deletes an entry to its host port and keeps the seeded ones.
    fn check_conntrack(&mut self, seeded: usize) -> Res<()> {
        let port = Proto::Udp.host_port();
        self.node
            .chain(vec![insert_entry(0, 40_000, port)])
            .map_err(|e| format!("{}: {e}", self.label))?;
        if udp_entries_to(&self.node.ns, port)? != 1 {
            return Err(format!(
                "{}: the entry to port {port} was not made",
                self.label
            ));
        }
        self.add_del(Proto::Udp, true)?;
        let (left, kept) = (
            udp_entries_to(&self.node.ns, port)?,
            udp_entries_to(&self.node.ns, SEED_PORT)?,
        );
        if left != 0 || kept != seeded {
            return Err(format!(
                "{}: after a UDP ADD, {left} entries to port {port} (0 expected) and {kept} to \
                 port {SEED_PORT} ({seeded} expected)",
                self.label
            ));
        }
        Ok(())
    }
}

/// The floor: the static no-op and one `iptables-restore --noflush` per command.
#[derive(Debug)]
struct Floor {
    noop: PathBuf,
    node: Node,
    /// Per row: the ADD and DEL rule files.
    files: Vec<(Proto, PathBuf, PathBuf)>,
    _dir: tempfile::TempDir,
}

impl Floor {
    /// Has `ours` make the attachment of each row in the floor's namespace, reads its rules back
    /// and removes it again; writes the rule files that apply and remove exactly those rules.
    fn new(noop: PathBuf, mut node: Node, ours: &Path) -> Res<Floor> {
        let dir = tempdir("cni-bench-pm-floor-")?;
        let mut files = Vec::new();
        for proto in [Proto::Tcp, Proto::Udp] {
            node.call(ours, "ADD", proto)?;
            let lines = attachment_lines(&node.ns)?;
            node.call(ours, "DEL", proto)?;
            let (add, del) = floor_rules(&lines)?;
            let add_file = dir.path().join(format!("{}-add", proto.name()));
            let del_file = dir.path().join(format!("{}-del", proto.name()));
            fs::write(&add_file, add).map_err(|e| format!("{}: {e}", add_file.display()))?;
            fs::write(&del_file, del).map_err(|e| format!("{}: {e}", del_file.display()))?;
            files.push((proto, add_file, del_file));
        }
        let mut floor = Floor {
            noop,
            node,
            files,
            _dir: dir,
        };
        // The files apply and remove the rules (checked).
        for proto in [Proto::Tcp, Proto::Udp] {
            floor.once(proto)?;
        }
        Ok(floor)
    }

    fn files_of(&self, proto: Proto) -> Res<&(Proto, PathBuf, PathBuf)> {
        self.files
            .iter()
            .find(|f| f.0 == proto)
            .ok_or_else(|| "no floor rules".into())
    }

    /// The chain of one floor command, and for a UDP ADD the conntrack dump after it.
    fn command(&mut self, proto: Proto, file: &Path, add: bool) -> Res<Duration> {
        let t = self.node.chain(self.step(file))?;
        if add && proto == Proto::Udp {
            let (dump, _) = self.node.worker.ct_dump(AF_INET)?;
            return Ok(t + dump);
        }
        Ok(t)
    }

    fn step(&self, file: &Path) -> Vec<Vec<String>> {
        vec![
            vec![self.noop.to_string_lossy().into_owned()],
            vec![
                "iptables-restore".into(),
                "-w".into(),
                "--noflush".into(),
                file.to_string_lossy().into_owned(),
            ],
        ]
    }

    /// ADD and DEL of the floor; checks the rules came and went.
    fn once(&mut self, proto: Proto) -> Res<(Duration, Duration)> {
        let (_, add, del) = self.files_of(proto)?.clone();
        let t_add = self.command(proto, &add, true)?;
        let dnat = format!("--to-destination {POD}:{}", proto.container_port());
        if !attachment_lines(&self.node.ns)?
            .iter()
            .any(|l| l.contains(&dnat))
        {
            return Err(format!("floor: no DNAT to {POD} after its ADD"));
        }
        let t_del = self.command(proto, &del, false)?;
        let left = attachment_lines(&self.node.ns)?;
        if !left.is_empty() {
            return Err(format!("floor: its DEL left {left:?}"));
        }
        Ok((t_add, t_del))
    }

    /// ADD and DEL of the floor, unchecked (timed iterations).
    fn timed(&mut self, proto: Proto) -> Res<(Duration, Duration)> {
        let (_, add, del) = self.files_of(proto)?.clone();
        Ok((
            self.command(proto, &add, true)?,
            self.command(proto, &del, false)?,
        ))
    }
}

/// From an attachment's lines of `iptables-save -t nat`, the `iptables-restore --noflush`
/// inputs that create them (chain and rules) and remove them (rules elsewhere deleted, the
/// chain flushed and deleted).
fn floor_rules(lines: &[String]) -> Res<(String, String)> {
    let chains: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if chains.is_empty() || !lines.iter().any(|l| l.starts_with("-A ")) {
        return Err(format!(
            "no attachment chain and rules after our ADD: {lines:?}"
        ));
    }
    let mut add = String::from("*nat\n");
    let mut del = String::from("*nat\n");
    for l in lines {
        let _ = writeln!(add, "{l}");
        if let Some(rule) = l.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or("");
            if !chains.contains(&chain) {
                let _ = writeln!(del, "-D {rule}");
            }
        }
    }
    for c in &chains {
        let _ = writeln!(del, "-F {c}\n-X {c}");
    }
    add.push_str("COMMIT\n");
    del.push_str("COMMIT\n");
    Ok((add, del))
}

pub(crate) fn portmap(args: &[OsString]) -> Res<bool> {
    let opts = parse_portmap_opts(args)?;
    let _ = START.get_or_init(Instant::now);
    // Before any thread exists, so that every later thread inherits the blocked mask.
    install_signal_cleanup()?;
    delete_stale_namespaces();
    let guard = NamespaceGuard;
    let result = portmap_run(&opts);
    drop(guard);
    result
}

/// Per side (floor, ours, reference): the samples, or the error that stopped it.
type Samples = Res<Vec<(Duration, Duration)>>;

fn portmap_run(opts: &PortmapOpts) -> Res<bool> {
    let started = *START.get_or_init(Instant::now);
    let ours = plugin_path(&opts.ours, "portmap", "our")?;
    let reference = plugin_path(&opts.reference, "portmap", "reference")?;
    let noop = static_noop()?;
    let pid = std::process::id();
    let names: Vec<String> = ["ours", "ref", "floor"]
        .iter()
        .map(|s| format!("{NS_PREFIX}-{pid}-pm-{s}"))
        .collect();
    progress(&format!(
        "creating 3 network namespaces {NS_PREFIX}-{pid}-pm-*, {} conntrack entries each",
        opts.conntrack_entries
    ));
    create_namespaces(&names)?;
    let mut nodes = Vec::new();
    for n in &names {
        nodes.push(Node::new(n.clone(), opts.conntrack_entries)?);
    }
    let mut nodes = nodes.into_iter();
    let (Some(node_o), Some(node_r), Some(node_f)) = (nodes.next(), nodes.next(), nodes.next())
    else {
        return Err("three nodes expected".into());
    };
    let mut sides = [
        Side {
            label: "ours",
            plugin: ours.clone(),
            node: node_o,
        },
        Side {
            label: "ref",
            plugin: reference.clone(),
            node: node_r,
        },
    ];
    let mut failures: Vec<String> = Vec::new();

    // Warm-up: the page cache, the shared chains, and every check once.
    for side in sides.iter_mut() {
        for i in 0..PM_WARMUP {
            for proto in [Proto::Tcp, Proto::Udp] {
                if let Err(e) = side.add_del(proto, true) {
                    failures.push(format!("warm-up {i} {}: {e}", side.label));
                }
            }
        }
        if let Err(e) = side.check_conntrack(opts.conntrack_entries) {
            failures.push(format!("warm-up: {e}"));
        }
    }
    let mut floor = Floor::new(noop.clone(), node_f, &ours)?;

    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut table = FloorTable::default();
    for proto in [Proto::Tcp, Proto::Udp] {
        progress(&format!(
            "{} {} × portmap ADD+DEL, {}, per implementation and the floor",
            proto.tag(),
            opts.iterations,
            proto.describe()
        ));
        let [f, o, r] = measure(&mut floor, &mut sides, proto, opts.iterations);
        for (label, s) in [("floor", &f), ("ours", &o), ("ref", &r)] {
            if let Err(e) = s {
                failures.push(format!("{} {label}: {e}", proto.tag()));
            }
        }
        table.push_pairs(
            proto.tag(),
            &format!("{}, exec→exit", proto.describe()),
            f.as_deref().ok(),
            o.as_deref().ok(),
            r.as_deref().ok(),
        );
        let ra = time_row(
            &mut rows,
            format!("{} ADD+DEL, {}, median", proto.tag(), proto.describe()),
            side_stat(&o, |v| median(&sum_pairs(v))),
            side_stat(&r, |v| median(&sum_pairs(v))),
        );
        time_row(
            &mut rows,
            format!("{} ADD+DEL, p90", proto.tag()),
            side_stat(&o, |v| percentile(&sum_pairs(v), 90)),
            side_stat(&r, |v| percentile(&sum_pairs(v), 90)),
        );
        time_row(
            &mut rows,
            format!("{} ADD alone, median (info)", proto.tag()),
            side_stat(&o, |v| median(&firsts(v))),
            side_stat(&r, |v| median(&firsts(v))),
        );
        time_row(
            &mut rows,
            format!("{} DEL alone, median (info)", proto.tag()),
            side_stat(&o, |v| median(&seconds(v))),
            side_stat(&r, |v| median(&seconds(v))),
        );
        targets.push(time_target(proto.tag(), ra, "ref÷ours ≥ 3× (median)"));
    }
    notes.push(format!(
        "Both run with the same config in namespaces of their own, each node's conntrack table \
         holding {} unreplied UDP entries to port {SEED_PORT}; the UDP ADD reads that table \
         (ours: one ctnetlink dump; the reference: one dump per UDP mapping).",
        opts.conntrack_entries
    ));
    table.notes.push(format!(
        "floor, per command: one exec of the static no-op `{}` and one `iptables-restore -w \
         --noflush FILE` (sequential, exec → exit each, in the floor's namespace), FILE applying \
         (ADD) or removing (DEL) exactly the attachment rules our ADD made for the same pod and \
         mapping (the CNI-DN- chain and the rule jumping to it; the shared chains are in place \
         beforehand, as on a node after its first pod); in (b) ADD also one ctnetlink dump of the \
         node's IPv4 conntrack table, read to its end by the worker process itself (no process \
         start). No route_localnet write.",
        noop.display()
    ));

    let mut out = String::new();
    let _ = writeln!(out, "## portmap: ours vs reference\n");
    let _ = writeln!(out, "- machine: {}", machine());
    let _ = writeln!(
        out,
        "- ours: `{}`\n- reference: `{}`\n- namespaces: {}",
        ours.display(),
        reference.display(),
        names.join(", ")
    );
    let _ = writeln!(
        out,
        "- cniVersion {CNI_VERSION}, prevResult {POD_CIDR}, snat on; iterations: {} ADD+DEL per \
         row; total bench time {:.1} s\n",
        opts.iterations,
        started.elapsed().as_secs_f64()
    );
    write_table(&mut out, &rows, &notes, &table, &targets);
    // Stop the workers before the namespaces go.
    drop(sides);
    drop(floor);
    progress("done");
    print!("{out}");
    if failures.is_empty() {
        Ok(true)
    } else {
        for f in &failures {
            eprintln!("cni-bench: FAILURE {f}");
        }
        Ok(false)
    }
}

/// `n` iterations of one row: floor, ours and reference in rotating order; every
/// `CHECK_EVERY`th iteration checks the nat tables. A side that fails stops there.
fn measure(floor: &mut Floor, sides: &mut [Side; 2], proto: Proto, n: usize) -> [Samples; 3] {
    let mut res: [Samples; 3] = [Ok(Vec::new()), Ok(Vec::new()), Ok(Vec::new())];
    for i in 0..n {
        let check = i % CHECK_EVERY == CHECK_EVERY - 1;
        for k in 0..3 {
            let s = (i + k) % 3;
            let Ok(samples) = &mut res[s] else {
                continue;
            };
            let r = match s {
                0 if check => floor.once(proto),
                0 => floor.timed(proto),
                _ => sides[s - 1].add_del(proto, check),
            };
            match r {
                Ok(t) => samples.push(t),
                Err(e) => res[s] = Err(e),
            }
        }
    }
    res
}

/// One ctnetlink dump (`IPCTNL_MSG_CT_GET`, `NLM_F_DUMP`) of the conntrack table of `family`
/// in the calling process's network namespace, read to its end; the number of entries. The
/// bare kernel work of looking for a port's UDP entries: the kernel walks its whole table.
pub(crate) fn ct_dump(family: u8) -> Res<usize> {
    use rustix::net::{netlink, recv, send, socket, AddressFamily, RecvFlags, SendFlags};
    let fd = socket(
        AddressFamily::NETLINK,
        rustix::net::SocketType::DGRAM,
        Some(netlink::NETFILTER),
    )
    .map_err(|e| format!("ctnetlink socket: {e}"))?;
    // nlmsghdr: length, type (subsystem 1 << 8 | IPCTNL_MSG_CT_GET), flags (NLM_F_REQUEST |
    // NLM_F_DUMP), sequence 1, port 0; then nfgenmsg: family, version 0, resource id 0.
    let mut req = Vec::with_capacity(20);
    req.extend_from_slice(&20u32.to_ne_bytes());
    req.extend_from_slice(&0x0101u16.to_ne_bytes());
    req.extend_from_slice(&0x0301u16.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[family, 0, 0, 0]);
    send(&fd, &req, SendFlags::empty()).map_err(|e| format!("ctnetlink send: {e}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut entries = 0;
    loop {
        let (n, _) = recv(&fd, &mut buf[..], RecvFlags::empty())
            .map_err(|e| format!("ctnetlink recv: {e}"))?;
        let mut at = 0;
        while at + 16 <= n {
            let word = |o: usize| buf.get(at + o..at + o + 4).and_then(|b| b.try_into().ok());
            let len = word(0).map_or(0, u32::from_ne_bytes) as usize;
            let ty = buf
                .get(at + 4..at + 6)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u16::from_ne_bytes);
            match ty {
                3 => return Ok(entries),
                2 => {
                    let errno = word(16).map_or(0, i32::from_ne_bytes);
                    return Err(format!("ctnetlink dump: errno {}", -errno));
                }
                _ => entries += 1,
            }
            if len < 16 {
                return Err("ctnetlink dump: malformed reply".into());
            }
            at += (len + 3) & !3;
        }
    }
}
