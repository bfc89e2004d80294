#![allow(clippy::unwrap_used)]
//! The bridge plugin at the edges: namespaces that are gone, of the wrong
//! kind or the plugin's own; the bridge's identity and addresses read back
//! from the kernel beside the reference's; spoof-check GC across networks.

use integration::netns::*;
use integration::{err_code, err_msg, with_attachments, with_key, VALID_ATTACHMENTS};
use serde_json::{json, Value};
use std::process::Command;

fn masq_conf(host: &Host) -> Value {
    host.conf(
        "1.1.0",
        json!({"isGateway": true, "ipMasq": true,
            "ipam": host_local(&["10.40.0.0/24", "fd40::/64"])}),
    )
}

// ---------------------------------------------------------------------------
// CNI_NETNS edge cases
// ---------------------------------------------------------------------------

#[test]
fn del_succeeds_when_the_netns_was_unmounted_and_its_file_left() {
    let host = Host::new(&Impl::ours());
    let conf = masq_conf(&host);
    let mut pod = Pod::new("unmounted");
    let r = host.must_add(&conf, &pod);
    assert_eq!(host.store(NET).ip_names().len(), 2);
    // What a crash or reboot leaves: the bind mount is gone, the file stays.
    let path = pod.ns.path();
    let st = Command::new("umount").arg(&path).status().unwrap();
    assert!(st.success(), "umount {path}");
    assert!(std::path::Path::new(&path).is_file());
    host.del(&with_prev(&conf, &r), &pod, &[])
        .unwrap_or_else(|e| panic!("DEL with a plain-file CNI_NETNS: {e}"));
    pod.ns.delete();
    host.ns.wait_no_veths(std::time::Duration::from_secs(5));
    host.assert_clean(NET, &[&pod], "after DEL");
}

#[test]
fn a_namespace_of_another_kind_is_refused_with_code_4() {
    let host = Host::new(&Impl::ours());
    let conf = masq_conf(&host);
    let pod = Pod::new("mntns");
    let out = host.cni(
        "ADD",
        &conf,
        &pod.id,
        &pod.ifname,
        Some("/proc/self/ns/mnt"),
        &[],
    );
    let e = out.into_result().expect_err("ADD into a mount namespace");
    assert_eq!(err_code(&e), 4, "{e}");
    assert_eq!(
        err_msg(&e),
        "\"/proc/self/ns/mnt\" is a mnt namespace, not a network namespace"
    );
    assert!(host.ns.link(BRIDGE).is_none(), "the bridge was created");
    host.assert_clean(NET, &[&pod], "after the refused ADD");
}

#[test]
fn the_plugins_own_namespace_is_refused_and_nothing_is_created() {
    let host = Host::new(&Impl::ours());
    let conf = masq_conf(&host);
    let pod = Pod::new("hostns");
    let own = host.ns.path();
    let before = host.ns.link_names();
    for cmd in ["ADD", "CHECK", "DEL"] {
        let out = host.cni(cmd, &conf, &pod.id, &pod.ifname, Some(&own), &[]);
        let e = out.into_result().expect_err(cmd);
        assert_eq!(err_code(&e), 4, "{cmd}: {e}");
        assert_eq!(
            err_msg(&e),
            format!(
                "{own:?} is the plugin's own network namespace, not a container's: \
                 refusing to touch it"
            ),
            "{cmd}"
        );
        assert_eq!(host.ns.link_names(), before, "{cmd} changed the links");
        assert!(host.ns.routes(false).iter().all(|r| r["dst"] != "default"));
        host.assert_clean(NET, &[&pod], cmd);
    }
}

// ---------------------------------------------------------------------------
// Kernel state beside the reference's
// ---------------------------------------------------------------------------

/// The bridge and pod state after one ADD by `imp`: (operstate, bridge ID
/// is set, bridge broadcast, pod broadcast).
fn bridge_identity(imp: &Impl) -> (String, bool, Value, Value) {
    let host = Host::new(imp);
    let pod = Pod::new("ident");
    let conf = host.conf(
        "1.0.0",
        json!({"isGateway": true, "ipam": host_local(&["10.41.0.0/24"])}),
    );
    let r = host.must_add(&conf, &pod);
    // Read once linkwatch caught up (the operstate is asserted exactly).
    let br = host
        .ns
        .link_when_operstate(BRIDGE, "UP", std::time::Duration::from_secs(5));
    let id = br["linkinfo"]["info_data"]["bridge_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let brd = |ns: &Netns, dev: &str| {
        ns.addr_info(dev)
            .into_iter()
            .find(|a| a["family"] == "inet")
            .map(|a| a["broadcast"].clone())
            .unwrap_or(Value::Null)
    };
    let out = (
        br["operstate"].as_str().unwrap_or_default().to_string(),
        !id.is_empty() && id != "8000.0:0:0:0:0:0",
        brd(&host.ns, BRIDGE),
        brd(&pod.ns, &pod.ifname),
    );
    host.must_del(&with_prev(&conf, &r), &pod);
    out
}

#[test]
fn bridge_id_operstate_and_broadcast_match_the_reference() {
    let ours = bridge_identity(&Impl::ours());
    let reference = bridge_identity(&Impl::reference());
    assert_eq!(
        ours,
        (
            "UP".to_string(),
            true,
            json!("10.41.0.255"),
            json!("10.41.0.255")
        ),
        "ours (reference: {reference:?})"
    );
    assert_eq!(ours, reference);
}

#[test]
fn the_bridge_mac_stays_pinned_across_pods() {
    let host = Host::new(&Impl::ours());
    let conf = host.conf(
        "1.0.0",
        json!({"isGateway": true, "ipam": host_local(&["10.42.0.0/24"])}),
    );
    let a = Pod::new("maca");
    let ra = host.must_add(&conf, &a);
    let mac = host.ns.must_link(BRIDGE)["address"].clone();
    let b = Pod::new("macb");
    let rb = host.must_add(&conf, &b);
    host.must_del(&with_prev(&conf, &ra), &a);
    assert_eq!(host.ns.must_link(BRIDGE)["address"], mac);
    host.must_del(&with_prev(&conf, &rb), &b);
    assert_eq!(host.ns.must_link(BRIDGE)["address"], mac);
}

// ---------------------------------------------------------------------------
// Spoof-check GC
// ---------------------------------------------------------------------------

fn spoof_conf(host: &Host, name: &str, bridge: &str, subnet: &str) -> Value {
    let mut c = host.conf(
        "1.1.0",
        json!({"macspoofchk": true, "isGateway": true, "bridge": bridge,
            "ipam": host_local(&[subnet])}),
    );
    c["name"] = json!(name);
    c
}

fn chains_of(host: &Host, pod: &Pod) -> usize {
    let needle = format!("{}-{}", pod.id, pod.ifname);
    host.ns
        .spoofchk_objects()
        .iter()
        .filter(|o| o.contains(&needle))
        .count()
}

#[test]
fn gc_collects_spoof_check_chains_of_this_network_only() {
    let host = Host::new(&Impl::ours());
    let mine = spoof_conf(&host, NET, BRIDGE, "10.43.0.0/24");
    let other = spoof_conf(&host, "othernet", "cni1", "10.44.0.0/24");
    let stale = Pod::new("stale");
    let kept = Pod::new("kept");
    let foreign = Pod::new("foreign");
    host.must_add(&mine, &stale);
    host.must_add(&mine, &kept);
    host.must_add(&other, &foreign);
    for p in [&stale, &kept, &foreign] {
        assert_eq!(chains_of(&host, p), 6, "{}: two chains, four rules", p.id);
    }
    // An entry without ifname keeps its container.
    let gc = with_key(
        &mine,
        VALID_ATTACHMENTS,
        json!([{"containerID": kept.id.as_str()}]),
    );
    host.gc(&gc).unwrap_or_else(|e| panic!("GC: {e}"));
    assert_eq!(
        chains_of(&host, &stale),
        0,
        "{:?}",
        host.ns.spoofchk_objects()
    );
    assert_eq!(chains_of(&host, &kept), 6);
    assert_eq!(chains_of(&host, &foreign), 6, "another network's chains");
    host.gc(&with_attachments(&mine, VALID_ATTACHMENTS, &[]))
        .unwrap();
    assert_eq!(chains_of(&host, &kept), 0);
    assert_eq!(chains_of(&host, &foreign), 6);
    host.gc(&with_attachments(&other, VALID_ATTACHMENTS, &[]))
        .unwrap();
    assert_eq!(host.ns.spoofchk_objects(), Vec::<String>::new());
}
