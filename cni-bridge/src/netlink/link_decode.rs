//! Decoding of `RTM_NEWLINK` messages (the kernel's answer to a link query),
//! reading only the attributes [`Link`] keeps.
//!
//! A full `LinkMessage` parse decodes every attribute the kernel sends (stats,
//! per-family settings, some fifty bridge options) and formats a debug dump of
//! the bridge options once per option while doing so: about a third of a
//! millisecond per bridge lookup, most of an ADD's user time. Walking the
//! attributes and picking ours costs microseconds.

use super::link::Link;
use super::NetlinkError;
use netlink_packet_core::{NetlinkBuffer, NlaBuffer, NlasIterator};

// From linux/if_link.h and linux/rtnetlink.h.
const RTM_NEWLINK: u16 = 16;
/// `sizeof(struct ifinfomsg)`.
const IFINFOMSG_LEN: usize = 16;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_PROMISCUITY: u16 = 30;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFLA_INFO_SLAVE_DATA: u16 = 5;
const IFLA_BR_VLAN_FILTERING: u16 = 7;
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_BRPORT_ISOLATED: u16 = 33;
const IF_OPER_UP: u8 = 6;
const IFF_UP: u32 = 1;

fn bad(what: &str) -> NetlinkError {
    NetlinkError::Decode(format!("link message: {what}"))
}

/// The attributes in `buf`: (type without flags, value).
fn attrs(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), NetlinkError>> {
    NlasIterator::new(buf).map(|a| {
        let a: NlaBuffer<&[u8]> = a.map_err(|e| NetlinkError::Decode(e.to_string()))?;
        // Checked by the iterator: 4 <= length <= the buffer's length.
        let len = usize::from(a.length());
        let kind = a.kind();
        Ok((kind, &a.into_inner()[4..len]))
    })
}

fn u32_of(v: &[u8]) -> Result<u32, NetlinkError> {
    let b: [u8; 4] = v
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("short u32 attribute"))?;
    Ok(u32::from_ne_bytes(b))
}

fn u8_of(v: &[u8]) -> Result<u8, NetlinkError> {
    v.first().copied().ok_or_else(|| bad("empty u8 attribute"))
}

fn string_of(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// The first `u8` attribute of kind `kind` in `nested`, as a flag.
fn flag_in(nested: &[u8], kind: u16) -> Result<Option<bool>, NetlinkError> {
    for a in attrs(nested) {
        let (k, v) = a?;
        if k == kind {
            return Ok(Some(u8_of(v)? != 0));
        }
    }
    Ok(None)
}

/// Reads `IFLA_LINKINFO` into `l`.
fn link_info(l: &mut Link, nested: &[u8]) -> Result<(), NetlinkError> {
    let (mut data, mut slave_kind, mut slave_data) = (None, None, None);
    for a in attrs(nested) {
        let (kind, v) = a?;
        match kind {
            IFLA_INFO_KIND => l.kind = Some(string_of(v)),
            IFLA_INFO_DATA => data = Some(v),
            IFLA_INFO_SLAVE_KIND => slave_kind = Some(string_of(v)),
            IFLA_INFO_SLAVE_DATA => slave_data = Some(v),
            _ => {}
        }
    }
    if let (Some("bridge"), Some(d)) = (l.kind.as_deref(), data) {
        l.vlan_filtering = flag_in(d, IFLA_BR_VLAN_FILTERING)?;
    }
    if let (Some("bridge"), Some(d)) = (slave_kind.as_deref(), slave_data) {
        l.hairpin = flag_in(d, IFLA_BRPORT_MODE)?;
        l.isolated = flag_in(d, IFLA_BRPORT_ISOLATED)?;
    }
    Ok(())
}

/// Decodes the payload of an `RTM_NEWLINK` message (an `ifinfomsg` and its
/// attributes).
///
/// # Errors
/// A truncated or malformed message.
pub(super) fn decode(payload: &[u8]) -> Result<Link, NetlinkError> {
    let header = payload
        .get(..IFINFOMSG_LEN)
        .ok_or_else(|| bad("shorter than ifinfomsg"))?;
    let index = u32_of(&header[4..8])?;
    let flags = u32_of(&header[8..12])?;
    let mut l = Link {
        index,
        up: flags & IFF_UP != 0,
        ..Link::default()
    };
    for a in attrs(&payload[IFINFOMSG_LEN..]) {
        let (kind, v) = a?;
        match kind {
            IFLA_ADDRESS => l.mac = v.to_vec(),
            IFLA_IFNAME => l.name = string_of(v),
            IFLA_MTU => l.mtu = u32_of(v)?,
            IFLA_LINK => l.peer_index = Some(u32_of(v)?),
            IFLA_MASTER => l.master = Some(u32_of(v)?),
            IFLA_OPERSTATE => l.oper_up = u8_of(v)? == IF_OPER_UP,
            IFLA_PROMISCUITY => l.promiscuity = u32_of(v)?,
            IFLA_LINKINFO => link_info(&mut l, v)?,
            _ => {}
        }
    }
    Ok(l)
}

/// The links among whole netlink messages (the `RTM_NEWLINK` ones), decoded.
pub(super) fn links(replies: &[Vec<u8>]) -> impl Iterator<Item = Result<Link, NetlinkError>> + '_ {
    replies.iter().filter_map(|r| {
        let m = NetlinkBuffer::new(r.as_slice());
        (m.message_type() == RTM_NEWLINK).then(|| decode(m.payload()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;
    use netlink_packet_route::link::{
        InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, LinkAttribute,
        LinkFlags, LinkInfo, LinkMessage, State,
    };

    fn bytes(m: &LinkMessage) -> Vec<u8> {
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        buf
    }

    #[test]
    fn reads_a_bridge_port() {
        let mut m = LinkMessage::default();
        m.header.index = 7;
        m.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        m.attributes = vec![
            LinkAttribute::IfName("veth0123abcd".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 9]),
            LinkAttribute::Mtu(1400),
            LinkAttribute::Link(3),
            LinkAttribute::Controller(2),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::Promiscuity(1),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![
                    InfoBridgePort::HairpinMode(true),
                    InfoBridgePort::Isolated(false),
                ])),
            ]),
        ];
        let l = decode(&bytes(&m)).expect("decodes");
        assert_eq!(
            l,
            Link {
                index: 7,
                name: "veth0123abcd".into(),
                kind: Some("veth".into()),
                mac: vec![2, 0, 0, 0, 0, 9],
                mtu: 1400,
                master: Some(2),
                promiscuity: 1,
                up: true,
                oper_up: true,
                peer_index: Some(3),
                vlan_filtering: None,
                hairpin: Some(true),
                isolated: Some(false),
            }
        );
    }

    #[test]
    fn reads_a_bridge_down() {
        let mut m = LinkMessage::default();
        m.header.index = 2;
        m.attributes = vec![
            LinkAttribute::IfName("cni0".into()),
            LinkAttribute::OperState(State::Down),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Bridge),
                LinkInfo::Data(InfoData::Bridge(vec![
                    InfoBridge::StpState(0),
                    InfoBridge::VlanFiltering(true),
                ])),
            ]),
        ];
        let l = decode(&bytes(&m)).expect("decodes");
        assert_eq!(l.kind.as_deref(), Some("bridge"));
        assert_eq!(l.vlan_filtering, Some(true));
        assert!(!l.up && !l.oper_up);
        assert_eq!(l.hairpin, None);
    }

    #[test]
    fn refuses_truncated_input() {
        let mut m = LinkMessage::default();
        m.attributes = vec![LinkAttribute::IfName("eth0".into())];
        let b = bytes(&m);
        assert!(decode(&b[..10]).is_err());
        // "eth0\0" is 9 bytes with its header, then 3 of padding.
        assert!(decode(&b[..b.len() - 4]).is_err());
        let mut short_mtu = bytes(&LinkMessage::default());
        short_mtu.extend_from_slice(&[6, 0, 4, 0, 1, 2, 0, 0]);
        assert!(decode(&short_mtu).is_err());
    }
}
