//! h2 mode's client side: older grpc-go clients (crictl and critest 1.26,
//! kubelet up to 1.30) send the socket path as `:authority`, which is no
//! valid authority, and the HTTP/2 server stack resets every such stream
//! with `PROTOCOL_ERROR` before the call can be forwarded. The authority
//! of a unix-socket connection carries no meaning, so [`Rewriting`] sits
//! between the client's socket and the HTTP/2 server and re-encodes every
//! header block, replacing an invalid `:authority` by `localhost`.
//!
//! Only the client-to-adapter direction is touched. Header blocks are HPACK
//! state shared by the two ends, so once one block is re-encoded all must
//! be: every HEADERS/CONTINUATION sequence is decoded with the client's
//! context and re-encoded with the adapter's own; every other frame passes
//! untouched.

use bytes::{Buf, BufMut, BytesMut};
use loona_hpack::{Decoder, Encoder};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The server's SETTINGS_MAX_FRAME_SIZE (HTTP/2's default, which hyper
/// keeps): no frame we write is larger.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is refused (hyper's own default header
/// list limit is 16 MiB; CRI requests carry a few hundred bytes).
const MAX_BLOCK: usize = 1 << 20;
/// The authority every invalid one is replaced by.
const LOCALHOST: &[u8] = b"localhost";

/// A header block being collected across HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct Pending {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// A client connection whose reads come out with every `:authority` valid.
pub struct Rewriting<S> {
    inner: S,
    /// Bytes read from the client, not yet processed.
    input: BytesMut,
    /// Processed bytes, not yet handed to the reader.
    output: BytesMut,
    preface_left: usize,
    pending: Option<Pending>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    /// The first replaced authority, logged once per connection.
    logged: bool,
    eof: bool,
}

impl<S> std::fmt::Debug for Rewriting<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriting")
            .field("input", &self.input.len())
            .field("output", &self.output.len())
            .finish_non_exhaustive()
    }
}

fn protocol(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Whether `v` parses as an authority the HTTP/2 server accepts.
fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

impl<S> Rewriting<S> {
    /// Wraps a client connection (from its first byte on).
    pub fn new(inner: S) -> Self {
        Rewriting {
            inner,
            input: BytesMut::with_capacity(16 << 10),
            output: BytesMut::with_capacity(16 << 10),
            preface_left: PREFACE.len(),
            pending: None,
            decoder: Decoder::new(),
            encoder: Encoder::new(),
            logged: false,
            eof: false,
        }
    }

    /// Moves every complete frame from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        if self.preface_left > 0 {
            let n = self.preface_left.min(self.input.len());
            let at = PREFACE.len() - self.preface_left;
            if self.input[..n] != PREFACE[at..at + n] {
                return Err(protocol("not an HTTP/2 client preface".into()));
            }
            self.output.extend_from_slice(&self.input.split_to(n));
            self.preface_left -= n;
        }
        while self.preface_left == 0 && self.input.len() >= HEADER_LEN {
            let h = &self.input[..HEADER_LEN];
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            if self.input.len() < HEADER_LEN + len {
                self.input.reserve(HEADER_LEN + len - self.input.len());
                break;
            }
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let frame = self.input.split_to(HEADER_LEN + len);
            match kind {
                HEADERS | CONTINUATION => {
                    self.header_frame(kind, flags, stream, &frame[HEADER_LEN..])?
                }
                _ if self.pending.is_some() => {
                    return Err(protocol("a frame interrupted a header block".into()))
                }
                _ => self.output.extend_from_slice(&frame),
            }
        }
        Ok(())
    }

    fn header_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> io::Result<()> {
        let fragment = match (kind, self.pending.as_mut()) {
            (HEADERS, None) => {
                let mut p = payload;
                let pad = if flags & PADDED != 0 {
                    let n = usize::from(
                        *p.first()
                            .ok_or_else(|| protocol("empty padded HEADERS".into()))?,
                    );
                    p = &p[1..];
                    n
                } else {
                    0
                };
                let priority = if flags & PRIORITY != 0 {
                    let b: [u8; 5] = p
                        .get(..5)
                        .and_then(|s| s.try_into().ok())
                        .ok_or_else(|| protocol("short HEADERS priority".into()))?;
                    p = &p[5..];
                    Some(b)
                } else {
                    None
                };
                let end = p
                    .len()
                    .checked_sub(pad)
                    .ok_or_else(|| protocol("HEADERS padding longer than the frame".into()))?;
                self.pending = Some(Pending {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    block: Vec::with_capacity(end),
                });
                &p[..end]
            }
            (CONTINUATION, Some(p)) if p.stream == stream => payload,
            _ => return Err(protocol("unexpected header frame".into())),
        };
        let Some(pending) = self.pending.as_mut() else {
            return Ok(());
        };
        if pending.block.len() + fragment.len() > MAX_BLOCK {
            return Err(protocol("header block too large".into()));
        }
        pending.block.extend_from_slice(fragment);
        if flags & END_HEADERS != 0 {
            if let Some(done) = self.pending.take() {
                self.reencode(done)?;
            }
        }
        Ok(())
    }

    /// Decodes a whole header block and writes it re-encoded.
    fn reencode(&mut self, p: Pending) -> io::Result<()> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(12);
        let mut replaced: Option<Vec<u8>> = None;
        self.decoder
            .decode_with_cb(&p.block, |name, value| {
                if &name[..] == b":authority" && !valid_authority(&value) {
                    replaced = Some(value.into_owned());
                    fields.push((name.into_owned(), LOCALHOST.to_vec()));
                } else {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| protocol(format!("HPACK: {e:?}")))?;
        if let Some(old) = replaced {
            if !self.logged {
                self.logged = true;
                tracing::debug!(authority = %String::from_utf8_lossy(&old), "client's :authority is not an authority; forwarding as localhost");
            }
        }
        let block = self
            .encoder
            .encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let prio_len = if p.priority.is_some() { 5 } else { 0 };
        let mut rest: &[u8] = &block;
        let mut first = true;
        loop {
            let room = if first {
                MAX_FRAME - prio_len
            } else {
                MAX_FRAME
            };
            let n = rest.len().min(room);
            let last = n == rest.len();
            let (kind, mut flags, extra) = if first {
                let mut f = if p.end_stream { END_STREAM } else { 0 };
                if p.priority.is_some() {
                    f |= PRIORITY;
                }
                (HEADERS, f, prio_len)
            } else {
                (CONTINUATION, 0, 0)
            };
            if last {
                flags |= END_HEADERS;
            }
            let len = n + extra;
            self.output.reserve(HEADER_LEN + len);
            self.output.put_uint(len as u64, 3);
            self.output.put_u8(kind);
            self.output.put_u8(flags);
            self.output.put_u32(p.stream);
            if first {
                if let Some(b) = p.priority {
                    self.output.put_slice(&b);
                }
            }
            self.output.put_slice(&rest[..n]);
            rest = &rest[n..];
            first = false;
            if last {
                return Ok(());
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewriting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut tmp = [0u8; 16 << 10];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                        continue;
                    }
                    this.input.extend_from_slice(rb.filled());
                    this.process()?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewriting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A frame's type, its flags, and its decoded header block (if any).
    type Decoded = (u8, u8, Vec<(String, String)>);

    /// Splits rewritten bytes into frames and decodes each header block.
    fn decode_all(bytes: &[u8]) -> Vec<Decoded> {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        let mut block = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            assert!(len <= MAX_FRAME);
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[HEADER_LEN..HEADER_LEN + len];
            let skip = if kind == HEADERS && flags & PRIORITY != 0 {
                5
            } else {
                0
            };
            if kind == HEADERS || kind == CONTINUATION {
                block.extend_from_slice(&payload[skip..]);
                if flags & END_HEADERS != 0 {
                    let mut fields = Vec::new();
                    dec.decode_with_cb(&block, |n, v| {
                        fields.push((
                            String::from_utf8_lossy(&n).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        ))
                    })
                    .unwrap_or_else(|e| panic!("{e:?}"));
                    out.push((kind, flags, fields));
                    block.clear();
                }
            } else {
                out.push((kind, flags, Vec::new()));
            }
            rest = &rest[HEADER_LEN + len..];
        }
        out
    }

    async fn rewrite(input: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut r = Rewriting::new(&input[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await?;
        Ok(out)
    }

    fn request(enc: &mut Encoder<'_>, authority: &str) -> Vec<u8> {
        enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/runtime.v1.RuntimeService/Version"),
            (b":authority", authority.as_bytes()),
            (b"content-type", b"application/grpc"),
        ])
    }

    #[tokio::test]
    async fn socket_path_authorities_become_localhost_and_the_rest_passes() {
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        let first = request(&mut enc, "/run/containerd/containerd.sock");
        // Split across HEADERS + CONTINUATION, padded, with a priority.
        let mut h = vec![3u8];
        h.extend_from_slice(&[0, 0, 0, 0, 16]);
        h.extend_from_slice(&first[..10]);
        h.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY, 1, &h));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &first[10..]));
        input.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0])); // DATA
                                                                   // The second request refers to the dynamic table the first filled.
        let second = request(&mut enc, "/run/containerd/containerd.sock");
        input.extend(frame(HEADERS, END_HEADERS, 3, &second));
        let third = request(&mut enc, "localhost:1234");
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &third));
        let out = rewrite(input).await.unwrap_or_else(|e| panic!("{e}"));
        let frames = decode_all(&out);
        let kinds: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(kinds, vec![0x4, HEADERS, 0x0, HEADERS, HEADERS]);
        let authority = |i: usize| {
            frames[i]
                .2
                .iter()
                .find(|(n, _)| n == ":authority")
                .map(|(_, v)| v.clone())
        };
        assert_eq!(authority(1).as_deref(), Some("localhost"));
        assert_eq!(authority(3).as_deref(), Some("localhost"));
        assert_eq!(authority(4).as_deref(), Some("localhost:1234"));
        assert_eq!(frames[1].2.len(), 5);
        assert_eq!(frames[1].2[2].1, "/runtime.v1.RuntimeService/Version");
        assert_eq!(frames[1].1 & PRIORITY, PRIORITY);
        assert_eq!(frames[4].1 & END_STREAM, END_STREAM);
    }

    #[tokio::test]
    async fn large_blocks_are_split_into_continuations() {
        let mut enc = Encoder::new();
        let big = "x".repeat(40_000);
        let block = enc.encode([(&b":authority"[..], &b"/a/b"[..]), (b"big", big.as_bytes())]);
        let mut input = PREFACE.to_vec();
        for (i, chunk) in block.chunks(MAX_FRAME).enumerate() {
            let last = (i + 1) * MAX_FRAME >= block.len();
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            input.extend(frame(kind, if last { END_HEADERS } else { 0 }, 1, chunk));
        }
        let out = rewrite(input).await.unwrap_or_else(|e| panic!("{e}"));
        let frames = decode_all(&out);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].2[1].1.len(), 40_000);
    }

    #[tokio::test]
    async fn garbage_is_an_error() {
        assert!(rewrite(b"GET / HTTP/1.1\r\n\r\n".to_vec()).await.is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]));
        assert!(rewrite(input).await.is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &[0x82]));
        input.extend(frame(0x0, 0, 1, &[]));
        assert!(rewrite(input).await.is_err(), "DATA inside a header block");
    }
}
