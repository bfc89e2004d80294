//! `serve`: a stable CRI socket in front of the runtime, forwarding HTTP/2
//! frame by frame, in one of two modes ([`Mode`]). The default, splice,
//! copies each client connection's bytes to its own runtime connection.
//! The h2 mode, described below, terminates HTTP/2 and forwards per call.
//!
//! Nothing is decoded: every path (RPCs we were never compiled with too),
//! header, trailer, status, `grpc-timeout` and message size passes through;
//! a client's cancellation resets the upstream stream, and server streams
//! flow with end-to-end flow control. While the runtime is down a call waits
//! for it up to the call's deadline (`grpc-timeout`, else `--max-wait`) and
//! then gets `UNAVAILABLE`; the upstream connection is re-made on demand, so
//! a runtime restart needs no adapter restart.
//!
//! Clients must send `:authority localhost` (kubelet 1.31+ and tonic do):
//! the HTTP/2 stack rejects the socket-path authority older grpc-go clients
//! send.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

type Body = BoxBody<Bytes, hyper::Error>;

/// The runtime side: one shared HTTP/2 connection, re-made when it breaks.
#[derive(Debug)]
pub struct Upstream {
    path: PathBuf,
    /// The live connection; a plain mutex held only to clone the handle.
    conn: std::sync::Mutex<Option<SendRequest<Incoming>>>,
    /// Serialises reconnects.
    connecting: Mutex<()>,
    max_wait: Duration,
}

async fn connect(path: &Path) -> Result<SendRequest<Incoming>, String> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| format!("connect {}: {e}", path.display()))?;
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
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
    pub async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let wait = req
            .headers()
            .get("grpc-timeout")
            .and_then(grpc_timeout)
            .unwrap_or(self.max_wait);
        let path = req.uri().path().to_string();
        let mut sender = match self.sender(started + wait).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%path, error = %e, "runtime unavailable");
                return grpc_error(14, &format!("runtime unavailable: {e}"));
            }
        };
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
        match sender.send_request(Request::from_parts(parts, body)).await {
            Ok(resp) => {
                tracing::debug!(%path, elapsed_us = started.elapsed().as_micros() as u64, "forwarded");
                resp.map(BodyExt::boxed)
            }
            Err(e) => {
                tracing::warn!(%path, error = %e, "forwarding failed");
                grpc_error(14, &format!("runtime connection failed: {e}"))
            }
        }
    }
}

/// Prepares the listening socket: refuses a path that is the upstream
/// itself, replaces a stale socket, refuses a live one or a non-socket.
///
/// # Errors
/// As described.
pub fn bind(listen: &Path, upstream: &Path) -> Result<UnixListener> {
    let norm = |p: &Path| -> PathBuf {
        let parent = p.parent().and_then(|d| d.canonicalize().ok());
        match (parent, p.file_name()) {
            (Some(d), Some(f)) => d.join(f),
            _ => p.to_path_buf(),
        }
    };
    let upstream_real = upstream.canonicalize().unwrap_or_else(|_| norm(upstream));
    if norm(listen) == norm(upstream) || norm(listen) == upstream_real {
        bail!(
            "the upstream endpoint {} is the adapter's own socket {}: refusing to forward to myself",
            upstream.display(),
            listen.display()
        );
    }
    if let Ok(meta) = std::fs::symlink_metadata(listen) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", listen.display());
        }
        if std::os::unix::net::UnixStream::connect(listen).is_ok() {
            bail!("{} is in use by another server", listen.display());
        }
        std::fs::remove_file(listen)
            .with_context(|| format!("removing stale socket {}", listen.display()))?;
    }
    if let Some(dir) = listen.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let l = UnixListener::bind(listen).with_context(|| format!("binding {}", listen.display()))?;
    std::fs::set_permissions(listen, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", listen.display()))?;
    // A symlink or bind mount can still make the upstream our own socket.
    if let (Ok(a), Ok(b)) = (std::fs::metadata(listen), std::fs::metadata(upstream)) {
        if a.dev() == b.dev() && a.ino() == b.ino() {
            let _ = std::fs::remove_file(listen);
            bail!(
                "the upstream endpoint {} resolves to the adapter's own socket {}",
                upstream.display(),
                listen.display()
            );
        }
    }
    Ok(l)
}

/// How `serve` forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One runtime connection per client connection, bytes copied both ways
    /// untouched (HTTP/2 end to end). Cheapest, and any `:authority` works.
    /// While the runtime is down a new connection waits up to `--max-wait`
    /// and is then closed (clients report UNAVAILABLE); a runtime restart
    /// closes client connections, and clients reconnect.
    Splice,
    /// HTTP/2 terminated here and every call forwarded on one shared runtime
    /// connection: client connections survive runtime restarts and each call
    /// waits up to its own `grpc-timeout` for a down runtime, then gets a
    /// per-call UNAVAILABLE. Costs more per call; clients must send
    /// `:authority localhost`.
    H2,
}

/// Splice mode: each client connection gets its own runtime connection and
/// bytes are copied both ways untouched (HTTP/2 end to end between client
/// and runtime). Cheapest per call; a runtime outage closes client
/// connections instead of answering UNAVAILABLE per call.
async fn splice(mut client: UnixStream, upstream: Arc<Upstream>) {
    let deadline = Instant::now() + upstream.max_wait;
    let mut pause = Duration::from_millis(20);
    let mut up = loop {
        match UnixStream::connect(&upstream.path).await {
            Ok(s) => break s,
            Err(e) => {
                let now = Instant::now();
                if now >= deadline {
                    tracing::warn!(error = %e, "runtime unavailable; closing the client connection");
                    return;
                }
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    };
    // 64 KiB each way: large responses (ListImages, 16 MiB messages) move in
    // fewer system calls; a node has few CRI connections.
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut up, 64 << 10, 64 << 10).await
    {
        tracing::debug!(error = %e, "spliced connection ended");
    }
}

/// Serves until SIGINT or SIGTERM, then removes the socket.
///
/// # Errors
/// Binding fails.
pub async fn serve(listen: &Path, upstream: Arc<Upstream>, mode: Mode) -> Result<()> {
    let listener = bind(listen, &upstream.path)?;
    tracing::info!(listen = %listen.display(), upstream = %upstream.path.display(), "serving");
    crate::wait::notify_ready();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let up = upstream.clone();
                if mode == Mode::Splice {
                    tokio::spawn(splice(stream, up));
                    continue;
                }
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let up = up.clone();
                        async move { Ok::<_, Infallible>(up.forward(req).await) }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .initial_stream_window_size(4 << 20)
                        .initial_connection_window_size(8 << 20)
                        .max_concurrent_streams(1024)
                        .serve_connection(TokioIo::new(stream), svc);
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "client connection ended");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    let _ = std::fs::remove_file(listen);
    tracing::info!("stopped");
    Ok(())
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

    #[test]
    fn refuses_itself_and_non_sockets() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = d.path().join("cri.sock");
        assert!(bind(&p, &p).is_err());
        let f = d.path().join("file");
        let _ = std::fs::write(&f, b"x");
        assert!(bind(&f, &d.path().join("up.sock")).is_err());
    }
}
