//! `wait`: block until the runtime answers and is ready, so kubelet starts
//! against a working runtime; tell systemd when run as a notify service.

use crate::client;
use anyhow::{bail, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// Why the runtime is not ready yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The socket does not accept or `Version` fails.
    Unreachable(String),
    /// A condition is false: (type, reason, message).
    Condition(String, String, String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Unreachable(e) => write!(f, "runtime unreachable: {e}"),
            NotReady::Condition(t, r, m) => {
                write!(f, "condition {t} is false")?;
                if !r.is_empty() {
                    write!(f, " (reason {r})")?;
                }
                if !m.is_empty() {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
        }
    }
}

/// One readiness probe: `Version` answers and every required condition is
/// true.
pub async fn probe(socket: &Path, require: &[&str]) -> Result<(), NotReady> {
    let per_call = Duration::from_secs(2);
    let ch = client::channel(socket, per_call)
        .await
        .map_err(|e| NotReady::Unreachable(format!("{e:#}")))?;
    client::version(ch.clone())
        .await
        .map_err(|e| NotReady::Unreachable(format!("{e:#}")))?;
    let conds = client::conditions(ch)
        .await
        .map_err(|e| NotReady::Unreachable(format!("{e:#}")))?;
    for want in require {
        match conds.iter().find(|c| c.0 == *want) {
            Some((_, true, _, _)) => {}
            Some((t, false, r, m)) => {
                return Err(NotReady::Condition(t.clone(), r.clone(), m.clone()))
            }
            None => {
                return Err(NotReady::Condition(
                    (*want).to_string(),
                    "Missing".into(),
                    "not reported by the runtime".into(),
                ))
            }
        }
    }
    Ok(())
}

/// Polls until ready or `timeout`. Ready means two consecutive ready
/// answers at least `settle` apart, with no failed probe between them:
/// CRI-O reports NetworkReady=true right after start, until its first CNI
/// poll (about 500 ms later) finds no config.
///
/// `deadline` ends the wait; `timeout` is what the error message reports.
///
/// # Errors
/// Not ready in time; the message names the last failing condition.
pub async fn wait(
    socket: &Path,
    require: &[&str],
    deadline: Instant,
    timeout: Duration,
    settle: Duration,
) -> Result<()> {
    let shown = socket.display().to_string();
    wait_with(|| probe(socket, require), &shown, deadline, timeout, settle).await
}

/// [`wait`] over any probe.
async fn wait_with<F, Fut>(
    mut probe: F,
    shown: &str,
    deadline: Instant,
    timeout: Duration,
    settle: Duration,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), NotReady>>,
{
    let mut pause = Duration::from_millis(50);
    // When the current run of ready answers began.
    let mut ready_since: Option<Instant> = None;
    loop {
        let asked = Instant::now();
        match probe().await {
            Ok(()) => {
                let since = *ready_since.get_or_insert(asked);
                if asked.duration_since(since) >= settle {
                    return Ok(());
                }
                tracing::debug!("runtime ready, checking that it stays so");
                if Instant::now() >= deadline {
                    bail!(
                        "{shown} not ready after {}s: ready only since {} ms (needs to hold {} ms)",
                        timeout.as_secs(),
                        asked.duration_since(since).as_millis(),
                        settle.as_millis()
                    );
                }
                // Ask again once the settle time has passed.
                let next = since + settle;
                tokio::time::sleep(
                    next.saturating_duration_since(Instant::now())
                        .min(deadline.saturating_duration_since(Instant::now())),
                )
                .await;
                continue;
            }
            Err(why) => {
                if ready_since.take().is_some() {
                    tracing::info!(%why, "runtime was ready, is not any more");
                }
                if Instant::now() >= deadline {
                    bail!("{shown} not ready after {}s: {why}", timeout.as_secs());
                }
                tracing::debug!(%why, "waiting for the runtime");
            }
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Tells systemd `READY=1` when `NOTIFY_SOCKET` is set; a notification
/// that cannot be delivered is logged at warn (systemd would then time the
/// unit out).
pub fn notify_ready() {
    if let Err(e) = sd_notify("READY=1") {
        tracing::warn!(
            notify_socket = %std::env::var_os("NOTIFY_SOCKET").unwrap_or_default().to_string_lossy(),
            "cannot notify systemd (READY=1): {e:#}"
        );
    }
}

/// Sends `READY=1` (or any state) to systemd when `NOTIFY_SOCKET` is set.
///
/// # Errors
/// The notification socket cannot be reached.
pub fn sd_notify(state: &str) -> Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(target) => notify_to(&target.to_string_lossy(), state),
        None => Ok(()),
    }
}

/// Sends `state` to the notification socket `target` (a path, or `@name`
/// for an abstract socket).
fn notify_to(target: &str, state: &str) -> Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn in_secs(s: u64) -> Instant {
        Instant::now() + Duration::from_secs(s)
    }

    fn network_down() -> NotReady {
        NotReady::Condition(
            "NetworkReady".into(),
            "NetworkPluginNotReady".into(),
            "No CNI configuration file".into(),
        )
    }

    /// CRI-O right after start: ready for the first ~500 ms, then the CNI
    /// poll finds no config. `wait` must not call that ready.
    #[tokio::test(flavor = "current_thread")]
    async fn early_ready_that_flips_is_not_ready() {
        let start = Instant::now();
        let flip = Duration::from_millis(300);
        let probe = || async move {
            if start.elapsed() < flip {
                Ok(())
            } else {
                Err(network_down())
            }
        };
        let err = wait_with(
            probe,
            "crio.sock",
            in_secs(2),
            Duration::from_secs(2),
            Duration::from_millis(500),
        )
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(err.contains("NetworkReady is false"), "{err}");
        assert!(err.contains("No CNI configuration file"), "{err}");
    }

    /// Steady readiness is accepted after the settle time, not before.
    #[tokio::test(flavor = "current_thread")]
    async fn steady_ready_after_settle() {
        let calls = AtomicUsize::new(0);
        let start = Instant::now();
        let probe = || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        };
        let settle = Duration::from_millis(400);
        wait_with(probe, "x", in_secs(5), Duration::from_secs(5), settle)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(start.elapsed() >= settle, "{:?}", start.elapsed());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A failure between two ready answers restarts the settle time.
    #[tokio::test(flavor = "current_thread")]
    async fn a_dip_restarts_the_settle_time() {
        let n = AtomicUsize::new(0);
        let start = Instant::now();
        let probe = || {
            let i = n.fetch_add(1, Ordering::SeqCst);
            async move {
                if i == 1 {
                    Err(network_down())
                } else {
                    Ok(())
                }
            }
        };
        let settle = Duration::from_millis(300);
        wait_with(probe, "x", in_secs(5), Duration::from_secs(5), settle)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        // ready, down (then back-off 50 ms), ready, ready after settle.
        assert_eq!(n.load(Ordering::SeqCst), 4);
        assert!(start.elapsed() >= settle + settle, "{:?}", start.elapsed());
    }

    // Through `notify_to`, not by setting NOTIFY_SOCKET: the environment
    // is the whole process's, and the other tests run on other threads.
    #[test]
    fn unreachable_notify_socket_is_an_error() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let nobody = d.path().join("nobody-listens");
        assert!(notify_to(&nobody.to_string_lossy(), "READY=1").is_err());
    }

    #[test]
    fn the_state_reaches_the_notify_socket() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = d.path().join("notify");
        let systemd = std::os::unix::net::UnixDatagram::bind(&path)
            .unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        notify_to(&path.to_string_lossy(), "READY=1").unwrap_or_else(|e| panic!("{e:#}"));
        let mut buf = [0u8; 64];
        let n = systemd.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..n], b"READY=1");
    }
}
