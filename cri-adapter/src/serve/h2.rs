//! h2 mode: HTTP/2 terminated here and every call forwarded on one shared
//! runtime connection, re-made on demand. While the runtime is down a call
//! waits for it up to the call's deadline (`grpc-timeout`, else
//! `--max-wait`) and then gets `UNAVAILABLE`.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

pub(super) type Body = BoxBody<Bytes, hyper::Error>;

/// Per-stream receive window, both towards the runtime and towards clients.
pub(super) const STREAM_WINDOW: u32 = 1 << 20;
/// Connection receive window: HTTP/2's maximum (RFC 9113 section 6.9.1).
pub(super) const CONNECTION_WINDOW: u32 = (1 << 31) - 1;
/// Pause before a call the runtime connection never took is sent again.
const RESEND_PAUSE: Duration = Duration::from_millis(20);

/// The runtime side: one shared HTTP/2 connection, re-made when it breaks.
#[derive(Debug)]
pub struct Upstream {
    pub(super) path: PathBuf,
    /// The live connection; a plain mutex held only to clone the handle.
    conn: std::sync::Mutex<Option<SendRequest<Incoming>>>,
    /// Serialises reconnects.
    connecting: Mutex<()>,
    pub(super) max_wait: Duration,
}

async fn connect(path: &Path) -> Result<SendRequest<Incoming>, String> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| format!("connect {}: {e}", path.display()))?;
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        // Every client's calls share this connection. A stream whose client
        // stops reading keeps the data it was sent, and with it that much
        // of the connection's window: with the window no larger than a few
        // streams' (as it was), three stalled reads stopped every other
        // call. The connection window is HTTP/2's largest, so only the
        // per-stream window (which bounds what one stalled stream holds in
        // memory) limits a stream.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/2 handshake with {}: {e}", path.display()))?;
    let p = path.to_path_buf();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::info!(upstream = %p.display(), error = %e, "runtime connection closed");
        }
    });
    tracing::info!(upstream = %path.display(), "runtime connected");
    Ok(sender)
}

/// Parses a `grpc-timeout` value (`<digits><H|M|S|m|u|n>`).
pub fn grpc_timeout(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?;
    if s.len() < 2 || s.len() > 9 {
        return None;
    }
    let (n, unit) = s.split_at(s.len() - 1);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A trailers-only gRPC reply with `code` (14 = UNAVAILABLE).
fn grpc_error(code: u32, msg: &str) -> Response<Body> {
    let mut r = Response::new(
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(code));
    // grpc-message is percent-encoded; keep it to safe characters.
    let safe: String = msg
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect::<String>()
        .replace('%', "%25");
    if let Ok(v) = HeaderValue::from_str(&safe) {
        h.insert("grpc-message", v);
    }
    r
}

impl Upstream {
    /// The runtime at `path`.
    pub fn new(path: PathBuf, max_wait: Duration) -> Self {
        Upstream {
            path,
            conn: std::sync::Mutex::new(None),
            connecting: Mutex::new(()),
            max_wait,
        }
    }

    /// The live connection, if any (no await: the hot path).
    fn live(&self) -> Option<SendRequest<Incoming>> {
        let guard = self.conn.lock().ok()?;
        guard.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn sender(&self, deadline: Instant) -> Result<SendRequest<Incoming>, String> {
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let mut pause = Duration::from_millis(20);
        loop {
            let last = {
                let _one = self.connecting.lock().await;
                // Another call may have reconnected while we waited.
                if let Some(s) = self.live() {
                    return Ok(s);
                }
                match connect(&self.path).await {
                    Ok(s) => {
                        if let Ok(mut g) = self.conn.lock() {
                            *g = Some(s.clone());
                        }
                        return Ok(s);
                    }
                    Err(e) => e,
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(last);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Forwards one request and returns the runtime's response untouched.
    ///
    /// A request the runtime connection never took (it died, unnoticed yet,
    /// as the call came: a runtime killed a moment before) is sent again on
    /// a new connection, within the call's wait; one that may have reached
    /// the runtime never is.
    pub async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let wait = req
            .headers()
            .get("grpc-timeout")
            .and_then(grpc_timeout)
            .unwrap_or(self.max_wait);
        let deadline = started + wait;
        let path = req.uri().path().to_string();
        let (mut parts, body) = req.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        parts.uri = match Uri::builder()
            .scheme("http")
            .authority("localhost")
            .path_and_query(pq)
            .build()
        {
            Ok(u) => u,
            Err(e) => return grpc_error(13, &format!("bad request path: {e}")),
        };
        let mut req = Request::from_parts(parts, body);
        loop {
            let mut sender = match self.sender(deadline).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%path, error = %e, "runtime unavailable");
                    return grpc_error(14, &format!("runtime unavailable: {e}"));
                }
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    tracing::debug!(%path, elapsed_us = started.elapsed().as_micros() as u64, "forwarded");
                    return resp.map(BodyExt::boxed);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if Instant::now() < deadline => {
                        tracing::info!(
                            %path,
                            error = %e.error(),
                            "runtime connection gone before the call was sent; sending it again"
                        );
                        req = unsent;
                        // The dead handle reports closed now, so `sender`
                        // reconnects; a pause keeps a runtime that accepts
                        // and drops connections from making this spin.
                        tokio::time::sleep(
                            RESEND_PAUSE.min(deadline.saturating_duration_since(Instant::now())),
                        )
                        .await;
                    }
                    _ => {
                        let e = e.into_error();
                        tracing::warn!(%path, error = %e, "forwarding failed");
                        return grpc_error(14, &format!("runtime connection failed: {e}"));
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        let t = |s: &'static str| grpc_timeout(&HeaderValue::from_static(s));
        assert_eq!(t("1999991u"), Some(Duration::from_micros(1_999_991)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("5M"), Some(Duration::from_secs(300)));
        assert_eq!(t("x"), None);
        assert_eq!(t("10X"), None);
        assert_eq!(t("1234567890S"), None);
    }
}
