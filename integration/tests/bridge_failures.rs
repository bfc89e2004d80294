#![allow(clippy::unwrap_used)]
//! Failure paths of our `bridge`: every bad input is a CNI error (exit 1,
//! JSON on stdout) and leaves nothing behind — no veth in the host or the
//! container, no IPAM reservation, no iptables/nftables rule. DEL is
//! idempotent and cleans up masquerade state from `prevResult` even when the
//! netns is gone or `CNI_NETNS` is empty. GC and STATUS (spec 1.1.0).
//!
//! Run: `cargo build --workspace --bins && cargo test -p integration --test bridge_failures`

use integration::netns::*;
use integration::{err_code, err_msg, with_attachments, with_key, VALID_ATTACHMENTS};
use serde_json::{json, Value};

fn ours() -> Impl {
    Impl::ours()
}

/// Everything but the links (for DEL without a usable netns, where the
/// container end cannot be reached).
fn non_link_leftovers(host: &Host, pods: &[&Pod]) -> Vec<String> {
    host.leftovers(NET, pods)
        .into_iter()
        .filter(|l| !l.starts_with("host veth") && !l.starts_with("container "))
        .collect()
}

fn masq_conf(host: &Host, version: &str, backend: &str) -> Value {
    host.conf(
        version,
        json!({"isGateway": true, "ipMasq": true, "ipMasqBackend": backend,
            "ipam": host_local(&["10.40.0.0/24", "fd40::/64"])}),
    )
}

fn masq_state_present(host: &Host, pod: &Pod, backend: &str) -> bool {
    match backend {
        "iptables" => {
            let chain = masq_chain(NET, &pod.id);
            let rules = host.ns.cni_nat_rules();
            rules.iter().any(|r| r == &format!("-N {chain}"))
                && rules
                    .iter()
                    .any(|r| r.starts_with("-A POSTROUTING") && r.ends_with(&chain))
        }
        _ => {
            let c = nft_masq_comment(NET, &pod.ifname, &pod.id);
            host.ns
                .nft_masq_rules()
                .iter()
                .any(|r| r["comment"] == c.as_str())
        }
    }
}

// ---------------------------------------------------------------------------
// IPAM failures
// ---------------------------------------------------------------------------

#[test]
fn ipam_exhausted_passes_host_local_message_and_leaves_nothing() {
    let host = Host::new(&ours());
    let conf = host.conf(
        "1.0.0",
        json!({"isGateway": true, "ipMasq": true, "ipam": host_local(&["10.30.0.0/30"])}),
    );
    let p1 = Pod::new("full1");
    let r1 = host.must_add(&conf, &p1);
    let before = host.leftovers(NET, &[]);
    let p2 = Pod::new("full2");
    let e = host
        .add(&conf, &p2, &[])
        .expect_err("range has one address");
    assert!(
        err_msg(&e).contains("no IP addresses available in range set: 10.30.0.1-10.30.0.2"),
        "{e}"
    );
    assert_eq!(
        host.leftovers(NET, &[]),
        before,
        "second ADD left something"
    );
    assert!(
        p2.ns.link(&p2.ifname).is_none(),
        "container veth left behind"
    );
    host.must_del(&with_prev(&conf, &r1), &p1);
    host.assert_clean(NET, &[&p1, &p2], "after DEL");
}

#[test]
fn ipam_binary_missing() {
    let host = Host::new(&ours());
    let pod = Pod::new("noipam");
    let conf = host.conf(
        "1.0.0",
        json!({"isGateway": true, "ipam": {"type": "nonexistent-ipam"}}),
    );
    let e = host.add(&conf, &pod, &[]).expect_err("missing IPAM binary");
    assert_eq!(
        err_msg(&e),
        format!(
            "failed to find plugin \"nonexistent-ipam\" in path [{}]",
            host.imp.dir.display()
        ),
        "{e}"
    );
    host.assert_clean(NET, &[&pod], "after the failed ADD");
}

// ---------------------------------------------------------------------------
// DEL without a usable netns, repeated DEL
// ---------------------------------------------------------------------------

#[test]
fn netns_deleted_before_del_masq_rules_removed_from_prev_result() {
    for backend in ["iptables", "nftables"] {
        let host = Host::new(&ours());
        let mut pod = Pod::new("gone");
        let conf = masq_conf(&host, "1.0.0", backend);
        let res = host.must_add(&conf, &pod);
        assert!(
            masq_state_present(&host, &pod, backend),
            "{backend}: no rules after ADD"
        );
        let path = pod.ns.path();
        pod.ns.delete();
        // The host end dies with the namespace (asynchronously).
        host.ns.wait_no_veths(std::time::Duration::from_secs(10));
        let prev = with_prev(&conf, &res);
        let out = host.cni("DEL", &prev, &pod.id, &pod.ifname, Some(&path), &[]);
        no_output(out, "ours", "DEL").unwrap_or_else(|e| panic!("{backend}: {e}"));
        // The veth pair died with the namespace; rules and reservation must go.
        host.assert_clean(
            NET,
            &[&pod],
            &format!("{backend}: after DEL with the netns gone"),
        );
        // Again: still success.
        let out = host.cni("DEL", &prev, &pod.id, &pod.ifname, Some(&path), &[]);
        no_output(out, "ours", "DEL").unwrap_or_else(|e| panic!("{backend}: 2nd DEL: {e}"));
    }
}

#[test]
fn empty_cni_netns_on_del_removes_masq_rules_and_reservation() {
    for backend in ["iptables", "nftables"] {
        let host = Host::new(&ours());
        let pod = Pod::new("nonetns");
        let conf = masq_conf(&host, "1.0.0", backend);
        let res = host.must_add(&conf, &pod);
        let prev = with_prev(&conf, &res);
        let out = host.cni("DEL", &prev, &pod.id, &pod.ifname, Some(""), &[]);
        no_output(out, "ours", "DEL").unwrap_or_else(|e| panic!("{backend}: {e}"));
        let l = non_link_leftovers(&host, &[&pod]);
        assert!(
            l.is_empty(),
            "{backend}: DEL with CNI_NETNS=\"\" left {l:#?}"
        );
        // Without CNI_NETNS at all: also success.
        let out = host.cni("DEL", &prev, &pod.id, &pod.ifname, None, &[]);
        no_output(out, "ours", "DEL").unwrap_or_else(|e| panic!("{backend}: {e}"));
    }
}

#[test]
fn repeated_del_always_succeeds() {
    let host = Host::new(&ours());
    let mut pod = Pod::new("rep");
    let conf = masq_conf(&host, "1.0.0", "iptables");
    let res = host.must_add(&conf, &pod);
    let prev = with_prev(&conf, &res);
    for i in 0..3 {
        host.del(&prev, &pod, &[])
            .unwrap_or_else(|e| panic!("DEL #{i}: {e}"));
    }
    host.assert_clean(NET, &[&pod], "after DELs");
    // Without prevResult, without netns, with the netns gone.
    host.del(&conf, &pod, &[]).unwrap();
    let out = host.cni("DEL", &conf, &pod.id, &pod.ifname, None, &[]);
    no_output(out, "ours", "DEL").unwrap();
    let path = pod.ns.path();
    pod.ns.delete();
    host.ns.wait_no_veths(std::time::Duration::from_secs(10));
    let out = host.cni("DEL", &prev, &pod.id, &pod.ifname, Some(&path), &[]);
    no_output(out, "ours", "DEL").unwrap();
    host.assert_clean(NET, &[&pod], "after DELs");
}

// ---------------------------------------------------------------------------
// Bad inputs: exact error, nothing left behind
// ---------------------------------------------------------------------------

/// Runs one ADD that must fail; checks the error with `check`, then that
/// nothing is left behind.
fn bad_add(what: &str, extra: Value, check: impl Fn(&Value)) {
    let host = Host::new(&ours());
    let pod = Pod::new("bad");
    let conf = host.conf("1.0.0", extra);
    let e = host
        .add(&conf, &pod, &[])
        .expect_err(&format!("{what} must fail"));
    check(&e);
    host.assert_clean(NET, &[&pod], &format!("{what}: after the failed ADD"));
    // A DEL of the failed attachment is still fine (runtimes do call it),
    // except when the config itself is invalid.
}

#[test]
fn hairpin_and_promisc_together() {
    bad_add(
        "hairpin+promisc",
        json!({"hairpinMode": true, "promiscMode": true, "ipam": host_local(&["10.1.2.0/24"])}),
        |e| {
            assert_eq!(err_code(e), 7, "{e}");
            assert_eq!(
                err_msg(e),
                "cannot set hairpin mode and promiscuous mode at the same time",
                "{e}"
            );
        },
    );
}

#[test]
fn vlan_also_in_trunk() {
    bad_add(
        "vlan listed in vlanTrunk",
        json!({"vlan": 100, "vlanTrunk": [{"id": 100}], "ipam": {}}),
        |e| assert_eq!(err_code(e), 7, "{e}"),
    );
    bad_add(
        "vlan inside a vlanTrunk range",
        json!({"vlan": 150, "vlanTrunk": [{"minID": 100, "maxID": 200}], "ipam": {}}),
        |e| assert_eq!(err_code(e), 7, "{e}"),
    );
}

#[test]
fn invalid_vlan_ids() {
    for id in [-100, 5000] {
        bad_add(
            &format!("vlan {id}"),
            json!({"vlan": id, "ipam": host_local(&["10.1.2.0/24"])}),
            |e| {
                assert_eq!(err_code(e), 7, "{e}");
                assert_eq!(
                    err_msg(e),
                    format!("invalid VLAN ID {id} (must be between 0 and 4094)"),
                    "{e}"
                );
            },
        );
    }
}

#[test]
fn bridge_name_taken_by_a_non_bridge() {
    let host = Host::new(&ours());
    host.ns.add_plain_link(BRIDGE);
    let pod = Pod::new("nb");
    let conf = host.conf(
        "1.0.0",
        json!({"isGateway": true, "ipam": host_local(&["10.1.2.0/24"])}),
    );
    let e = host.add(&conf, &pod, &[]).expect_err("not a bridge");
    assert_eq!(
        err_msg(&e),
        format!(
            "failed to create bridge \"{BRIDGE}\": \"{BRIDGE}\" already exists but is not a bridge"
        ),
        "{e}"
    );
    host.assert_clean(NET, &[&pod], "after the failed ADD");
    assert_eq!(
        link_kind(&host.ns.must_link(BRIDGE)),
        "ifb",
        "the existing link was touched"
    );
}

#[test]
fn mtu_out_of_range() {
    for mtu in [70000, 10] {
        bad_add(
            &format!("mtu {mtu}"),
            json!({"mtu": mtu, "ipam": host_local(&["10.1.2.0/24"])}),
            |e| assert_eq!(err_code(e), 7, "mtu {mtu}: {e}"),
        );
    }
}

#[test]
fn ifname_already_present_in_container() {
    let host = Host::new(&ours());
    let pod = Pod::new("dup");
    pod.ns.add_plain_link(&pod.ifname);
    let conf = host.conf(
        "1.0.0",
        json!({"isGateway": true, "ipMasq": true, "ipam": host_local(&["10.1.2.0/24"])}),
    );
    let e = host
        .add(&conf, &pod, &[])
        .expect_err("ifname already present");
    assert!(
        err_msg(&e).contains(&pod.ifname),
        "error should name the interface: {e}"
    );
    host.assert_clean(NET, &[&pod], "after the failed ADD");
    assert_eq!(
        link_kind(&pod.iface()),
        "ifb",
        "the pre-existing interface was replaced or removed"
    );
}

/// The container's addresses, link up and routes go to the kernel in one
/// batch: a route it refuses after the address is in place fails the ADD
/// with that route named, and the rollback leaves nothing.
#[test]
fn unreachable_route_gateway_fails_and_leaves_nothing() {
    let host = Host::new(&ours());
    let pod = Pod::new("unreach");
    let mut ipam = host_local(&["10.1.2.0/24"]);
    ipam["routes"] = json!([{"dst": "10.50.0.0/16", "gw": "192.0.2.1"}]);
    let conf = host.conf("1.0.0", json!({"isGateway": true, "ipam": ipam}));
    let e = host
        .add(&conf, &pod, &[])
        .expect_err("a gateway off the pod's subnet is unreachable");
    assert_eq!(err_code(&e), 999, "{e}");
    let msg = err_msg(&e);
    assert!(
        msg.starts_with("failed to add route '10.50.0.0/16 via 192.0.2.1 dev eth0': ")
            && msg.ends_with("network is unreachable"),
        "{e}"
    );
    host.assert_clean(NET, &[&pod], "after the failed ADD");
    assert!(
        pod.ns.link(&pod.ifname).is_none(),
        "container veth left behind"
    );
}

#[test]
fn netns_path_missing_on_add() {
    let host = Host::new(&ours());
    let pod = Pod::new("nopath");
    let missing = format!(
        "/run/netns/{NS_PREFIX}does-not-exist-{}",
        std::process::id()
    );
    let conf = host.conf(
        "1.0.0",
        json!({"isGateway": true, "ipMasq": true, "ipam": host_local(&["10.1.2.0/24"])}),
    );
    let out = host.cni("ADD", &conf, &pod.id, &pod.ifname, Some(&missing), &[]);
    let e = out.into_result().expect_err("ADD into a missing netns");
    assert!(
        err_msg(&e).contains(&missing),
        "error should name the path: {e}"
    );
    host.assert_clean(NET, &[&pod], "after the failed ADD");
}

#[test]
fn l2_legacy_version_conversion_error_leaves_nothing() {
    for v in ["0.1.0", "0.2.0"] {
        bad_add(
            &format!("L2 {v}"),
            json!({"cniVersion": v, "ipam": {}}),
            |e| {
                assert_eq!(err_msg(e), "cannot convert: no valid IP addresses", "{e}");
            },
        );
    }
}

// ---------------------------------------------------------------------------
// GC and STATUS (1.1.0)
// ---------------------------------------------------------------------------

#[test]
fn gc_removes_masq_state_and_reservations_of_stale_attachments() {
    for backend in ["iptables", "nftables"] {
        let host = Host::new(&ours());
        let conf = masq_conf(&host, "1.1.0", backend);
        let keep = Pod::new("keep");
        let stale = Pod::new("stale");
        let rk = host.must_add(&conf, &keep);
        let _rs = host.must_add(&conf, &stale);
        assert!(masq_state_present(&host, &keep, backend));
        assert!(masq_state_present(&host, &stale, backend));
        let keep_rules_iptables: Vec<String> = host
            .ns
            .cni_nat_rules()
            .into_iter()
            .filter(|r| r.contains(&masq_chain(NET, &keep.id)))
            .collect();
        let store = host.store(NET);
        assert_eq!(store.ip_names().len(), 4, "{backend}: 2 pods x 2 families");

        let gc_conf = with_attachments(&conf, VALID_ATTACHMENTS, &[(&keep.id, &keep.ifname)]);
        host.gc(&gc_conf)
            .unwrap_or_else(|e| panic!("{backend}: GC failed: {e}"));

        assert!(
            !masq_state_present(&host, &stale, backend),
            "{backend}: stale masquerade state survived GC"
        );
        let stale_chain = masq_chain(NET, &stale.id);
        assert!(
            !host
                .ns
                .cni_nat_rules()
                .iter()
                .any(|r| r.contains(&stale_chain)),
            "{backend}: stale iptables chain/rules survived GC"
        );
        assert!(
            masq_state_present(&host, &keep, backend),
            "{backend}: GC removed valid rules"
        );
        let keep_after: Vec<String> = host
            .ns
            .cni_nat_rules()
            .into_iter()
            .filter(|r| r.contains(&masq_chain(NET, &keep.id)))
            .collect();
        assert_eq!(
            keep_after, keep_rules_iptables,
            "{backend}: valid iptables state changed"
        );
        let left: Vec<String> = store.ips().iter().map(ToString::to_string).collect();
        let mut want: Vec<String> = keep
            .addrs()
            .iter()
            .map(|a| a.split('/').next().unwrap().to_string())
            .collect();
        want.sort();
        let mut left_sorted = left.clone();
        left_sorted.sort();
        assert_eq!(left_sorted, want, "{backend}: reservations after GC");
        // The valid pod is untouched and still passes CHECK.
        host.check(&with_prev(&conf, &rk), &keep, &[])
            .unwrap_or_else(|e| panic!("{backend}: CHECK of the kept pod after GC: {e}"));
        // GC with nothing valid removes the rest.
        let gc_all = with_attachments(&conf, VALID_ATTACHMENTS, &[]);
        host.gc(&gc_all).unwrap();
        assert!(!masq_state_present(&host, &keep, backend));
        assert!(
            store.ip_names().is_empty(),
            "{backend}: {:?}",
            store.ip_names()
        );
    }
}

#[test]
fn gc_keeps_every_interface_of_an_id_only_entry_and_refuses_an_entry_without_id() {
    for backend in ["iptables", "nftables"] {
        let host = Host::new(&ours());
        let conf = masq_conf(&host, "1.1.0", backend);
        let pod = Pod::new("idonly");
        host.must_add(&conf, &pod);
        let store = host.store(NET);
        let before = store.ip_names();
        let refused = with_key(
            &conf,
            VALID_ATTACHMENTS,
            json!([{"ifname": pod.ifname.as_str()}]),
        );
        let e = host
            .gc(&refused)
            .expect_err("GC with an entry without containerID");
        assert_eq!(err_code(&e), 7, "{backend}: {e}");
        assert!(masq_state_present(&host, &pod, backend), "{backend}");
        let id_only = with_key(
            &conf,
            VALID_ATTACHMENTS,
            json!([{"containerID": pod.id.as_str()}]),
        );
        host.gc(&id_only)
            .unwrap_or_else(|e| panic!("{backend}: GC failed: {e}"));
        assert!(
            masq_state_present(&host, &pod, backend),
            "{backend}: GC removed the masquerade of a container listed without ifname"
        );
        assert_eq!(store.ip_names(), before, "{backend}: reservations");
        host.gc(&with_attachments(&conf, VALID_ATTACHMENTS, &[]))
            .unwrap();
        assert!(!masq_state_present(&host, &pod, backend), "{backend}");
    }
}

#[test]
fn status_forwards_to_ipam() {
    let host = Host::new(&ours());
    // Healthy L3 and L2 configurations.
    let conf = host.conf(
        "1.1.0",
        json!({"isGateway": true, "ipam": host_local(&["10.50.0.0/24"])}),
    );
    host.status(&conf).unwrap_or_else(|e| panic!("STATUS: {e}"));
    host.status(&host.conf("1.1.0", json!({"ipam": {}})))
        .unwrap_or_else(|e| panic!("STATUS L2: {e}"));
    // Missing IPAM binary: the delegation error.
    let bad = with_key(&conf, "ipam", json!({"type": "nonexistent-ipam"}));
    let e = host.status(&bad).expect_err("STATUS with a missing IPAM");
    assert!(
        err_msg(&e).contains("failed to find plugin \"nonexistent-ipam\""),
        "{e}"
    );
    // Exhausted range: host-local's STATUS error (code 50) is passed through.
    let small = host.conf(
        "1.1.0",
        json!({"isGateway": true, "ipam": host_local(&["10.51.0.0/30"])}),
    );
    let pod = Pod::new("st");
    let r = host.must_add(&small, &pod);
    let e = host
        .status(&small)
        .expect_err("STATUS with an exhausted range");
    assert_eq!(err_code(&e), 50, "{e}");
    host.must_del(&with_prev(&small, &r), &pod);
    host.status(&small).unwrap();
}
