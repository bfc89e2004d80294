//! Reading image archives: OCI image layouts and docker archives, plain or
//! gzip, every blob checked against its digest.

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// A blob to import.
#[derive(Debug, Clone)]
pub(super) struct Blob {
    pub(super) media_type: String,
    pub(super) digest: String,
    pub(super) data: Vec<u8>,
}

/// One image read from an archive.
#[derive(Debug, Clone)]
pub(super) struct ArchiveImage {
    pub(super) name: String,
    pub(super) manifest: Blob,
    pub(super) config: Blob,
    pub(super) layers: Vec<Blob>,
    pub(super) diff_ids: Vec<String>,
    /// OCI image layout (else a docker archive).
    pub(super) oci_layout: bool,
}

pub(super) fn sha256_digest(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let mut s = String::from("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Reads every regular file of a (possibly gzip) tar into memory.
fn read_tar(path: &Path) -> Result<HashMap<String, Vec<u8>>> {
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .read_to_end(&mut raw)
        .with_context(|| format!("reading {}", path.display()))?;
    let data = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupt gzip", path.display()))?;
        out
    } else {
        raw
    };
    let mut files = HashMap::new();
    let mut ar = tar::Archive::new(&data[..]);
    let entries = ar
        .entries()
        .with_context(|| format!("{}: not a tar archive", path.display()))?;
    for e in entries {
        let mut e = e.map_err(|err| {
            anyhow!(
                "{}: corrupt or truncated tar ({})",
                path.display(),
                printable(&err.to_string())
            )
        })?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let name = e
            .path()
            .with_context(|| format!("{}: bad entry name", path.display()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut buf = Vec::new();
        e.read_to_end(&mut buf)
            .with_context(|| format!("{}: truncated entry {name}", path.display()))?;
        files.insert(name, buf);
    }
    if files.is_empty() {
        bail!("{}: empty or truncated archive", path.display());
    }
    Ok(files)
}

/// An error text cut to a readable line: the tar crate quotes raw header
/// bytes, which from a random file are binary garbage.
fn printable(s: &str) -> String {
    s.chars()
        .take(160)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn json(bytes: &[u8], what: &str) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes).with_context(|| format!("{what} is not valid JSON"))
}

fn blob_from_layout(
    files: &HashMap<String, Vec<u8>>,
    digest: &str,
    media_type: &str,
) -> Result<Blob> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| anyhow!("unsupported digest {digest}"))?;
    let data = files
        .get(&format!("blobs/sha256/{hex}"))
        .ok_or_else(|| anyhow!("blob {digest} missing from the archive"))?
        .clone();
    if sha256_digest(&data) != digest {
        bail!("blob {digest} is corrupt (digest mismatch)");
    }
    Ok(Blob {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        data,
    })
}

fn diff_ids(config: &serde_json::Value) -> Result<Vec<String>> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| anyhow!("image config has no rootfs.diff_ids"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("bad diff_id"))
        })
        .collect()
}

/// Parses an archive into its images.
pub(super) fn parse_archive(path: &Path) -> Result<Vec<ArchiveImage>> {
    let files = read_tar(path)?;
    if let Some(index) = files.get("index.json") {
        let index = json(index, "index.json")?;
        let mut out = Vec::new();
        for m in index["manifests"].as_array().into_iter().flatten() {
            let ann = &m["annotations"];
            let name = ann["io.containerd.image.name"]
                .as_str()
                .or_else(|| ann["org.opencontainers.image.ref.name"].as_str().filter(|n| n.contains(['/', ':'])))
                .ok_or_else(|| {
                    anyhow!(
                        "{}: manifest {} has no image name (annotation io.containerd.image.name or a full org.opencontainers.image.ref.name)",
                        path.display(),
                        m["digest"].as_str().unwrap_or("?")
                    )
                })?
                .to_string();
            let mdigest = m["digest"]
                .as_str()
                .ok_or_else(|| anyhow!("index entry without digest"))?;
            let mtype = m["mediaType"]
                .as_str()
                .unwrap_or("application/vnd.oci.image.manifest.v1+json");
            let manifest = blob_from_layout(&files, mdigest, mtype)?;
            let mj = json(&manifest.data, "manifest")?;
            let c = &mj["config"];
            let config = blob_from_layout(
                &files,
                c["digest"]
                    .as_str()
                    .ok_or_else(|| anyhow!("manifest without config"))?,
                c["mediaType"]
                    .as_str()
                    .unwrap_or("application/vnd.oci.image.config.v1+json"),
            )?;
            let mut layers = Vec::new();
            for l in mj["layers"].as_array().into_iter().flatten() {
                layers.push(blob_from_layout(
                    &files,
                    l["digest"]
                        .as_str()
                        .ok_or_else(|| anyhow!("layer without digest"))?,
                    l["mediaType"]
                        .as_str()
                        .unwrap_or("application/vnd.oci.image.layer.v1.tar"),
                )?);
            }
            let diff_ids = diff_ids(&json(&config.data, "image config")?)?;
            out.push(ArchiveImage {
                name,
                manifest,
                config,
                layers,
                diff_ids,
                oci_layout: true,
            });
        }
        if out.is_empty() {
            bail!("{}: index.json lists no image", path.display());
        }
        return Ok(out);
    }
    if let Some(manifest) = files.get("manifest.json") {
        // docker save format: build a docker schema 2 manifest for it.
        let list = json(manifest, "manifest.json")?;
        let mut out = Vec::new();
        for entry in list.as_array().into_iter().flatten() {
            let name = entry["RepoTags"]
                .as_array()
                .and_then(|t| t.first())
                .and_then(|t| t.as_str())
                .ok_or_else(|| {
                    anyhow!("{}: image without RepoTags (no image name)", path.display())
                })?
                .to_string();
            let cfg_path = entry["Config"]
                .as_str()
                .ok_or_else(|| anyhow!("manifest.json entry without Config"))?;
            let cfg = files
                .get(cfg_path)
                .ok_or_else(|| anyhow!("{cfg_path} missing from the archive"))?
                .clone();
            let config = Blob {
                media_type: "application/vnd.docker.container.image.v1+json".into(),
                digest: sha256_digest(&cfg),
                data: cfg,
            };
            let mut layers = Vec::new();
            for l in entry["Layers"].as_array().into_iter().flatten() {
                let p = l.as_str().ok_or_else(|| anyhow!("bad layer path"))?;
                let data = files
                    .get(p)
                    .ok_or_else(|| anyhow!("layer {p} missing from the archive"))?
                    .clone();
                let gz = data.starts_with(&[0x1f, 0x8b]);
                layers.push(Blob {
                    media_type: if gz {
                        "application/vnd.docker.image.rootfs.diff.tar.gzip"
                    } else {
                        "application/vnd.docker.image.rootfs.diff.tar"
                    }
                    .into(),
                    digest: sha256_digest(&data),
                    data,
                });
            }
            let diff_ids = diff_ids(&json(&config.data, "image config")?)?;
            let m = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": config.media_type, "size": config.data.len(), "digest": config.digest},
                "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "size": l.data.len(), "digest": l.digest})).collect::<Vec<_>>(),
            });
            let mdata = serde_json::to_vec(&m)?;
            out.push(ArchiveImage {
                name,
                manifest: Blob {
                    media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
                    digest: sha256_digest(&mdata),
                    data: mdata,
                },
                config,
                layers,
                diff_ids,
                oci_layout: false,
            });
        }
        if out.is_empty() {
            bail!("{}: manifest.json lists no image", path.display());
        }
        return Ok(out);
    }
    bail!(
        "{}: neither an OCI image layout (index.json) nor a docker archive (manifest.json)",
        path.display()
    )
}

/// A fully qualified image reference, the way CRI names images.
pub(super) fn normalize(name: &str) -> String {
    let (repo, rest) = match name.rfind([':', '@']) {
        Some(i) if !name[i..].contains('/') => (&name[..i], &name[i..]),
        _ => (name, ":latest"),
    };
    let first = repo.split('/').next().unwrap_or("");
    let repo = if !repo.contains('/') {
        format!("docker.io/library/{repo}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        repo.to_string()
    } else {
        format!("docker.io/{repo}")
    };
    format!("{repo}{rest}")
}
