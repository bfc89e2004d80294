//! A minimal blocking HTTP/2 client that writes frames itself, for what no
//! well-behaved client library will do: send the socket path as
//! `:authority` (as grpc-go before 1.56 does on unix sockets), or open
//! streams and never read them.

use loona_hpack::{Decoder, Encoder};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// One frame as read.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// What came back on one stream.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub headers: Vec<(String, String)>,
    pub data: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    /// The RST_STREAM error code, if the stream was reset.
    pub reset: Option<u32>,
    /// The server sent GOAWAY meanwhile (it is shutting down).
    pub goaway: bool,
}

impl Reply {
    /// The value of `name` in the headers or trailers.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .chain(&self.trailers)
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A client connection.
pub struct RawH2 {
    sock: UnixStream,
    enc: Encoder<'static>,
    dec: Decoder<'static>,
    next: u32,
}

impl std::fmt::Debug for RawH2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawH2").field("next", &self.next).finish()
    }
}

/// A gRPC message frame (uncompressed) around `msg`.
pub fn grpc_message(msg: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

impl RawH2 {
    /// Connects, sends the preface and SETTINGS with `window` as the
    /// initial stream window (65535 is HTTP/2's default).
    ///
    /// # Panics
    /// The connection fails.
    pub fn connect(path: &Path, window: u32) -> RawH2 {
        let sock =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        sock.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut c = RawH2 {
            sock,
            enc: Encoder::new(),
            dec: Decoder::new(),
            next: 1,
        };
        c.sock.write_all(PREFACE).expect("preface");
        let mut settings = vec![0x0, 0x4];
        settings.extend_from_slice(&window.to_be_bytes());
        c.write_frame(SETTINGS, 0, 0, &settings);
        c
    }

    /// Writes one frame.
    ///
    /// # Panics
    /// The write fails.
    pub fn write_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        self.try_write_frame(kind, flags, stream, payload)
            .expect("write frame");
    }

    /// Writes one frame, returning the error.
    ///
    /// # Errors
    /// The write fails.
    pub fn try_write_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        self.sock.write_all(&f)
    }

    /// Reads (answering PINGs) until the server closes the connection;
    /// whether it sent GOAWAY first.
    ///
    /// # Panics
    /// Nothing closes it within the read timeout.
    pub fn until_closed(&mut self) -> bool {
        let mut goaway = false;
        loop {
            let mut h = [0u8; 9];
            match self.sock.read_exact(&mut h) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return goaway,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return goaway,
                Err(e) => panic!("waiting for the server to close: {e}"),
            }
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let mut payload = vec![0u8; len];
            if self.sock.read_exact(&mut payload).is_err() {
                return goaway;
            }
            goaway |= h[3] == GOAWAY;
            if h[3] == PING && h[4] & ACK == 0 {
                let _ = self.try_write_frame(PING, ACK, 0, &payload);
            }
        }
    }

    /// Starts a gRPC call on a new stream: HEADERS with `authority`,
    /// `path` and `extra` headers, then one DATA frame with `msg` that ends
    /// the stream. Returns the stream id.
    pub fn start_call(
        &mut self,
        authority: &str,
        path: &str,
        extra: &[(&str, &str)],
        msg: &[u8],
    ) -> u32 {
        let id = self.next;
        self.next += 2;
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", authority.as_bytes()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        fields.extend(extra.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        let block = self.enc.encode(fields);
        self.write_frame(HEADERS, END_HEADERS, id, &block);
        self.write_frame(DATA, END_STREAM, id, &grpc_message(msg));
        id
    }

    /// Reads one frame, answering SETTINGS and PING on the way.
    ///
    /// # Panics
    /// The connection fails or times out.
    pub fn read_frame(&mut self) -> Frame {
        let mut h = [0u8; 9];
        self.sock.read_exact(&mut h).expect("read frame header");
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let mut payload = vec![0u8; len];
        self.sock
            .read_exact(&mut payload)
            .expect("read frame payload");
        let f = Frame {
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            payload,
        };
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            self.write_frame(SETTINGS, ACK, 0, &[]);
        }
        if f.kind == PING && f.flags & ACK == 0 {
            let p = f.payload.clone();
            self.write_frame(PING, ACK, 0, &p);
        }
        f
    }

    fn decode(&mut self, block: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.dec
            .decode_with_cb(block, |n, v| {
                out.push((
                    String::from_utf8_lossy(&n).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                ))
            })
            .unwrap_or_else(|e| panic!("HPACK from the server: {e:?}"));
        out
    }

    /// Reads until `stream` ends, returning every window it consumed (so
    /// the server can go on sending) and what arrived. Frames of other
    /// streams are dropped (their header blocks still update the HPACK
    /// state).
    ///
    /// # Panics
    /// The connection fails, times out or is closed.
    pub fn finish(&mut self, stream: u32) -> Reply {
        let mut r = Reply::default();
        let mut block = Vec::new();
        loop {
            let f = self.read_frame();
            match f.kind {
                HEADERS | CONTINUATION => {
                    block.extend_from_slice(&f.payload);
                    if f.flags & END_HEADERS != 0 {
                        let fields = self.decode(&block);
                        block.clear();
                        if f.stream == stream {
                            if r.headers.is_empty() {
                                r.headers = fields;
                            } else {
                                r.trailers = fields;
                            }
                        }
                    }
                    if f.stream == stream && f.flags & END_STREAM != 0 {
                        return r;
                    }
                }
                DATA => {
                    if !f.payload.is_empty() {
                        // Best effort: a server that has sent everything
                        // may have closed the connection already.
                        let inc = (f.payload.len() as u32).to_be_bytes();
                        let _ = self.try_write_frame(WINDOW_UPDATE, 0, 0, &inc);
                        let _ = self.try_write_frame(WINDOW_UPDATE, 0, f.stream, &inc);
                    }
                    if f.stream == stream {
                        r.data.extend_from_slice(&f.payload);
                        if f.flags & END_STREAM != 0 {
                            return r;
                        }
                    }
                }
                RST_STREAM if f.stream == stream => {
                    let code = f
                        .payload
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    r.reset = code;
                    return r;
                }
                GOAWAY => r.goaway = true,
                _ => {}
            }
        }
    }
}
