//! splice mode: one runtime connection per client connection, bytes copied
//! both ways untouched.
//!
//! Each direction is copied by a thread of its own with blocking reads and
//! writes: a byte that arrives wakes exactly the thread waiting for it, with
//! no reactor, no task hand-off and no runtime thread shared by all clients
//! (measured: the added latency of a call halves, and 8 busy clients are no
//! longer served by one thread). A node has few CRI connections (kubelet
//! keeps one or two), so two threads with small stacks each cost little.
//!
//! The copy reads the 9-byte HTTP/2 frame headers going by (never a
//! payload) to know which calls are in flight, so that on shutdown a
//! connection is closed only between calls: at once when it is idle, else
//! when its last call ends (or the drain period runs out).

use super::h2::Upstream;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream as StdStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

const PREFACE_LEN: usize = 24;
const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const END_STREAM: u8 = 0x1;
/// Bytes per read each way: large responses (ListImages, 16 MiB messages)
/// move in fewer system calls; a node has few CRI connections.
const BUF: usize = 64 << 10;
/// Stack of a copying thread: it holds no more than a few frames (the
/// buffer is on the heap).
const STACK: usize = 64 << 10;

/// One spliced connection: its two sockets and the calls in flight.
#[derive(Debug)]
struct Conn {
    client: StdStream,
    up: StdStream,
    state: Mutex<Calls>,
}

/// The calls (HTTP/2 streams) in flight, and whether shutdown was asked.
#[derive(Debug, Default)]
struct Calls {
    open: HashSet<u32>,
    draining: bool,
}

impl Conn {
    fn opened(&self, id: u32) {
        if let Ok(mut g) = self.state.lock() {
            g.open.insert(id);
        }
    }

    fn closed(&self, id: u32) {
        let close = match self.state.lock() {
            Ok(mut g) => g.open.remove(&id) && g.open.is_empty() && g.draining,
            Err(_) => false,
        };
        if close {
            self.close();
        }
    }

    /// Shutdown: closes the connection now if no call is in flight, else
    /// when the last one ends.
    fn drain(&self) {
        let close = match self.state.lock() {
            Ok(mut g) => {
                g.draining = true;
                g.open.is_empty()
            }
            Err(_) => true,
        };
        if close {
            self.close();
        }
    }

    /// Ends both sockets; the copying threads' reads return at once.
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.up.shutdown(Shutdown::Both);
    }
}

/// Which way bytes flow, and so which frames open or end a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    ToRuntime,
    ToClient,
}

/// Finds frame headers in a byte stream fed in arbitrary pieces.
#[derive(Debug)]
struct Frames {
    /// Client preface bytes still to pass (24 on the client's side).
    preface_left: usize,
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: usize,
}

impl Frames {
    fn new(way: Way) -> Self {
        Frames {
            preface_left: if way == Way::ToRuntime {
                PREFACE_LEN
            } else {
                0
            },
            header: [0; 9],
            have: 0,
            skip: 0,
        }
    }

    /// Calls `frame(type, flags, stream)` for every frame header completed
    /// in `bytes`.
    fn feed(&mut self, mut bytes: &[u8], mut frame: impl FnMut(u8, u8, u32)) {
        while !bytes.is_empty() {
            if self.preface_left > 0 || self.skip > 0 {
                let pass = if self.preface_left > 0 {
                    &mut self.preface_left
                } else {
                    &mut self.skip
                };
                let n = (*pass).min(bytes.len());
                *pass -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                let h = self.header;
                self.have = 0;
                self.skip = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                frame(h[3], h[4], stream);
            }
        }
    }
}

/// Copies one way until EOF, noting calls as they start and end. A call is
/// open from the moment its HEADERS are seen (before they are passed on, so
/// a fast answer never ends a call not yet noted) and over once its last
/// bytes are out.
fn pump(conn: &Conn, way: Way) -> io::Result<()> {
    let (mut from, mut to) = match way {
        Way::ToRuntime => (&conn.client, &conn.up),
        Way::ToClient => (&conn.up, &conn.client),
    };
    let mut frames = Frames::new(way);
    let mut buf = vec![0u8; BUF];
    let mut ended = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return to.shutdown(Shutdown::Write),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        frames.feed(&buf[..n], |kind, flags, stream| match (way, kind) {
            (Way::ToRuntime, HEADERS) => conn.opened(stream),
            (_, RST_STREAM) => ended.push(stream),
            (Way::ToClient, HEADERS | DATA) if flags & END_STREAM != 0 => ended.push(stream),
            _ => {}
        });
        to.write_all(&buf[..n])?;
        for stream in ended.drain(..) {
            conn.closed(stream);
        }
    }
}

/// Starts the thread copying one way; `done` fires when it ends. An error
/// (not an EOF) ends the whole connection, so the other thread never waits
/// on a peer that is gone.
fn spawn_pump(conn: Arc<Conn>, way: Way, done: oneshot::Sender<()>) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("splice-{way:?}"))
        .stack_size(STACK)
        .spawn(move || {
            if let Err(e) = pump(&conn, way) {
                tracing::debug!(error = %e, ?way, "spliced connection ended");
                conn.close();
            }
            let _ = done.send(());
        })
        .map(drop)
}

/// Connects to the runtime, retrying up to `--max-wait` while it is down.
/// Out of file descriptors, the client connection is given up at once:
/// waiting would hold the client's descriptor too, and the backlog behind
/// it would never drain.
async fn connect(upstream: &Upstream) -> Option<UnixStream> {
    let deadline = Instant::now() + upstream.max_wait;
    let mut pause = Duration::from_millis(20);
    loop {
        match UnixStream::connect(&upstream.path).await {
            Ok(s) => return Some(s),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                super::listen::warn_limited(
                    &e,
                    "out of file descriptors; closing a client connection",
                );
                return None;
            }
            Err(e) => {
                let now = Instant::now();
                if now >= deadline {
                    tracing::warn!(error = %e, "runtime unavailable; closing the client connection");
                    return None;
                }
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// Splice mode: each client connection gets its own runtime connection and
/// bytes are copied both ways untouched (HTTP/2 end to end between client
/// and runtime). Cheapest per call; a runtime outage closes client
/// connections instead of answering UNAVAILABLE per call. On shutdown the
/// connection is closed once no call is in flight.
pub(super) async fn splice(
    client: UnixStream,
    upstream: Arc<Upstream>,
    shutdown: watch::Receiver<bool>,
) {
    let up = tokio::select! {
        up = connect(&upstream) => up,
        _ = super::until_shutdown(shutdown.clone()) => None,
    };
    let Some(up) = up else { return };
    let conn = match blocking(client).and_then(|c| Ok((c, blocking(up)?))) {
        Ok((client, up)) => Arc::new(Conn {
            client,
            up,
            state: Mutex::default(),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot splice a client connection");
            return;
        }
    };
    let (to_runtime, runtime_done) = oneshot::channel();
    let (to_client, client_done) = oneshot::channel();
    let started = spawn_pump(conn.clone(), Way::ToRuntime, to_runtime)
        .and_then(|()| spawn_pump(conn.clone(), Way::ToClient, to_client));
    if let Err(e) = started {
        super::listen::warn_limited(
            &e,
            "cannot start a copying thread; closing a client connection",
        );
        conn.close();
    }
    let both = async {
        let _ = runtime_done.await;
        let _ = client_done.await;
    };
    tokio::pin!(both);
    tokio::select! {
        () = both.as_mut() => return,
        () = super::until_shutdown(shutdown) => {}
    }
    conn.drain();
    both.await;
}

/// The std socket of a tokio one, in blocking mode, for a copying thread.
fn blocking(s: UnixStream) -> io::Result<StdStream> {
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    Ok(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, len: usize) -> Vec<u8> {
        let mut f = (len as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.resize(9 + len, 0xaa);
        f
    }

    #[test]
    fn frames_are_found_across_any_split() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, 0, 6));
        bytes.extend(frame(HEADERS, 0x4, 1, 40));
        bytes.extend(frame(DATA, END_STREAM, 1, 70_000));
        bytes.extend(frame(RST_STREAM, 0, 3, 4));
        let want = vec![
            (0x4, 0, 0),
            (HEADERS, 0x4, 1),
            (DATA, END_STREAM, 1),
            (RST_STREAM, 0, 3),
        ];
        for chunk in [1, 2, 7, 9, 10, 1000, bytes.len()] {
            let mut f = Frames::new(Way::ToRuntime);
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                f.feed(piece, |k, fl, s| got.push((k, fl, s)));
            }
            assert_eq!(got, want, "chunks of {chunk}");
        }
    }

    /// Whether the peer of `s` has been shut down (reads EOF).
    fn is_closed(s: &mut StdStream) -> bool {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        matches!(s.read(&mut [0u8; 1]), Ok(0))
    }

    #[test]
    fn a_connection_drains_when_its_last_call_ends() {
        let (client, mut client_peer) = StdStream::pair().unwrap();
        let (up, mut up_peer) = StdStream::pair().unwrap();
        let conn = Conn {
            client,
            up,
            state: Mutex::default(),
        };
        conn.opened(1);
        conn.opened(3);
        conn.drain();
        assert!(!is_closed(&mut client_peer), "closed with calls in flight");
        conn.closed(1);
        assert!(!is_closed(&mut client_peer), "closed with a call in flight");
        conn.closed(3);
        assert!(is_closed(&mut client_peer));
        assert!(is_closed(&mut up_peer));
    }

    #[test]
    fn an_idle_connection_closes_at_once_on_drain() {
        let (client, mut client_peer) = StdStream::pair().unwrap();
        let (up, _up_peer) = StdStream::pair().unwrap();
        let conn = Conn {
            client,
            up,
            state: Mutex::default(),
        };
        conn.opened(1);
        conn.closed(1);
        assert!(!is_closed(&mut client_peer));
        conn.drain();
        assert!(is_closed(&mut client_peer));
    }
}
