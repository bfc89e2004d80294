//! Stale UDP conntrack entries removed by portmap ADD (over ctnetlink),
//! checked with the `conntrack -L` tool, in namespaces the test creates
//! (conntrack tables are per network namespace): a client sends UDP from
//! many source ports to the node's mapped host port, to an unrelated port,
//! in both families (and `conntrack -I` adds a TCP entry to the port and a
//! UDP one in another conntrack zone); ADD must delete exactly the mapped
//! port's UDP entries of the pod's families, keep the rest, and leave the
//! same table as the reference v1.1.1 given the same traffic.
//!
//! Run: `cargo build -p cni-portmap && cargo test -p integration --test portmap_conntrack`

use integration::netns::Netns;
use integration::portmap::*;
use serde_json::{json, Value};

const ECHO: &str = env!("CARGO_BIN_EXE_pm-echo");
/// The mapped UDP host port.
const MAPPED: u16 = 5353;
/// A port no mapping names.
const OTHER: u16 = 5354;

/// UDP `MAPPED` (and TCP on the same host port, whose entries stay).
fn mappings() -> Value {
    json!([
        {"hostPort": MAPPED, "containerPort": 53, "protocol": "udp"},
        {"hostPort": MAPPED, "containerPort": 53, "protocol": "tcp"}
    ])
}

/// A chained configuration for a pod with `addrs`.
fn conf(addrs: &[&str]) -> Value {
    let mut c = pm_conf("1.0.0", mappings(), json!({}));
    c["prevResult"] = prev_result("1.0.0", addrs);
    c
}

/// `count` flows from the client to `MAPPED` and to `OTHER`, in both
/// families.
fn traffic(u: &Uplinked, count: u16) {
    for v6 in [false, true] {
        u.spray(ECHO, v6, MAPPED, 20000, count);
        u.spray(ECHO, v6, OTHER, 30000, count);
    }
}

/// Entries made with `conntrack -I`: a TCP one to the mapped host port (TCP is never
/// flushed) and a UDP one to it in conntrack zone 7 (flushed: deleted in its zone).
fn inserted_entries(node: &Netns) {
    node.sh(&[
        "conntrack",
        "-I",
        "-p",
        "udp",
        "-s",
        CLIENT4,
        "-d",
        NODE4,
        "--sport",
        "41001",
        "--dport",
        &MAPPED.to_string(),
        "-t",
        "600",
        "--zone",
        "7",
    ]);
    node.sh(&[
        "conntrack",
        "-I",
        "-p",
        "tcp",
        "-s",
        CLIENT4,
        "-d",
        NODE4,
        "--sport",
        "41000",
        "--dport",
        &MAPPED.to_string(),
        "--state",
        "ESTABLISHED",
        "-t",
        "600",
        "-u",
        "SEEN_REPLY",
    ]);
}

/// `entries` without the UDP ones to `MAPPED`.
fn without_mapped(entries: &[String]) -> Vec<String> {
    let mapped = MAPPED.to_string();
    entries
        .iter()
        .filter(|e| !(e.starts_with("udp ") && orig_field(e, "dport") == Some(mapped.as_str())))
        .cloned()
        .collect()
}

/// Asserts `got == want`, naming only the entries that differ.
#[track_caller]
fn assert_same(got: &[String], want: &[String], what: &str) {
    let missing: Vec<_> = want.iter().filter(|e| !got.contains(e)).collect();
    let extra: Vec<_> = got.iter().filter(|e| !want.contains(e)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && got.len() == want.len(),
        "{what}: {} entries, {} expected; missing {missing:#?}; unexpected {extra:#?}",
        got.len(),
        want.len()
    );
}

fn count_to(entries: &[String], proto: &str, port: u16) -> usize {
    let port = port.to_string();
    entries
        .iter()
        .filter(|e| e.starts_with(&format!("{proto} ")) && orig_field(e, "dport") == Some(&port))
        .count()
}

#[test]
fn add_deletes_only_the_mapped_udp_ports_entries_of_the_pods_families() {
    // Enough entries for the dump to span many datagrams, deleted while
    // the dump goes on.
    const N: u16 = 1500;
    let u = Uplinked::new("ct");
    traffic(&u, N);
    inserted_entries(&u.node);
    let before4 = conntrack_entries(&u.node, false);
    let before6 = conntrack_entries(&u.node, true);
    assert_eq!(count_to(&before4, "tcp", MAPPED), 1);
    assert!(
        before4.iter().any(|e| e.contains("zone=7")),
        "no zoned entry: {before4:#?}"
    );

    // An IPv4 pod: the IPv4 entries to the mapped port go, nothing else.
    let pm = Portmap::ours();
    let c4 = conf(&["10.88.0.5/24"]);
    pm.must_add(&u.node, &c4, "pod4");
    let after4 = conntrack_entries(&u.node, false);
    assert_eq!(count_to(&after4, "udp", MAPPED), 0, "{after4:#?}");
    assert_eq!(count_to(&after4, "udp", OTHER), usize::from(N));
    assert_same(&after4, &without_mapped(&before4), "IPv4 after an IPv4 pod");
    assert_same(
        &conntrack_entries(&u.node, true),
        &before6,
        "IPv6 after an IPv4 pod",
    );

    // An IPv6 pod on the same port: now the IPv6 ones.
    let c6 = conf(&["fd88::5/64"]);
    pm.must_add(&u.node, &c6, "pod6");
    let after6 = conntrack_entries(&u.node, true);
    assert_eq!(count_to(&after6, "udp", MAPPED), 0, "{after6:#?}");
    assert_eq!(count_to(&after6, "udp", OTHER), usize::from(N));
    assert_same(&after6, &without_mapped(&before6), "IPv6 after an IPv6 pod");
    assert_same(
        &conntrack_entries(&u.node, false),
        &after4,
        "IPv4 after an IPv6 pod",
    );

    // A table without matching entries: ADD succeeds and says nothing.
    let out = pm.exec(
        &u.node,
        "ADD",
        &[
            ("CNI_CONTAINERID", "pod4b"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/none"),
        ],
        &c4,
    );
    assert_eq!(
        out.code(),
        Some(0),
        "{}{}",
        out.stdout_str(),
        out.stderr_str()
    );
    assert_eq!(out.stderr_str(), "");
    pm.must_del(&u.node, &c4, "pod4b");
    pm.must_del(&u.node, &c6, "pod6");
    pm.must_del(&u.node, &c4, "pod4");
}

#[test]
fn reference_and_ours_leave_the_same_conntrack_state() {
    const N: u16 = 200;
    let pod = ["10.88.0.5/24", "fd88::5/64"];
    let mut tables = Vec::new();
    for pm in [Portmap::reference(), Portmap::ours()] {
        let u = Uplinked::new(if pm.label == "ours" { "cto" } else { "ctr" });
        traffic(&u, N);
        inserted_entries(&u.node);
        let before = [
            conntrack_entries(&u.node, false),
            conntrack_entries(&u.node, true),
        ];
        let c = conf(&pod);
        pm.must_add(&u.node, &c, "pod");
        let after = [
            conntrack_entries(&u.node, false),
            conntrack_entries(&u.node, true),
        ];
        for (b, a) in before.iter().zip(&after) {
            assert_same(a, &without_mapped(b), pm.label);
        }
        pm.must_del(&u.node, &c, "pod");
        tables.push(after);
    }
    for (r, o) in tables[0].iter().zip(&tables[1]) {
        assert_same(o, r, "ours against the reference");
    }
}
