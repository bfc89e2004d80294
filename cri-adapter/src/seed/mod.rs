//! `seed`: import image archives so a node works with no registry.
//!
//! Archives: an OCI image layout (`oci-layout`, `index.json`, `blobs/`) or a
//! docker archive (`manifest.json`), as a plain or gzip tar. Every blob is
//! checked against its digest before anything is written.
//!
//! containerd: the blobs are written with the content service (with the GC
//! reference labels containerd's own importer sets), each layer is unpacked
//! into the snapshotter (Prepare → diff Apply → Commit, the chain ID naming
//! the snapshot), and the image record is created in the namespace, all
//! under a lease. This path works on containerd 1.6, which has no Transfer
//! service. A failure removes what this import created. The image is then
//! verified under its exact name with CRI `ImageStatus`. An image already
//! present with the same manifest is left alone.
//!
//! CRI-O: `skopeo copy` into CRI-O's own containers-storage, which is asked
//! from CRI-O over its socket (see [`crio`]).

mod archive;
mod containerd;
mod crio;
mod oci_layout;

use crate::client;
use crate::endpoint::Runtime;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

use archive::{normalize, parse_archive};
use containerd::import_containerd;

/// How to seed.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// Runtime.
    pub runtime: Runtime,
    /// CRI endpoint, for the final `ImageStatus`.
    pub cri_socket: PathBuf,
    /// containerd's own API socket.
    pub containerd_socket: PathBuf,
    /// containerd namespace (`k8s.io` for CRI).
    pub namespace: String,
    /// Snapshotter to unpack into.
    pub snapshotter: String,
    /// CRI-O: print the commands only.
    pub dry_run: bool,
    /// CRI-O: the skopeo binary.
    pub skopeo: PathBuf,
}

/// Imports one archive; returns a line per image.
///
/// # Errors
/// A corrupt or nameless archive, an unreachable runtime, a failed import
/// (rolled back), or an image CRI does not see afterwards.
pub async fn seed(opts: &SeedOptions, archive: &Path) -> Result<Vec<String>> {
    let shown = archive.display().to_string();
    let images = parse_archive(archive).map_err(|e| {
        // Name the archive once, whatever layer of parsing failed.
        if format!("{e:#}").contains(&shown) {
            e
        } else {
            e.context(shown.clone())
        }
    })?;
    let mut lines = Vec::new();
    match opts.runtime {
        Runtime::Containerd => {
            let ch = client::channel(&opts.containerd_socket, Duration::from_secs(10)).await?;
            for img in images {
                let name = normalize(&img.name);
                let outcome = import_containerd(opts, ch.clone(), &img, &name).await?;
                let id = cri_image_id(&opts.cri_socket, &name).await?;
                lines.push(format!("{name} {id} {outcome}"));
            }
        }
        Runtime::CriO => lines = crio::import_crio(opts, archive, &images).await?,
    }
    Ok(lines)
}

/// Where `seed` writes scratch data (an inflated gzip archive, per-image
/// OCI layouts): `$TMPDIR`, else `/var/tmp` (on disk, unlike a tmpfs `/tmp`).
fn scratch_dir() -> PathBuf {
    std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from)
}

/// CRI `ImageStatus` of `name`, retried for a few seconds: containerd's CRI
/// plugin learns about a new image from an event, shortly after the image
/// record exists.
async fn cri_image_id(socket: &Path, name: &str) -> Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_millis(20);
    loop {
        let cri = client::channel(socket, Duration::from_secs(10)).await?;
        if let Some(id) = client::image_id(cri, name).await? {
            return Ok(id);
        }
        if std::time::Instant::now() >= deadline {
            bail!("image {name} was imported but CRI ImageStatus does not find it");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::archive::*;
    use super::containerd::*;
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            normalize("registry.k8s.io/pause:3.6"),
            "registry.k8s.io/pause:3.6"
        );
        assert_eq!(normalize("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(normalize("me/app:1"), "docker.io/me/app:1");
    }

    #[test]
    fn chains() {
        let a = "sha256:aa".to_string();
        let b = "sha256:bb".to_string();
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], sha256_digest(b"sha256:aa sha256:bb"));
    }

    #[test]
    fn time_format() {
        let t = rfc3339_in(Duration::from_secs(0));
        assert_eq!(t.len(), 20);
        assert!(t.ends_with('Z'));
    }

    #[test]
    fn bad_archives() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = d.path().join("junk.tar");
        let _ = std::fs::write(&p, b"not a tar at all, definitely not");
        assert!(parse_archive(&p).is_err());
        let p = d.path().join("empty.tar");
        let _ = std::fs::write(&p, [0u8; 1024]);
        assert!(parse_archive(&p).is_err());
    }
}
