//! splice mode: one runtime connection per client connection, bytes copied
//! both ways untouched.

use super::h2::Upstream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

/// Splice mode: each client connection gets its own runtime connection and
/// bytes are copied both ways untouched (HTTP/2 end to end between client
/// and runtime). Cheapest per call; a runtime outage closes client
/// connections instead of answering UNAVAILABLE per call.
pub(super) async fn splice(mut client: UnixStream, upstream: Arc<Upstream>) {
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
