//! `cni-bench relay SOCKET UPSTREAM`: a bare byte relay, the floor of any user-space CRI hop.
//!
//! The cri bench runs it as a third target beside containerd direct and `cri-adapter serve`,
//! to measure what a hop costs when it does nothing but move bytes: one thread, level-triggered
//! epoll, and per accepted client one connection to UPSTREAM (a unix socket path, `unix://`
//! optional). On readability one `read` of up to 64 KiB into the one buffer and a `write` of
//! all of it to the peer: no frame parsing, no allocation per message. A write that would block
//! finishes in blocking mode, which holds every connection until that peer reads: fine for a
//! floor whose messages fit the socket buffers, not for a proxy of arbitrary traffic.
//! EOF or an error on either side closes both. It runs until killed.

use std::ffi::OsString;
use std::io::{self, ErrorKind, Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::SigSet;

use crate::Res;

/// Bytes moved per `read`.
const RELAY_BUF: usize = 64 << 10;
/// Events taken per `epoll_wait`.
const RELAY_EVENTS: usize = 64;
/// The listener's epoll token; a link's ends are `slot << 1 | side`.
const LISTENER: u64 = u64::MAX;

/// One relayed connection: the accepted client (side 0) and its upstream connection (side 1).
#[derive(Debug)]
struct Link {
    ends: [UnixStream; 2],
}

/// The relay's state: its sockets, by slot, and the slots free for reuse.
#[derive(Debug)]
struct Relay {
    epoll: Epoll,
    listener: UnixListener,
    upstream: PathBuf,
    links: Vec<Option<Link>>,
    free: Vec<usize>,
}

/// Entry point of `cni-bench relay SOCKET UPSTREAM`; returns only on a setup or epoll error.
pub(crate) fn relay(args: &[OsString]) -> Res<bool> {
    let [socket, upstream] = args else {
        return Err(format!(
            "relay: expected SOCKET UPSTREAM, got {} arguments\n{}",
            args.len(),
            crate::usage()
        ));
    };
    let upstream = upstream
        .to_str()
        .and_then(|s| s.strip_prefix("unix://"))
        .map_or_else(|| PathBuf::from(upstream), PathBuf::from);
    // The bench blocks SIGTERM, SIGINT and SIGHUP for its signal thread, and a child inherits
    // the mask: without this, the bench's SIGTERM would not stop the relay.
    SigSet::empty()
        .thread_set_mask()
        .map_err(|e| format!("relay: unblocking signals: {e}"))?;
    let mut relay = Relay::bind(Path::new(socket), upstream)?;
    relay.run()
}

impl Relay {
    fn bind(socket: &Path, upstream: PathBuf) -> Res<Relay> {
        let listener = UnixListener::bind(socket)
            .map_err(|e| format!("relay: bind {}: {e}", socket.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("relay: {}: {e}", socket.display()))?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| format!("relay: epoll_create: {e}"))?;
        epoll
            .add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
            .map_err(|e| format!("relay: epoll_ctl: {e}"))?;
        Ok(Relay {
            epoll,
            listener,
            upstream,
            links: Vec::new(),
            free: Vec::new(),
        })
    }

    fn run(&mut self) -> Res<bool> {
        let mut buf = vec![0u8; RELAY_BUF];
        let mut events = [EpollEvent::empty(); RELAY_EVENTS];
        // Slots closed in this round: reused only after it, so that a later event of the
        // round for a closed link cannot reach a new one.
        let mut closed = Vec::new();
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(format!("relay: epoll_wait: {e}")),
            };
            for ev in &events[..n] {
                let token = ev.data();
                if token == LISTENER {
                    self.accept_all();
                    continue;
                }
                let Ok(slot) = usize::try_from(token >> 1) else {
                    continue;
                };
                let side = usize::from(token & 1 == 1);
                let Some(link) = self.links.get_mut(slot).and_then(Option::as_mut) else {
                    continue;
                };
                if !forward(link, side, &mut buf) {
                    // Dropping both ends closes them, which also removes them from the epoll set.
                    self.links[slot] = None;
                    closed.push(slot);
                }
            }
            self.free.append(&mut closed);
        }
    }

    /// Accepts every pending client and connects each to the upstream.
    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((client, _)) => {
                    if let Err(e) = self.open(client) {
                        eprintln!("cni-bench relay: {e}");
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    eprintln!("cni-bench relay: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Connects `client` to the upstream and watches both ends; on failure both are closed.
    fn open(&mut self, client: UnixStream) -> Res<()> {
        let upstream = UnixStream::connect(&self.upstream)
            .map_err(|e| format!("connect {}: {e}", self.upstream.display()))?;
        let ends = [client, upstream];
        for end in &ends {
            end.set_nonblocking(true)
                .map_err(|e| format!("O_NONBLOCK: {e}"))?;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.links.push(None);
            self.links.len() - 1
        });
        let base = u64::try_from(slot).map_err(|e| format!("slot {slot}: {e}"))? << 1;
        for (side, end) in (0u64..).zip(&ends) {
            if let Err(e) = self
                .epoll
                .add(end, EpollEvent::new(EpollFlags::EPOLLIN, base | side))
            {
                // The slot stays free; the ends close (and leave the epoll set) when dropped.
                self.free.push(slot);
                return Err(format!("epoll_ctl: {e}"));
            }
        }
        self.links[slot] = Some(Link { ends });
        Ok(())
    }
}

/// One read from `link.ends[from]` and all of it written to the other end. False when the link
/// is done (EOF or an error on either side).
fn forward(link: &mut Link, from: usize, buf: &mut [u8]) -> bool {
    let [client, upstream] = &mut link.ends;
    let (src, dst) = if from == 0 {
        (client, upstream)
    } else {
        (upstream, client)
    };
    match src.read(buf) {
        Ok(0) => false,
        Ok(n) => buf
            .get(..n)
            .is_some_and(|data| write_all(dst, data).is_ok()),
        Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
    }
}

/// Writes all of `data` to the nonblocking `dst`, switching it to blocking mode for the rest of
/// the write when it would block.
fn write_all(dst: &mut UnixStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match dst.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                dst.set_nonblocking(false)?;
                let written = dst.write_all(data);
                dst.set_nonblocking(true)?;
                return written;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
