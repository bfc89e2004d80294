//! The adapter's own socket: binding it safely.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;

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

#[cfg(test)]
mod tests {
    use super::*;

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
