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
//! In h2 mode the socket-path `:authority` older grpc-go clients send (which
//! the HTTP/2 stack would reject) is rewritten to `localhost` on the way in
//! ([`authority`]).

mod authority;
mod h2;
mod listen;
mod splice;

pub use h2::Upstream;
pub use listen::bind;

use anyhow::Result;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

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
                    tokio::spawn(splice::splice(stream, up));
                    continue;
                }
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let up = up.clone();
                        async move { Ok::<_, Infallible>(up.forward(req).await) }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .initial_stream_window_size(h2::STREAM_WINDOW)
                        .initial_connection_window_size(h2::CONNECTION_WINDOW)
                        .max_concurrent_streams(1024)
                        .serve_connection(TokioIo::new(authority::Rewriting::new(stream)), svc);
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
