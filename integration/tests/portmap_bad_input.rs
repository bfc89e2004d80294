//! Bad input to our `portmap`: each case is a CNI error JSON with the exact
//! code and message, and the host's nat tables are exactly as before (no
//! chain, no rule). A failure half-way through ADD (one family applied, the
//! other refused by iptables) is rolled back.
//!
//! Run: `cargo build -p cni-portmap && cargo test -p integration --test portmap_bad_input`

use integration::netns::Netns;
use integration::portmap::*;
use serde_json::{json, Value};

fn tcp(host: i64, cont: i64) -> Value {
    json!({"hostPort": host, "containerPort": cont, "protocol": "tcp"})
}

fn conf_with(mappings: Value, extra: Value, prev: Option<Value>) -> Value {
    let mut c = pm_conf("1.0.0", mappings, extra);
    if let Some(p) = prev {
        c["prevResult"] = p;
    }
    c
}

fn v4_prev() -> Option<Value> {
    Some(prev_result("1.0.0", &["10.9.0.4/24"]))
}

#[test]
fn bad_input_is_an_exact_error_and_creates_nothing() {
    let p = "runtimeConfig.portMappings";
    let cases: Vec<(Value, u64, String)> = vec![
        (conf_with(json!([tcp(0, 80)]), json!({}), v4_prev()), 7, "Invalid host port number: 0".into()),
        (conf_with(json!([tcp(70000, 80)]), json!({}), v4_prev()), 7, "Invalid host port number: 70000".into()),
        (conf_with(json!([tcp(80, -1)]), json!({}), v4_prev()), 7, "Invalid container port number: -1".into()),
        (conf_with(json!([tcp(80, 65536)]), json!({}), v4_prev()), 7, "Invalid container port number: 65536".into()),
        (
            conf_with(json!([{"hostPort": "80", "containerPort": 80, "protocol": "tcp"}]), json!({}), v4_prev()),
            6,
            format!("cannot decode {p}[0].hostPort: expected integer, found string"),
        ),
        (
            conf_with(json!([tcp(80, 80), {"hostPort": 81, "containerPort": 81, "protocol": "icmp"}]), json!({}), v4_prev()),
            7,
            format!("{p}[1]: invalid protocol \"icmp\": must be tcp, udp or sctp"),
        ),
        (
            conf_with(json!([{"hostPort": 81, "containerPort": 81, "protocol": "tcp", "hostIP": "10.0.0"}]), json!({}), v4_prev()),
            7,
            format!("{p}[0]: invalid hostIP \"10.0.0\""),
        ),
        (
            conf_with(json!([{"hostPort": 81, "containerPort": 81, "protocol": "tcp", "hostIP": "fd00::1"}]), json!({}), v4_prev()),
            7,
            format!("{p}[0]: hostIP fd00::1 is IPv6 but the container has no IPv6 address on eth0"),
        ),
        (
            conf_with(
                json!([tcp(8080, 80), {"hostPort": 8081, "containerPort": 81, "protocol": "udp"}, {"hostPort": 8080, "containerPort": 90, "protocol": "TCP"}]),
                json!({}),
                v4_prev(),
            ),
            7,
            format!("{p}[2] duplicates {p}[0]: tcp hostPort 8080"),
        ),
        (conf_with(json!([tcp(80, 80)]), json!({}), None), 7, "must be called as chained plugin".into()),
        (conf_with(json!([tcp(80, 80)]), json!({"markMasqBit": 32}), v4_prev()), 7, "MasqMarkBit must be between 0 and 31".into()),
        (conf_with(json!([tcp(80, 80)]), json!({"markMasqBit": -1}), v4_prev()), 7, "MasqMarkBit must be between 0 and 31".into()),
        (
            conf_with(json!([tcp(80, 80)]), json!({"markMasqBit": 14, "externalSetMarkChain": "KUBE-MARK-MASQ"}), v4_prev()),
            7,
            "Cannot specify externalSetMarkChain and markMasqBit".into(),
        ),
        (
            conf_with(json!([tcp(80, 80)]), json!({"snat": "yes"}), v4_prev()),
            6,
            "cannot decode snat: expected boolean, found string".into(),
        ),
        (
            conf_with(json!([tcp(80, 80)]), json!({}), Some(json!({"cniVersion": "1.0.0", "ips": [{"address": "10.9.0.300/24"}]}))),
            6,
            "could not parse prevResult: failed to decode result: invalid CIDR address: 10.9.0.300/24".into(),
        ),
        (
            conf_with(json!([tcp(80, 80)]), json!({"backend": "pf"}), v4_prev()),
            7,
            "unrecognized backend \"pf\"".into(),
        ),
        (
            conf_with(
                json!([tcp(80, 80)]),
                json!({"backend": "nftables", "externalSetMarkChain": "KUBE-MARK-MASQ"}),
                v4_prev(),
            ),
            7,
            "nftables backend was requested but configuration contains iptables-specific options [externalSetMarkChain]".into(),
        ),
        (
            conf_with(
                json!([tcp(80, 80)]),
                json!({"backend": "iptables", "conditionsV4": ["ip saddr 192.0.2.1"], "conditionsV6": ["ip6 saddr ::1"]}),
                v4_prev(),
            ),
            7,
            "iptables backend was requested but configuration contains nftables-specific options [conditionsV4 conditionsV6]".into(),
        ),
    ];
    let ours = Portmap::ours();
    for (conf, code, msg) in cases {
        let host = Netns::new("pmbad");
        let before = (nat(&host, false), nat(&host, true), host.nft());
        let e = ours
            .add(&host, &conf, "bad1")
            .expect_err(&format!("ADD must fail: {conf}"));
        assert_eq!(e["code"], json!(code), "{conf}\n{e}");
        assert_eq!(e["msg"], json!(msg), "{conf}");
        assert_eq!(e["cniVersion"], "1.0.0");
        assert_eq!(
            (nat(&host, false), nat(&host, true), host.nft()),
            before,
            "{conf}: tables changed"
        );
    }
}

/// iptables refuses the IPv6 half (the external mark chain exists only in
/// the IPv4 table): the error is returned and the IPv4 half is gone again.
#[test]
fn a_failed_family_rolls_back_the_other() {
    let host = Netns::new("pmroll");
    host.sh(&["iptables", "-w", "-t", "nat", "-N", "EXT-MARK"]);
    let conf = conf_with(
        json!([tcp(8080, 80)]),
        json!({"externalSetMarkChain": "EXT-MARK"}),
        Some(prev_result("1.0.0", &["10.9.0.4/24", "fd09::4/64"])),
    );
    let ours = Portmap::ours();
    let e = ours.add(&host, &conf, "roll1").expect_err("v6 must fail");
    assert_eq!(e["code"], 999, "{e}");
    let msg = e["msg"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("unable to setup DNAT: running [") && msg.contains("ip6tables-restore"),
        "{e}"
    );
    assert_eq!(attachment_state(&host), Vec::<String>::new());
    // With the chain in both tables the same ADD succeeds.
    host.sh(&["ip6tables", "-w", "-t", "nat", "-N", "EXT-MARK"]);
    ours.must_add(&host, &conf, "roll1");
    assert_eq!(
        attachment_state(&host).len(),
        9,
        "{:#?}",
        attachment_state(&host)
    );
    ours.must_del(&host, &conf, "roll1");
    assert_eq!(attachment_state(&host), Vec::<String>::new());
}

#[test]
fn check_and_gc_refuse_bad_input() {
    let host = Netns::new("pmbadcmd");
    let ours = Portmap::ours();
    let e = ours
        .check(
            &host,
            &conf_with(json!([tcp(80, 80)]), json!({}), None),
            "c",
        )
        .expect_err("CHECK without prevResult");
    assert_eq!(
        (e["code"].clone(), e["msg"].clone()),
        (json!(7), json!("Required prevResult missing"))
    );
    let mut gc = pm_conf("1.1.0", json!([]), json!({}));
    let e = ours.gc(&host, &gc).expect_err("GC without a list");
    assert_eq!(e["code"], 7, "{e}");
    assert_eq!(
        e["msg"],
        "GC needs cni.dev/valid-attachments in the configuration"
    );
    gc["cni.dev/valid-attachments"] = json!([{"ifname": "eth0"}]);
    let e = ours
        .gc(&host, &gc)
        .expect_err("GC with an entry without containerID");
    assert_eq!(e["code"], 7, "{e}");
}
