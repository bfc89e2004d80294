#![allow(clippy::unwrap_used)]
//! Differential tests: our host-local against the reference v1.1.1 binary.
//!
//! * Same config, separate fresh dataDirs → equal parsed results, equal stores.
//! * Bad configs → equal error `msg`.
//! * One shared dataDir → both implementations interoperate (one round-robin
//!   order, no duplicate address, each DELs the other's reservations), also
//!   under concurrency.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::IpAddr;

use integration::*;
use serde_json::{json, Value};

const IF: &str = "eth0";

/// Store snapshot without our private dotfiles: name → content.
fn snapshot(store: &Store) -> BTreeMap<String, String> {
    store
        .entries()
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .map(|n| {
            let c = store.read(&n).unwrap_or_default();
            (n, c)
        })
        .collect()
}

/// One differential case: a config (ipam part + top-level extras) and env.
struct Case {
    what: &'static str,
    ipam: Value,
    top: Value,
    env: Vec<(&'static str, &'static str)>,
}

fn case(what: &'static str, ipam: Value) -> Case {
    Case {
        what,
        ipam,
        top: json!({}),
        env: Vec::new(),
    }
}

fn build(net: &TestNet, version: &str, c: &Case) -> Value {
    let mut conf = net.conf(version, c.ipam.clone());
    for (k, v) in c.top.as_object().unwrap() {
        conf = with_key(&conf, k, v.clone());
    }
    conf
}

fn resolv_conf_file(dir: &std::path::Path) -> String {
    let p = dir.join("resolv.conf");
    fs::write(
        &p,
        "nameserver 192.0.2.3\n# x\nnameserver 2001:db8::53\ndomain ex.example\nsearch a.example b.example\noptions ndots:5 timeout:1\n",
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

fn success_cases(resolv: &str) -> Vec<Case> {
    let routes = json!([
        {"dst": "0.0.0.0/0"},
        {"dst": "::/0"},
        {"dst": "192.168.0.0/16", "gw": "10.1.2.254"},
        {"dst": "2001:db8:2::/64", "gw": "2001:db8:1::fe"}
    ]);
    vec![
        case("v4", ranges(&[&["10.1.2.0/24"]])),
        case("v6", ranges(&[&["2001:db8:1::/64"]])),
        case(
            "dual-stack",
            ranges(&[&["10.1.2.0/24"], &["2001:db8:1::/64"]]),
        ),
        case(
            "multi-range sets",
            ranges(&[
                &["10.1.2.0/30", "10.1.3.0/24"],
                &["2001:db8::/126", "2001:db8:1::/64"],
            ]),
        ),
        case("two v4 sets", ranges(&[&["10.1.2.0/24"], &["10.1.3.0/24"]])),
        case(
            "legacy subnet",
            json!({"subnet": "10.7.0.0/24", "rangeStart": "10.7.0.100", "rangeEnd": "10.7.0.120", "gateway": "10.7.0.99"}),
        ),
        case(
            "legacy subnet plus ranges",
            json!({"subnet": "10.7.0.0/24", "ranges": [[{"subnet": "2001:db8:7::/64"}]]}),
        ),
        case(
            "rangeStart/rangeEnd incl. network address",
            json!({"ranges": [[{"subnet": "10.40.0.0/29", "rangeStart": "10.40.0.0", "rangeEnd": "10.40.0.7"}]]}),
        ),
        case(
            "v6 rangeStart/rangeEnd and gateway outside subnet",
            json!({"ranges": [[{"subnet": "fd00:40::/64", "rangeStart": "fd00:40::10", "rangeEnd": "fd00:40::12", "gateway": "fd00:99::1"}]]}),
        ),
        case(
            "routes",
            json!({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8:1::/64"}]], "routes": routes}),
        ),
        case(
            "resolvConf",
            json!({"ranges": [[{"subnet": "10.1.2.0/24"}]], "resolvConf": resolv, "dns": {"nameservers": ["9.9.9.9"]}}),
        ),
        Case {
            what: "args.cni.ips",
            top: json!({"args": {"cni": {"ips": ["10.1.2.88/8", "2001:db8:1::88"]}}}),
            ..case("", ranges(&[&["10.1.2.0/24"], &["2001:db8:1::/64"]]))
        },
        Case {
            what: "CNI_ARGS IP",
            env: vec![("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.2.60/16")],
            ..case("", ranges(&[&["10.1.2.0/24"]]))
        },
        Case {
            what: "runtimeConfig ips + ipRanges",
            top: json!({"runtimeConfig": {"ips": ["10.60.0.9"], "ipRanges": [[{"subnet": "10.60.0.0/24"}]]}}),
            ..case("", ranges(&[&["2001:db8:1::/64"]]))
        },
        Case {
            what: "requested IP in second range of a set",
            top: json!({"args": {"cni": {"ips": ["10.1.3.77"]}}}),
            ..case("", ranges(&[&["10.1.2.0/24", "10.1.3.0/24"]]))
        },
    ]
}

/// ADD a, ADD b, DEL a, ADD c on both implementations, each on its own
/// dataDir; all results / errors and the final stores must agree.
#[test]
fn results_match_reference_for_every_version() {
    for v in REF_VERSIONS {
        let resolv_dir = tempfile::tempdir().unwrap();
        let resolv = resolv_conf_file(resolv_dir.path());
        for c in success_cases(&resolv) {
            // Fresh dataDirs per case: one sub-network name per case.
            let o = TestNet::new("diffnet");
            let r = TestNet::new("diffnet");
            let oc = build(&o, v, &c);
            let rc = build(&r, v, &c);
            let ctx = format!("{} @ {v}", c.what);
            let steps: [(&str, &str); 4] = [("ADD", "a"), ("ADD", "b"), ("DEL", "a"), ("ADD", "c")];
            for (cmd, id) in steps {
                let (got, want) = if cmd == "ADD" {
                    (
                        ours().add(&oc, id, IF, &c.env),
                        reference().add(&rc, id, IF, &c.env),
                    )
                } else {
                    (
                        ours().del(&oc, id, IF, &c.env).map(|()| Value::Null),
                        reference().del(&rc, id, IF, &c.env).map(|()| Value::Null),
                    )
                };
                match (&got, &want) {
                    (Ok(g), Ok(w)) => assert_eq!(g, w, "{ctx}: {cmd} {id}"),
                    // Deliberate deviation: our DEL succeeds on configs the
                    // reference rejects (it releases by id+ifname anyway).
                    (Ok(_), Err(_)) if cmd == "DEL" => {}
                    (Err(g), Err(w)) => {
                        assert_eq!(err_msg(g), err_msg(w), "{ctx}: {cmd} {id}: {g} vs {w}")
                    }
                    _ => panic!("{ctx}: {cmd} {id}: ours {got:?} vs reference {want:?}"),
                }
            }
            assert_eq!(
                snapshot(&o.store()),
                snapshot(&r.store()),
                "{ctx}: stores differ"
            );
        }
    }
}

#[test]
fn version_and_missing_version_match_reference() {
    // Missing cniVersion → 0.1.0 result from both.
    let c = ranges(&[&["10.1.2.0/24"], &["2001:db8::/64"]]);
    let o = TestNet::new("n");
    let r = TestNet::new("n");
    let got = ok(ours().add(&o.conf("", c.clone()), "a", IF, &[]), "ours");
    let want = ok(reference().add(&r.conf("", c), "a", IF, &[]), "reference");
    assert_eq!(got, want);
    // VERSION: same list apart from 1.1.0.
    let ov = ours().version(b"").json();
    let rv = reference().version(b"").json();
    let mut theirs: Vec<Value> = rv["supportedVersions"].as_array().unwrap().clone();
    theirs.push(json!("1.1.0"));
    assert_eq!(ov["supportedVersions"], Value::Array(theirs));
}

#[test]
fn case_insensitive_keys_match_reference() {
    // Go's JSON decoding matches struct fields case-insensitively; runtimes
    // (and upstream bridge tests) send e.g. "RuntimeConfig".
    let base = |net: &TestNet| {
        json!({
            "cniVersion": "1.0.0",
            "name": "n",
            "IPAM": {"type": "host-local", "DataDir": net.data_dir().to_str().unwrap(),
                     "Ranges": [[{"Subnet": "10.1.2.0/24"}]]},
            "RuntimeConfig": {"IPS": ["10.1.2.50"]}
        })
    };
    let o = TestNet::new("n");
    let r = TestNet::new("n");
    let got = ours().add(&base(&o), "a", IF, &[]);
    let want = reference().add(&base(&r), "a", IF, &[]);
    assert_eq!(got, want);
    assert_eq!(snapshot(&o.store()), snapshot(&r.store()));
}

/// Error messages for bad input must equal the reference's.
#[test]
fn error_messages_match_reference() {
    let mut cases: Vec<Case> = vec![
        case(
            "overlapping sets",
            ranges(&[&["10.1.0.0/16"], &["10.1.2.0/24"]]),
        ),
        case("overlap in set", ranges(&[&["10.1.0.0/22", "10.1.2.0/24"]])),
        case(
            "mixed families",
            ranges(&[&["10.1.0.0/24", "2001:db8::/64"]]),
        ),
        case("/31", ranges(&[&["10.9.0.0/31"]])),
        case("/32", ranges(&[&["10.9.0.0/32"]])),
        case("/128", ranges(&[&["2001:db8::1/128"]])),
        case("host bits", ranges(&[&["192.168.127.0/23"]])),
        case("v6 host bits", ranges(&[&["2001:DB8:24:19ff::/63"]])),
        case(
            "rangeStart outside",
            json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.1.1"}]]}),
        ),
        case(
            "rangeEnd outside",
            json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeEnd": "10.2.0.1"}]]}),
        ),
        case(
            "start > end",
            json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.50", "rangeEnd": "10.1.0.40"}]]}),
        ),
        case("empty set", json!({"ranges": [[]]})),
        case("no ranges", json!({"ranges": []})),
        case("no ranges at all", json!({})),
        case(
            "legacy subnet overlapping ranges",
            json!({"subnet": "10.1.2.0/24", "ranges": [[{"subnet": "10.1.0.0/16"}]]}),
        ),
        case("exhausted /30 after one", ranges(&[&["10.30.0.0/30"]])),
        Case {
            what: "requested outside",
            top: json!({"args": {"cni": {"ips": ["10.9.9.9"]}}}),
            ..case("", ranges(&[&["10.1.2.0/24"]]))
        },
        Case {
            what: "requested gateway",
            env: vec![("CNI_ARGS", "IP=10.1.2.1")],
            ..case("", ranges(&[&["10.1.2.0/24"]]))
        },
        Case {
            what: "requested gateway in second set",
            top: json!({"runtimeConfig": {"ips": ["2001:db8::1"]}}),
            ..case("", ranges(&[&["10.1.2.0/24"], &["2001:db8::/64"]]))
        },
        Case {
            what: "unknown CNI_ARGS",
            env: vec![("CNI_ARGS", "FOO=bar")],
            ..case("", ranges(&[&["10.1.2.0/24"]]))
        },
        Case {
            what: "bad CNI_ARGS pair",
            env: vec![("CNI_ARGS", "IP=10.1.2.5;")],
            ..case("", ranges(&[&["10.1.2.0/24"]]))
        },
        Case {
            what: "bad CNI_ARGS IP",
            env: vec![("CNI_ARGS", "IP=notanip")],
            ..case("", ranges(&[&["10.1.2.0/24"]]))
        },
        Case {
            what: "missing resolvConf",
            ..case(
                "",
                json!({"ranges": [[{"subnet": "10.1.2.0/24"}]], "resolvConf": "/nonexistent/resolv.conf"}),
            )
        },
    ];
    cases.push(case("no ipam", Value::Null));
    // Mismatches are collected so that one does not hide the others.
    let mut mismatches: Vec<String> = Vec::new();
    for v in ["0.2.0", "0.3.1", "1.0.0"] {
        for c in &cases {
            let o = TestNet::new("errnet");
            let r = TestNet::new("errnet");
            let mut oc = build(&o, v, c);
            let mut rc = build(&r, v, c);
            if c.what == "no ipam" {
                oc.as_object_mut().unwrap().remove("ipam");
                rc.as_object_mut().unwrap().remove("ipam");
            }
            if c.what.starts_with("exhausted") {
                ok(ours().add(&oc, "first", IF, &[]), "ours first");
                ok(reference().add(&rc, "first", IF, &[]), "reference first");
            }
            let got = ours().add(&oc, "a", IF, &c.env);
            let want = reference().add(&rc, "a", IF, &c.env);
            let ctx = format!("{} @ {v}", c.what);
            let (g, w) = match (got, want) {
                (Err(g), Err(w)) => (g, w),
                (g, w) => {
                    mismatches.push(format!("{ctx}: ours {g:?} / reference {w:?}"));
                    continue;
                }
            };
            if err_msg(&g) != err_msg(&w) {
                mismatches.push(format!("{ctx}:\n  ours      {g}\n  reference {w}"));
            }
            assert_eq!(
                snapshot(&o.store())
                    .keys()
                    .filter(|n| n.parse::<IpAddr>().is_ok())
                    .count(),
                snapshot(&r.store())
                    .keys()
                    .filter(|n| n.parse::<IpAddr>().is_ok())
                    .count(),
                "{ctx}"
            );
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} error message mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn env_and_name_errors_match_reference() {
    let o = TestNet::new("n");
    let r = TestNet::new("n");
    let oc = o.conf("1.0.0", ranges(&[&["10.1.2.0/24"]]));
    let rc = r.conf("1.0.0", ranges(&[&["10.1.2.0/24"]]));
    type Env = Vec<(&'static str, Option<&'static str>)>;
    let full: Env = vec![
        ("CNI_CONTAINERID", Some("ctr")),
        ("CNI_IFNAME", Some("eth0")),
        ("CNI_NETNS", Some(NETNS)),
    ];
    let with = |extra: Env| -> Env {
        let mut e = full.clone();
        e.extend(extra);
        e
    };
    let env_cases: Vec<(&str, Env)> = vec![
        ("no netns", with(vec![("CNI_NETNS", None)])),
        ("no ifname", with(vec![("CNI_IFNAME", None)])),
        ("no path", with(vec![("CNI_PATH", None)])),
        (
            "no netns, ifname, path",
            with(vec![
                ("CNI_NETNS", None),
                ("CNI_IFNAME", None),
                ("CNI_PATH", None),
            ]),
        ),
        ("bad id", with(vec![("CNI_CONTAINERID", Some("bad/id"))])),
        (
            "long ifname",
            with(vec![("CNI_IFNAME", Some("abcdefghijklmnop"))]),
        ),
        ("dot ifname", with(vec![("CNI_IFNAME", Some(".."))])),
        ("slash ifname", with(vec![("CNI_IFNAME", Some("a/b"))])),
    ];
    for (what, env) in env_cases {
        let g = fails(
            ours()
                .exec(Some("ADD"), &env, oc.to_string().as_bytes())
                .into_result(),
            what,
        );
        let w = fails(
            reference()
                .exec(Some("ADD"), &env, rc.to_string().as_bytes())
                .into_result(),
            what,
        );
        assert_eq!(err_msg(&g), err_msg(&w), "{what}: {g} vs {w}");
        assert_eq!(err_code(&g), err_code(&w), "{what}: {g} vs {w}");
    }
    for name in ["../x", "/", "a/b", ""] {
        let og = with_key(&oc, "name", json!(name));
        let rg = with_key(&rc, "name", json!(name));
        let g = fails(ours().add(&og, "a", IF, &[]), name);
        let w = fails(reference().add(&rg, "a", IF, &[]), name);
        assert_eq!(err_msg(&g), err_msg(&w), "{name:?}: {g} vs {w}");
        assert_eq!(err_code(&g), err_code(&w), "{name:?}: {g} vs {w}");
    }
    // Unknown version: same msg (details differ: we support 1.1.0).
    let g = fails(
        ours().add(&with_version(&oc, "9.9.9"), "a", IF, &[]),
        "9.9.9",
    );
    let w = fails(
        reference().add(&with_version(&rc, "9.9.9"), "a", IF, &[]),
        "9.9.9",
    );
    assert_eq!((err_code(&g), err_msg(&g)), (err_code(&w), err_msg(&w)));
    // CHECK before 0.4.0.
    let g = fails(
        ours().check(&with_version(&oc, "0.3.1"), "a", IF, &[]),
        "CHECK",
    );
    let w = fails(
        reference().check(&with_version(&rc, "0.3.1"), "a", IF, &[]),
        "CHECK",
    );
    assert_eq!((err_code(&g), err_msg(&g)), (err_code(&w), err_msg(&w)));
    // Malformed JSON.
    let g = fails(
        ours().exec(Some("ADD"), &full, b"{").into_result(),
        "bad json",
    );
    let w = fails(
        reference().exec(Some("ADD"), &full, b"{").into_result(),
        "bad json",
    );
    assert_eq!(err_code(&g), err_code(&w), "{g} vs {w}");
    assert_eq!(o.store().ips(), BTreeSet::new());
}

// ---------------------------------------------------------------------------
// Shared dataDir
// ---------------------------------------------------------------------------

/// Reference model of host-local round robin over `first..=last` (gateway
/// excluded by the caller's bounds) with a shared cursor.
struct Model {
    first: u128,
    last: u128,
    cursor: Option<u128>,
    taken: BTreeSet<u128>,
}

impl Model {
    fn next(&mut self) -> Option<u128> {
        let n = self.last - self.first + 1;
        let start = match self.cursor {
            Some(c) if (self.first..=self.last).contains(&c) => c - self.first + 1,
            _ => 0,
        };
        (0..n)
            .map(|i| self.first + (start + i) % n)
            .find(|ip| !self.taken.contains(ip))
            .inspect(|ip| {
                self.taken.insert(*ip);
                self.cursor = Some(*ip);
            })
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

#[test]
fn shared_store_interleaved_round_robin() {
    let net = TestNet::new("shared");
    // v4: .2-.30 (29 addresses); v6: ::2-::1f (30 addresses); the cursors
    // therefore drift apart after the first wrap.
    let conf = net.conf("1.0.0", ranges(&[&["10.8.0.0/27"], &["fd00:8::/123"]]));
    let store = net.store();
    let v4 = |o: u8| IpAddr::from([10, 8, 0, o]);
    let v6base = to_u128("fd00:8::".parse().unwrap());
    let mut m4 = Model {
        first: to_u128(v4(2)),
        last: to_u128(v4(30)),
        cursor: None,
        taken: BTreeSet::new(),
    };
    let mut m6 = Model {
        first: v6base + 2,
        last: v6base + 0x1f,
        cursor: None,
        taken: BTreeSet::new(),
    };
    let impls = [ours(), reference()];
    // attachment id → (index of the implementation that added it, v4, v6)
    let mut live: BTreeMap<String, (usize, u128, u128)> = BTreeMap::new();
    let mut seq = 0usize;
    let mut add =
        |live: &mut BTreeMap<String, (usize, u128, u128)>, m4: &mut Model, m6: &mut Model| {
            let which = seq % 2;
            let id = format!("ctr{seq}");
            seq += 1;
            let r = ok(
                impls[which].add(&conf, &id, IF, &[]),
                &format!("{} ADD {id}", impls[which].label),
            );
            let addrs = result_addrs(&r);
            assert_eq!(addrs.len(), 2, "{r}");
            let (a4, a6) = (to_u128(addrs[0]), to_u128(addrs[1]));
            let (e4, e6) = (m4.next().unwrap(), m6.next().unwrap());
            assert_eq!(
                (addrs[0], addrs[1]),
                (
                    IpAddr::from(std::net::Ipv4Addr::from(u32::try_from(e4).unwrap())),
                    IpAddr::from(std::net::Ipv6Addr::from(e6))
                ),
                "{} ADD {id} broke the shared round-robin order",
                impls[which].label
            );
            assert_eq!(store.read(&addrs[0].to_string()), Some(owner(&id, IF)));
            assert_eq!(store.read(&addrs[1].to_string()), Some(owner(&id, IF)));
            assert_eq!(store.last_reserved(0), Some(addrs[0].to_string()));
            assert_eq!(store.last_reserved(1), Some(addrs[1].to_string()));
            live.insert(id, (which, a4, a6));
        };
    let del = |live: &mut BTreeMap<String, (usize, u128, u128)>,
               m4: &mut Model,
               m6: &mut Model,
               id: &str| {
        let (which, a4, a6) = live.remove(id).unwrap();
        let other = &impls[1 - which];
        ok(
            other.del(&conf, id, IF, &[]),
            &format!("{} DEL {id}", other.label),
        );
        m4.taken.remove(&a4);
        m6.taken.remove(&a6);
    };

    for _ in 0..20 {
        add(&mut live, &mut m4, &mut m6);
    }
    // Cross-implementation CHECK.
    ok(
        ours().check(&conf, "ctr1", IF, &[]),
        "ours CHECK of a reference reservation",
    );
    ok(
        reference().check(&conf, "ctr0", IF, &[]),
        "reference CHECK of our reservation",
    );
    for id in ["ctr3", "ctr4", "ctr9", "ctr10", "ctr15"] {
        del(&mut live, &mut m4, &mut m6, id);
    }
    for _ in 0..14 {
        add(&mut live, &mut m4, &mut m6); // wraps around (v4 first)
    }
    assert_eq!(live.len(), 29);
    // v4 is full now: both implementations must say so, without leaking v6.
    for p in &impls {
        let before = store.ips();
        let e = fails(p.add(&conf, "overflow", IF, &[]), "ADD on full v4 set");
        assert_eq!(
            err_msg(&e),
            "failed to allocate for range 0: no IP addresses available in range set: 10.8.0.1-10.8.0.30",
            "{}",
            p.label
        );
        assert_eq!(store.ips(), before, "{} leaked a reservation", p.label);
    }
    let ids: Vec<String> = live.keys().cloned().collect();
    for (i, id) in ids.iter().enumerate() {
        del(&mut live, &mut m4, &mut m6, id);
        if i % 7 == 0 {
            add(&mut live, &mut m4, &mut m6);
        }
    }
    let ids: Vec<String> = live.keys().cloned().collect();
    for id in &ids {
        del(&mut live, &mut m4, &mut m6, id);
    }
    assert_eq!(
        store.ips(),
        BTreeSet::new(),
        "entries: {:?}",
        store.entries()
    );
    assert_eq!(store.unexpected(), Vec::<String>::new());
    // Our private dotfiles may outlive a DEL done by the reference, but once
    // our plugin has DELeted every attachment (again: DEL is idempotent) only
    // bookkeeping may remain.
    for i in 0..seq {
        ok(ours().del(&conf, &format!("ctr{i}"), IF, &[]), "final DEL");
    }
    assert_eq!(store.non_bookkeeping(), Vec::<String>::new());
}

#[test]
fn shared_store_legacy_and_padded_files_from_either_side() {
    let net = TestNet::new("shared");
    let conf = net.conf("0.4.0", ranges(&[&["10.9.0.0/24"]]));
    let store = net.store();
    store.write("10.9.0.20", b"legacy", 0o644);
    store.write("10.9.0.21", b"  padded\r\neth0\n", 0o644);
    for (p, q) in [(ours(), reference()), (reference(), ours())] {
        let r = ok(p.add(&conf, "x", IF, &[]), "ADD");
        let a = single_addr(&r).to_string();
        ok(q.check(&conf, "x", IF, &[]), "CHECK");
        ok(q.del(&conf, "x", IF, &[]), "DEL");
        assert_eq!(
            store.read(&a),
            None,
            "{} did not release {}'s {a}",
            q.label,
            p.label
        );
    }
    ok(ours().del(&conf, "legacy", "eth3", &[]), "DEL legacy");
    ok(reference().del(&conf, "padded", IF, &[]), "DEL padded");
    assert_eq!(store.ips(), BTreeSet::new());
}

#[test]
fn shared_store_concurrent_mixed_adds_and_dels() {
    const N: usize = 100;
    let net = TestNet::new("concurrent");
    let conf = net.conf("1.0.0", ranges(&[&["10.20.0.0/24"]]));
    let store = net.store();
    let impls = [ours(), reference()];
    let jobs: Vec<(usize, String)> = (0..2 * N).map(|i| (i % 2, format!("c{i}"))).collect();
    let results: Vec<(usize, String, IpAddr)> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(which, id)| {
                let p = &impls[*which];
                let conf = &conf;
                s.spawn(move || {
                    let r = ok(p.add(conf, id, IF, &[]), &format!("{} ADD {id}", p.label));
                    (*which, id.clone(), single_addr(&r))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let addrs: BTreeSet<IpAddr> = results.iter().map(|(_, _, a)| *a).collect();
    assert_eq!(addrs.len(), 2 * N, "duplicate addresses handed out");
    assert_eq!(store.ips(), addrs, "store differs from the results");
    for (_, id, a) in &results {
        assert_eq!(store.read(&a.to_string()), Some(owner(id, IF)));
        assert!(a.to_string().starts_with("10.20.0.") && a.to_string() != "10.20.0.1");
    }
    // DEL all in parallel, each by the other implementation on even rounds and
    // by the same one on odd rounds.
    std::thread::scope(|s| {
        for (i, (which, id, _)) in results.iter().enumerate() {
            let p = &impls[if i % 4 < 2 { 1 - which } else { *which }];
            let conf = &conf;
            s.spawn(move || ok(p.del(conf, id, IF, &[]), &format!("{} DEL {id}", p.label)));
        }
    });
    assert_eq!(
        store.ips(),
        BTreeSet::new(),
        "entries: {:?}",
        store.entries()
    );
    assert_eq!(store.unexpected(), Vec::<String>::new());
    // See shared_store_interleaved_round_robin: a final DEL by us cleans up.
    let p = ours();
    std::thread::scope(|s| {
        for (_, id, _) in &results {
            let (p, conf) = (&p, &conf);
            s.spawn(move || ok(p.del(conf, id, IF, &[]), "final DEL"));
        }
    });
    assert_eq!(store.non_bookkeeping(), Vec::<String>::new());
}

/// Our plugin may keep private per-attachment index files; the reference knows
/// nothing about them. After the reference DELs one of our attachments and
/// hands the same address to someone else, a stale index must not make us
/// release, report or refuse anything wrongly.
#[test]
fn reference_del_does_not_confuse_our_bookkeeping() {
    let net = TestNet::new("stale");
    // A /30: exactly one usable address, 10.210.0.2.
    let conf = net.conf("1.0.0", ranges(&[&["10.210.0.0/30"]]));
    let store = net.store();
    let a = single_addr(&ok(ours().add(&conf, "x", IF, &[]), "ours ADD x"));
    assert_eq!(a.to_string(), "10.210.0.2");
    ok(reference().del(&conf, "x", IF, &[]), "reference DEL x");
    assert_eq!(store.ips(), BTreeSet::new());
    let e = fails(
        ours().check(&conf, "x", IF, &[]),
        "ours CHECK x after reference DEL",
    );
    assert_eq!(
        err_msg(&e),
        "host-local: Failed to find address added by container x"
    );
    let b = single_addr(&ok(reference().add(&conf, "y", IF, &[]), "reference ADD y"));
    assert_eq!(b, a, "the only address is handed out again");
    // Our DEL of the gone attachment must not release y's reservation.
    ok(ours().del(&conf, "x", IF, &[]), "ours DEL x (stale)");
    assert_eq!(
        store.read("10.210.0.2"),
        Some(owner("y", IF)),
        "ours released y's address"
    );
    // Our ADD of x must fail as exhausted (x owns nothing now).
    let e = fails(
        ours().add(&conf, "x", IF, &[]),
        "ours ADD x on a full range",
    );
    assert_eq!(
        err_msg(&e),
        "failed to allocate for range 0: no IP addresses available in range set: 10.210.0.1-10.210.0.2"
    );
    assert_eq!(store.read("10.210.0.2"), Some(owner("y", IF)));
    // GC keeping only x must release y (x owns nothing).
    let gc = with_attachments(
        &with_version(&conf, "1.1.0"),
        VALID_ATTACHMENTS,
        &[("x", IF)],
    );
    ok(ours().gc(&gc), "GC");
    assert_eq!(store.ips(), BTreeSet::new());
    // Re-ADD of x by us after the reference released it works.
    let c = single_addr(&ok(ours().add(&conf, "x", IF, &[]), "ours re-ADD x"));
    assert_eq!(c, a);
    ok(reference().del(&conf, "x", IF, &[]), "reference DEL x");
    let d = single_addr(&ok(ours().add(&conf, "x", IF, &[]), "ours re-ADD x again"));
    assert_eq!(d, a);
    ok(ours().del(&conf, "x", IF, &[]), "ours DEL x");
    assert_eq!(store.non_bookkeeping(), Vec::<String>::new());
}
