//! The floor of `cni-bench bridge` (integration/src/bin/cni-bench/bridge/floor.rs): the kernel
//! work of one pod's ADD or DEL through this crate's own netlink and namespace code, with no
//! checks, no sysctls and no IPAM store. One process per call, built static as the plugins
//! are (scripts/bench builds it next to them).
//!
//! ```text
//! bridge-floor add NETNS HOST_VETH BRIDGE ADDRESS/PREFIX GATEWAY
//! bridge-floor del NETNS
//! ```
//! `add` (in the host netns): veth `HOST_VETH` with its peer created as `eth0` in NETNS, master
//! BRIDGE, up; then in NETNS: eth0 up, the address, the default route via GATEWAY. `del`: in
//! NETNS, deletes eth0 (its peer goes with it).

use std::net::IpAddr;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::ExitCode;

use cni_bridge::netlink::{Netlink, RouteSpec, VethSpec};
use cni_bridge::netns::NetNs;
use ipnetwork::IpNetwork;

const IFNAME: &str = "eth0";

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = match args.as_slice() {
        ["add", netns, veth, bridge, addr, gw] => add(netns, veth, bridge, addr, gw),
        ["del", netns] => del(netns),
        _ => Err(
            "usage: bridge-floor add NETNS HOST_VETH BRIDGE ADDRESS/PREFIX GATEWAY | \
                  bridge-floor del NETNS"
                .into(),
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bridge-floor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open(netns: &str) -> Res<(NetNs, NetNs)> {
    let home = NetNs::current().map_err(|e| e.to_string())?;
    let pod = NetNs::open(Path::new(netns)).map_err(|e| e.to_string())?;
    Ok((home, pod))
}

fn index(nl: &mut Netlink, name: &str) -> Res<u32> {
    nl.link_by_name(name)
        .map_err(|e| e.to_string())?
        .map(|l| l.index)
        .ok_or_else(|| format!("no link {name}"))
}

fn add(netns: &str, veth: &str, bridge: &str, addr: &str, gw: &str) -> Res<()> {
    let net: IpNetwork = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let gw: IpAddr = gw.parse().map_err(|e| format!("{gw}: {e}"))?;
    let default: IpNetwork = "0.0.0.0/0".parse().map_err(|e| format!("0.0.0.0/0: {e}"))?;
    let (home, pod) = open(netns)?;
    let mut nl = Netlink::open().map_err(|e| e.to_string())?;
    nl.create_veth(&VethSpec {
        host_name: veth,
        peer_name: IFNAME,
        peer_netns: pod.as_fd(),
        mtu: 0,
        peer_mac: None,
        master: None,
        up: false,
        single_queue: false,
    })
    .map_err(|e| e.to_string())?;
    let host = index(&mut nl, veth)?;
    let master = index(&mut nl, bridge)?;
    nl.set_master(host, master).map_err(|e| e.to_string())?;
    nl.set_up(host).map_err(|e| e.to_string())?;
    pod.run(&home, || -> Res<()> {
        let mut nl = Netlink::open().map_err(|e| e.to_string())?;
        let eth0 = index(&mut nl, IFNAME)?;
        nl.set_up(eth0).map_err(|e| e.to_string())?;
        nl.add_addr(eth0, net).map_err(|e| e.to_string())?;
        nl.add_route(&RouteSpec::new(default, Some(gw), eth0))
            .map_err(|e| e.to_string())
    })
    .map_err(|e| e.to_string())?
}

fn del(netns: &str) -> Res<()> {
    let (home, pod) = open(netns)?;
    pod.run(&home, || -> Res<()> {
        let mut nl = Netlink::open().map_err(|e| e.to_string())?;
        let eth0 = index(&mut nl, IFNAME)?;
        nl.del_link(eth0).map_err(|e| e.to_string())
    })
    .map_err(|e| e.to_string())?
}
