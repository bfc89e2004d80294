//! The only module that speaks rtnetlink (netlink-packet-route over a sync
//! netlink-sys socket). Callers get domain structs ([`Link`]), never wire
//! messages. A [`Netlink`] socket is bound to the netns it was opened in, so
//! one socket per namespace serves a whole command without further setns.

mod addr;
mod link;
mod link_decode;
mod route;

pub(crate) use addr::add_addr_request;
pub use addr::AddrInfo;
pub(crate) use link::set_up_request;
pub use link::{Link, VethSpec};
pub(crate) use route::add_route_request;
pub use route::RouteSpec;

use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE,
    NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;
use thiserror::Error;

/// A netlink failure, keeping the kernel's errno.
#[derive(Debug, Error)]
pub enum NetlinkError {
    /// The kernel refused the request.
    #[error("{op}: {}", cni_spec::error::errno_text(*.errno as i32))]
    Kernel {
        /// What was asked, e.g. `add veth veth1234abcd`.
        op: String,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The socket itself failed.
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// A reply could not be decoded.
    #[error("netlink decode: {0}")]
    Decode(String),
}

impl NetlinkError {
    /// The kernel errno, when the kernel refused.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Io(e) => e.raw_os_error().map(Errno::from_raw),
            NetlinkError::Decode(_) => None,
        }
    }
}

/// Result of a netlink operation.
pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

/// One request of a [`Netlink::batch`].
#[derive(Debug)]
pub(crate) struct Request {
    /// What it asks, for the error message.
    pub op: String,
    /// The message.
    pub msg: RouteNetlinkMessage,
    /// Flags besides `NLM_F_REQUEST` and `NLM_F_ACK`.
    pub flags: u16,
}

impl Request {
    /// Prefixes what it asks with what the caller is doing, for the error
    /// message.
    pub(crate) fn context(mut self, context: &str) -> Request {
        self.op = format!("{context}: {}", self.op);
        self
    }
}

/// The netlink messages of one datagram, in order; a malformed one ends
/// the walk with an error.
fn replies(data: &[u8]) -> impl Iterator<Item = Result<NetlinkBuffer<&[u8]>>> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset >= data.len() {
            return None;
        }
        let rest = &data[offset..];
        // Checked: the length field covers at least a header and at most
        // the rest of the datagram.
        let m = match NetlinkBuffer::new_checked(rest) {
            Ok(m) => m,
            Err(e) => {
                offset = data.len();
                return Some(Err(NetlinkError::Decode(e.to_string())));
            }
        };
        let len = m.length() as usize;
        offset += (len + 3) & !3;
        Some(Ok(NetlinkBuffer::new(&rest[..len])))
    })
}

/// The (negative) errno of an `NLMSG_ERROR` message, 0 for an ACK.
fn error_code(m: &NetlinkBuffer<&[u8]>) -> Result<i32> {
    let e =
        ErrorBuffer::new_checked(m.payload()).map_err(|e| NetlinkError::Decode(e.to_string()))?;
    Ok(e.code().map_or(0, i32::from))
}

/// An rtnetlink socket in one network namespace.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    /// Receive buffer, reused: one `recv` per datagram.
    rbuf: Vec<u8>,
}

/// Size of the receive buffer. The kernel's datagrams are at most 32 KiB
/// or one message, and a link message without VF details (never asked for)
/// is a few KiB.
const RECV_BUF: usize = 64 * 1024;

impl Netlink {
    /// Opens a socket in the calling thread's current network namespace.
    ///
    /// # Errors
    /// The socket cannot be created.
    pub fn open() -> Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Kernel-side filtering of dumps where the kernel supports it.
        let _ = socket.set_netlink_get_strict_chk(true);
        let _ = socket.set_ext_ack(true);
        Ok(Netlink {
            socket,
            seq: 0,
            rbuf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Reads one datagram into `rbuf`.
    fn recv(&mut self) -> Result<()> {
        self.rbuf.clear();
        let n = self.socket.recv(&mut self.rbuf, nix::libc::MSG_TRUNC)?;
        if n > self.rbuf.len() {
            return Err(NetlinkError::Decode(format!(
                "a {n}-byte reply exceeds the {RECV_BUF}-byte buffer"
            )));
        }
        Ok(())
    }

    /// Serializes `msg` with the next sequence number into `buf`; returns
    /// that number.
    fn encode(&mut self, msg: RouteNetlinkMessage, flags: u16, buf: &mut Vec<u8>) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let start = buf.len();
        buf.resize(start + nl.buffer_len(), 0);
        nl.serialize(&mut buf[start..]);
        self.seq
    }

    /// Sends one request and collects every reply until the ACK or DONE, as
    /// whole netlink messages (header included), undecoded.
    fn request_raw(
        &mut self,
        op: impl Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<Vec<u8>>> {
        let mut buf = Vec::new();
        let seq = self.encode(msg, flags, &mut buf);
        self.socket.send(&buf, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            self.recv()?;
            for reply in replies(&self.rbuf) {
                let reply = reply?;
                if reply.sequence_number() != seq {
                    continue;
                }
                match reply.message_type() {
                    NLMSG_ERROR => {
                        return match error_code(&reply)? {
                            0 => Ok(out),
                            code => Err(NetlinkError::Kernel {
                                op: op(),
                                errno: Errno::from_raw(-code),
                            }),
                        }
                    }
                    NLMSG_DONE => return Ok(out),
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    _ => {
                        out.push(reply.into_inner().to_vec());
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    /// Sends one request and collects every decoded reply until the ACK or
    /// DONE.
    fn request(
        &mut self,
        op: impl Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        for raw in self.request_raw(op, msg, flags)? {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&raw)
                .map_err(|e| NetlinkError::Decode(e.to_string()))?;
            if let NetlinkPayload::InnerMessage(m) = m.payload {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Sends `requests` at once, each asking for an ACK, and reads every
    /// ACK: one system call for the lot instead of one round trip each. The
    /// kernel runs them in order and goes on after a failure, so callers
    /// batch only requests whose later members are harmless (or undone) when
    /// an earlier one fails.
    ///
    /// # Errors
    /// The first request the kernel refused, named by its `op`.
    pub(crate) fn batch(&mut self, requests: Vec<Request>) -> Result<()> {
        if requests.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut pending = Vec::with_capacity(requests.len());
        for r in requests {
            let seq = self.encode(r.msg, r.flags | NLM_F_ACK, &mut buf);
            pending.push((seq, r.op, None));
        }
        self.socket.send(&buf, 0)?;
        let mut left = pending.len();
        while left > 0 {
            self.recv()?;
            for reply in replies(&self.rbuf) {
                let reply = reply?;
                if reply.message_type() != NLMSG_ERROR {
                    continue;
                }
                let seq = reply.sequence_number();
                let Some(p) = pending.iter_mut().find(|p| p.0 == seq && p.2.is_none()) else {
                    continue;
                };
                p.2 = Some(error_code(&reply)?);
                left -= 1;
            }
        }
        match pending.into_iter().find(|p| p.2.is_some_and(|c| c != 0)) {
            Some((_, op, Some(code))) => Err(NetlinkError::Kernel {
                op,
                errno: Errno::from_raw(-code),
            }),
            _ => Ok(()),
        }
    }

    /// Runs one request answered by an ACK.
    fn run(&mut self, r: Request) -> Result<()> {
        let Request { op, msg, flags } = r;
        self.ack(move || op.clone(), msg, flags)
    }

    /// A request answered by an ACK.
    fn ack(&mut self, op: impl Fn() -> String, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.request(op, msg, flags | NLM_F_ACK).map(|_| ())
    }

    /// A dump request.
    fn dump(
        &mut self,
        op: impl Fn() -> String,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.request(op, msg, NLM_F_DUMP)
    }
}
