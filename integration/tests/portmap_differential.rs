//! Our `portmap` against the reference v1.1.1 (`/usr/lib/cni/portmap`), each
//! in its own fake host namespace given the same input: the same result
//! JSON, the same `nat` table read back with iptables-save and
//! ip6tables-save after ADD and after DEL, and a DEL by either
//! implementation removing what the other created.
//!
//! Run: `cargo build -p cni-portmap && cargo test -p integration --test portmap_differential`

use integration::netns::Netns;
use integration::portmap::*;
use serde_json::{json, Value};

fn mappings() -> Value {
    json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 8081, "containerPort": 81, "protocol": "udp", "hostIP": "10.0.0.1"},
        {"hostPort": 8082, "containerPort": 82, "protocol": "tcp", "hostIP": "fd00::1"},
        {"hostPort": 8083, "containerPort": 83, "protocol": "sctp"}
    ])
}

fn chained(conf: &Value, prev: &Value) -> Value {
    integration::with_key(conf, "prevResult", prev.clone())
}

/// Both families' nat tables.
fn tables(host: &Netns) -> (Vec<String>, Vec<String>) {
    (nat(host, false), nat(host, true))
}

/// Runs `steps` against the reference in one host and ours in another and
/// asserts the same outcome and the same tables after each step.
struct Pair {
    reference: (Portmap, Netns),
    ours: (Portmap, Netns),
}

impl Pair {
    fn new() -> Pair {
        Pair {
            reference: (Portmap::reference(), Netns::new("pmref")),
            ours: (Portmap::ours(), Netns::new("pmours")),
        }
    }

    fn both(&self) -> [&(Portmap, Netns); 2] {
        [&self.reference, &self.ours]
    }

    #[track_caller]
    fn add(&self, conf: &Value, id: &str) -> Value {
        let r = self.reference.0.must_add(&self.reference.1, conf, id);
        let o = self.ours.0.must_add(&self.ours.1, conf, id);
        assert_eq!(o, r, "ADD results differ for {conf}");
        self.same_tables(&format!("after ADD {id} {conf}"));
        o
    }

    #[track_caller]
    fn del(&self, conf: &Value, id: &str) {
        for (p, h) in self.both() {
            p.must_del(h, conf, id);
        }
        self.same_tables(&format!("after DEL {id}"));
    }

    #[track_caller]
    fn same_tables(&self, what: &str) {
        let r = tables(&self.reference.1);
        let o = tables(&self.ours.1);
        assert_eq!(o.0, r.0, "iptables nat differs {what}");
        assert_eq!(o.1, r.1, "ip6tables nat differs {what}");
    }
}

#[test]
fn dual_stack_add_and_del_match_at_each_version() {
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        let pair = Pair::new();
        let prev = prev_result(version, &["10.1.0.5/24", "fd01::5/64"]);
        let conf = chained(&pm_conf(version, mappings(), json!({})), &prev);
        let r = pair.add(&conf, "ctr1");
        assert_eq!(r["ips"].as_array().map(Vec::len), Some(2), "{r}");
        let v4 = nat(&pair.ours.1, false);
        assert!(
            v4.iter()
                .any(|l| l.contains("-j DNAT --to-destination 10.1.0.5:80")),
            "{v4:#?}"
        );
        assert!(
            nat(&pair.ours.1, true)
                .iter()
                .any(|l| l.contains("--to-destination [fd01::5]:82")),
            "v6 rules missing"
        );
        // A second ADD changes nothing in either.
        pair.add(&conf, "ctr1");
        pair.del(&conf, "ctr1");
        assert!(attachment_state(&pair.ours.1).is_empty());
        // DEL again: nothing to do, success in both.
        pair.del(&conf, "ctr1");
    }
}

#[test]
fn options_produce_the_same_rules() {
    let prev = prev_result("1.0.0", &["10.2.0.7/16", "fd02::7/64"]);
    let many: Vec<Value> = (0..17)
        .map(|i| json!({"hostPort": 9000 + i, "containerPort": 80 + i, "protocol": "tcp"}))
        .collect();
    let cases = [
        json!({"snat": false}),
        json!({"markMasqBit": 5}),
        json!({"markMasqBit": 31}),
        json!({"externalSetMarkChain": "EXT-MARK"}),
        json!({"conditionsV4": ["-s", "192.0.2.0/24"], "conditionsV6": ["!", "-s", "2001:db8::/32"]}),
    ];
    for extra in cases {
        let pair = Pair::new();
        for (_, h) in pair.both() {
            h.sh(&["iptables", "-w", "-t", "nat", "-N", "EXT-MARK"]);
            h.sh(&["ip6tables", "-w", "-t", "nat", "-N", "EXT-MARK"]);
        }
        let conf = chained(&pm_conf("1.0.0", json!(many), extra.clone()), &prev);
        pair.add(&conf, "ctr-opts");
        // A second attachment shares the top-level chains.
        let prev_b = prev_result("1.0.0", &["10.2.0.8/16"]);
        let conf_b = chained(
            &pm_conf(
                "1.0.0",
                json!([{"hostPort": 7000, "containerPort": 70, "protocol": "udp"}]),
                extra.clone(),
            ),
            &prev_b,
        );
        pair.add(&conf_b, "ctr-b");
        pair.del(&conf, "ctr-opts");
        let left = attachment_state(&pair.ours.1);
        assert!(
            left.iter().all(|l| l.contains(&dn_of("ctr-b"))),
            "{extra}: only ctr-b's chain may remain: {left:#?}"
        );
        pair.del(&conf_b, "ctr-b");
        assert!(attachment_state(&pair.ours.1).is_empty(), "{extra}");
    }
}

fn dn_of(id: &str) -> String {
    let h = integration::netns::sha512_hex(&format!("{PM_NET}{id}"));
    format!("CNI-DN-{}", &h[..21])
}

#[test]
fn no_mappings_passes_the_result_through_and_touches_nothing() {
    let pair = Pair::new();
    let before = tables(&pair.ours.1);
    let prev = prev_result("0.4.0", &["10.3.0.2/24"]);
    let conf = chained(&pm_conf("0.4.0", json!([]), json!({})), &prev);
    let r = pair.add(&conf, "ctr-empty");
    assert_eq!(r["ips"][0]["address"], "10.3.0.2/24");
    assert_eq!(tables(&pair.ours.1), before, "no mappings: no rules");
}

/// Cross-DEL: ADD by one implementation, DEL by the other, in the same host;
/// the table must end as the reference's own ADD+DEL leaves it.
#[test]
fn cross_del_in_both_directions_leaves_nothing() {
    let prev = prev_result("1.0.0", &["10.4.0.9/24", "fd04::9/64"]);
    let conf = chained(&pm_conf("1.0.0", mappings(), json!({})), &prev);
    let baseline = Netns::new("pmbase");
    let reference = Portmap::reference();
    let ours = Portmap::ours();
    reference.must_add(&baseline, &conf, "x1");
    reference.must_del(&baseline, &conf, "x1");
    let want = tables(&baseline);
    for (adder, deleter) in [(&reference, &ours), (&ours, &reference)] {
        let h = Netns::new("pmcross");
        adder.must_add(&h, &conf, "x1");
        assert!(
            !attachment_state(&h).is_empty(),
            "{} ADD made nothing",
            adder.label
        );
        // Our CHECK accepts the reference's rules and the other way round
        // is not asked of the reference (its CHECK probes both families with
        // one family's rules).
        if deleter.label == "ours" {
            ours.check(&h, &conf, "x1")
                .unwrap_or_else(|e| panic!("our CHECK of reference rules: {e}"));
        }
        deleter.must_del(&h, &conf, "x1");
        assert_eq!(
            attachment_state(&h),
            Vec::<String>::new(),
            "{} ADD, {} DEL",
            adder.label,
            deleter.label
        );
        assert_eq!(
            tables(&h),
            want,
            "{} ADD, {} DEL",
            adder.label,
            deleter.label
        );
    }
}

#[test]
fn our_check_fails_when_a_rule_is_gone() {
    let h = Netns::new("pmcheck");
    let ours = Portmap::ours();
    let prev = prev_result("1.0.0", &["10.5.0.3/24"]);
    let conf = chained(
        &pm_conf(
            "1.0.0",
            json!([{"hostPort": 8443, "containerPort": 443, "protocol": "tcp"}]),
            json!({}),
        ),
        &prev,
    );
    ours.must_add(&h, &conf, "c1");
    ours.check(&h, &conf, "c1").expect("CHECK after ADD");
    let chain = dn_of("c1");
    h.sh(&[
        "iptables",
        "-w",
        "-t",
        "nat",
        "-D",
        &chain,
        "-p",
        "tcp",
        "-m",
        "tcp",
        "--dport",
        "8443",
        "-j",
        "DNAT",
        "--to-destination",
        "10.5.0.3:443",
    ]);
    let e = ours
        .check(&h, &conf, "c1")
        .expect_err("CHECK without the DNAT rule");
    let msg = e["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("could not check ipv4 dnat") && msg.contains("--to-destination 10.5.0.3:443"),
        "{e}"
    );
    ours.must_del(&h, &conf, "c1");
    let e = ours.check(&h, &conf, "c1").expect_err("CHECK after DEL");
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("chain {chain} not found")),
        "{e}"
    );
}

/// `k8s-shims-cni` run as `portmap` behaves as the separate binary.
#[test]
fn the_multicall_executable_runs_portmap() {
    let bin = integration::ours_dir().join("k8s-shims-cni");
    assert!(bin.is_file(), "build first: cargo build -p cni-plugins");
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("portmap");
    std::os::unix::fs::symlink(&bin, &link).expect("symlink");
    let multi = Portmap {
        label: "multicall",
        path: link,
    };
    let prev = prev_result("1.0.0", &["10.6.0.2/24", "fd06::2/64"]);
    let conf = chained(&pm_conf("1.0.0", mappings(), json!({})), &prev);
    let (a, b) = (Netns::new("pmsep"), Netns::new("pmmulti"));
    let ra = Portmap::ours().must_add(&a, &conf, "m1");
    let rb = multi.must_add(&b, &conf, "m1");
    assert_eq!(rb, ra);
    assert_eq!(tables(&b), tables(&a));
    multi.check(&b, &conf, "m1").expect("CHECK");
    multi.must_del(&b, &conf, "m1");
    assert_eq!(attachment_state(&b), Vec::<String>::new());
}

/// The reference's rules, removed by our DEL given only the network name
/// and container ID (no prevResult, runtimeConfig or netns), as a runtime
/// that lost its cache sends it.
#[test]
fn our_bare_del_removes_the_reference_rules() {
    let prev = prev_result("1.0.0", &["10.7.0.9/24", "fd07::9/64"]);
    let conf = chained(&pm_conf("1.0.0", mappings(), json!({})), &prev);
    let h = Netns::new("pmbare");
    Portmap::reference().must_add(&h, &conf, "bare1");
    Portmap::reference().must_add(&h, &conf, "bare2");
    assert!(!attachment_state(&h).is_empty());
    let bare = json!({"cniVersion": "1.0.0", "name": PM_NET, "type": "portmap"});
    Portmap::ours()
        .del(&h, &bare, "bare1", None)
        .unwrap_or_else(|e| panic!("bare DEL: {e}"));
    let left = attachment_state(&h);
    assert!(
        !left.is_empty() && left.iter().all(|l| l.contains(&dn_of("bare2"))),
        "{left:#?}"
    );
    Portmap::ours()
        .del(&h, &bare, "bare2", None)
        .unwrap_or_else(|e| panic!("bare DEL: {e}"));
    assert_eq!(attachment_state(&h), Vec::<String>::new());
}
