//! splice mode: one runtime connection per client connection, bytes copied
//! both ways untouched.
//!
//! The copy reads the 9-byte HTTP/2 frame headers going by (never a
//! payload) to know which calls are in flight, so that on shutdown a
//! connection is closed only between calls: at once when it is idle, else
//! when its last call ends (or the drain period runs out).

use super::h2::Upstream;
use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{watch, Notify};

const PREFACE_LEN: usize = 24;
const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const END_STREAM: u8 = 0x1;
/// Bytes per read each way: large responses (ListImages, 16 MiB messages)
/// move in fewer system calls; a node has few CRI connections.
const BUF: usize = 64 << 10;

/// The calls (HTTP/2 streams) in flight on one connection.
#[derive(Debug, Default)]
struct Calls {
    open: Mutex<HashSet<u32>>,
    idle: Notify,
}

impl Calls {
    fn opened(&self, id: u32) {
        if let Ok(mut g) = self.open.lock() {
            g.insert(id);
        }
    }

    fn closed(&self, id: u32) {
        if let Ok(mut g) = self.open.lock() {
            if g.remove(&id) && g.is_empty() {
                self.idle.notify_waiters();
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.open.lock().map(|g| g.is_empty()).unwrap_or(true)
    }

    /// Returns once no call is in flight.
    async fn until_idle(&self) {
        loop {
            let woken = self.idle.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.is_idle() {
                return;
            }
            woken.await;
        }
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
/// open from the moment its HEADERS are seen, before they are passed on (so
/// however the two directions are scheduled, an answer never ends a call
/// not yet noted), and over once its last bytes are out.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    way: Way,
    calls: &Calls,
) -> io::Result<()> {
    let mut frames = Frames::new(way);
    let mut buf = vec![0u8; BUF];
    let mut ended = Vec::new();
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        frames.feed(&buf[..n], |kind, flags, stream| match (way, kind) {
            (Way::ToRuntime, HEADERS) => calls.opened(stream),
            (_, RST_STREAM) => ended.push(stream),
            (Way::ToClient, HEADERS | DATA) if flags & END_STREAM != 0 => ended.push(stream),
            _ => {}
        });
        to.write_all(&buf[..n]).await?;
        for stream in ended.drain(..) {
            calls.closed(stream);
        }
    }
}

/// Waits for the shutdown signal, then for the connection to be idle.
async fn drained(shutdown: watch::Receiver<bool>, calls: &Calls) {
    super::until_shutdown(shutdown).await;
    calls.until_idle().await;
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
    let calls = Calls::default();
    let up = tokio::select! {
        up = connect(&upstream) => up,
        _ = drained(shutdown.clone(), &calls) => None,
    };
    let Some(up) = up else { return };
    let (cr, cw) = client.into_split();
    let (ur, uw) = up.into_split();
    let copy = async {
        tokio::try_join!(
            pump(cr, uw, Way::ToRuntime, &calls),
            pump(ur, cw, Way::ToClient, &calls)
        )
    };
    tokio::select! {
        r = copy => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "spliced connection ended");
            }
        }
        _ = drained(shutdown, &calls) => tracing::debug!("spliced connection closed between calls"),
    }
}

#[cfg(test)]
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

    #[tokio::test]
    async fn a_connection_drains_when_its_last_call_ends() {
        let calls = Calls::default();
        let (tx, rx) = watch::channel(false);
        calls.opened(1);
        calls.opened(3);
        let _ = tx.send(true);
        let drain = drained(rx, &calls);
        tokio::pin!(drain);
        let idle_too_early = tokio::time::timeout(Duration::from_millis(20), drain.as_mut()).await;
        assert!(idle_too_early.is_err());
        calls.closed(1);
        calls.closed(3);
        tokio::time::timeout(Duration::from_secs(1), drain)
            .await
            .unwrap_or_else(|_| panic!("not drained"));
    }
}
