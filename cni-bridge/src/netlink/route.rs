//! Routes: add and list.

use super::{Netlink, Request, Result};
use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::IpAddr;

/// A route to install or found installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination.
    pub dst: IpNetwork,
    /// Next hop.
    pub gw: Option<IpAddr>,
    /// Output interface.
    pub oif: u32,
    /// Metric.
    pub priority: Option<u32>,
    /// Table (main when unset).
    pub table: Option<u32>,
    /// Scope (universe, or link for a route without a gateway).
    pub scope: Option<u8>,
    /// MTU metric.
    pub mtu: Option<u32>,
    /// Advertised MSS metric.
    pub advmss: Option<u32>,
}

impl RouteSpec {
    /// A route to `dst` via `gw` out of `oif`.
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>, oif: u32) -> Self {
        RouteSpec {
            dst,
            gw,
            oif,
            priority: None,
            table: None,
            scope: None,
            mtu: None,
            advmss: None,
        }
    }
}

/// The request of [`Netlink::add_route`], for a [`Netlink::batch`].
pub(crate) fn add_route_request(r: &RouteSpec) -> Request {
    let v4 = r.dst.is_ipv4();
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: if v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        },
        destination_prefix_length: r.dst.prefix(),
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::Boot,
        scope: match r.scope {
            Some(s) => RouteScope::from(s),
            None if r.gw.is_none() => RouteScope::Link,
            None => RouteScope::Universe,
        },
        kind: RouteType::Unicast,
        ..m.header
    };
    if r.dst.prefix() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                r.dst.network(),
            )));
    }
    if let Some(gw) = r.gw {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    m.attributes.push(RouteAttribute::Oif(r.oif));
    if let Some(p) = r.priority {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    if let Some(t) = r.table {
        m.attributes.push(RouteAttribute::Table(t));
    }
    let mut metrics = Vec::new();
    if let Some(v) = r.mtu {
        metrics.push(RouteMetric::Mtu(v));
    }
    if let Some(v) = r.advmss {
        metrics.push(RouteMetric::Advmss(v));
    }
    if !metrics.is_empty() {
        m.attributes.push(RouteAttribute::Metrics(metrics));
    }
    Request {
        op: match r.gw {
            Some(gw) => format!("add route {} via {gw} dev {}", r.dst, r.oif),
            None => format!("add route {} dev {}", r.dst, r.oif),
        },
        msg: RouteNetlinkMessage::NewRoute(m),
        flags: NLM_F_CREATE | NLM_F_APPEND,
    }
}

impl Netlink {
    /// `ip route append <dst> [via <gw>] dev <oif> ...` (appending, so
    /// equal-cost routes coexist as the reference's do).
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn add_route(&mut self, r: &RouteSpec) -> Result<()> {
        self.run(add_route_request(r))
    }

    /// Routes of one family in the main table.
    ///
    /// # Errors
    /// The dump fails.
    pub fn routes(&mut self, v4: bool) -> Result<Vec<RouteSpec>> {
        let mut req = RouteMessage::default();
        req.header.address_family = if v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let replies = self.dump(|| "list routes".into(), RouteNetlinkMessage::GetRoute(req))?;
        let mut out = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewRoute(m) = r else {
                continue;
            };
            if m.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let mut dst: Option<IpAddr> = None;
            let mut spec = RouteSpec::new(
                IpNetwork::new(
                    if v4 {
                        IpAddr::from([0, 0, 0, 0])
                    } else {
                        IpAddr::from([0u16; 8])
                    },
                    0,
                )
                .map_err(|e| super::NetlinkError::Decode(e.to_string()))?,
                None,
                0,
            );
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(x)) => dst = Some((*x).into()),
                    RouteAttribute::Destination(RouteAddress::Inet6(x)) => dst = Some((*x).into()),
                    RouteAttribute::Gateway(RouteAddress::Inet(x)) => spec.gw = Some((*x).into()),
                    RouteAttribute::Gateway(RouteAddress::Inet6(x)) => spec.gw = Some((*x).into()),
                    RouteAttribute::Oif(o) => spec.oif = *o,
                    RouteAttribute::Priority(p) => spec.priority = Some(*p),
                    _ => {}
                }
            }
            if let Some(d) = dst {
                if let Ok(n) = IpNetwork::new(d, m.header.destination_prefix_length) {
                    spec.dst = n;
                }
            }
            out.push(spec);
        }
        Ok(out)
    }
}
