//! The adapter's own socket: binding it safely, keeping enough file
//! descriptors, and backing off when accept fails.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixSocket};

/// Refuses an upstream path that exists and is no socket (every call would
/// fail); one that does not exist yet is fine (the runtime may start later).
///
/// # Errors
/// The path is a file, directory or other non-socket.
pub fn check_upstream(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            let kind = if m.is_dir() {
                "a directory"
            } else if m.is_file() {
                "a regular file"
            } else {
                "not a socket"
            };
            bail!(
                "the upstream endpoint {} is {kind}, not the runtime's socket",
                path.display()
            )
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(upstream = %path.display(), "the runtime's socket does not exist yet");
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("checking {}", path.display())),
    }
}

/// Raises the soft open-file limit to the hard one: splice mode holds two
/// descriptors per client, and the usual soft limit is 1024.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current >= lim.maximum {
        return;
    }
    let from = lim.current;
    lim.current = lim.maximum;
    match setrlimit(Resource::Nofile, lim) {
        Ok(()) => tracing::debug!(from = ?from, to = ?lim.maximum, "raised the open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

/// Logs a warning at most once every 10 s (per process).
pub fn warn_limited(e: &std::io::Error, what: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    static SKIPPED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let skipped = SKIPPED.swap(0, Ordering::Relaxed);
        tracing::warn!(error = %e, repeated = skipped, "{what}");
    } else {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Pauses after failed accepts: 10 ms doubling to 1 s, with one warning
/// when failures start and then one every 10 s while they last.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u64,
    pause: Duration,
    warned: Option<Instant>,
}

impl Backoff {
    /// Records a failure; returns how long to pause.
    pub fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.failures += 1;
        self.pause = (self.pause * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        if self
            .warned
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.warned = Some(Instant::now());
            tracing::warn!(error = %e, failures = self.failures, "accept failed; pausing new connections");
        }
        self.pause
    }

    /// Accepting works again.
    pub fn reset(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "accepting connections again");
        }
        *self = Backoff::default();
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
    // Bound, not listening yet: a connect is refused until `listen`, so no
    // client (a supervisor, kubelet, a test) gets in before the mode is set.
    let sock = UnixSocket::new_stream().context("creating the listening socket")?;
    sock.bind(listen)
        .with_context(|| format!("binding {}", listen.display()))?;
    if let Err(e) = std::fs::set_permissions(listen, std::fs::Permissions::from_mode(0o660)) {
        let _ = std::fs::remove_file(listen);
        return Err(e).with_context(|| format!("chmod 0660 {}", listen.display()));
    }
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
    // The kernel caps the backlog at net.core.somaxconn (std asks for that).
    sock.listen(u32::MAX).map_err(|e| {
        let _ = std::fs::remove_file(listen);
        anyhow::Error::new(e).context(format!("listening on {}", listen.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let e = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<u128> = (0..9).map(|_| b.failed(&e).as_millis()).collect();
        assert_eq!(pauses, vec![10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.failed(&e), Duration::from_millis(10));
    }

    #[test]
    fn an_upstream_that_is_no_socket_is_refused() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = d.path().join("file");
        let _ = std::fs::write(&f, b"x");
        let e = check_upstream(&f)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.ends_with("is a regular file, not the runtime's socket"),
            "{e}"
        );
        let e = check_upstream(d.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.ends_with("is a directory, not the runtime's socket"),
            "{e}"
        );
        assert!(check_upstream(&d.path().join("absent.sock")).is_ok());
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
