//! ctnetlink messages (netlink protocol `NETLINK_NETFILTER`, subsystem
//! `NFNL_SUBSYS_CTNETLINK`), pure: building the dump and delete requests,
//! and reading the kernel's replies out of a received datagram. No socket
//! here; see the parent module.
//!
//! Layout (all integers of the netlink and attribute headers in host byte
//! order, conntrack values in network byte order):
//! `nlmsghdr` (16 bytes) · `nfgenmsg` (family, version 0, resource id 0)
//! · attributes (`nla_len`, `nla_type`, payload padded to 4 bytes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `NFNL_SUBSYS_CTNETLINK`: the conntrack table.
const SUBSYS_CTNETLINK: u16 = 1;
/// `IPCTNL_MSG_CT_NEW`: how the kernel labels each dumped entry.
const MSG_CT_NEW: u16 = 0;
/// `IPCTNL_MSG_CT_GET`.
const MSG_CT_GET: u16 = 1;
/// `IPCTNL_MSG_CT_DELETE`.
const MSG_CT_DELETE: u16 = 2;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;

const NLMSG_HDR: usize = 16;
const NFGEN_HDR: usize = 4;
const NLA_HDR: usize = 4;
/// `NLA_TYPE_MASK`: strips `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;

// enum ctattr_type
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
// enum ctattr_tuple
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
// enum ctattr_ip
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
// enum ctattr_l4proto
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// `AF_INET`.
pub const AF_INET: u8 = 2;
/// `AF_INET6`.
pub const AF_INET6: u8 = 10;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn msg_type(op: u16) -> u16 {
    (SUBSYS_CTNETLINK << 8) | op
}

/// A request: netlink header and `nfgenmsg`, the length filled in by
/// [`finish`].
fn request(op: u16, flags: u16, seq: u32, family: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&msg_type(op).to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, 0, 0, 0]);
    m
}

fn finish(mut m: Vec<u8>) -> Vec<u8> {
    let len = u32::try_from(m.len()).unwrap_or(u32::MAX);
    m[..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// `IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`: every entry of one family.
pub fn dump_request(seq: u32, family: u8) -> Vec<u8> {
    finish(request(MSG_CT_GET, NLM_F_DUMP, seq, family))
}

/// `IPCTNL_MSG_CT_DELETE` of one dumped entry, acknowledged: its original
/// tuple as the kernel gave it, and its zone and id when it had them (the
/// id makes the kernel delete only the entry we saw, not a newer one with
/// the same tuple).
pub fn delete_request(seq: u32, entry: &Entry<'_>) -> Vec<u8> {
    let mut m = request(MSG_CT_DELETE, NLM_F_ACK, seq, entry.family);
    for attr in [Some(entry.orig_attr), entry.zone_attr, entry.id_attr]
        .into_iter()
        .flatten()
    {
        m.extend_from_slice(attr);
        m.resize(align(m.len()), 0);
    }
    finish(m)
}

/// One conntrack entry of a dump, borrowed from the received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The message's family (`AF_INET`, `AF_INET6`).
    pub family: u8,
    /// The original direction's tuple.
    pub orig: Tuple,
    /// The kernel's id of the entry (`CTA_ID`), if given.
    pub id: Option<u32>,
    /// Its zone (`CTA_ZONE`), if given.
    pub zone: Option<u16>,
    /// The raw `CTA_TUPLE_ORIG` attribute, header included.
    orig_attr: &'a [u8],
    zone_attr: Option<&'a [u8]>,
    id_attr: Option<&'a [u8]>,
}

/// A connection's tuple in one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuple {
    /// Source address.
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// IP protocol number.
    pub proto: Option<u8>,
    /// Source port (TCP, UDP, SCTP, …).
    pub src_port: Option<u16>,
    /// Destination port.
    pub dst_port: Option<u16>,
}

impl Entry<'_> {
    /// Whether this is a UDP entry of `family` whose original destination
    /// port is one of `ports`. The family is checked on the addresses too,
    /// so a kernel that ignored the dump's family cannot mislead us.
    pub fn is_udp_to(&self, family: u8, ports: &[u16]) -> bool {
        let addr_family = match self.orig.dst {
            Some(IpAddr::V4(_)) => AF_INET,
            Some(IpAddr::V6(_)) => AF_INET6,
            None => return false,
        };
        self.family == family
            && addr_family == family
            && self.orig.proto == Some(IPPROTO_UDP)
            && self.orig.dst_port.is_some_and(|p| ports.contains(&p))
    }
}

/// One netlink message of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// A conntrack entry (of a dump).
    Entry(Entry<'a>),
    /// The end of a dump; a nonzero errno if the dump failed.
    Done(i32),
    /// An acknowledgement (errno 0) or an error (positive errno).
    Ack(i32),
    /// Anything else (ignored).
    Other,
}

/// A reply with its header's sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The request it answers.
    pub seq: u32,
    /// What it says.
    pub reply: Reply<'a>,
}

/// A malformed reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed ctnetlink reply: {0}")]
pub struct Malformed(pub &'static str);

/// The netlink messages of one received datagram, in order.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

/// Iterates over the messages in `datagram`.
pub fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages { rest: datagram }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = next_message(self.rest);
        match r {
            Ok((msg, used)) => {
                self.rest = self.rest.get(used..).unwrap_or_default();
                Some(Ok(msg))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

fn u16_ne(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn i32_ne(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The first message of `buf` and how many bytes it takes (padding
/// included).
fn next_message(buf: &[u8]) -> Result<(Message<'_>, usize), Malformed> {
    let len = u32_ne(buf, 0).ok_or(Malformed("short netlink header"))? as usize;
    if len < NLMSG_HDR || len > buf.len() {
        return Err(Malformed("bad netlink message length"));
    }
    let ty = u16_ne(buf, 4).ok_or(Malformed("short netlink header"))?;
    let seq = u32_ne(buf, 8).ok_or(Malformed("short netlink header"))?;
    let body = &buf[NLMSG_HDR..len];
    let reply = match ty {
        // An errno, negated, then the request's header.
        NLMSG_ERROR => Reply::Ack(-i32_ne(body, 0).ok_or(Malformed("short error message"))?),
        // Dumps end with an int: 0, or a negated errno.
        NLMSG_DONE => Reply::Done(-i32_ne(body, 0).unwrap_or(0)),
        t if t == msg_type(MSG_CT_NEW) => Reply::Entry(entry(body)?),
        _ => Reply::Other,
    };
    Ok((Message { seq, reply }, align(len).min(buf.len())))
}

/// The attributes of `buf` as (type without flags, payload, whole
/// attribute).
fn attrs(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8], &[u8]), Malformed>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLA_HDR {
            return None;
        }
        let len = u16_ne(rest, 0).map(usize::from)?;
        if len < NLA_HDR || len > rest.len() {
            rest = &[];
            return Some(Err(Malformed("bad attribute length")));
        }
        let ty = u16_ne(rest, 2).unwrap_or(0) & NLA_TYPE_MASK;
        let whole = &rest[..len];
        rest = rest.get(align(len)..).unwrap_or_default();
        Some(Ok((ty, &whole[NLA_HDR..], whole)))
    })
}

fn entry(body: &[u8]) -> Result<Entry<'_>, Malformed> {
    let family = *body.first().ok_or(Malformed("short nfgenmsg"))?;
    let rest = body.get(NFGEN_HDR..).ok_or(Malformed("short nfgenmsg"))?;
    let mut orig = None;
    let mut zone = None;
    let mut id = None;
    for a in attrs(rest) {
        let (ty, payload, whole) = a?;
        match ty {
            CTA_TUPLE_ORIG => orig = Some((tuple(payload)?, whole)),
            CTA_ZONE => zone = Some((be16(payload)?, whole)),
            CTA_ID => {
                let v: [u8; 4] = payload.try_into().map_err(|_| Malformed("bad CTA_ID"))?;
                id = Some((u32::from_be_bytes(v), whole));
            }
            _ => {}
        }
    }
    let (orig, orig_attr) = orig.ok_or(Malformed("entry without original tuple"))?;
    Ok(Entry {
        family,
        orig,
        id: id.map(|(v, _)| v),
        zone: zone.map(|(v, _)| v),
        orig_attr,
        zone_attr: zone.map(|(_, a)| a),
        id_attr: id.map(|(_, a)| a),
    })
}

fn be16(payload: &[u8]) -> Result<u16, Malformed> {
    let v: [u8; 2] = payload
        .get(..2)
        .and_then(|s| s.try_into().ok())
        .ok_or(Malformed("short 16-bit attribute"))?;
    Ok(u16::from_be_bytes(v))
}

fn tuple(buf: &[u8]) -> Result<Tuple, Malformed> {
    let mut t = Tuple::default();
    for a in attrs(buf) {
        let (ty, payload, _) = a?;
        match ty {
            CTA_TUPLE_IP => {
                for a in attrs(payload) {
                    let (ty, v, _) = a?;
                    let addr = match ty {
                        CTA_IP_V4_SRC | CTA_IP_V4_DST => <[u8; 4]>::try_from(v)
                            .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
                            .map_err(|_| Malformed("bad IPv4 address"))?,
                        CTA_IP_V6_SRC | CTA_IP_V6_DST => <[u8; 16]>::try_from(v)
                            .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
                            .map_err(|_| Malformed("bad IPv6 address"))?,
                        _ => continue,
                    };
                    if matches!(ty, CTA_IP_V4_SRC | CTA_IP_V6_SRC) {
                        t.src = Some(addr);
                    } else {
                        t.dst = Some(addr);
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for a in attrs(payload) {
                    let (ty, v, _) = a?;
                    match ty {
                        CTA_PROTO_NUM => {
                            t.proto = Some(*v.first().ok_or(Malformed("empty CTA_PROTO_NUM"))?)
                        }
                        CTA_PROTO_SRC_PORT => t.src_port = Some(be16(v)?),
                        CTA_PROTO_DST_PORT => t.dst_port = Some(be16(v)?),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attribute: header, payload, padding.
    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((NLA_HDR + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(payload);
        a.resize(align(a.len()), 0);
        a
    }

    const NESTED: u16 = 1 << 15;

    fn tuple_attr(ty: u16, src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let ip = |a: IpAddr, v4: u16, v6: u16| match a {
            IpAddr::V4(a) => nla(v4, &a.octets()),
            IpAddr::V6(a) => nla(v6, &a.octets()),
        };
        let mut ips = ip(src, CTA_IP_V4_SRC, CTA_IP_V6_SRC);
        ips.extend(ip(dst, CTA_IP_V4_DST, CTA_IP_V6_DST));
        let mut p = nla(CTA_PROTO_NUM, &[proto]);
        p.extend(nla(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()));
        p.extend(nla(CTA_PROTO_DST_PORT, &dport.to_be_bytes()));
        let mut t = nla(CTA_TUPLE_IP | NESTED, &ips);
        t.extend(nla(CTA_TUPLE_PROTO | NESTED, &p));
        nla(ty | NESTED, &t)
    }

    fn message(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&4242u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    /// A dumped entry as the kernel sends it: tuples, status, timeout, id
    /// (and zone when given).
    fn kernel_entry(seq: u32, family: u8, orig: Vec<u8>, zone: Option<u16>) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        body.extend(orig);
        let (s, d) = if family == AF_INET {
            (v4([10, 0, 0, 2]), v4([10, 0, 0, 1]))
        } else {
            (
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            )
        };
        body.extend(tuple_attr(2, s, d, IPPROTO_UDP, 53, 40000));
        body.extend(nla(3, &8u32.to_be_bytes())); // CTA_STATUS
        body.extend(nla(7, &30u32.to_be_bytes())); // CTA_TIMEOUT
        body.extend(nla(CTA_ID, &0xdead_beefu32.to_be_bytes()));
        if let Some(z) = zone {
            body.extend(nla(CTA_ZONE, &z.to_be_bytes()));
        }
        message(msg_type(MSG_CT_NEW), 0x2, seq, &body)
    }

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    #[test]
    fn dump_request_bytes() {
        let m = dump_request(7, AF_INET6);
        assert_eq!(m.len(), 20);
        assert_eq!(u32_ne(&m, 0), Some(20));
        assert_eq!(u16_ne(&m, 4), Some(0x0101));
        assert_eq!(u16_ne(&m, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(u32_ne(&m, 8), Some(7));
        assert_eq!(&m[16..], &[AF_INET6, 0, 0, 0]);
    }

    #[test]
    fn parses_a_udp_entry_and_its_delete_echoes_the_original_tuple() {
        let orig = tuple_attr(
            CTA_TUPLE_ORIG,
            v4([192, 168, 1, 2]),
            v4([192, 168, 1, 1]),
            IPPROTO_UDP,
            40000,
            5353,
        );
        let dgram = kernel_entry(9, AF_INET, orig.clone(), Some(3));
        let msgs: Vec<_> = messages(&dgram).collect();
        assert_eq!(msgs.len(), 1);
        let Ok(Message {
            seq: 9,
            reply: Reply::Entry(e),
        }) = &msgs[0]
        else {
            panic!("not an entry: {msgs:?}");
        };
        assert_eq!(e.family, AF_INET);
        assert_eq!(
            e.orig,
            Tuple {
                src: Some(v4([192, 168, 1, 2])),
                dst: Some(v4([192, 168, 1, 1])),
                proto: Some(IPPROTO_UDP),
                src_port: Some(40000),
                dst_port: Some(5353),
            }
        );
        assert_eq!(e.id, Some(0xdead_beef));
        assert_eq!(e.zone, Some(3));
        assert!(e.is_udp_to(AF_INET, &[80, 5353]));
        assert!(!e.is_udp_to(AF_INET, &[53]));
        assert!(!e.is_udp_to(AF_INET6, &[5353]));

        let del = delete_request(10, e);
        assert_eq!(u32_ne(&del, 0), Some(del.len() as u32));
        assert_eq!(u16_ne(&del, 4), Some(0x0102));
        assert_eq!(u16_ne(&del, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(u32_ne(&del, 8), Some(10));
        let mut want = vec![AF_INET, 0, 0, 0];
        want.extend(&orig);
        want.extend(nla(CTA_ZONE, &3u16.to_be_bytes()));
        want.extend(nla(CTA_ID, &0xdead_beefu32.to_be_bytes()));
        assert_eq!(&del[16..], &want[..]);
    }

    #[test]
    fn several_messages_in_one_datagram_then_done() {
        let a = tuple_attr(
            CTA_TUPLE_ORIG,
            v4([1, 1, 1, 1]),
            v4([2, 2, 2, 2]),
            6,
            1000,
            80,
        );
        let b = tuple_attr(
            CTA_TUPLE_ORIG,
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
            IPPROTO_UDP,
            1000,
            80,
        );
        let mut d = kernel_entry(1, AF_INET, a, None);
        d.extend(kernel_entry(1, AF_INET6, b, None));
        d.extend(message(NLMSG_DONE, 0x2, 1, &0i32.to_ne_bytes()));
        let got: Vec<_> = messages(&d).map(|m| m.map(|m| m.reply)).collect();
        assert_eq!(got.len(), 3);
        let Ok(Reply::Entry(tcp)) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(tcp.orig.proto, Some(6));
        assert!(!tcp.is_udp_to(AF_INET, &[80]), "TCP is not UDP");
        assert_eq!(tcp.zone, None);
        let Ok(Reply::Entry(udp6)) = &got[1] else {
            panic!("{got:?}")
        };
        assert!(udp6.is_udp_to(AF_INET6, &[80]));
        assert!(!udp6.is_udp_to(AF_INET, &[80]));
        assert_eq!(got[2], Ok(Reply::Done(0)));
    }

    #[test]
    fn acks_errors_and_failed_dumps() {
        let mut e = (-2i32).to_ne_bytes().to_vec();
        e.extend(&dump_request(5, AF_INET)[..16]);
        let mut d = message(NLMSG_ERROR, 0x100, 5, &e);
        d.extend(message(NLMSG_ERROR, 0x100, 6, &0i32.to_ne_bytes()));
        d.extend(message(NLMSG_DONE, 0x2, 7, &(-4i32).to_ne_bytes()));
        d.extend(message(1, 0, 8, &[])); // NLMSG_NOOP
        let got: Vec<_> = messages(&d).collect();
        assert_eq!(
            got,
            vec![
                Ok(Message {
                    seq: 5,
                    reply: Reply::Ack(2)
                }),
                Ok(Message {
                    seq: 6,
                    reply: Reply::Ack(0)
                }),
                Ok(Message {
                    seq: 7,
                    reply: Reply::Done(4)
                }),
                Ok(Message {
                    seq: 8,
                    reply: Reply::Other
                }),
            ]
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = kernel_entry(
            1,
            AF_INET,
            tuple_attr(CTA_TUPLE_ORIG, v4([1, 1, 1, 1]), v4([2, 2, 2, 2]), 17, 1, 2),
            None,
        );
        // Every truncation of a valid message, and every corrupted byte,
        // either parses or is reported: never a panic, never a loop.
        for cut in 0..good.len() {
            let mut m = good[..cut].to_vec();
            if m.len() >= 4 {
                m[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            }
            let _ = messages(&m).count();
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 3, 0x7f, 0xff] {
                let mut m = good.clone();
                m[i] = v;
                assert!(messages(&m).count() <= m.len() / NLMSG_HDR + 1);
            }
        }
        assert_eq!(
            messages(&[1, 2, 3]).collect::<Vec<_>>(),
            vec![Err(Malformed("short netlink header"))]
        );
        let mut long = good.clone();
        long[..4].copy_from_slice(&(good.len() as u32 + 8).to_ne_bytes());
        assert_eq!(
            messages(&long).collect::<Vec<_>>(),
            vec![Err(Malformed("bad netlink message length"))]
        );
        // An entry without its original tuple.
        let bare = message(msg_type(MSG_CT_NEW), 0, 1, &[AF_INET, 0, 0, 0]);
        assert_eq!(
            messages(&bare).collect::<Vec<_>>(),
            vec![Err(Malformed("entry without original tuple"))]
        );
    }
}
