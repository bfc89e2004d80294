//! Stale UDP conntrack entries: a UDP flow that hit the host port before the
//! DNAT rule existed keeps its old translation until it expires, so ADD
//! removes the entries of each mapped UDP host port, as the reference does,
//! over ctnetlink: one dump of the family's table, read a datagram at a
//! time into one fixed buffer (memory does not grow with the table), and
//! each matching entry deleted by its original tuple on a second socket
//! while the dump goes on (the way `conntrack -D` does it).
//!
//! The sockets live in the calling thread's network namespace: the node's,
//! for a plugin. Message encoding and decoding are in [`wire`].

mod wire;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use thiserror::Error;

use crate::config::{PortMapping, Protocol};

/// Receive buffer: larger than any datagram the kernel builds for a dump
/// (at most 32 KiB) or an ACK.
const RECV_BUF: usize = 64 * 1024;

/// `ENOENT`: the entry is gone already (expired or deleted meanwhile).
const ENOENT: i32 = 2;

/// A ctnetlink failure.
#[derive(Debug, Error)]
pub enum ConntrackError {
    /// The socket failed.
    #[error("ctnetlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused a request.
    #[error("{op}: {}", cni_spec::error::errno_text(*.errno))]
    Kernel {
        /// What was asked.
        op: &'static str,
        /// The kernel's errno.
        errno: i32,
    },
    /// A reply that could not be read.
    #[error(transparent)]
    Malformed(#[from] wire::Malformed),
    /// A datagram larger than the receive buffer.
    #[error("ctnetlink reply of {0} bytes exceeds the receive buffer")]
    Truncated(usize),
}

/// What a flush did.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Entries deleted.
    pub deleted: usize,
    /// Matching entries that were gone by the time of their delete.
    pub gone: usize,
    /// Matching entries whose delete failed otherwise.
    pub failed: usize,
    /// The first of those failures.
    pub first_failure: Option<ConntrackError>,
}

/// Deletes the conntrack entries of every UDP mapping's host port in one
/// family. Returns what went wrong, for the log only: a failure here never
/// fails ADD.
pub fn flush_udp(mappings: &[PortMapping], v4: bool) -> Vec<String> {
    let ports: Vec<u16> = mappings
        .iter()
        .filter(|m| m.protocol == Protocol::Udp)
        .map(|m| m.host_port)
        .collect();
    if ports.is_empty() {
        return Vec::new();
    }
    match delete_udp_to_ports(v4, &ports) {
        Err(e) => vec![e.to_string()],
        Ok(Flushed { failed: 0, .. }) => Vec::new(),
        Ok(f) => vec![format!(
            "{} of {} entries not deleted: {}",
            f.failed,
            f.deleted + f.gone + f.failed,
            f.first_failure.map(|e| e.to_string()).unwrap_or_default()
        )],
    }
}

/// Deletes every UDP conntrack entry of one family (`v4` or IPv6) whose
/// original destination port is one of `ports`, in the calling thread's
/// network namespace.
///
/// # Errors
/// The sockets cannot be opened, or the dump fails; failures of single
/// deletes are counted in [`Flushed`] instead.
pub fn delete_udp_to_ports(v4: bool, ports: &[u16]) -> Result<Flushed, ConntrackError> {
    let family = if v4 { wire::AF_INET } else { wire::AF_INET6 };
    let mut dump = Ctnetlink::open()?;
    let mut deleter: Option<Ctnetlink> = None;
    let mut done = Flushed::default();
    let seq = dump.next_seq();
    dump.send(&wire::dump_request(seq, family))?;
    loop {
        for msg in wire::messages(dump.recv()?) {
            let msg = msg?;
            if msg.seq != seq {
                continue;
            }
            match msg.reply {
                wire::Reply::Entry(e) if e.is_udp_to(family, ports) => {
                    if deleter.is_none() {
                        deleter = Some(Ctnetlink::open()?);
                    }
                    let Some(d) = deleter.as_mut() else {
                        continue;
                    };
                    match d.delete(&e) {
                        Ok(()) => done.deleted += 1,
                        Err(ConntrackError::Kernel { errno: ENOENT, .. }) => done.gone += 1,
                        Err(err) => {
                            done.failed += 1;
                            done.first_failure.get_or_insert(err);
                        }
                    }
                }
                wire::Reply::Done(0) | wire::Reply::Ack(0) => return Ok(done),
                wire::Reply::Done(errno) | wire::Reply::Ack(errno) => {
                    return Err(ConntrackError::Kernel {
                        op: if v4 {
                            "dump the IPv4 conntrack table"
                        } else {
                            "dump the IPv6 conntrack table"
                        },
                        errno,
                    });
                }
                wire::Reply::Entry(_) | wire::Reply::Other => {}
            }
        }
    }
}

/// A ctnetlink socket with its own receive buffer.
struct Ctnetlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Ctnetlink {
    fn open() -> Result<Ctnetlink, ConntrackError> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Ctnetlink {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, msg: &[u8]) -> Result<(), ConntrackError> {
        self.socket.send(msg, 0)?;
        Ok(())
    }

    /// The next datagram.
    fn recv(&mut self) -> Result<&[u8], ConntrackError> {
        self.buf.clear();
        let n = self.socket.recv(&mut self.buf, nix::libc::MSG_TRUNC)?;
        if n > self.buf.len() {
            return Err(ConntrackError::Truncated(n));
        }
        Ok(&self.buf)
    }

    /// Deletes one dumped entry and waits for the kernel's answer.
    fn delete(&mut self, entry: &wire::Entry<'_>) -> Result<(), ConntrackError> {
        let seq = self.next_seq();
        self.send(&wire::delete_request(seq, entry))?;
        loop {
            for msg in wire::messages(self.recv()?) {
                let msg = msg?;
                match msg.reply {
                    wire::Reply::Ack(0) if msg.seq == seq => return Ok(()),
                    wire::Reply::Ack(errno) if msg.seq == seq => {
                        return Err(ConntrackError::Kernel {
                            op: "delete a conntrack entry",
                            errno,
                        })
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortMapping;

    #[test]
    fn without_udp_mappings_there_is_nothing_to_flush() {
        let tcp = PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: None,
        };
        assert!(flush_udp(&[tcp], true).is_empty());
        assert!(flush_udp(&[], false).is_empty());
    }
}
