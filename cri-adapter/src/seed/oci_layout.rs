//! One image of an archive as an OCI image layout directory, for
//! `skopeo copy oci:DIR:REF`: whatever the archive's format (docker or OCI,
//! plain or gzip, one image or many), skopeo then sees exactly one image.
//! Blobs are copied streaming from the archive. Before anything reaches a
//! store, every layer is checked to be a tar (plain or gzip) whose
//! uncompressed digest is the config's diff_id, so a bad archive fails here
//! and never leaves half an image behind.

use super::archive::{ArchiveImage, Blob};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The reference name of the one image in a layout written here.
pub(super) const REF: &str = "image";

/// Counts and hashes what passes through.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Checks that layer `i` is a tar whose uncompressed digest is `diff_id`.
pub(super) fn check_layer(i: usize, layer: &Blob, diff_id: &str) -> Result<()> {
    let mut magic = Vec::new();
    layer.reader().take(2).read_to_end(&mut magic)?;
    let plain: Box<dyn Read> = if magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(
            layer.reader(),
        )))
    } else {
        Box::new(std::io::BufReader::new(layer.reader()))
    };
    let mut h = Hashing {
        inner: plain,
        hash: Sha256::new(),
    };
    {
        let mut ar = tar::Archive::new(&mut h);
        let entries = ar
            .entries()
            .with_context(|| format!("layer {i} ({}) is not a tar", layer.digest))?;
        for e in entries {
            let mut e = e.map_err(|err| {
                anyhow::anyhow!("layer {i} ({}) is not a valid tar: {err}", layer.digest)
            })?;
            std::io::copy(&mut e, &mut std::io::sink())
                .with_context(|| format!("layer {i} ({}) is truncated", layer.digest))?;
        }
    }
    // The tar's end padding counts too.
    std::io::copy(&mut h, &mut std::io::sink())
        .with_context(|| format!("layer {i} ({}) is corrupt", layer.digest))?;
    let mut got = String::from("sha256:");
    for b in h.hash.finalize() {
        got.push_str(&format!("{b:02x}"));
    }
    if got != diff_id {
        bail!(
            "layer {i} ({}) unpacks to {got}, but the image config says {diff_id}",
            layer.digest
        );
    }
    Ok(())
}

/// Checks every layer of `img` (see [`check_layer`]).
pub(super) fn check_layers(img: &ArchiveImage) -> Result<()> {
    if img.layers.len() != img.diff_ids.len() {
        bail!(
            "{}: {} layers but {} diff_ids",
            img.name,
            img.layers.len(),
            img.diff_ids.len()
        );
    }
    for (i, (l, d)) in img.layers.iter().zip(&img.diff_ids).enumerate() {
        check_layer(i, l, d)?;
    }
    Ok(())
}

fn write_blob(dir: &Path, b: &Blob) -> Result<()> {
    let hex = b
        .digest
        .strip_prefix("sha256:")
        .with_context(|| format!("unsupported digest {}", b.digest))?;
    let path = dir.join("blobs/sha256").join(hex);
    if path.exists() {
        return Ok(());
    }
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    std::io::copy(&mut b.reader(), &mut f)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Docker schema 2 manifest media type (docker archives).
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The OCI manifest for an image read from a docker archive: skopeo's
/// `oci:` transport only takes OCI manifests from a layout's index. The
/// docker image config is a valid OCI config; layers keep their bytes.
fn oci_manifest(img: &ArchiveImage) -> Result<Blob> {
    let layer_type = |b: &Blob| {
        if b.media_type.ends_with("gzip") {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        }
    };
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": img.config.digest,
            "size": img.config.size,
        },
        "layers": img.layers.iter().map(|l| serde_json::json!({
            "mediaType": layer_type(l),
            "digest": l.digest,
            "size": l.size,
        })).collect::<Vec<_>>(),
    });
    Ok(Blob::inline(
        "application/vnd.oci.image.manifest.v1+json",
        serde_json::to_vec(&m)?,
    ))
}

/// Writes `img` as an OCI image layout in `dir`, its one manifest named
/// [`REF`].
pub(super) fn write_layout(dir: &Path, img: &ArchiveImage) -> Result<()> {
    std::fs::create_dir_all(dir.join("blobs/sha256"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let manifest = if img.manifest.media_type == DOCKER_MANIFEST {
        oci_manifest(img)?
    } else {
        img.manifest.clone()
    };
    for b in img.layers.iter().chain([&img.config, &manifest]) {
        write_blob(dir, b)?;
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": {"org.opencontainers.image.ref.name": REF},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::archive::sha256_digest;
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        b.into_inner().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn layers_are_checked_before_import() {
        let t = tar_of(&[("a", b"hello")]);
        let good = Blob::inline("application/vnd.oci.image.layer.v1.tar", t.clone());
        check_layer(0, &good, &sha256_digest(&t)).unwrap_or_else(|e| panic!("{e:#}"));
        // gzip: the diff_id is the digest of the uncompressed tar.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &t).unwrap_or_else(|e| panic!("{e}"));
        let gz = Blob::inline("x", gz.finish().unwrap_or_else(|e| panic!("{e}")));
        check_layer(0, &gz, &sha256_digest(&t)).unwrap_or_else(|e| panic!("{e:#}"));
        // Not a tar, even when the config's diff_id matches the bytes.
        let junk = vec![b'x'; 3000];
        let bad = Blob::inline("x", junk.clone());
        let err = format!(
            "{:#}",
            check_layer(1, &bad, &sha256_digest(&junk))
                .err()
                .unwrap_or_else(|| panic!("accepted"))
        );
        assert!(err.contains("layer 1") && err.contains("tar"), "{err}");
        // A tar the config does not describe.
        let err = format!(
            "{:#}",
            check_layer(0, &good, &sha256_digest(b"other"))
                .err()
                .unwrap_or_else(|| panic!("accepted"))
        );
        assert!(err.contains("but the image config says"), "{err}");
    }
}
