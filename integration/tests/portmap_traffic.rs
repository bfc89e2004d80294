//! Traffic through ports published by our `portmap`, chained after our
//! `bridge` + `host-local` as a conflist would run them (bridge ADD, then
//! portmap ADD with bridge's result as `prevResult`), all inside test
//! namespaces: a fake node, a pod on its bridge serving TCP and UDP
//! (`pm-echo`, which answers with the source address it saw), and a client
//! namespace linked to the node's uplink.
//!
//! * the published ports answer from the client (IPv4 and IPv6), from the
//!   node itself (its own address, and 127.0.0.1 via route_localnet and the
//!   masquerade mark) and from the pod itself (hairpin, masqueraded);
//! * after DEL the ports no longer answer and no attachment rule is left,
//!   also for a DEL without netns and without prevResult;
//! * GC removes only attachments missing from the valid list (including
//!   rules the reference made);
//! * a UDP flow that reached the node before ADD is sent to the pod after
//!   ADD (stale conntrack entries flushed).
//!
//! Run: `cargo build -p cni-portmap -p cni-bridge -p cni-host-local && cargo test -p integration --test portmap_traffic`

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use integration::netns::*;
use integration::portmap::*;
use serde_json::{json, Value};

const ECHO: &str = env!("CARGO_BIN_EXE_pm-echo");
const UP4: &str = "192.168.77.1";
const CLIENT4: &str = "192.168.77.2";
const UP6: &str = "fd77::1";
const CLIENT6: &str = "fd77::2";
const GW4: &str = "10.88.0.1";
const GW6: &str = "fd88::1";

/// A `pm-echo serve` process in a namespace, killed on drop.
struct Server(Child);

impl Server {
    fn start(ns: &Netns, port: u16, tag: &str) -> Server {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                ECHO,
                "serve",
                &port.to_string(),
                tag,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start pm-echo");
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One attempt: the reply, or None.
fn ask(ns: &Netns, proto: &str, addr: &str, port: u16, sport: Option<u16>) -> Option<String> {
    let p = port.to_string();
    let s = sport.map(|s| s.to_string());
    let mut args = vec![ECHO, "ask", proto, addr, &p];
    if let Some(s) = &s {
        args.push(s);
    }
    let out = ns.run(&args);
    out.status
        .success()
        .then(|| out.stdout_str().trim().to_string())
}

/// The reply within 10 s (the server or an IPv6 address may still be
/// starting), or a panic naming the path.
#[track_caller]
fn answer(ns: &Netns, proto: &str, addr: &str, port: u16) -> String {
    let mut got = None;
    eventually(Duration::from_secs(10), || {
        got = ask(ns, proto, addr, port, None);
        got.is_some()
    });
    got.unwrap_or_else(|| panic!("[{}] no {proto} answer from {addr} port {port}", ns.name()))
}

/// A node with our bridge network and a client namespace on its uplink.
struct Node {
    host: Host,
    client: Netns,
    bridge_conf: Value,
}

fn node() -> Node {
    let host = Host::new(&Impl::ours());
    let client = Netns::new("cli");
    veth_between(
        &host.ns,
        "up0",
        Some(&format!("{UP4}/24")),
        &client,
        "down0",
        Some(&format!("{CLIENT4}/24")),
    );
    host.ns
        .ip(&["addr", "add", &format!("{UP6}/64"), "dev", "up0", "nodad"]);
    client.ip(&[
        "addr",
        "add",
        &format!("{CLIENT6}/64"),
        "dev",
        "down0",
        "nodad",
    ]);
    let bridge_conf = host.conf(
        "1.0.0",
        json!({
            "isDefaultGateway": true,
            "hairpinMode": true,
            "ipam": host_local(&["10.88.0.0/24", "fd88::/64"]),
        }),
    );
    Node {
        host,
        client,
        bridge_conf,
    }
}

fn published() -> Value {
    json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 80, "protocol": "udp"}
    ])
}

impl Node {
    /// bridge ADD, then portmap ADD (by `pm`) with bridge's result; returns
    /// the portmap configuration with its prevResult.
    fn attach(&self, pod: &Pod, pm: &Portmap, mappings: Value) -> Value {
        self.attach_with(pod, pm, mappings, json!({}))
    }

    /// [`Node::attach`] with `extra` portmap settings.
    fn attach_with(&self, pod: &Pod, pm: &Portmap, mappings: Value, extra: Value) -> Value {
        let bres = self.host.must_add(&self.bridge_conf, pod);
        let mut conf = pm_conf("1.0.0", mappings, extra);
        conf["prevResult"] = bres.clone();
        let r = pm.must_add(&self.host.ns, &conf, &pod.id);
        assert_eq!(r, bres, "portmap must pass bridge's result through");
        conf
    }

    fn detach(&self, pod: &Pod, pm: &Portmap, conf: &Value) {
        pm.must_del(&self.host.ns, conf, &pod.id);
        let mut bconf = self.bridge_conf.clone();
        bconf["prevResult"] = conf["prevResult"].clone();
        self.host.must_del(&bconf, pod);
    }
}

#[test]
fn published_ports_reach_the_pod_from_everywhere() {
    let n = node();
    let pod = Pod::new("pmpod");
    let pm = Portmap::ours();
    let conf = n.attach(&pod, &pm, published());
    let _srv = Server::start(&pod.ns, 80, "pod");
    let pod4 = pod.addr(false);
    // The pod itself serves (sanity of the harness).
    assert_eq!(
        answer(&n.host.ns, "tcp", &pod4, 80),
        format!("pod tcp from {GW4}")
    );

    // From another namespace, through the node's address: no SNAT.
    for (proto, port) in [("tcp", 8080), ("udp", 5353)] {
        assert_eq!(
            answer(&n.client, proto, UP4, port),
            format!("pod {proto} from {CLIENT4}")
        );
        assert_eq!(
            answer(&n.client, proto, UP6, port),
            format!("pod {proto} from {CLIENT6}")
        );
    }
    // From the node itself: its own address, and localhost (IPv4 only, as
    // the reference), masqueraded to the bridge address.
    for (proto, port) in [("tcp", 8080), ("udp", 5353)] {
        let own = answer(&n.host.ns, proto, UP4, port);
        assert!(own.starts_with(&format!("pod {proto} from ")), "{own}");
        assert_eq!(
            answer(&n.host.ns, proto, "127.0.0.1", port),
            format!("pod {proto} from {GW4}")
        );
    }
    assert_eq!(
        n.host.ns.sysctl("net.ipv4.conf.cni0.route_localnet"),
        "1",
        "route_localnet on the bridge"
    );
    // Hairpin: the pod reaches itself through the node's address, and sees
    // the bridge address as source (without the mark its reply would skip
    // the reverse NAT).
    for (proto, port) in [("tcp", 8080), ("udp", 5353)] {
        assert_eq!(
            answer(&pod.ns, proto, UP4, port),
            format!("pod {proto} from {GW4}")
        );
        assert_eq!(
            answer(&pod.ns, proto, UP6, port),
            format!("pod {proto} from {GW6}")
        );
    }
    // An unpublished port is not forwarded.
    assert_eq!(ask(&n.client, "tcp", UP4, 8081, None), None);

    n.detach(&pod, &pm, &conf);
    assert_eq!(attachment_state(&n.host.ns), Vec::<String>::new());
    assert_eq!(
        ask(&n.client, "tcp", UP4, 8080, None),
        None,
        "tcp after DEL"
    );
    assert_eq!(
        ask(&n.client, "udp", UP4, 5353, None),
        None,
        "udp after DEL"
    );
}

#[test]
fn del_without_netns_or_prev_result_cleans_up() {
    let n = node();
    let mut pod = Pod::new("pmgone");
    let pm = Portmap::ours();
    let conf = n.attach(&pod, &pm, published());
    let _srv = Server::start(&pod.ns, 80, "pod");
    assert_eq!(
        answer(&n.client, "tcp", UP4, 8080),
        format!("pod tcp from {CLIENT4}")
    );
    assert!(!attachment_state(&n.host.ns).is_empty());
    pod.ns.delete();
    // The runtime lost everything but the network config and the IDs.
    let bare = json!({"cniVersion": "1.0.0", "name": PM_NET, "type": "portmap"});
    pm.del(&n.host.ns, &bare, &pod.id, None)
        .unwrap_or_else(|e| panic!("DEL without netns/prevResult/runtimeConfig: {e}"));
    assert_eq!(attachment_state(&n.host.ns), Vec::<String>::new());
    let _ = conf;
    n.host
        .del(&n.bridge_conf, &pod, &[])
        .unwrap_or_else(|e| panic!("bridge DEL: {e}"));
    assert_eq!(ask(&n.client, "tcp", UP4, 8080, None), None);
}

#[test]
fn gc_removes_only_stale_attachments() {
    let n = node();
    let keep = Pod::new("pmkeep");
    let stale = Pod::new("pmstale");
    let conf_keep = n.attach(&keep, &Portmap::ours(), published());
    // The stale attachment's rules are the reference's.
    let conf_stale = n.attach(
        &stale,
        &Portmap::reference(),
        json!([{"hostPort": 9090, "containerPort": 80, "protocol": "tcp"}]),
    );
    let _a = Server::start(&keep.ns, 80, "keep");
    let _b = Server::start(&stale.ns, 80, "stale");
    assert_eq!(
        answer(&n.client, "tcp", UP4, 9090),
        format!("stale tcp from {CLIENT4}")
    );

    let mut gc = json!({"cniVersion": "1.1.0", "name": PM_NET, "type": "portmap"});
    // No ifname: every attachment of the container is kept.
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep.id}]);
    Portmap::ours().gc(&n.host.ns, &gc).expect("GC");
    let left = attachment_state(&n.host.ns);
    let stale_chain = {
        let h = sha512_hex(&format!("{PM_NET}{}", stale.id));
        format!("CNI-DN-{}", &h[..21])
    };
    assert!(!left.is_empty(), "kept attachment removed");
    assert!(left.iter().all(|l| !l.contains(&stale_chain)), "{left:#?}");
    assert_eq!(
        answer(&n.client, "tcp", UP4, 8080),
        format!("keep tcp from {CLIENT4}")
    );
    assert_eq!(
        ask(&n.client, "tcp", UP4, 9090, None),
        None,
        "stale port still forwarded"
    );

    // Another network's GC leaves ours alone.
    let mut other = gc.clone();
    other["name"] = json!("othernet");
    other["cni.dev/valid-attachments"] = json!([]);
    Portmap::ours()
        .gc(&n.host.ns, &other)
        .expect("GC of another network");
    assert_eq!(attachment_state(&n.host.ns), left);

    gc["cni.dev/valid-attachments"] = json!([{"containerID": "someone-else", "ifname": "eth0"}]);
    Portmap::ours().gc(&n.host.ns, &gc).expect("GC");
    assert_eq!(attachment_state(&n.host.ns), Vec::<String>::new());
    n.detach(&keep, &Portmap::ours(), &conf_keep);
    n.detach(&stale, &Portmap::ours(), &conf_stale);
}

#[test]
fn stale_udp_conntrack_entries_are_flushed_on_add() {
    let n = node();
    let pod = Pod::new("pmudp");
    // A real node already has stateful rules (kube-proxy, a firewall's
    // ESTABLISHED accept), which is what turns connection tracking on in
    // its namespace.
    n.host.ns.accept_established("iptables");
    // A UDP flow to the node's port before the port is published: the node
    // has no listener, and conntrack remembers the flow untranslated.
    for _ in 0..2 {
        assert_eq!(ask(&n.client, "udp", UP4, 5353, Some(40000)), None);
    }
    let listed = n
        .host
        .ns
        .sh(&["conntrack", "-L", "-p", "udp", "--orig-port-dst", "5353"]);
    assert!(
        listed.contains("sport=40000"),
        "no conntrack entry to flush: {listed}"
    );
    let pm = Portmap::ours();
    let conf = n.attach(&pod, &pm, published());
    let _srv = Server::start(&pod.ns, 80, "pod");
    // The same flow (same source port, within the UDP timeout) now reaches
    // the pod: the untranslated entry is gone.
    let mut got = None;
    eventually(Duration::from_secs(10), || {
        got = ask(&n.client, "udp", UP4, 5353, Some(40000));
        got.is_some()
    });
    assert_eq!(got, Some(format!("pod udp from {CLIENT4}")));
    n.detach(&pod, &pm, &conf);
}

/// nft rules (family, chain, rule text) of table `cni_hostport` commented
/// with `id`.
fn nft_rules_of(host: &Netns, id: &str) -> Vec<String> {
    host.nft()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["table"] == "cni_hostport" && r["comment"] == id)
        .map(|r| format!("{} {} {}", r["family"], r["chain"], r["expr"]))
        .collect()
}

#[test]
fn the_nftables_backend_forwards_and_cleans_up() {
    let n = node();
    let pod = Pod::new("pmnft");
    let pm = Portmap::ours();
    let conf = n.attach_with(&pod, &pm, published(), json!({"backend": "nftables"}));
    let _srv = Server::start(&pod.ns, 80, "pod");
    // Nothing in iptables: the rules are nft's.
    assert_eq!(attachment_state(&n.host.ns), Vec::<String>::new());
    let rules = nft_rules_of(&n.host.ns, &pod.id);
    // v4: 2 DNAT + hairpin + localhost; v6: 2 DNAT + hairpin.
    assert_eq!(rules.len(), 7, "{rules:#?}");
    for (proto, port) in [("tcp", 8080), ("udp", 5353)] {
        assert_eq!(
            answer(&n.client, proto, UP4, port),
            format!("pod {proto} from {CLIENT4}")
        );
        assert_eq!(
            answer(&n.client, proto, UP6, port),
            format!("pod {proto} from {CLIENT6}")
        );
        assert_eq!(
            answer(&n.host.ns, proto, "127.0.0.1", port),
            format!("pod {proto} from {GW4}")
        );
        assert_eq!(
            answer(&pod.ns, proto, UP4, port),
            format!("pod {proto} from {GW4}")
        );
        assert_eq!(
            answer(&pod.ns, proto, UP6, port),
            format!("pod {proto} from {GW6}")
        );
    }
    pm.check(&n.host.ns, &conf, &pod.id).expect("CHECK");
    // A second ADD replaces the rules instead of adding copies.
    pm.must_add(&n.host.ns, &conf, &pod.id);
    assert_eq!(nft_rules_of(&n.host.ns, &pod.id).len(), 7);
    // DEL with only the backend and the IDs.
    let bare =
        json!({"cniVersion": "1.0.0", "name": PM_NET, "type": "portmap", "backend": "nftables"});
    pm.del(&n.host.ns, &bare, &pod.id, None).expect("DEL");
    assert_eq!(nft_rules_of(&n.host.ns, &pod.id), Vec::<String>::new());
    let e = pm
        .check(&n.host.ns, &conf, &pod.id)
        .expect_err("CHECK after DEL");
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("missing hostport rules in \"hostports\" chain"),
        "{e}"
    );
    assert_eq!(
        ask(&n.client, "tcp", UP4, 8080, None),
        None,
        "tcp after DEL"
    );
    let mut bconf = n.bridge_conf.clone();
    bconf["prevResult"] = conf["prevResult"].clone();
    n.host.must_del(&bconf, &pod);
}
