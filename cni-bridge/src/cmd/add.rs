//! ADD, and its rollback.

use crate::config::{self, BridgeConf, MasqBackend};
use crate::error::BridgeError;
use crate::masq;
use crate::netlink::{
    add_addr_request, add_route_request, set_up_request, Link, Netlink, NetlinkError,
    Request as NlRequest, RouteSpec, VethSpec,
};
use crate::netns::NetNs;
use crate::spoofcheck;
use crate::sysctl;
use cni_spec::env::Command;
use cni_spec::{delegate, CniResult, Interface, Request, Route};
use ipnetwork::IpNetwork;
use nix::errno::Errno;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{nl, Result};

/// `veth` + 8 random hex digits, like the reference's host-side names.
fn random_veth_name() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("veth{:08x}", h.finish() as u32)
}

/// A random unicast, locally administered MAC.
fn random_mac() -> [u8; 6] {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let b = h.finish().to_le_bytes();
    [(b[0] & 0xfe) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// Creates or reuses the bridge and returns it, up, and whether it was
/// created here.
fn ensure_bridge(host: &mut Netlink, conf: &BridgeConf) -> Result<(Link, bool)> {
    let name = &conf.bridge;
    let fail = |m: String| BridgeError::Other(format!("failed to create bridge {name:?}: {m}"));
    let vlan_filtering = conf.vlan != 0 || !conf.vlan_trunk.is_empty();
    let (br, created) = match host.link_by_name(name).map_err(nl("look up bridge"))? {
        Some(br) => (br, false),
        None => {
            // A stable MAC from the start: otherwise the bridge's follows
            // the lowest port MAC and changes as pods come and go (cni#285,
            // plugins#60).
            host.create_bridge(name, conf.mtu, vlan_filtering, random_mac())
                .map_err(|e| fail(e.to_string()))?;
            let br = host
                .link_by_name(name)
                .map_err(nl("look up bridge"))?
                .ok_or_else(|| fail("vanished after creation".into()))?;
            (br, true)
        }
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(fail(format!("{name:?} already exists but is not a bridge")));
    }
    if conf.promisc {
        host.set_promisc(br.index)
            .map_err(|e| fail(e.to_string()))?;
    }
    let _ = sysctl::write(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
    if !br.up {
        host.set_up(br.index).map_err(|e| fail(e.to_string()))?;
    }
    Ok((br, created))
}

/// The bridge as ADD found it.
#[derive(Debug)]
struct Bridge {
    link: Link,
    /// Created by this ADD, with a pinned MAC.
    created: bool,
}

/// What ADD has done so far, undone in reverse on failure.
#[derive(Debug, Default)]
struct Undo {
    host_veth: Option<String>,
    ipam: bool,
    spoof: bool,
    masq: bool,
}

/// ADD.
///
/// # Errors
/// Configuration, namespace, kernel, IPAM or firewall failures; nothing
/// created by this ADD is left behind.
pub fn add(req: &Request) -> Result<CniResult> {
    let conf = config::load(req)?;
    let home = NetNs::current()?;
    // The namespace is vetted before anything is created on the node.
    let ctr_ns = NetNs::open_container(Path::new(&req.netns), &home)?;
    let mut host = Netlink::open().map_err(nl("open netlink"))?;
    let (br, br_created) = ensure_bridge(&mut host, &conf)?;
    let host_name = create_veth(req, &conf, &home, &mut host, &ctr_ns, &br)?;
    let mut undo = Undo {
        host_veth: Some(host_name.clone()),
        ..Undo::default()
    };
    let bridge = Bridge {
        link: br,
        created: br_created,
    };
    let attached = add_attached(
        req, &conf, &home, &mut host, &ctr_ns, bridge, host_name, &mut undo,
    )
    // A result the requested version cannot express (0.2.0 without an
    // address) fails here, while we can still undo; the reference leaves
    // the veth behind.
    .and_then(|r| match r.encode(req.version) {
        Ok(_) => Ok(r),
        Err(e) => Err(BridgeError::Other(e.msg)),
    });
    match attached {
        Ok(r) => Ok(r),
        Err(e) => {
            rollback(req, &conf, &mut host, &undo);
            Err(e)
        }
    }
}

/// Creates the veth in one request: the host side up and enslaved to the
/// bridge, the peer directly in the container namespace under its final
/// name. Returns the host side's name.
fn create_veth(
    req: &Request,
    conf: &BridgeConf,
    home: &NetNs,
    host: &mut Netlink,
    ctr_ns: &NetNs,
    br: &Link,
) -> Result<String> {
    let mut host_name = random_veth_name();
    let mut attempts = 0;
    loop {
        let spec = VethSpec {
            host_name: &host_name,
            peer_name: &req.ifname,
            peer_netns: std::os::fd::AsFd::as_fd(ctr_ns),
            mtu: conf.mtu,
            peer_mac: conf.mac.map(|m| m.to_vec()),
            master: Some(br.index),
            up: true,
            single_queue: true,
        };
        match host.create_veth(&spec) {
            Ok(()) => return Ok(host_name),
            Err(e) if e.errno() == Some(Errno::EEXIST) => {
                // Either name may be taken: the container's is an error, the
                // host side's (random) gets another try.
                let mut ctr = ctr_ns
                    .run(home, Netlink::open)?
                    .map_err(nl("open netlink in the container namespace"))?;
                if ctr
                    .link_by_name(&req.ifname)
                    .map_err(nl("look up the container interface"))?
                    .is_some()
                {
                    return Err(BridgeError::Other(format!(
                        "container veth name provided ({}) already exists",
                        req.ifname
                    )));
                }
                if attempts == 10 {
                    return Err(BridgeError::Other(format!("failed to create veth: {e}")));
                }
                attempts += 1;
                host_name = random_veth_name();
            }
            Err(e) => {
                return Err(BridgeError::Other(format!(
                    "failed to create veth or to connect it to bridge {}: {e}",
                    conf.bridge
                )))
            }
        }
    }
}

fn rollback(req: &Request, conf: &BridgeConf, host: &mut Netlink, undo: &Undo) {
    if undo.masq {
        let _ = masq::iptables_teardown(&req.name, &req.container_id);
        let _ = masq::nft_teardown(&req.name, &req.ifname, &req.container_id);
    }
    if undo.spoof {
        let _ = spoofcheck::teardown(&req.container_id, &req.ifname);
    }
    if undo.ipam {
        if let Some(t) = &conf.ipam_type {
            let _ = delegate::call(t, Command::Del, req);
        }
    }
    if let Some(name) = &undo.host_veth {
        // Deleting one end removes the pair.
        let _ = host.del_link_by_name(name);
    }
}

#[allow(clippy::too_many_arguments)]
fn add_attached(
    req: &Request,
    conf: &BridgeConf,
    home: &NetNs,
    host: &mut Netlink,
    ctr_ns: &NetNs,
    bridge: Bridge,
    host_name: String,
    undo: &mut Undo,
) -> Result<CniResult> {
    let br = bridge.link;
    let _ = sysctl::write(&format!("net/ipv6/conf/{host_name}/accept_ra"), "0");
    // Hairpin and isolation off are the kernel's defaults for a new port.
    if conf.hairpin || conf.port_isolation || conf.vlan != 0 || !conf.vlan_trunk.is_empty() {
        let hv = host
            .link_by_name(&host_name)
            .map_err(nl("look up the host veth"))?
            .ok_or_else(|| BridgeError::Other(format!("host veth {host_name} vanished")))?;
        host.set_port_flags(hv.index, conf.hairpin, conf.port_isolation.then_some(true))
            .map_err(nl(format!("failed to set port flags of {host_name}")))?;
        setup_vlans(host, conf, hv.index)?;
    }

    // One visit to the container namespace: its socket, and the interface's
    // sysctls that do not depend on the addresses (the reference writes them
    // before addressing it, and only with IPAM).
    let mut ctr = ctr_ns
        .run(home, || {
            if conf.ipam_type.is_some() {
                interface_sysctls(conf, &req.ifname);
            }
            Netlink::open()
        })?
        .map_err(nl("open netlink in the container namespace"))?;
    let ci = ctr
        .link_by_name(&req.ifname)
        .map_err(nl("look up the container interface"))?
        .ok_or_else(|| {
            BridgeError::Other(format!("container interface {} vanished", req.ifname))
        })?;
    let mut result = CniResult {
        interfaces: vec![
            Interface {
                name: conf.bridge.clone(),
                mac: br.mac_text(),
                ..Interface::default()
            },
            Interface {
                name: host_name.clone(),
                ..Interface::default()
            },
            Interface {
                name: req.ifname.clone(),
                mac: ci.mac_text(),
                sandbox: req.netns.clone(),
                ..Interface::default()
            },
        ],
        ..CniResult::default()
    };
    if conf.mac_spoof_check {
        undo.spoof = true;
        let att = spoofcheck::Attachment {
            network: &req.name,
            container_id: &req.container_id,
            ifname: &req.ifname,
        };
        spoofcheck::setup(att, &host_name, &ci.mac_text()).map_err(BridgeError::Other)?;
    }

    let mut ipam_dns = None;
    if let Some(ipam_type) = &conf.ipam_type {
        let (ipam, _) = delegate::add(ipam_type, req).map_err(BridgeError::Delegate)?;
        undo.ipam = true;
        if ipam.ips.is_empty() {
            return Err(BridgeError::Other(
                "IPAM plugin returned missing IP config".into(),
            ));
        }
        ipam_dns = Some(ipam.dns.clone());
        result.ips = ipam.ips;
        result.routes = ipam.routes;
        let gateways = calc_gateways(conf, &mut result);
        configure_container(conf, req, home, ctr_ns, &mut ctr, ci.index, &result)?;
        if conf.is_gateway {
            // With a VLAN the gateway lives on `<bridge>.<vlan>`, shared by
            // every pod of that VLAN (and, like the bridge, never removed).
            let gw_link = if conf.vlan != 0 {
                let l = ensure_vlan_interface(host, home, &br, conf)?;
                result.interfaces.push(Interface {
                    name: l.name.clone(),
                    mac: l.mac_text(),
                    ..Interface::default()
                });
                l
            } else {
                br.clone()
            };
            for gw in &gateways {
                ensure_addr(host, &gw_link, *gw, conf.force_address)?;
            }
            if gateways.iter().any(IpNetwork::is_ipv4) {
                sysctl::ensure("net/ipv4/ip_forward", "1")
                    .map_err(|e| BridgeError::Other(format!("failed to enable forwarding: {e}")))?;
            }
            if gateways.iter().any(IpNetwork::is_ipv6) {
                sysctl::ensure("net/ipv6/conf/all/forwarding", "1")
                    .map_err(|e| BridgeError::Other(format!("failed to enable forwarding: {e}")))?;
            }
        }
        if conf.ip_masq {
            undo.masq = true;
            let ips: Vec<IpNetwork> = result.ips.iter().map(|i| i.address).collect();
            setup_masq(conf, req, &ips)?;
        }
    } else if !conf.disable_container_interface {
        ctr.set_up(ci.index)
            .map_err(nl(format!("failed to set {:?} up", req.ifname)))?;
    }

    // The host veth's MAC is read last: it may change when it is enslaved
    // (plugins#805).
    let hv = if conf.disable_container_interface {
        host.link_by_name(&host_name)
            .map_err(nl("look up the host veth"))?
            .ok_or_else(|| BridgeError::Other(format!("host veth {host_name} vanished")))?
    } else {
        wait_port_forwarding(host, &host_name)?
    };
    result.interfaces[1].mac = hv.mac_text();
    // The bridge's MAC may have changed since it was read: unless pinned
    // (created here, or by any gateway ADD), it follows its lowest port
    // MAC, which is ours when ours is lower or its first one (a bridge with
    // no port up has no carrier).
    if !bridge.created && (!br.oper_up || hv.mac < br.mac) {
        if let Some(l) = host
            .link_by_index(br.index)
            .map_err(nl("look up the bridge"))?
        {
            result.interfaces[0].mac = l.mac_text();
        }
    }
    // HEAD semantics: the IPAM's DNS unless the configuration sets one.
    result.dns = if !conf.dns.is_empty() {
        conf.dns.clone()
    } else {
        ipam_dns.unwrap_or_default()
    };
    Ok(result)
}

fn setup_masq(conf: &BridgeConf, req: &Request, ips: &[IpNetwork]) -> Result<()> {
    let backend = conf.ip_masq_backend.unwrap_or_else(|| {
        if crate::tools::find("iptables-restore").is_none() && crate::tools::find("nft").is_some() {
            MasqBackend::Nftables
        } else {
            MasqBackend::Iptables
        }
    });
    match backend {
        MasqBackend::Iptables => masq::iptables_setup(&req.name, &req.container_id, ips),
        MasqBackend::Nftables => masq::nft_setup(&req.name, &req.ifname, &req.container_id, ips),
    }
    .map_err(|e| BridgeError::Other(format!("failed to set up IP masquerade: {e}")))
}

fn setup_vlans(host: &mut Netlink, conf: &BridgeConf, port: u32) -> Result<()> {
    if conf.vlan == 0 && conf.vlan_trunk.is_empty() {
        return Ok(());
    }
    let fail =
        |m: String| BridgeError::Other(format!("failed to setup vlan tag on interface: {m}"));
    if !conf.preserve_default_vlan {
        host.del_port_vlan(port, 1)
            .map_err(|e| fail(e.to_string()))?;
    }
    if conf.vlan != 0 {
        host.add_port_vlan(port, conf.vlan, true)
            .map_err(|e| fail(e.to_string()))?;
    }
    for v in &conf.vlan_trunk {
        host.add_port_vlan(port, *v, false)
            .map_err(|e| fail(e.to_string()))?;
    }
    if conf.vlan == 0 && conf.preserve_default_vlan {
        host.add_port_vlan(port, 1, true)
            .map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}

/// Fills `interface` and missing gateways, adds default routes for
/// `isDefaultGateway`, and returns the gateway addresses for the bridge.
fn calc_gateways(conf: &BridgeConf, result: &mut CniResult) -> Vec<IpNetwork> {
    let mut gateways = Vec::new();
    let mut defaulted: HashSet<bool> = HashSet::new();
    for i in 0..result.ips.len() {
        let ip = &mut result.ips[i];
        ip.interface = Some(2);
        let v4 = ip.address.is_ipv4();
        if ip.gateway.is_none() && conf.is_gateway {
            let net = crate::range_first(ip.address);
            ip.gateway = Some(net);
        }
        let Some(gw) = ip.gateway else { continue };
        if conf.is_default_gateway && !defaulted.contains(&v4) {
            defaulted.insert(v4);
            let is_default = |r: &Route| r.dst.prefix() == 0 && r.dst.is_ipv4() == v4;
            if !result
                .routes
                .iter()
                .any(|r| is_default(r) && r.gw.is_some())
            {
                // An IPAM default route without a gateway takes ours
                // instead of becoming a second, conflicting default route
                // (the reference fails with "file exists" there).
                match result.routes.iter_mut().find(|r| is_default(r)) {
                    Some(r) => r.gw = Some(gw),
                    None => {
                        let any = if v4 {
                            IpNetwork::new(IpAddr::from([0, 0, 0, 0]), 0)
                        } else {
                            IpNetwork::new(IpAddr::from([0u16; 8]), 0)
                        };
                        if let Ok(dst) = any {
                            result.routes.push(Route::new(dst, Some(gw)));
                        }
                    }
                }
            }
        }
        if conf.is_gateway {
            if let Ok(n) = IpNetwork::new(gw, ip.address.prefix()) {
                gateways.push(n);
            }
        }
    }
    gateways
}

/// Addresses, sysctls, link up and routes inside the container.
fn configure_container(
    conf: &BridgeConf,
    req: &Request,
    home: &NetNs,
    ctr_ns: &NetNs,
    ctr: &mut Netlink,
    index: u32,
    result: &CniResult,
) -> Result<()> {
    let ifname = &req.ifname;
    let has_v6 = result.ips.iter().any(|i| i.address.is_ipv6());
    if has_v6 {
        ctr_ns.run(home, || {
            for dev in ["lo", ifname.as_str()] {
                let _ = sysctl::ensure(&format!("net/ipv6/conf/{dev}/disable_ipv6"), "0");
            }
            let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/keep_addr_on_down"), "1");
        })?;
    }
    // Addresses, then up, in one batch: after a failure the rest does no
    // harm, as the rollback deletes the interface.
    let mut batch: Vec<NlRequest> = result
        .ips
        .iter()
        .map(|ip| {
            add_addr_request(index, ip.address).context(&format!(
                "failed to add IP addr {} to {ifname:?}",
                ip.address
            ))
        })
        .collect();
    batch.push(set_up_request(index).context(&format!("failed to set {ifname:?} up")));
    if conf.enable_dad && has_v6 {
        run_batch(ctr, batch)?;
        settle_addresses(ctr, index, ifname)?;
        batch = Vec::new();
    }
    let gw_of = |v4: bool| {
        result
            .ips
            .iter()
            .find(|i| i.address.is_ipv4() == v4)
            .and_then(|i| i.gateway)
    };
    for r in &result.routes {
        let gw = r.gw.or_else(|| gw_of(r.dst.is_ipv4()));
        let mut spec = RouteSpec::new(r.dst, gw, index);
        spec.priority = r.priority.and_then(|v| u32::try_from(v).ok());
        spec.table = r.table.and_then(|v| u32::try_from(v).ok());
        spec.scope = r.scope.and_then(|v| u8::try_from(v).ok());
        spec.mtu = r.mtu.and_then(|v| u32::try_from(v).ok());
        spec.advmss = r.advmss.and_then(|v| u32::try_from(v).ok());
        let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
        batch.push(add_route_request(&spec).context(&format!(
            "failed to add route '{}{via} dev {ifname}'",
            r.dst
        )));
    }
    run_batch(ctr, batch)
}

/// Runs a batch whose requests carry their context.
fn run_batch(ctr: &mut Netlink, batch: Vec<NlRequest>) -> Result<()> {
    ctr.batch(batch).map_err(|e| match e {
        e @ NetlinkError::Kernel { .. } => BridgeError::Other(e.to_string()),
        e => BridgeError::netlink("configure the container interface")(e),
    })
}

/// The container interface's sysctls that do not depend on its addresses,
/// written from inside its namespace.
fn interface_sysctls(conf: &BridgeConf, ifname: &str) {
    let v6 = format!("net/ipv6/conf/{ifname}");
    if conf.enable_dad {
        let _ = sysctl::write(&format!("{v6}/enhanced_dad"), "1");
        let _ = sysctl::write(&format!("{v6}/accept_dad"), "1");
    } else {
        let _ = sysctl::write(&format!("{v6}/accept_dad"), "0");
    }
    let _ = sysctl::write(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
}

/// Waits (5 s at most) until no IPv6 address is tentative; fails on a
/// duplicate address.
fn settle_addresses(ctr: &mut Netlink, index: u32, ifname: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let addrs = ctr
            .addrs(index, Some(false))
            .map_err(nl("list container addresses"))?;
        if let Some(a) = addrs.iter().find(|a| a.dad_failed) {
            return Err(BridgeError::Other(format!(
                "{ifname}: duplicate address detection failed for {}",
                a.net
            )));
        }
        if !addrs.iter().any(|a| a.tentative) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BridgeError::Other(format!(
                "{ifname}: addresses still tentative after 5s"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the host port is operationally up (the bridge forwards on
/// it only then; plugins#468), polling briefly rather than sleeping.
/// Returns the port as last read.
fn wait_port_forwarding(host: &mut Netlink, name: &str) -> Result<Link> {
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut pause = Duration::from_millis(1);
    loop {
        let l = host
            .link_by_name(name)
            .map_err(nl("look up the host veth"))?;
        match l {
            Some(l) if l.oper_up => return Ok(l),
            _ if Instant::now() >= deadline => {
                return Err(BridgeError::Other(format!(
                    "bridge port in error state: {}",
                    if l.is_some() { "down" } else { "gone" }
                )))
            }
            _ => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The gateway interface of a VLAN: `<bridge>.<vlan>`, one end of a veth
/// pair in the host whose other end is an untagged port of that VLAN.
fn ensure_vlan_interface(
    host: &mut Netlink,
    home: &NetNs,
    br: &Link,
    conf: &BridgeConf,
) -> Result<Link> {
    let name = format!("{}.{}", conf.bridge, conf.vlan);
    let fail = |m: String| BridgeError::Other(format!("failed to create vlan interface: {m}"));
    if host
        .link_by_name(&name)
        .map_err(nl("look up the vlan interface"))?
        .is_none()
    {
        let peer = random_veth_name();
        host.create_veth(&VethSpec {
            host_name: &name,
            peer_name: &peer,
            peer_netns: std::os::fd::AsFd::as_fd(home),
            mtu: conf.mtu,
            peer_mac: None,
            master: None,
            up: false,
            single_queue: false,
        })
        .map_err(|e| fail(e.to_string()))?;
        let p = host
            .link_by_name(&peer)
            .map_err(nl("look up the vlan interface peer"))?
            .ok_or_else(|| fail(format!("{peer} vanished")))?;
        let setup = |host: &mut Netlink| -> Result<()> {
            host.set_up(p.index).map_err(|e| fail(e.to_string()))?;
            host.set_master(p.index, br.index)
                .map_err(|e| fail(e.to_string()))?;
            if !conf.preserve_default_vlan {
                host.del_port_vlan(p.index, 1)
                    .map_err(|e| fail(e.to_string()))?;
            }
            host.add_port_vlan(p.index, conf.vlan, true)
                .map_err(|e| fail(e.to_string()))
        };
        if let Err(e) = setup(host) {
            let _ = host.del_link(p.index);
            return Err(e);
        }
    }
    let l = host
        .link_by_name(&name)
        .map_err(nl("look up the vlan interface"))?
        .ok_or_else(|| fail(format!("{name} vanished")))?;
    if !l.up {
        host.set_up(l.index).map_err(|e| fail(e.to_string()))?;
    }
    Ok(l)
}

/// Puts a gateway address on the bridge (section 3.3 of our notes).
fn ensure_addr(host: &mut Netlink, br: &Link, gw: IpNetwork, force: bool) -> Result<()> {
    let name = &br.name;
    let fail = |m: String| BridgeError::Other(format!("failed to set bridge addr: {m}"));
    let existing = host
        .addrs(br.index, Some(gw.is_ipv4()))
        .map_err(|e| fail(format!("could not get list of IP addresses: {e}")))?;
    if existing
        .iter()
        .any(|a| a.net.ip() == gw.ip() && a.net.prefix() == gw.prefix())
    {
        return Ok(());
    }
    for a in &existing {
        let conflicts = gw.is_ipv4()
            || (a.global && (a.net.contains(gw.network()) || gw.contains(a.net.network())));
        if !conflicts {
            continue;
        }
        if !force {
            return Err(fail(format!(
                "{name:?} already has an IP address different from {gw}"
            )));
        }
        host.del_addr(br.index, a.net)
            .map_err(|e| fail(format!("could not remove IP address from {name:?}: {e}")))?;
    }
    match host.add_addr(br.index, gw) {
        Err(e) if e.errno() != Some(Errno::EEXIST) => {
            return Err(fail(format!(
                "could not add IP address {gw} to {name:?}: {e}"
            )))
        }
        _ => {}
    }
    // Pin the bridge MAC so it stops following the lowest port's (cni#285).
    if let Some(cur) = host
        .link_by_index(br.index)
        .map_err(nl("look up the bridge"))?
    {
        host.set_mac(br.index, &cur.mac)
            .map_err(|e| fail(format!("could not set bridge's mac: {e}")))?;
    }
    Ok(())
}
