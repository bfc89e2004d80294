//! The only module that speaks rtnetlink (netlink-packet-route over a sync
//! netlink-sys socket). Callers get domain structs ([`Link`]), never wire
//! messages. A [`Netlink`] socket is bound to the netns it was opened in, so
//! one socket per namespace serves a whole command without further setns.

mod addr;
mod link;
mod route;

pub use addr::AddrInfo;
pub use link::{Link, VethSpec};
pub use route::RouteSpec;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
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

/// An rtnetlink socket in one network namespace.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

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
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends one request and collects every reply until the ACK or DONE.
    fn request(
        &mut self,
        op: impl Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(NetlinkError::Decode("zero-length message".into()));
                }
                offset += len;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        let code = e.raw_code();
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(NetlinkError::Kernel {
                            op: op(),
                            errno: Errno::from_raw(-code),
                        });
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
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
