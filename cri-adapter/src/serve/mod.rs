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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

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
    /// per-call UNAVAILABLE. Costs more per call.
    H2,
}

/// What `serve` needs besides the upstream.
#[derive(Debug, Clone)]
pub struct Options {
    /// The socket to listen on.
    pub listen: PathBuf,
    /// How calls are forwarded.
    pub mode: Mode,
    /// After SIGTERM, how long calls in flight may take to finish.
    pub drain: Duration,
}

/// Serves until SIGINT or SIGTERM; then stops accepting, removes the
/// socket, lets the calls in flight finish for up to `drain`, and returns.
///
/// # Errors
/// The upstream is no socket, or binding fails.
pub async fn serve(opts: &Options, upstream: Arc<Upstream>) -> Result<()> {
    listen::check_upstream(&upstream.path)?;
    listen::raise_fd_limit();
    // Handlers first: once the socket exists a supervisor may stop us, and a
    // SIGTERM before the handler would kill the process with no clean-up.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listener = bind(&opts.listen, &upstream.path)?;
    tracing::info!(listen = %opts.listen.display(), upstream = %upstream.path.display(), "serving");
    crate::wait::notify_ready();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut backoff = listen::Backoff::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff.reset();
                    let up = upstream.clone();
                    let shutdown = shutdown.clone();
                    match opts.mode {
                        Mode::Splice => conns.spawn(splice::splice(stream, up, shutdown)),
                        Mode::H2 => conns.spawn(serve_h2(stream, up, shutdown)),
                    };
                }
                // Out of file descriptors (or memory): pause accepting
                // instead of spinning; calls in flight go on meanwhile.
                Err(e) => tokio::time::sleep(backoff.failed(&e)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = int.recv() => break,
            _ = term.recv() => break,
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&opts.listen);
    let _ = shutdown_tx.send(true);
    let busy = conns.len();
    tracing::info!(
        connections = busy,
        drain_s = opts.drain.as_secs_f64(),
        "stopping: draining calls in flight"
    );
    let all_done = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(opts.drain, all_done).await.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "drain period over; closing connections with calls in flight"
        );
        conns.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Returns once shutdown is signalled (never, if the sender is gone
/// without one).
async fn until_shutdown(mut shutdown: watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One client connection in h2 mode; on shutdown it sends GOAWAY and ends
/// once its calls in flight are done.
async fn serve_h2(stream: UnixStream, up: Arc<Upstream>, shutdown: watch::Receiver<bool>) {
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let up = up.clone();
        async move { Ok::<_, Infallible>(up.forward(req).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(h2::STREAM_WINDOW)
        .initial_connection_window_size(h2::CONNECTION_WINDOW)
        .max_concurrent_streams(1024)
        .serve_connection(TokioIo::new(authority::Rewriting::new(stream)), svc);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = until_shutdown(shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "client connection ended");
    }
}
