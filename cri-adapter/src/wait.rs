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

/// Polls until ready or `timeout`.
///
/// # Errors
/// Not ready in time; the message names the last failing condition.
pub async fn wait(socket: &Path, require: &[&str], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        match probe(socket, require).await {
            Ok(()) => return Ok(()),
            Err(why) => {
                if Instant::now() >= deadline {
                    bail!(
                        "{} not ready after {}s: {why}",
                        socket.display(),
                        timeout.as_secs()
                    );
                }
                tracing::debug!(%why, "waiting for the runtime");
            }
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Sends `READY=1` (or any state) to systemd when `NOTIFY_SOCKET` is set.
///
/// # Errors
/// The notification socket cannot be reached.
pub fn sd_notify(state: &str) -> Result<()> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let target = target.to_string_lossy().into_owned();
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &target)?;
    }
    Ok(())
}
