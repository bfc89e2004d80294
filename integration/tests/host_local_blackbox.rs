#![allow(clippy::unwrap_used)]
//! Black-box tests of OUR host-local binary: the upstream scenarios (reference
//! spec section 4.1) for every spec version, bad input, GC, STATUS, CHECK,
//! VERSION and the about text.

use std::collections::BTreeSet;
use std::fs;
use std::net::IpAddr;
use std::path::Path;

use integration::*;
use serde_json::{json, Value};

const ID: &str = "dummy";
const IF: &str = "eth0";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Asserts the store holds exactly these reservations.
#[track_caller]
fn assert_ips(store: &Store, expected: &[&str]) {
    let want: BTreeSet<IpAddr> = expected.iter().map(|s| ip(s)).collect();
    assert_eq!(store.ips(), want, "store entries: {:?}", store.entries());
}

/// Asserts only bookkeeping (`lock`, `last_reserved_ip.*`) is left.
#[track_caller]
fn assert_clean(store: &Store) {
    assert_eq!(
        store.non_bookkeeping(),
        Vec::<String>::new(),
        "only lock and last_reserved_ip.* may remain"
    );
}

/// Expects an ADD failure with `code`/`msg` and no new reservation.
#[track_caller]
fn add_fails(net: &TestNet, conf: &Value, id: &str, env: &[(&str, &str)], code: u64, msg: &str) {
    let before = net.store().ips();
    let err = fails(ours().add(conf, id, IF, env), "ADD");
    assert_err(&err, code, msg);
    assert_eq!(
        net.store().ips(),
        before,
        "a failed ADD changed the reservations"
    );
    assert_eq!(net.store().unexpected(), Vec::<String>::new());
}

fn resolv_conf(dir: &Path) -> (String, Value) {
    let path = dir.join("resolv.conf");
    fs::write(
        &path,
        "# a comment\n; another comment\nnameserver 192.0.2.3\n  nameserver 2001:db8::53  \n\
         domain other.example\ndomain ex.example\nsearch a.example b.example\n\
         options ndots:5 timeout:1\nsortlist 1.2.3.4\nnameserver\n\n",
    )
    .unwrap();
    let dns = json!({
        "nameservers": ["192.0.2.3", "2001:db8::53"],
        "domain": "ex.example",
        "search": ["a.example", "b.example"],
        "options": ["ndots:5", "timeout:1"]
    });
    (path.to_str().unwrap().to_string(), dns)
}

fn four_routes() -> Value {
    json!([
        {"dst": "0.0.0.0/0"},
        {"dst": "::/0"},
        {"dst": "192.168.0.0/16", "gw": "1.1.1.1"},
        {"dst": "2001:db8:2::/64", "gw": "2001:db8:3::1"}
    ])
}

// ---------------------------------------------------------------------------
// 4.1 scenarios
// ---------------------------------------------------------------------------

#[test]
fn allocates_and_releases_with_add_del_all_versions() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let (rc, dns) = resolv_conf(net.data_dir());
        let routes = four_routes();
        let conf = net.conf(
            v,
            json!({
                "ranges": [
                    [{"subnet": "10.1.2.0/24"}, {"subnet": "10.2.2.0/24"}],
                    [{"subnet": "2001:db8:1::/64"}]
                ],
                "resolvConf": rc,
                "routes": routes,
            }),
        );
        let out = ours().add_output(&conf, ID, IF, &[]);
        let raw = out.stdout_str();
        let stderr = out.stderr_str();
        let result = ok(out.into_result(), &format!("ADD {v}"));
        let want = expected_result(
            v,
            &[
                ("10.1.2.2/24", "10.1.2.1"),
                ("2001:db8:1::2/64", "2001:db8:1::1"),
            ],
            Some(&routes),
            Some(&dns),
        );
        assert_eq!(result, want, "version {v}");
        assert_eq!(
            raw.contains("\"version\""),
            has_ip_version(v),
            "version {v}: raw output {raw}"
        );
        assert!(
            !stderr.contains("Error retrieving last reserved ip"),
            "stderr: {stderr}"
        );

        let store = net.store();
        assert_ips(&store, &["10.1.2.2", "2001:db8:1::2"]);
        assert_eq!(store.read("10.1.2.2").as_deref(), Some("dummy\r\neth0"));
        assert_eq!(
            store.read("2001:db8:1::2").as_deref(),
            Some("dummy\r\neth0")
        );
        assert_eq!(store.last_reserved(0).as_deref(), Some("10.1.2.2"));
        assert_eq!(store.last_reserved(1).as_deref(), Some("2001:db8:1::2"));
        assert!(store.entries().contains(&"lock".to_string()));
        for f in ["10.1.2.2", "2001:db8:1::2"] {
            assert_eq!(store.mode(f), Some(0o600), "mode of {f} ({v})");
        }
        assert_eq!(store.unexpected(), Vec::<String>::new());

        ok(ours().del(&conf, ID, IF, &[]), &format!("DEL {v}"));
        assert_clean(&store);
        assert_eq!(store.last_reserved(0).as_deref(), Some("10.1.2.2"));
        assert_eq!(store.last_reserved(1).as_deref(), Some("2001:db8:1::2"));
    }
}

#[test]
fn legacy_versions_reject_two_sets_of_one_family() {
    for v in ["0.1.0", "0.2.0"] {
        let net = TestNet::new("mynet");
        let conf = net.conf(v, ranges(&[&["10.1.2.0/24"], &["10.1.3.0/24"]]));
        add_fails(
            &net,
            &conf,
            ID,
            &[],
            7,
            &format!("CNI version {v} does not support more than 1 address per family"),
        );
    }
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let net = TestNet::new("mynet");
        let conf = net.conf(v, ranges(&[&["10.1.2.0/24"], &["10.1.3.0/24"]]));
        let r = ok(ours().add(&conf, ID, IF, &[]), v);
        assert_eq!(result_addrs(&r), vec![ip("10.1.2.2"), ip("10.1.3.2")]);
    }
}

#[test]
fn missing_cni_version_means_0_1_0() {
    let net = TestNet::new("mynet");
    let routes = json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]);
    let mut ipam = ranges(&[&["10.1.2.0/24"], &["2001:db8::/64"]]);
    ipam["routes"] = routes.clone();
    let conf = net.conf("", ipam);
    let r = ok(ours().add(&conf, ID, IF, &[]), "ADD");
    let want = json!({
        "cniVersion": "0.1.0",
        "ip4": {"ip": "10.1.2.2/24", "gateway": "10.1.2.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "ip6": {"ip": "2001:db8::2/64", "gateway": "2001:db8::1", "routes": [{"dst": "::/0"}]},
        "dns": {}
    });
    assert_eq!(r, want);
}

#[test]
fn allocates_and_releases_on_specific_interfaces() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let conf = net.conf(v, ranges(&[&["10.1.2.0/24"]]));
        let r0 = ok(ours().add(&conf, ID, "eth0", &[]), "ADD eth0");
        let r1 = ok(ours().add(&conf, ID, "eth1", &[]), "ADD eth1");
        assert_eq!(single_addr(&r0), ip("10.1.2.2"));
        assert_eq!(single_addr(&r1), ip("10.1.2.3"));
        let store = net.store();
        assert_eq!(store.read("10.1.2.2").as_deref(), Some("dummy\r\neth0"));
        assert_eq!(store.read("10.1.2.3").as_deref(), Some("dummy\r\neth1"));

        ok(ours().del(&conf, ID, "eth0", &[]), "DEL eth0");
        assert_ips(&store, &["10.1.2.3"]);
        assert_eq!(store.read("10.1.2.3").as_deref(), Some("dummy\r\neth1"));
        if has_check(v) {
            ok(ours().check(&conf, ID, "eth1", &[]), "CHECK eth1");
            let e = fails(ours().check(&conf, ID, "eth0", &[]), "CHECK eth0");
            assert_eq!(
                err_msg(&e),
                "host-local: Failed to find address added by container dummy"
            );
        }
        ok(ours().del(&conf, ID, "eth1", &[]), "DEL eth1");
        assert_clean(&store);
    }
}

#[test]
fn repeat_add_same_id_and_ifname_fails() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let conf = net.conf(v, ranges(&[&["10.1.2.0/24"]]));
        let r = ok(ours().add(&conf, ID, IF, &[]), "first ADD");
        assert_eq!(single_addr(&r), ip("10.1.2.2"));
        let dup = "failed to allocate for range 0: 10.1.2.2 has been allocated to dummy, duplicate allocation is not allowed";
        add_fails(&net, &conf, ID, &[], 100, dup);
        let r = ok(ours().add(&conf, "other", IF, &[]), "ADD other id");
        assert_eq!(single_addr(&r), ip("10.1.2.3"));
        // The error persists until DEL.
        add_fails(&net, &conf, ID, &[], 100, dup);
        ok(ours().del(&conf, ID, IF, &[]), "DEL");
        let r = ok(ours().add(&conf, ID, IF, &[]), "ADD after DEL");
        assert_eq!(single_addr(&r), ip("10.1.2.4"), "round robin after release");
        assert_eq!(
            net.store().read("10.1.2.4").as_deref(),
            Some("dummy\r\neth0")
        );
    }
}

#[test]
fn repeat_add_dual_stack_reports_first_set_and_keeps_store() {
    let net = TestNet::new("mynet");
    let conf = net.conf("1.0.0", ranges(&[&["10.1.2.0/24"], &["2001:db8:1::/64"]]));
    ok(ours().add(&conf, ID, IF, &[]), "ADD");
    add_fails(
        &net,
        &conf,
        ID,
        &[],
        100,
        "failed to allocate for range 0: 10.1.2.2 has been allocated to dummy, duplicate allocation is not allowed",
    );
    assert_ips(&net.store(), &["10.1.2.2", "2001:db8:1::2"]);
}

#[test]
fn del_releases_legacy_id_only_files() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let conf = net.conf(v, ranges(&[&["10.1.2.0/24"]]));
        let store = net.store();
        store.write("10.1.2.2", b"dummy", 0o644);
        store.write("10.1.2.3", b"someoneelse", 0o644);
        if has_check(v) {
            ok(ours().check(&conf, ID, IF, &[]), "CHECK legacy");
        }
        ok(ours().del(&conf, ID, IF, &[]), "DEL");
        assert_ips(&store, &["10.1.2.3"]);
        assert_eq!(store.read("10.1.2.3").as_deref(), Some("someoneelse"));
    }
}

#[test]
fn del_unknown_id_and_repeated_del_succeed() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let conf = net.conf(v, ranges(&[&["10.1.2.0/24"]]));
        // Nothing was ever allocated here.
        ok(
            ours().del(&conf, "unknown", IF, &[]),
            "DEL on an empty store",
        );
        ok(ours().add(&conf, ID, IF, &[]), "ADD");
        ok(ours().del(&conf, "unknown", IF, &[]), "DEL unknown id");
        ok(ours().del(&conf, ID, "eth9", &[]), "DEL unknown ifname");
        assert_ips(&net.store(), &["10.1.2.2"]);
        ok(ours().del(&conf, ID, IF, &[]), "DEL");
        ok(ours().del(&conf, ID, IF, &[]), "second DEL");
        assert_clean(&net.store());
    }
}

#[test]
fn ignores_whitespace_in_store_files() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let conf = net.conf(v, ranges(&[&["10.1.2.0/24"]]));
        let store = net.store();
        store.write("10.1.2.2", b"  dummy\r\neth0  \n", 0o644);
        store.write("10.1.2.5", b"\n\tother\r\neth0\n", 0o644);
        if has_check(v) {
            ok(ours().check(&conf, ID, IF, &[]), "CHECK padded");
            ok(ours().check(&conf, "other", IF, &[]), "CHECK padded other");
        }
        ok(ours().del(&conf, ID, IF, &[]), "DEL");
        assert_ips(&store, &["10.1.2.5"]);
        ok(ours().del(&conf, "other", IF, &[]), "DEL other");
        assert_clean(&store);
    }
}

#[test]
fn no_last_reserved_error_on_stderr_in_new_subnet() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let conf = net.conf(v, ranges(&[&["10.1.2.0/24"], &["2001:db8::/64"]]));
        let out = ours().add_output(&conf, ID, IF, &[]);
        let stderr = out.stderr_str();
        ok(out.into_result(), "ADD");
        assert!(
            !stderr.contains("Error retrieving last reserved ip"),
            "stderr: {stderr}"
        );
    }
}

#[test]
fn custom_ip_via_args_cni_ips() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let base = net.conf(v, ranges(&[&["10.1.2.0/24"]]));
        let conf = with_key(&base, "args", json!({"cni": {"ips": ["10.1.2.88"]}}));
        let r = ok(ours().add(&conf, ID, IF, &[]), "ADD");
        assert_eq!(
            r,
            expected_result(v, &[("10.1.2.88/24", "10.1.2.1")], None, None)
        );
        let store = net.store();
        assert_eq!(store.read("10.1.2.88").as_deref(), Some("dummy\r\neth0"));
        assert_eq!(store.last_reserved(0).as_deref(), Some("10.1.2.88"));
        // The cursor moved to the requested IP.
        let r = ok(ours().add(&base, "next", IF, &[]), "ADD next");
        assert_eq!(single_addr(&r), ip("10.1.2.89"));
    }
}

#[test]
fn custom_ip_via_cni_args_and_runtime_config() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let base = net.conf(v, ranges(&[&["10.90.0.0/24"]]));
        // The prefix of a requested IP is ignored; the subnet's is used.
        let r = ok(
            ours().add(&base, "a", IF, &[("CNI_ARGS", "IP=10.90.0.60/16")]),
            "ADD CNI_ARGS IP",
        );
        assert_eq!(
            r,
            expected_result(v, &[("10.90.0.60/24", "10.90.0.1")], None, None)
        );
        let r = ok(
            ours().add(
                &base,
                "b",
                IF,
                &[(
                    "CNI_ARGS",
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;IP=10.90.0.61",
                )],
            ),
            "ADD CNI_ARGS IgnoreUnknown",
        );
        assert_eq!(single_addr(&r), ip("10.90.0.61"));
        let conf = with_key(&base, "runtimeConfig", json!({"ips": ["10.90.0.70/24"]}));
        let r = ok(ours().add(&conf, "c", IF, &[]), "ADD runtimeConfig ips");
        assert_eq!(single_addr(&r), ip("10.90.0.70"));
        let store = net.store();
        assert_ips(&store, &["10.90.0.60", "10.90.0.61", "10.90.0.70"]);
        assert_eq!(store.read("10.90.0.61").as_deref(), Some("b\r\neth0"));
        assert_eq!(store.last_reserved(0).as_deref(), Some("10.90.0.70"));
    }
}

#[test]
fn custom_ips_from_multiple_ranges() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let conf = with_key(
            &net.conf(v, ranges(&[&["10.1.2.0/24"], &["10.1.3.0/24"]])),
            "args",
            json!({"cni": {"ips": ["10.1.2.88", "10.1.3.77"]}}),
        );
        if is_legacy(v) {
            add_fails(
                &net,
                &conf,
                ID,
                &[],
                7,
                &format!("CNI version {v} does not support more than 1 address per family"),
            );
            continue;
        }
        let r = ok(ours().add(&conf, ID, IF, &[]), "ADD");
        assert_eq!(
            r,
            expected_result(
                v,
                &[("10.1.2.88/24", "10.1.2.1"), ("10.1.3.77/24", "10.1.3.1")],
                None,
                None
            )
        );
        assert_ips(&net.store(), &["10.1.2.88", "10.1.3.77"]);
        assert_eq!(net.store().last_reserved(1).as_deref(), Some("10.1.3.77"));
    }
}

#[test]
fn custom_ips_from_multiple_protocols() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let conf = with_key(
            &net.conf(
                v,
                ranges(&[&["10.1.2.0/24", "10.1.3.0/24"], &["2001:db8:1::/64"]]),
            ),
            "args",
            json!({"cni": {"ips": ["10.1.3.77", "2001:db8:1::999"]}}),
        );
        let r = ok(ours().add(&conf, ID, IF, &[]), "ADD");
        assert_eq!(
            r,
            expected_result(
                v,
                &[
                    ("10.1.3.77/24", "10.1.3.1"),
                    ("2001:db8:1::999/64", "2001:db8:1::1")
                ],
                None,
                None
            ),
            "version {v}"
        );
        assert_ips(&net.store(), &["10.1.3.77", "2001:db8:1::999"]);
    }
}

#[test]
fn fails_if_requested_ip_is_not_used() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let conf = with_key(
            &net.conf(v, ranges(&[&["10.1.2.0/24"]])),
            "args",
            json!({"cni": {"ips": ["10.1.2.88", "10.1.2.77"]}}),
        );
        let err = fails(ours().add(&conf, ID, IF, &[]), "ADD");
        assert_eq!(err_code(&err), 100, "{err}");
        let msg = err_msg(&err);
        assert!(
            msg == "failed to allocate all requested IPs: 10.1.2.88"
                || msg == "failed to allocate all requested IPs: 10.1.2.77",
            "{err}"
        );
        assert_clean(&net.store());
    }
}

#[test]
fn cni_args_and_args_are_both_requested() {
    let net = TestNet::new("mynet");
    let conf = with_key(
        &net.conf("1.0.0", ranges(&[&["10.1.2.0/24"], &["10.1.3.0/24"]])),
        "args",
        json!({"cni": {"ips": ["10.1.3.9"]}}),
    );
    let r = ok(
        ours().add(&conf, ID, IF, &[("CNI_ARGS", "IP=10.1.2.9")]),
        "ADD",
    );
    assert_eq!(result_addrs(&r), vec![ip("10.1.2.9"), ip("10.1.3.9")]);
}

#[test]
fn runtime_ip_ranges_are_prepended() {
    let net = TestNet::new("mynet");
    let conf = with_key(
        &net.conf("1.0.0", ranges(&[&["10.61.0.0/24"]])),
        "runtimeConfig",
        json!({"ipRanges": [[{"subnet": "10.60.0.0/24"}]]}),
    );
    let r = ok(ours().add(&conf, ID, IF, &[]), "ADD");
    assert_eq!(
        r,
        expected_result(
            "1.0.0",
            &[("10.60.0.2/24", "10.60.0.1"), ("10.61.0.2/24", "10.61.0.1")],
            None,
            None
        )
    );
    assert_eq!(net.store().last_reserved(0).as_deref(), Some("10.60.0.2"));
    assert_eq!(net.store().last_reserved(1).as_deref(), Some("10.61.0.2"));
}

#[test]
fn legacy_top_level_subnet_with_range_and_gateway() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let conf = net.conf(
            v,
            json!({
                "subnet": "10.7.0.0/24",
                "rangeStart": "10.7.0.100",
                "rangeEnd": "10.7.0.101",
                "gateway": "10.7.0.254",
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.7.0.254"}]
            }),
        );
        let r = ok(ours().add(&conf, "a", IF, &[]), "ADD a");
        let routes = json!([{"dst": "0.0.0.0/0", "gw": "10.7.0.254"}]);
        assert_eq!(
            r,
            expected_result(v, &[("10.7.0.100/24", "10.7.0.254")], Some(&routes), None)
        );
        let r = ok(ours().add(&conf, "b", IF, &[]), "ADD b");
        assert_eq!(single_addr(&r), ip("10.7.0.101"));
        add_fails(
            &net,
            &conf,
            "c",
            &[],
            100,
            "failed to allocate for range 0: no IP addresses available in range set: 10.7.0.100-10.7.0.101",
        );
    }
}

#[test]
fn routes_and_dns_per_version() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let (rc, dns) = resolv_conf(net.data_dir());
        let routes = json!([
            {"dst": "10.50.0.0/16", "gw": "10.1.2.254"},
            {"dst": "2001:db8:9::/48"},
            {"dst": "0.0.0.0/0"}
        ]);
        let conf = net.conf(
            v,
            json!({
                "ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8::/64"}]],
                "routes": routes,
                "resolvConf": rc,
                "dns": {"nameservers": ["9.9.9.9"]}
            }),
        );
        let r = ok(ours().add(&conf, ID, IF, &[]), "ADD");
        assert_eq!(
            r,
            expected_result(
                v,
                &[
                    ("10.1.2.2/24", "10.1.2.1"),
                    ("2001:db8::2/64", "2001:db8::1")
                ],
                Some(&routes),
                Some(&dns)
            ),
            "version {v}"
        );
    }
}

#[test]
fn empty_dns_shape_per_version() {
    for v in ALL_VERSIONS {
        let net = TestNet::new("mynet");
        let conf = net.conf(v, ranges(&[&["10.1.2.0/24"]]));
        let r = ok(ours().add(&conf, ID, IF, &[]), "ADD");
        assert_eq!(
            r.get("dns").is_some(),
            v != "1.1.0",
            "version {v}: dns key presence in {r}"
        );
        assert_eq!(r.get("routes"), None, "no routes configured: {r}");
    }
}

#[test]
fn missing_resolv_conf_fails_without_reservation() {
    let net = TestNet::new("mynet");
    let conf = net.conf(
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.1.2.0/24"}]], "resolvConf": "/nonexistent/resolv.conf"}),
    );
    let err = fails(ours().add(&conf, ID, IF, &[]), "ADD");
    assert_eq!(
        err_msg(&err),
        "open /nonexistent/resolv.conf: no such file or directory"
    );
    assert_eq!(net.store().ips(), BTreeSet::new());
}

// ---------------------------------------------------------------------------
// Allocation order
// ---------------------------------------------------------------------------

#[test]
fn round_robin_wraps_and_exhausts() {
    let net = TestNet::new("rr");
    let conf = net.conf("1.0.0", ranges(&[&["10.5.0.0/29"]]));
    let add = |id: &str| single_addr(&ok(ours().add(&conf, id, IF, &[]), id));
    assert_eq!(add("a"), ip("10.5.0.2"));
    assert_eq!(add("b"), ip("10.5.0.3"));
    ok(ours().del(&conf, "a", IF, &[]), "DEL a");
    assert_eq!(
        add("c"),
        ip("10.5.0.4"),
        "released IPs are not reused before wrapping"
    );
    assert_eq!(add("d"), ip("10.5.0.5"));
    assert_eq!(add("e"), ip("10.5.0.6"));
    assert_eq!(
        add("f"),
        ip("10.5.0.2"),
        "wraps to the start, gateway .1 skipped"
    );
    add_fails(
        &net,
        &conf,
        "g",
        &[],
        100,
        "failed to allocate for range 0: no IP addresses available in range set: 10.5.0.1-10.5.0.6",
    );
    assert_eq!(net.store().last_reserved(0).as_deref(), Some("10.5.0.2"));
}

#[test]
fn last_reserved_ip_steers_allocation() {
    let net = TestNet::new("rr");
    let conf = net.conf("1.0.0", ranges(&[&["10.5.0.0/29"]]));
    let store = net.store();
    store.write("last_reserved_ip.0", b"10.5.0.5", 0o644);
    let r = ok(ours().add(&conf, "a", IF, &[]), "ADD");
    assert_eq!(single_addr(&r), ip("10.5.0.6"));
    // Taken next candidates are skipped, wrapping to the start.
    store.write("last_reserved_ip.0", b"10.5.0.3", 0o644);
    store.write("10.5.0.4", b"x\r\neth0", 0o644);
    store.write("10.5.0.5", b"y\r\neth0", 0o644);
    let r = ok(ours().add(&conf, "b", IF, &[]), "ADD");
    assert_eq!(single_addr(&r), ip("10.5.0.2"));
    // A cursor outside the range restarts at the range start.
    store.write("last_reserved_ip.0", b"10.0.0.128", 0o644);
    let r = ok(ours().add(&conf, "c", IF, &[]), "ADD");
    assert_eq!(single_addr(&r), ip("10.5.0.3"));
    assert_eq!(store.last_reserved(0).as_deref(), Some("10.5.0.3"));
    // Everything taken but the last reserved IP: it is handed out last.
    let r = fails(ours().add(&conf, "d", IF, &[]), "ADD full");
    assert_err(
        &r,
        100,
        "failed to allocate for range 0: no IP addresses available in range set: 10.5.0.1-10.5.0.6",
    );
    ok(ours().del(&conf, "c", IF, &[]), "DEL c");
    let r = ok(ours().add(&conf, "e", IF, &[]), "ADD");
    assert_eq!(single_addr(&r), ip("10.5.0.3"));
}

#[test]
fn multi_range_set_round_robin() {
    let net = TestNet::new("rr");
    let conf = net.conf(
        "0.4.0",
        ranges(&[&["10.6.0.0/30", "10.6.1.0/30", "10.6.2.0/30"]]),
    );
    let add = |id: &str| ok(ours().add(&conf, id, IF, &[]), id);
    let r = add("a");
    assert_eq!(
        r,
        expected_result("0.4.0", &[("10.6.0.2/30", "10.6.0.1")], None, None)
    );
    let r = add("b");
    assert_eq!(
        r,
        expected_result("0.4.0", &[("10.6.1.2/30", "10.6.1.1")], None, None)
    );
    ok(ours().del(&conf, "a", IF, &[]), "DEL a");
    assert_eq!(single_addr(&add("c")), ip("10.6.2.2"));
    assert_eq!(
        single_addr(&add("d")),
        ip("10.6.0.2"),
        "wraps to the first range"
    );
    add_fails(
        &net,
        &conf,
        "e",
        &[],
        100,
        "failed to allocate for range 0: no IP addresses available in range set: 10.6.0.1-10.6.0.2,10.6.1.1-10.6.1.2,10.6.2.1-10.6.2.2",
    );
}

#[test]
fn explicit_range_may_include_network_and_broadcast() {
    let net = TestNet::new("rr");
    let conf = net.conf(
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.40.0.0/29", "rangeStart": "10.40.0.0", "rangeEnd": "10.40.0.7"}]]}),
    );
    let got: Vec<IpAddr> = (0..7)
        .map(|i| single_addr(&ok(ours().add(&conf, &format!("c{i}"), IF, &[]), "ADD")))
        .collect();
    let want: Vec<IpAddr> = ["0", "2", "3", "4", "5", "6", "7"]
        .iter()
        .map(|s| ip(&format!("10.40.0.{s}")))
        .collect();
    assert_eq!(got, want);
    add_fails(
        &net,
        &conf,
        "full",
        &[],
        100,
        "failed to allocate for range 0: no IP addresses available in range set: 10.40.0.0-10.40.0.7",
    );
}

#[test]
fn ipv6_small_subnet_uses_all_ones_address() {
    let net = TestNet::new("v6");
    let conf = net.conf("1.0.0", ranges(&[&["fd00:1::/126"]]));
    let a = single_addr(&ok(ours().add(&conf, "a", IF, &[]), "ADD a"));
    let b = single_addr(&ok(ours().add(&conf, "b", IF, &[]), "ADD b"));
    assert_eq!((a, b), (ip("fd00:1::2"), ip("fd00:1::3")));
    assert_eq!(net.store().read("fd00:1::3").as_deref(), Some("b\r\neth0"));
    add_fails(
        &net,
        &conf,
        "c",
        &[],
        100,
        "failed to allocate for range 0: no IP addresses available in range set: fd00:1::1-fd00:1::3",
    );
}

#[test]
fn v4_slash_30_has_one_usable_address() {
    let net = TestNet::new("small");
    let conf = net.conf("1.0.0", ranges(&[&["10.30.0.0/30"]]));
    let r = ok(ours().add(&conf, "a", IF, &[]), "ADD");
    assert_eq!(
        r,
        expected_result("1.0.0", &[("10.30.0.2/30", "10.30.0.1")], None, None)
    );
    add_fails(
        &net,
        &conf,
        "b",
        &[],
        100,
        "failed to allocate for range 0: no IP addresses available in range set: 10.30.0.1-10.30.0.2",
    );
}

#[test]
fn failed_second_set_releases_first_set() {
    let net = TestNet::new("dual");
    let conf = net.conf("1.0.0", ranges(&[&["10.1.2.0/24"], &["fd00:2::/126"]]));
    ok(ours().add(&conf, "a", IF, &[]), "ADD a");
    ok(ours().add(&conf, "b", IF, &[]), "ADD b");
    add_fails(
        &net,
        &conf,
        "c",
        &[],
        100,
        "failed to allocate for range 1: no IP addresses available in range set: fd00:2::1-fd00:2::3",
    );
    assert_ips(
        &net.store(),
        &["10.1.2.2", "10.1.2.3", "fd00:2::2", "fd00:2::3"],
    );
}

#[test]
fn preexisting_0644_files_are_accepted() {
    let net = TestNet::new("modes");
    let conf = net.conf("1.0.0", ranges(&[&["10.1.2.0/24"]]));
    let store = net.store();
    store.write("10.1.2.2", b"old\r\neth0", 0o644);
    store.write("last_reserved_ip.0", b"10.1.2.1", 0o644);
    let r = ok(ours().add(&conf, "new", IF, &[]), "ADD");
    assert_eq!(
        single_addr(&r),
        ip("10.1.2.3"),
        "a 0644 reservation is taken"
    );
    assert_eq!(store.mode("10.1.2.3"), Some(0o600));
    assert_eq!(store.last_reserved(0).as_deref(), Some("10.1.2.3"));
    ok(ours().check(&conf, "old", IF, &[]), "CHECK old");
    ok(ours().del(&conf, "old", IF, &[]), "DEL old");
    assert_ips(&store, &["10.1.2.3"]);
}

// ---------------------------------------------------------------------------
// DEL deviations
// ---------------------------------------------------------------------------

#[test]
fn del_without_netns_and_with_broken_ranges_releases() {
    let net = TestNet::new("mynet");
    let conf = net.conf("1.0.0", ranges(&[&["10.1.2.0/24"], &["2001:db8::/64"]]));
    for id in ["a", "b", "c", "d"] {
        ok(ours().add(&conf, id, IF, &[]), "ADD");
    }
    // Invalid range (too small).
    let bad = net.conf("1.0.0", ranges(&[&["10.1.2.0/31"]]));
    ok(ours().del(&bad, "a", IF, &[]), "DEL with /31 ranges");
    // No ranges at all.
    let none = net.conf("1.0.0", json!({}));
    ok(ours().del(&none, "b", IF, &[]), "DEL without ranges");
    // Empty range list.
    let empty = net.conf("1.0.0", json!({"ranges": []}));
    ok(ours().del(&empty, "c", IF, &[]), "DEL with empty ranges");
    // Overlapping sets.
    let overlap = net.conf("1.0.0", ranges(&[&["10.1.0.0/16"], &["10.1.2.0/24"]]));
    ok(
        ours().del(&overlap, "d", IF, &[]),
        "DEL with overlapping ranges",
    );
    assert_clean(&net.store());
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

type EnvList<'a> = Vec<(&'a str, Option<&'a str>)>;

fn add_env(id: &str) -> EnvList<'_> {
    vec![
        ("CNI_CONTAINERID", Some(id)),
        ("CNI_IFNAME", Some(IF)),
        ("CNI_NETNS", Some(NETNS)),
    ]
}

/// Runs ADD with arbitrary stdin/env and returns the error JSON.
#[track_caller]
fn raw_add_err(stdin: &[u8], env: &[(&str, Option<&str>)]) -> Value {
    let out = ours().exec(Some("ADD"), env, stdin);
    assert_eq!(
        out.code(),
        Some(1),
        "stdout {} stderr {}",
        out.stdout_str(),
        out.stderr_str()
    );
    fails(out.into_result(), "ADD")
}

#[test]
fn malformed_json_is_code_6() {
    let net = TestNet::new("mynet");
    for input in [&b"{"[..], b"not json", b"", b"[1,2", b"{\"name\": }"] {
        let e = raw_add_err(input, &add_env(ID));
        assert_eq!(
            err_code(&e),
            6,
            "input {:?}: {e}",
            String::from_utf8_lossy(input)
        );
        // The reference's prefix; the parser's own text follows it.
        assert!(
            err_msg(&e).starts_with("error unmarshall network config: "),
            "{e}"
        );
    }
    // A config that is JSON but has the wrong type for a key.
    let conf = with_key(
        &net.conf("1.0.0", ranges(&[&["10.1.2.0/24"]])),
        "name",
        json!(5),
    );
    let e = raw_add_err(conf.to_string().as_bytes(), &add_env(ID));
    assert!(matches!(err_code(&e), 6 | 7), "{e}");
    assert!(!net.data_dir().join("mynet").exists());
    // The same through DEL and CHECK.
    for cmd in ["DEL", "CHECK"] {
        let out = ours().exec(Some(cmd), &add_env(ID), b"{");
        let e = fails(out.into_result(), cmd);
        assert_eq!(err_code(&e), 6, "{cmd}: {e}");
    }
}

#[test]
fn unknown_cni_version_is_code_1() {
    for v in ["9.9.9", "0.5.0", "1.2.0", "banana"] {
        let net = TestNet::new("mynet");
        let conf = net.conf(v, ranges(&[&["10.1.2.0/24"]]));
        add_fails(&net, &conf, ID, &[], 1, "incompatible CNI versions");
        let e = fails(ours().del(&conf, ID, IF, &[]), "DEL");
        assert_err(&e, 1, "incompatible CNI versions");
        assert_eq!(net.store().ips(), BTreeSet::new());
    }
}

#[test]
fn missing_env_vars_are_code_4() {
    let net = TestNet::new("mynet");
    let conf = net.conf("1.0.0", ranges(&[&["10.1.2.0/24"]]));
    let stdin = conf.to_string();
    let cases: Vec<(EnvList, &str)> = vec![
        (
            vec![("CNI_CONTAINERID", Some(ID)), ("CNI_IFNAME", Some(IF))],
            "required env variables [CNI_NETNS] missing",
        ),
        (
            vec![("CNI_CONTAINERID", Some(ID)), ("CNI_NETNS", Some(NETNS))],
            "required env variables [CNI_IFNAME] missing",
        ),
        (
            vec![
                ("CNI_CONTAINERID", Some(ID)),
                ("CNI_IFNAME", Some(IF)),
                ("CNI_NETNS", Some(NETNS)),
                ("CNI_PATH", None),
            ],
            "required env variables [CNI_PATH] missing",
        ),
        (
            vec![("CNI_CONTAINERID", Some(ID)), ("CNI_PATH", None)],
            "required env variables [CNI_NETNS,CNI_IFNAME,CNI_PATH] missing",
        ),
    ];
    for (env, msg) in cases {
        let e = raw_add_err(stdin.as_bytes(), &env);
        assert_err(&e, 4, msg);
    }
    // DEL does not need CNI_NETNS but needs CNI_IFNAME.
    let out = ours().exec(
        Some("DEL"),
        &[("CNI_CONTAINERID", Some(ID))],
        stdin.as_bytes(),
    );
    assert_err(
        &fails(out.into_result(), "DEL"),
        4,
        "required env variables [CNI_IFNAME] missing",
    );
    // CHECK needs CNI_NETNS.
    let out = ours().exec(
        Some("CHECK"),
        &[("CNI_CONTAINERID", Some(ID)), ("CNI_IFNAME", Some(IF))],
        stdin.as_bytes(),
    );
    assert_err(
        &fails(out.into_result(), "CHECK"),
        4,
        "required env variables [CNI_NETNS] missing",
    );
    assert_eq!(net.store().ips(), BTreeSet::new());
}

#[test]
fn missing_container_id() {
    let net = TestNet::new("mynet");
    let conf = net.conf("1.0.0", ranges(&[&["10.1.2.0/24"]]));
    for id in [None, Some("")] {
        let env = vec![
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", Some(IF)),
            ("CNI_NETNS", Some(NETNS)),
        ];
        let e = raw_add_err(conf.to_string().as_bytes(), &env);
        // The reference says code 4 `required env variables [CNI_CONTAINERID] missing`;
        // code 3 `missing containerID` is the spec's dedicated code. Either is fine.
        let pair = (err_code(&e), err_msg(&e));
        assert!(
            pair == (4, "required env variables [CNI_CONTAINERID] missing")
                || pair == (3, "missing containerID"),
            "{e}"
        );
    }
    assert_eq!(net.store().ips(), BTreeSet::new());
}

#[test]
fn invalid_container_id_and_ifname_are_code_4() {
    let net = TestNet::new("mynet");
    let conf = net.conf("1.0.0", ranges(&[&["10.1.2.0/24"]]));
    let stdin = conf.to_string();
    for bad in ["bad/id", "-lead", ".dot", "a b", "a:b", "ü"] {
        let e = raw_add_err(stdin.as_bytes(), &add_env(bad));
        assert_err(&e, 4, "invalid characters in containerID");
        assert_eq!(e["details"], json!(bad), "{e}");
    }
    let cases = [
        ("abcdefghijklmnop", "interface name is too long"),
        (".", "interface name is . or .."),
        ("..", "interface name is . or .."),
        (
            "a/b",
            "interface name contains / or : or whitespace characters",
        ),
        (
            "a:b",
            "interface name contains / or : or whitespace characters",
        ),
        (
            "a b",
            "interface name contains / or : or whitespace characters",
        ),
    ];
    for (ifname, msg) in cases {
        let env = vec![
            ("CNI_CONTAINERID", Some(ID)),
            ("CNI_IFNAME", Some(ifname)),
            ("CNI_NETNS", Some(NETNS)),
        ];
        let e = raw_add_err(stdin.as_bytes(), &env);
        assert_err(&e, 4, msg);
    }
    // 15 bytes is fine.
    ok(
        ours().add(&conf, ID, "abcdefghijklmno", &[]),
        "ADD 15-byte ifname",
    );
    assert_eq!(
        net.store().read("10.1.2.2").as_deref(),
        Some("dummy\r\nabcdefghijklmno")
    );
    // Container ids with the allowed punctuation.
    ok(ours().add(&conf, "A0_b.c-d", IF, &[]), "ADD punctuated id");
    assert_eq!(
        net.store().read("10.1.2.3").as_deref(),
        Some("A0_b.c-d\r\neth0")
    );
    assert_eq!(net.store().ips().len(), 2);
}

#[test]
fn bad_network_names_are_code_7() {
    for name in ["../x", "/", "a/b", ".."] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let conf = net_conf("1.0.0", name, &data, ranges(&[&["10.1.2.0/24"]]));
        let e = fails(ours().add(&conf, ID, IF, &[]), "ADD");
        assert_err(&e, 7, "invalid characters found in network name");
        let e = fails(ours().del(&conf, ID, IF, &[]), "DEL");
        assert_err(&e, 7, "invalid characters found in network name");
        // Nothing was created anywhere, in particular not outside dataDir.
        let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "name {name:?} created {left:?}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut conf = net_conf("1.0.0", "x", tmp.path(), ranges(&[&["10.1.2.0/24"]]));
    conf.as_object_mut().unwrap().remove("name");
    let e = fails(ours().add(&conf, ID, IF, &[]), "ADD");
    assert_err(&e, 7, "missing network name");
    let conf = with_key(&conf, "name", json!(""));
    let e = fails(ours().add(&conf, ID, IF, &[]), "ADD");
    assert_err(&e, 7, "missing network name");
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn invalid_range_configs_are_code_7() {
    let cases: Vec<(Value, &str)> = vec![
        (
            ranges(&[&["10.1.0.0/16"], &["10.1.2.0/24"]]),
            "range set 0 overlaps with 1",
        ),
        (
            ranges(&[&["10.3.0.0/24"], &["10.1.0.0/16"], &["10.1.2.0/24"]]),
            "range set 1 overlaps with 2",
        ),
        (
            ranges(&[&["10.1.0.0/22", "10.1.2.0/24"]]),
            "invalid range set 0: subnets 10.1.0.1-10.1.3.254 and 10.1.2.1-10.1.2.254 overlap",
        ),
        (
            ranges(&[&["10.1.0.0/24", "2001:db8::/64"]]),
            "invalid range set 0: mixed address families",
        ),
        (
            ranges(&[&["10.9.0.0/31"]]),
            "invalid range set 0: Network 10.9.0.0/31 too small to allocate from",
        ),
        (
            ranges(&[&["10.9.0.0/24"], &["10.9.1.0/32"]]),
            "invalid range set 1: Network 10.9.1.0/32 too small to allocate from",
        ),
        (
            ranges(&[&["2001:db8::/127"]]),
            "invalid range set 0: Network 2001:db8::/127 too small to allocate from",
        ),
        (
            ranges(&[&["10.1.0.5/24"]]),
            "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.1.0.0",
        ),
        (
            ranges(&[&["192.168.127.0/23"]]),
            "invalid range set 0: Network has host bits set. For a subnet mask of length 23 the network address is 192.168.126.0",
        ),
        (
            ranges(&[&["2001:DB8:1::24:19ff:fee1:c44a/64"]]),
            "invalid range set 0: Network has host bits set. For a subnet mask of length 64 the network address is 2001:db8:1::",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.1.1"}]]}),
            "invalid range set 0: RangeStart 10.1.1.1 not in network 10.1.0.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeEnd": "10.1.1.1"}]]}),
            "invalid range set 0: RangeEnd 10.1.1.1 not in network 10.1.0.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.50", "rangeEnd": "10.1.0.40"}]]}),
            "invalid range set 0: RangeStart 10.1.0.50 not in network 10.1.0.0/24",
        ),
        (json!({"ranges": [[]]}), "invalid range set 0: empty range set"),
        (json!({"ranges": []}), "no IP ranges specified"),
        (json!({}), "no IP ranges specified"),
    ];
    for (ipam, msg) in cases {
        let net = TestNet::new("mynet");
        let conf = net.conf("1.0.0", ipam.clone());
        add_fails(&net, &conf, ID, &[], 7, msg);
        assert_eq!(net.store().ips(), BTreeSet::new(), "{ipam}");
    }
    // No ipam key at all.
    let net = TestNet::new("mynet");
    let mut conf = net.conf("1.0.0", json!({}));
    conf.as_object_mut().unwrap().remove("ipam");
    add_fails(&net, &conf, ID, &[], 7, "IPAM config missing 'ipam' key");
}

#[test]
fn cni_args_errors_are_code_4() {
    let net = TestNet::new("mynet");
    let conf = net.conf("1.0.0", ranges(&[&["10.1.2.0/24"]]));
    let cases = [
        ("FOO=bar", r#"ARGS: unknown args ["FOO=bar"]"#),
        ("ip=10.1.2.9", r#"ARGS: unknown args ["ip=10.1.2.9"]"#),
        ("IgnoreUnknown=1;", r#"ARGS: invalid pair """#),
        ("IP", r#"ARGS: invalid pair "IP""#),
        (
            "IP=notanip",
            r#"ARGS: error parsing value of pair "IP=notanip": invalid IP address notanip"#,
        ),
    ];
    for (args, msg) in cases {
        add_fails(&net, &conf, ID, &[("CNI_ARGS", args)], 4, msg);
    }
    assert_eq!(net.store().ips(), BTreeSet::new());
}

#[test]
fn requested_ip_problems_are_code_100() {
    let net = TestNet::new("mynet");
    let conf = net.conf("1.0.0", ranges(&[&["10.1.2.0/24"]]));
    let store = net.store();
    // Outside every range.
    let c = with_key(&conf, "args", json!({"cni": {"ips": ["10.9.9.9"]}}));
    add_fails(
        &net,
        &c,
        ID,
        &[],
        100,
        "failed to allocate all requested IPs: 10.9.9.9",
    );
    add_fails(
        &net,
        &conf,
        ID,
        &[("CNI_ARGS", "IP=10.9.9.9")],
        100,
        "failed to allocate all requested IPs: 10.9.9.9",
    );
    assert_clean(&store);
    // The gateway.
    let c = with_key(&conf, "runtimeConfig", json!({"ips": ["10.1.2.1/24"]}));
    add_fails(
        &net,
        &c,
        ID,
        &[],
        100,
        "failed to allocate for range 0: requested ip 10.1.2.1 is subnet's gateway",
    );
    // Already taken.
    // (Which address "first" gets depends on whether the failed ADDs above
    // moved the cursor, which the reference does; request whatever it got.)
    let taken = single_addr(&ok(ours().add(&conf, "first", IF, &[]), "ADD")).to_string();
    add_fails(
        &net,
        &conf,
        ID,
        &[("CNI_ARGS", &format!("IP={taken}"))],
        100,
        &format!("failed to allocate for range 0: requested IP address {taken} is not available in range set 10.1.2.1-10.1.2.254"),
    );
    assert_ips(&store, &[&taken]);
    assert_eq!(store.read(&taken).as_deref(), Some("first\r\neth0"));
}

#[test]
fn requested_ip_taken_in_multi_range_set_lists_the_set() {
    let net = TestNet::new("mynet");
    let conf = net.conf("1.0.0", ranges(&[&["10.1.2.0/24", "10.2.2.0/24"]]));
    net.store().write("10.2.2.7", b"x\r\neth0", 0o600);
    add_fails(
        &net,
        &conf,
        ID,
        &[("CNI_ARGS", "IP=10.2.2.7")],
        100,
        "failed to allocate for range 0: requested IP address 10.2.2.7 is not available in range set 10.1.2.1-10.1.2.254,10.2.2.1-10.2.2.254",
    );
}

#[test]
fn requested_ip_failure_in_second_set_releases_first() {
    let net = TestNet::new("mynet");
    let conf = with_key(
        &net.conf("1.0.0", ranges(&[&["10.1.2.0/24"], &["10.1.3.0/24"]])),
        "args",
        json!({"cni": {"ips": ["10.1.3.1"]}}),
    );
    add_fails(
        &net,
        &conf,
        ID,
        &[],
        100,
        "failed to allocate for range 1: requested ip 10.1.3.1 is subnet's gateway",
    );
    assert_eq!(net.store().ips(), BTreeSet::new());
}

#[test]
fn check_and_gc_and_status_need_their_versions() {
    let net = TestNet::new("mynet");
    for v in ["0.1.0", "0.2.0", "0.3.0", "0.3.1"] {
        let conf = net.conf(v, ranges(&[&["10.1.2.0/24"]]));
        let e = fails(ours().check(&conf, ID, IF, &[]), "CHECK");
        assert_err(&e, 1, "config version does not allow CHECK");
    }
    for v in ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let conf = net.conf(v, ranges(&[&["10.1.2.0/24"]]));
        let e = fails(
            ours().gc(&with_attachments(&conf, VALID_ATTACHMENTS, &[])),
            "GC",
        );
        assert_err(&e, 1, "config version does not allow GC");
        let e = fails(ours().status(&conf), "STATUS");
        assert_err(&e, 1, "config version does not allow STATUS");
    }
}

// ---------------------------------------------------------------------------
// CHECK
// ---------------------------------------------------------------------------

#[test]
fn check_found_and_not_found() {
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let net = TestNet::new("mynet");
        let conf = net.conf(v, ranges(&[&["10.1.2.0/24"], &["2001:db8::/64"]]));
        let r = ok(ours().add(&conf, ID, IF, &[]), "ADD");
        let with_prev = with_key(&conf, "prevResult", r);
        ok(ours().check(&with_prev, ID, IF, &[]), "CHECK");
        ok(ours().check(&conf, ID, IF, &[]), "CHECK without prevResult");
        for (id, ifname) in [("nope", IF), (ID, "eth1")] {
            let e = fails(ours().check(&with_prev, id, ifname, &[]), "CHECK");
            assert_eq!(
                err_msg(&e),
                format!("host-local: Failed to find address added by container {id}"),
                "{e}"
            );
        }
        ok(ours().del(&conf, ID, IF, &[]), "DEL");
        let e = fails(ours().check(&with_prev, ID, IF, &[]), "CHECK after DEL");
        assert_eq!(
            err_msg(&e),
            "host-local: Failed to find address added by container dummy"
        );
    }
}

// ---------------------------------------------------------------------------
// GC
// ---------------------------------------------------------------------------

fn gc_setup(net: &TestNet) -> Value {
    let conf = net.conf("1.1.0", ranges(&[&["10.1.2.0/24"], &["2001:db8::/64"]]));
    for (id, ifname) in [("a", "eth0"), ("b", "eth0"), ("c", "eth1"), ("a", "eth1")] {
        ok(ours().add(&conf, id, ifname, &[]), "ADD");
    }
    // a/eth0 → .2, b/eth0 → .3, c/eth1 → .4, a/eth1 → .5
    conf
}

#[test]
fn gc_releases_attachments_not_listed() {
    for key in [VALID_ATTACHMENTS, LEGACY_ATTACHMENTS] {
        let net = TestNet::new("gcnet");
        let conf = gc_setup(&net);
        let store = net.store();
        let gc = with_attachments(&conf, key, &[("a", "eth0"), ("c", "eth1"), ("zzz", "eth0")]);
        ok(ours().gc(&gc), "GC");
        assert_ips(
            &store,
            &["10.1.2.2", "10.1.2.4", "2001:db8::2", "2001:db8::4"],
        );
        assert_eq!(store.read("10.1.2.4").as_deref(), Some("c\r\neth1"));
        assert!(store.entries().contains(&"lock".to_string()));
        assert_eq!(store.last_reserved(0).as_deref(), Some("10.1.2.5"));
        assert_eq!(store.last_reserved(1).as_deref(), Some("2001:db8::5"));
        // Idempotent.
        ok(ours().gc(&gc), "GC again");
        assert_ips(
            &store,
            &["10.1.2.2", "10.1.2.4", "2001:db8::2", "2001:db8::4"],
        );
        // Survivors can still be DELeted; the rest of the store stays usable.
        ok(ours().del(&conf, "a", "eth0", &[]), "DEL");
        ok(ours().del(&conf, "c", "eth1", &[]), "DEL");
        assert_clean(&store);
        let r = ok(ours().add(&conf, "d", IF, &[]), "ADD after GC");
        assert_eq!(result_addrs(&r), vec![ip("10.1.2.6"), ip("2001:db8::6")]);
    }
}

#[test]
fn gc_with_empty_list_releases_everything() {
    for key in [VALID_ATTACHMENTS, LEGACY_ATTACHMENTS] {
        let net = TestNet::new("gcnet");
        let conf = gc_setup(&net);
        let store = net.store();
        store.write("10.1.2.99", b"legacy", 0o644);
        ok(ours().gc(&with_attachments(&conf, key, &[])), "GC");
        assert_clean(&store);
        assert!(store.entries().contains(&"lock".to_string()));
        assert_eq!(store.last_reserved(0).as_deref(), Some("10.1.2.5"));
        assert_eq!(store.last_reserved(1).as_deref(), Some("2001:db8::5"));
    }
}

#[test]
fn gc_treats_legacy_id_only_files_by_container_id() {
    let net = TestNet::new("gcnet");
    let conf = net.conf("1.1.0", ranges(&[&["10.1.2.0/24"]]));
    let store = net.store();
    store.write("10.1.2.50", b"keepme", 0o644);
    store.write("10.1.2.51", b"dropme", 0o644);
    store.write("10.1.2.52", b"  keepme\n", 0o644);
    store.write("10.1.2.53", b"ctr\r\neth0", 0o644);
    store.write("10.1.2.54", b"ctr\r\neth1", 0o644);
    store.write("last_reserved_ip.0", b"10.1.2.54", 0o644);
    let gc = with_attachments(
        &conf,
        VALID_ATTACHMENTS,
        &[("keepme", "eth7"), ("ctr", "eth0")],
    );
    ok(ours().gc(&gc), "GC");
    assert_ips(&store, &["10.1.2.50", "10.1.2.52", "10.1.2.53"]);
    assert_eq!(store.read("10.1.2.50").as_deref(), Some("keepme"));
    assert_eq!(store.last_reserved(0).as_deref(), Some("10.1.2.54"));
}

#[test]
fn gc_keeps_bookkeeping_files() {
    let net = TestNet::new("gcnet");
    let conf = net.conf("1.1.0", ranges(&[&["10.1.2.0/24"]]));
    ok(ours().add(&conf, "a", IF, &[]), "ADD");
    let store = net.store();
    store.write("last_reserved_ip.7", b"10.1.2.2", 0o644);
    ok(
        ours().gc(&with_attachments(&conf, VALID_ATTACHMENTS, &[])),
        "GC",
    );
    assert_eq!(
        store.entries(),
        vec!["last_reserved_ip.0", "last_reserved_ip.7", "lock"]
    );
}

#[test]
fn gc_on_missing_network_dir_succeeds() {
    let net = TestNet::new("gcnet");
    let conf = net.conf("1.1.0", ranges(&[&["10.1.2.0/24"]]));
    ok(
        ours().gc(&with_attachments(
            &conf,
            VALID_ATTACHMENTS,
            &[("a", "eth0")],
        )),
        "GC",
    );
    assert_eq!(net.store().ips(), BTreeSet::new());
}

// ---------------------------------------------------------------------------
// STATUS
// ---------------------------------------------------------------------------

#[test]
fn status_free_and_exhausted() {
    let net = TestNet::new("st");
    let conf = net.conf("1.1.0", ranges(&[&["10.1.2.0/24"], &["10.30.0.0/30"]]));
    ok(ours().status(&conf), "STATUS on a fresh store");
    ok(ours().add(&conf, "a", IF, &[]), "ADD");
    let e = fails(ours().status(&conf), "STATUS exhausted");
    assert_eq!(err_code(&e), 50, "{e}");
    ok(ours().del(&conf, "a", IF, &[]), "DEL");
    ok(ours().status(&conf), "STATUS after DEL");
    // A single-set network that is full.
    let net = TestNet::new("st2");
    let conf = net.conf("1.1.0", ranges(&[&["fd00:3::/126"]]));
    ok(ours().add(&conf, "a", IF, &[]), "ADD a");
    ok(ours().status(&conf), "STATUS one left");
    ok(ours().add(&conf, "b", IF, &[]), "ADD b");
    let e = fails(ours().status(&conf), "STATUS exhausted");
    assert_eq!(err_code(&e), 50, "{e}");
    assert_eq!(net.store().ips().len(), 2, "STATUS must not allocate");
}

#[test]
fn status_rejects_invalid_config() {
    let net = TestNet::new("st");
    let conf = net.conf("1.1.0", ranges(&[&["10.1.0.0/16"], &["10.1.2.0/24"]]));
    let e = fails(ours().status(&conf), "STATUS");
    assert_err(&e, 7, "range set 0 overlaps with 1");
}

// ---------------------------------------------------------------------------
// VERSION and about
// ---------------------------------------------------------------------------

#[test]
fn version_prints_supported_versions() {
    let want = json!({"cniVersion": "1.1.0", "supportedVersions": ALL_VERSIONS});
    for stdin in [&b""[..], b"{\"cniVersion\":\"0.3.1\"}", b"garbage"] {
        let out = ours().version(stdin);
        assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr_str());
        assert_eq!(out.json(), want);
    }
}

#[test]
fn about_text_without_command() {
    for command in [None, Some("")] {
        let out = ours().exec(command, &[], b"");
        assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr_str());
        assert!(out.stdout.is_empty(), "stdout: {}", out.stdout_str());
        assert!(
            !out.stderr_str().trim().is_empty(),
            "no about text on stderr"
        );
    }
}

#[test]
fn unknown_command_is_an_error() {
    let net = TestNet::new("mynet");
    let conf = net.conf("1.0.0", ranges(&[&["10.1.2.0/24"]]));
    let out = ours().exec(Some("FOO"), &add_env(ID), conf.to_string().as_bytes());
    let e = fails(out.into_result(), "FOO");
    assert_err(&e, 4, "unknown CNI_COMMAND: FOO");
}

#[test]
fn errors_carry_cni_version_and_nothing_else_on_stdout() {
    let net = TestNet::new("mynet");
    let conf = net.conf("1.0.0", ranges(&[&["10.1.2.0/31"]]));
    let out = ours().add_output(&conf, ID, IF, &[]);
    assert_eq!(out.code(), Some(1));
    let e = out.json();
    assert!(e.get("cniVersion").is_some_and(Value::is_string), "{e}");
    let keys: BTreeSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    assert!(
        keys.is_subset(
            &["cniVersion", "code", "msg", "details"]
                .into_iter()
                .collect()
        ),
        "{e}"
    );
}

#[test]
fn networks_sharing_a_data_dir_are_independent() {
    let tmp = tempfile::tempdir().unwrap();
    let a = net_conf("1.1.0", "net-a", tmp.path(), ranges(&[&["10.1.2.0/24"]]));
    let b = net_conf("1.1.0", "net-b", tmp.path(), ranges(&[&["10.1.2.0/24"]]));
    let (sa, sb) = (
        Store::new(tmp.path(), "net-a"),
        Store::new(tmp.path(), "net-b"),
    );
    // Same container, different ifnames, on two networks with the same subnet.
    let ra = ok(ours().add(&a, ID, "eth0", &[]), "ADD a");
    let rb = ok(ours().add(&b, ID, "eth1", &[]), "ADD b");
    assert_eq!(single_addr(&ra), ip("10.1.2.2"));
    assert_eq!(single_addr(&rb), ip("10.1.2.2"));
    ok(ours().del(&a, ID, "eth1", &[]), "DEL a/eth1 (not there)");
    assert_ips(&sb, &["10.1.2.2"]);
    ok(ours().del(&a, ID, "eth0", &[]), "DEL a/eth0");
    assert_clean(&sa);
    assert_eq!(sb.read("10.1.2.2").as_deref(), Some("dummy\r\neth1"));
    // GC of one network leaves the other alone.
    ok(ours().add(&a, "x", IF, &[]), "ADD a/x");
    ok(
        ours().gc(&with_attachments(&b, VALID_ATTACHMENTS, &[])),
        "GC b",
    );
    assert_clean(&sb);
    assert_ips(&sa, &["10.1.2.3"]);
    // STATUS of a full network does not look at the other one.
    let full = net_conf("1.1.0", "net-c", tmp.path(), ranges(&[&["10.30.0.0/30"]]));
    ok(ours().add(&full, "y", IF, &[]), "ADD c");
    assert_eq!(err_code(&fails(ours().status(&full), "STATUS c")), 50);
    ok(ours().status(&a), "STATUS a");
}
