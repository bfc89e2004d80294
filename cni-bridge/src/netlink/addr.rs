//! Addresses: list, add, delete.

use super::{Netlink, Request, Result};
use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::IpAddr;

/// An address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrInfo {
    /// Address and prefix.
    pub net: IpNetwork,
    /// Scope is global (not link-local or host).
    pub global: bool,
    /// Still in duplicate address detection.
    pub tentative: bool,
    /// Duplicate address detection failed.
    pub dad_failed: bool,
}

fn family(v4: bool) -> AddressFamily {
    if v4 {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn addr_msg(index: u32, net: IpNetwork) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(net.is_ipv4());
    m.header.prefix_len = net.prefix();
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(net.ip()));
    m.attributes.push(AddressAttribute::Address(net.ip()));
    m
}

/// The request of [`Netlink::add_addr`], for a [`Netlink::batch`].
pub(crate) fn add_addr_request(index: u32, net: IpNetwork) -> Request {
    let mut m = addr_msg(index, net);
    if let IpNetwork::V4(v4) = net {
        if v4.prefix() < 31 {
            m.attributes
                .push(AddressAttribute::Broadcast(v4.broadcast()));
        }
    }
    Request {
        op: format!("add address {net} to {index}"),
        msg: RouteNetlinkMessage::NewAddress(m),
        flags: NLM_F_CREATE | NLM_F_EXCL,
    }
}

impl Netlink {
    /// `ip addr show dev <index>`, one family or both.
    ///
    /// # Errors
    /// The dump fails.
    pub fn addrs(&mut self, index: u32, v4: Option<bool>) -> Result<Vec<AddrInfo>> {
        let mut req = AddressMessage::default();
        req.header.index = index;
        if let Some(v4) = v4 {
            req.header.family = family(v4);
        }
        let replies = self.dump(
            || format!("list addresses of {index}"),
            RouteNetlinkMessage::GetAddress(req),
        )?;
        let mut out = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewAddress(m) = r else {
                continue;
            };
            if m.header.index != index {
                continue;
            }
            let mut ip: Option<IpAddr> = None;
            let mut flags = AddressFlags::empty();
            for a in &m.attributes {
                match a {
                    AddressAttribute::Local(x) => ip = Some(*x),
                    AddressAttribute::Address(x) if ip.is_none() => ip = Some(*x),
                    AddressAttribute::Flags(f) => flags = *f,
                    _ => {}
                }
            }
            let Some(ip) = ip else { continue };
            if v4.is_some_and(|v| v != ip.is_ipv4()) {
                continue;
            }
            let Ok(net) = IpNetwork::new(ip, m.header.prefix_len) else {
                continue;
            };
            out.push(AddrInfo {
                net,
                global: m.header.scope == AddressScope::Universe,
                tentative: flags.contains(AddressFlags::Tentative),
                dad_failed: flags.contains(AddressFlags::Dadfailed),
            });
        }
        Ok(out)
    }

    /// `ip addr add <net> [brd +] dev <index>`: an IPv4 address shorter than
    /// /31 gets its subnet's broadcast address, as the reference's netlink
    /// library sets it.
    ///
    /// # Errors
    /// The kernel refuses (`EEXIST` when present).
    pub fn add_addr(&mut self, index: u32, net: IpNetwork) -> Result<()> {
        self.run(add_addr_request(index, net))
    }

    /// `ip addr del <net> dev <index>`.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn del_addr(&mut self, index: u32, net: IpNetwork) -> Result<()> {
        self.ack(
            || format!("delete address {net} from {index}"),
            RouteNetlinkMessage::DelAddress(addr_msg(index, net)),
            0,
        )
    }
}
