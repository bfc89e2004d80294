#![allow(clippy::unwrap_used)]
//! Traffic through bridges set up by our plugin, all inside test namespaces.
//!
//! Reachability is probed with a TCP connection attempt to port 9 from bash's
//! `/dev/tcp` (a RST for the closed port proves the packet got there and the
//! reply came back): the machine has no `ping`, and this needs nothing but
//! bash and coreutils.
//!
//! * two pods on one bridge reach each other and the gateway (v4 and v6);
//! * with ipMasq (iptables and nftables backends) a pod reaches an "outside
//!   host" (a namespace linked to the fake host, without a route back to the
//!   pod subnet) and the outside host sees the fake host's address as source;
//!   without ipMasq the same pod cannot get replies;
//! * three nodes (each a fake host with our bridge + host-local, own
//!   10.244.N.0/24) joined through a "switch" namespace with host-gw routes:
//!   a pod on node 1 reaches pods on nodes 2 and 3.
//!
//! Run: `cargo build --workspace --bins && cargo test -p integration --test bridge_traffic`

use integration::netns::*;
use serde_json::json;

#[test]
fn pods_on_one_bridge_reach_each_other_and_the_gateway() {
    let host = Host::new(&Impl::ours());
    let conf = host.conf(
        "1.0.0",
        json!({"isDefaultGateway": true, "ipam": host_local(&["10.80.0.0/24", "fd80::/64"])}),
    );
    let a = Pod::new("pa");
    let b = Pod::new("pb");
    let ra = host.must_add(&conf, &a);
    let rb = host.must_add(&conf, &b);
    let (a4, b4) = (a.addr(false), b.addr(false));
    let (a6, b6) = (a.addr(true), b.addr(true));
    a.ns.assert_reaches(&b4);
    b.ns.assert_reaches(&a4);
    a.ns.assert_reaches("10.80.0.1");
    a.ns.assert_reaches(&b6);
    b.ns.assert_reaches(&a6);
    // The v6 gateway may still be doing DAD on the bridge: reach retries.
    a.ns.assert_reaches("fd80::1");
    // The fake host reaches the pods through the bridge.
    host.ns.assert_reaches(&a4);
    // Once b is deleted, a no longer reaches its address.
    host.must_del(&with_prev(&conf, &rb), &b);
    a.ns.assert_unreachable(&b4);
    host.must_del(&with_prev(&conf, &ra), &a);
}

/// A fake host with an uplink to an "outside host" namespace that has no
/// route back to the pod subnets. The outside host counts incoming probes by
/// source address.
struct Outside {
    ns: Netns,
}

const HOST_UP: &str = "192.168.100.1";
const OUTSIDE: &str = "192.168.100.2";

fn outside_of(host: &Host) -> Outside {
    let ns = Netns::new("out");
    veth_between(
        &host.ns,
        "up0",
        Some(&format!("{HOST_UP}/24")),
        &ns,
        "down0",
        Some(&format!("{OUTSIDE}/24")),
    );
    Outside { ns }
}

impl Outside {
    fn count_from(&self, src: &str) {
        self.ns.sh(&[
            "iptables", "-w", "-A", "INPUT", "-s", src, "-p", "tcp", "--dport", "9",
        ]);
    }

    fn packets_from(&self, src_cidr: &str) -> u64 {
        iptables_counter(&self.ns, &format!("-A INPUT -s {src_cidr} "))
    }
}

fn masquerade_to_outside(backend: &str) {
    let host = Host::new(&Impl::ours());
    let out = outside_of(&host);
    out.count_from(HOST_UP);
    out.count_from("10.81.0.0/24");
    out.count_from("10.82.0.0/24");

    let masq = host.conf(
        "1.0.0",
        json!({"isDefaultGateway": true, "ipMasq": true, "ipMasqBackend": backend,
            "ipam": host_local(&["10.81.0.0/24"])}),
    );
    let pod = Pod::new("m");
    let res = host.must_add(&masq, &pod);
    pod.ns.assert_reaches(OUTSIDE);
    assert!(
        out.packets_from(&format!("{HOST_UP}/32")) > 0,
        "{backend}: the outside host never saw the fake host's address"
    );
    assert_eq!(
        out.packets_from("10.81.0.0/24"),
        0,
        "{backend}: the pod address leaked to the outside (not masqueraded)"
    );

    // Control: a network on another bridge, without ipMasq. The SYN gets out
    // with the pod's own address and no reply can come back.
    let mut plain = host.conf(
        "1.0.0",
        json!({"bridge": "cni1", "isDefaultGateway": true, "ipam": host_local(&["10.82.0.0/24"])}),
    );
    plain["name"] = json!("plainnet");
    let pod2 = Pod::new("p");
    let res2 = host.must_add(&plain, &pod2);
    pod2.ns.assert_unreachable(OUTSIDE);
    assert!(
        out.packets_from("10.82.0.0/24") > 0,
        "{backend}: the unmasqueraded probe did not reach the outside host"
    );

    // After DEL of the masqueraded pod its rules are gone.
    host.must_del(&with_prev(&masq, &res), &pod);
    host.must_del(&with_prev(&plain, &res2), &pod2);
    host.assert_clean(NET, &[&pod], &format!("{backend}: after DEL"));
}

#[test]
fn masquerade_iptables_reaches_outside_host() {
    masquerade_to_outside("iptables");
}

#[test]
fn masquerade_nftables_reaches_outside_host() {
    masquerade_to_outside("nftables");
}

#[test]
fn three_nodes_host_gw_pod_to_pod() {
    let switch = Netns::new("sw");
    switch.ip(&["link", "add", "sw", "type", "bridge"]);
    switch.ip(&["link", "set", "sw", "up"]);
    let imp = Impl::ours();
    let nodes: Vec<Host> = (1..=3).map(|_| Host::new(&imp)).collect();
    for (i, node) in nodes.iter().enumerate() {
        let n = i + 1;
        let port = format!("p{n}");
        veth_between(
            &node.ns,
            "uplink",
            Some(&format!("172.30.0.{n}/24")),
            &switch,
            &port,
            None,
        );
        switch.ip(&["link", "set", &port, "master", "sw"]);
        for m in (1..=3).filter(|m| *m != n) {
            node.ns.ip(&[
                "route",
                "add",
                &format!("10.244.{m}.0/24"),
                "via",
                &format!("172.30.0.{m}"),
            ]);
        }
    }
    let mut pods = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let n = i + 1;
        let conf = node.conf(
            "1.0.0",
            json!({"isDefaultGateway": true, "ipam": host_local(&[&format!("10.244.{n}.0/24")])}),
        );
        let pod = Pod::new(&format!("n{n}"));
        let res = node.must_add(&conf, &pod);
        assert_eq!(pod.addr(false), format!("10.244.{n}.2"));
        pods.push((pod, conf, res));
    }
    let p1 = &pods[0].0;
    p1.ns.assert_reaches("10.244.3.2");
    p1.ns.assert_reaches("10.244.2.2");
    pods[2].0.ns.assert_reaches("10.244.1.2");
    for ((pod, conf, res), node) in pods.iter().zip(&nodes) {
        node.must_del(&with_prev(conf, res), pod);
    }
    p1.ns.assert_unreachable("10.244.3.2");
}
