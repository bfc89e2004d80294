#![allow(clippy::unwrap_used)]
//! Our `loopback` beside the reference's (Debian's 1.1.1): the same result
//! JSON at every spec version, the same effect on `lo`, and the cases where
//! we differ on purpose (namespace gone or only its file left, the plugin's
//! own namespace, error codes).

use integration::netns::{normalize_result, Netns};
use integration::{err_code, err_msg, ours_named, reference_named, Output, Plugin};
use serde_json::{json, Value};

/// ADD's normalized result, `lo` after ADD, CHECK after ADD, `lo` up after
/// DEL, CHECK's message after DEL.
type Outcome = (
    Value,
    (bool, Vec<String>),
    Option<bool>,
    bool,
    Option<String>,
);

const VERSIONS: [&str; 6] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];

fn conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "lo-net", "type": "loopback"})
}

fn run(p: &Plugin, cmd: &str, netns: Option<&str>, conf: &Value) -> Output {
    let mut env = vec![
        ("CNI_CONTAINERID", Some("ctr1")),
        ("CNI_IFNAME", Some("eth0")),
        ("CNI_NETNS", netns),
    ];
    if netns.is_none() {
        env.pop();
    }
    p.exec(Some(cmd), &env, conf.to_string().as_bytes())
}

/// Whether `lo` is up in `ns`, and its addresses.
fn lo_state(ns: &Netns) -> (bool, Vec<String>) {
    let link = ns.must_link("lo");
    let up = link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "UP"));
    (up, ns.all_addrs("lo"))
}

#[test]
fn add_check_del_match_the_reference_at_every_version() {
    for v in VERSIONS {
        let mut outcome: Vec<Outcome> = Vec::new();
        for p in [ours_named("loopback"), reference_named("loopback")] {
            let ns = Netns::new("lo");
            let c = conf(v);
            ns.ip(&["link", "set", "lo", "down"]);
            assert!(!lo_state(&ns).0);
            let added = run(&p, "ADD", Some(&ns.path()), &c).into_result();
            let added = added.unwrap_or_else(|e| panic!("{} {v} ADD: {e}", p.label));
            let mut r = normalize_result(&added);
            if let Some(o) = r.as_object_mut() {
                o.remove("cniVersion");
            }
            let after_add = lo_state(&ns);
            let check = (v == "0.4.0" || v == "1.0.0")
                .then(|| run(&p, "CHECK", Some(&ns.path()), &c).into_result().is_ok());
            run(&p, "DEL", Some(&ns.path()), &c)
                .into_result()
                .unwrap_or_else(|e| panic!("{} {v} DEL: {e}", p.label));
            let after_del = lo_state(&ns).0;
            let check_down = (v == "0.4.0" || v == "1.0.0").then(|| {
                let e = run(&p, "CHECK", Some(&ns.path()), &c)
                    .into_result()
                    .expect_err("CHECK with lo down");
                err_msg(&e).to_string()
            });
            outcome.push((r, after_add, check, after_del, check_down));
        }
        // The kernel state and CHECK/DEL behave the same at every version.
        let state = |o: &Outcome| (o.1.clone(), o.2, o.3, o.4.clone());
        assert_eq!(
            state(&outcome[0]),
            state(&outcome[1]),
            "{v}: ours vs reference"
        );
        let (r, (up, addrs), _, down, _) = &outcome[0];
        assert!(*up && !*down, "{v}");
        assert_eq!(
            addrs,
            &vec!["127.0.0.1/8".to_string(), "::1/128".to_string()]
        );
        // The result: the reference prints its 1.0.0 shape stamped with any
        // older version; ours is the shape the version's spec defines.
        let expected = match v {
            "0.1.0" | "0.2.0" => json!({"ip4": {"ip": "127.0.0.1/8"}, "ip6": {"ip": "::1/128"}}),
            "1.0.0" => outcome[1].0.clone(),
            _ => json!({
                "interfaces": [{"name": "lo", "mac": "<mac>", "sandbox": "<sandbox>"}],
                "ips": [
                    {"version": "4", "interface": 0, "address": "127.0.0.1/8"},
                    {"version": "6", "interface": 0, "address": "::1/128"}
                ]
            }),
        };
        assert_eq!(r, &expected, "{v}");
    }
}

#[test]
fn prev_result_is_passed_through_like_the_reference() {
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "10.9.0.5/24", "gateway": "10.9.0.1", "interface": 0}]});
    let mut outs = Vec::new();
    for p in [ours_named("loopback"), reference_named("loopback")] {
        let ns = Netns::new("loprev");
        ns.ip(&["link", "set", "lo", "down"]);
        let mut c = conf("1.0.0");
        c["prevResult"] = prev.clone();
        outs.push(run(&p, "ADD", Some(&ns.path()), &c).into_result().unwrap());
        assert!(lo_state(&ns).0, "{}: lo up", p.label);
    }
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[0]["ips"][0]["address"], "10.9.0.5/24");
}

#[test]
fn del_succeeds_without_a_namespace_or_with_only_its_file_left() {
    let p = ours_named("loopback");
    let c = conf("1.0.0");
    run(&p, "DEL", None, &c).into_result().unwrap();
    run(&p, "DEL", Some("/run/netns/k8s-shims-no-such-ns"), &c)
        .into_result()
        .unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    run(&p, "DEL", Some(file.path().to_str().unwrap()), &c)
        .into_result()
        .unwrap_or_else(|e| panic!("DEL with a plain file as CNI_NETNS: {e}"));
}

#[test]
fn bad_namespaces_are_code_4_and_the_node_is_never_touched() {
    let p = ours_named("loopback");
    let c = conf("1.0.0");
    // The tests run in the node's namespace: /proc/self/ns/net of the
    // plugin is the node's own. Its lo must stay up whatever happens.
    for cmd in ["ADD", "CHECK", "DEL"] {
        let e = run(&p, cmd, Some("/proc/self/ns/net"), &c)
            .into_result()
            .expect_err(cmd);
        assert_eq!(err_code(&e), 4, "{cmd}: {e}");
        assert!(
            err_msg(&e).contains("is the plugin's own network namespace"),
            "{cmd}: {e}"
        );
    }
    let e = run(&p, "ADD", Some("/run/netns/k8s-shims-no-such-ns"), &c)
        .into_result()
        .expect_err("ADD into a missing netns");
    assert_eq!(err_code(&e), 4, "{e}");
    let e = run(&p, "ADD", Some("/proc/self/ns/mnt"), &c)
        .into_result()
        .expect_err("ADD into a mount namespace");
    assert_eq!(err_code(&e), 4, "{e}");
}

#[test]
fn version_1_1_0_adds_and_answers_gc_and_status() {
    let p = ours_named("loopback");
    let ns = Netns::new("lo11");
    let c = conf("1.1.0");
    let r = run(&p, "ADD", Some(&ns.path()), &c).into_result().unwrap();
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["interfaces"][0]["name"], "lo");
    for cmd in ["GC", "STATUS"] {
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([]);
        let out = p.exec(Some(cmd), &[], gc.to_string().as_bytes());
        assert_eq!(out.code(), Some(0), "{cmd}: {}", out.stdout_str());
    }
}
