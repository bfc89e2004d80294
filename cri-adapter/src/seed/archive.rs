//! Reading image archives: OCI image layouts and docker archives, plain or
//! gzip, every blob checked against its digest.
//!
//! Nothing is buffered whole: a plain tar is indexed in place (each blob is
//! a region of the file, read when needed), a gzip tar is inflated once,
//! streaming, into an unlinked temporary file and indexed there. Only the
//! small JSON documents (index, manifests, configs) are read into memory,
//! up to [`MAX_JSON`] each. Guards: an archive that inflates more than
//! [`MAX_INFLATE_RATIO`] times (plus [`INFLATE_SLACK`]) is refused as a
//! decompression bomb, an image with more than [`MAX_LAYERS`] layers is
//! refused, and a blob listed many times is hashed once.

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Largest JSON document (index, manifest, config) read from an archive.
pub(super) const MAX_JSON: u64 = 4 << 20;
/// A gzip archive may inflate to this many times its size ...
pub(super) const MAX_INFLATE_RATIO: u64 = 64;
/// ... plus this much.
pub(super) const INFLATE_SLACK: u64 = 64 << 20;
/// Most layers an image may have (overlayfs' practical limit is 128).
pub(super) const MAX_LAYERS: usize = 128;

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
pub(super) enum Source {
    /// Built here (docker archives' manifests) or small.
    Inline(Arc<Vec<u8>>),
    /// A region of the (plain or inflated) tar file.
    Region {
        /// The tar file.
        file: Arc<File>,
        /// Where the blob starts.
        offset: u64,
    },
}

/// A blob to import.
#[derive(Debug, Clone)]
pub(super) struct Blob {
    pub(super) media_type: String,
    pub(super) digest: String,
    pub(super) size: u64,
    pub(super) src: Source,
}

impl Blob {
    /// A blob held in memory.
    pub(super) fn inline(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256_digest(&data),
            size: data.len() as u64,
            src: Source::Inline(Arc::new(data)),
        }
    }

    /// A reader over the blob's bytes.
    pub(super) fn reader(&self) -> BlobReader {
        BlobReader {
            src: self.src.clone(),
            pos: 0,
            size: self.size,
        }
    }

    /// The whole blob, when it is at most `max` bytes.
    pub(super) fn bytes(&self, max: u64, what: &str) -> Result<Vec<u8>> {
        if self.size > max {
            bail!(
                "{what} is {} bytes, more than the {max} accepted",
                self.size
            );
        }
        let mut out = Vec::with_capacity(usize::try_from(self.size)?);
        self.reader()
            .read_to_end(&mut out)
            .with_context(|| format!("reading {what}"))?;
        Ok(out)
    }
}

/// Reads a [`Blob`], from memory or with positioned reads of its file.
#[derive(Debug)]
pub(super) struct BlobReader {
    src: Source,
    pos: u64,
    size: u64,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.size - self.pos;
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = match &self.src {
            Source::Inline(data) => {
                let start = usize::try_from(self.pos).unwrap_or(usize::MAX);
                let chunk = data.get(start..start + want).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob shorter than its size",
                    )
                })?;
                buf[..want].copy_from_slice(chunk);
                want
            }
            Source::Region { file, offset } => {
                let n = file.read_at(&mut buf[..want], offset + self.pos)?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "archive ends inside a blob",
                    ));
                }
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// One image read from an archive.
#[derive(Debug, Clone)]
pub(super) struct ArchiveImage {
    pub(super) name: String,
    pub(super) manifest: Blob,
    pub(super) config: Blob,
    pub(super) layers: Vec<Blob>,
    pub(super) diff_ids: Vec<String>,
}

pub(super) fn sha256_digest(data: &[u8]) -> String {
    hex_digest(&Sha256::digest(data))
}

fn hex_digest(d: &[u8]) -> String {
    let mut s = String::from("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The sha256 digest of everything `r` yields.
pub(super) fn sha256_reader(mut r: impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex_digest(&h.finalize()))
}

/// The regular files of a tar: name → (offset, size) in `file`.
struct TarIndex {
    file: Arc<File>,
    entries: HashMap<String, (u64, u64)>,
    shown: String,
}

impl TarIndex {
    fn blob(&self, name: &str, media_type: &str) -> Option<Blob> {
        self.entries.get(name).map(|&(offset, size)| Blob {
            media_type: media_type.to_string(),
            digest: String::new(),
            size,
            src: Source::Region {
                file: self.file.clone(),
                offset,
            },
        })
    }

    fn json(&self, name: &str) -> Result<serde_json::Value> {
        let b = self
            .blob(name, "")
            .ok_or_else(|| anyhow!("{name} missing from the archive"))?;
        json(&b.bytes(MAX_JSON, name)?, name)
    }
}

/// Indexes a (possibly gzip) tar without reading it into memory.
fn read_tar(path: &Path) -> Result<TarIndex> {
    let shown = path.display().to_string();
    let mut f = File::open(path).with_context(|| format!("opening {shown}"))?;
    let mut magic = [0u8; 2];
    let got = f
        .read(&mut magic)
        .with_context(|| format!("reading {shown}"))?;
    f.seek(SeekFrom::Start(0))?;
    let file = if got == 2 && magic == [0x1f, 0x8b] {
        let packed = f.metadata()?.len();
        let limit = packed
            .saturating_mul(MAX_INFLATE_RATIO)
            .saturating_add(INFLATE_SLACK);
        let mut out = tempfile::tempfile_in(super::scratch_dir())
            .context("creating a temporary file to inflate into")?;
        let mut gz = flate2::read::GzDecoder::new(BufReader::new(f)).take(limit + 1);
        let n =
            std::io::copy(&mut gz, &mut out).with_context(|| format!("{shown}: corrupt gzip"))?;
        if n > limit {
            bail!(
                "{shown}: inflates to more than {limit} bytes ({MAX_INFLATE_RATIO} times its {packed} bytes plus {} MiB): refused as a decompression bomb",
                INFLATE_SLACK >> 20
            );
        }
        out.seek(SeekFrom::Start(0))?;
        out
    } else {
        f
    };
    let file = Arc::new(file);
    let mut entries = HashMap::new();
    let mut ar = tar::Archive::new(BufReader::new(&*file));
    let list = ar
        .entries()
        .with_context(|| format!("{shown}: not a tar archive"))?;
    for e in list {
        let e = e.map_err(|err| {
            anyhow!(
                "{shown}: corrupt or truncated tar ({})",
                printable(&err.to_string())
            )
        })?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let name = e
            .path()
            .with_context(|| format!("{shown}: bad entry name"))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        entries.insert(name, (e.raw_file_position(), e.size()));
    }
    if entries.is_empty() {
        bail!("{shown}: empty or truncated archive");
    }
    // A truncated last entry: its region runs past the end of the file.
    let len = file.metadata()?.len();
    if let Some((name, _)) = entries.iter().find(|(_, (o, s))| o + s > len) {
        bail!("{shown}: truncated entry {name}");
    }
    Ok(TarIndex {
        file,
        entries,
        shown,
    })
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

/// Checks `blob` against `digest` (once per region) and names it so.
fn verified(mut blob: Blob, digest: &str, seen: &mut HashSet<(String, u64, u64)>) -> Result<Blob> {
    let key = match &blob.src {
        Source::Region { offset, .. } => (digest.to_string(), *offset, blob.size),
        Source::Inline(_) => (digest.to_string(), u64::MAX, blob.size),
    };
    if !seen.contains(&key) {
        let got = sha256_reader(blob.reader()).with_context(|| format!("reading blob {digest}"))?;
        if got != digest {
            bail!("blob {digest} is corrupt (digest mismatch)");
        }
        seen.insert(key);
    }
    blob.digest = digest.to_string();
    Ok(blob)
}

fn blob_from_layout(
    tar: &TarIndex,
    digest: &str,
    media_type: &str,
    seen: &mut HashSet<(String, u64, u64)>,
) -> Result<Blob> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| anyhow!("unsupported digest {digest}"))?;
    let blob = tar
        .blob(&format!("blobs/sha256/{hex}"), media_type)
        .ok_or_else(|| anyhow!("blob {digest} missing from the archive"))?;
    verified(blob, digest, seen)
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

fn check_layer_count(n: usize, name: &str) -> Result<()> {
    if n > MAX_LAYERS {
        bail!("{name}: {n} layers, more than the {MAX_LAYERS} accepted");
    }
    Ok(())
}

/// Parses an archive into its images; every blob is checked against its
/// digest.
pub(super) fn parse_archive(path: &Path) -> Result<Vec<ArchiveImage>> {
    let tar = read_tar(path)?;
    let shown = tar.shown.clone();
    let mut seen = HashSet::new();
    if tar.entries.contains_key("index.json") {
        let index = tar.json("index.json")?;
        let mut out = Vec::new();
        for m in index["manifests"].as_array().into_iter().flatten() {
            let ann = &m["annotations"];
            let name = ann["io.containerd.image.name"]
                .as_str()
                .or_else(|| ann["org.opencontainers.image.ref.name"].as_str().filter(|n| n.contains(['/', ':'])))
                .ok_or_else(|| {
                    anyhow!(
                        "{shown}: manifest {} has no image name (annotation io.containerd.image.name or a full org.opencontainers.image.ref.name)",
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
            let manifest = blob_from_layout(&tar, mdigest, mtype, &mut seen)?;
            let mj = json(&manifest.bytes(MAX_JSON, "manifest")?, "manifest")?;
            let c = &mj["config"];
            let config = blob_from_layout(
                &tar,
                c["digest"]
                    .as_str()
                    .ok_or_else(|| anyhow!("manifest without config"))?,
                c["mediaType"]
                    .as_str()
                    .unwrap_or("application/vnd.oci.image.config.v1+json"),
                &mut seen,
            )?;
            let listed = mj["layers"].as_array().map_or(0, Vec::len);
            check_layer_count(listed, &name)?;
            let mut layers = Vec::new();
            for l in mj["layers"].as_array().into_iter().flatten() {
                layers.push(blob_from_layout(
                    &tar,
                    l["digest"]
                        .as_str()
                        .ok_or_else(|| anyhow!("layer without digest"))?,
                    l["mediaType"]
                        .as_str()
                        .unwrap_or("application/vnd.oci.image.layer.v1.tar"),
                    &mut seen,
                )?);
            }
            let diff_ids = diff_ids(&json(
                &config.bytes(MAX_JSON, "image config")?,
                "image config",
            )?)?;
            out.push(ArchiveImage {
                name,
                manifest,
                config,
                layers,
                diff_ids,
            });
        }
        if out.is_empty() {
            bail!("{shown}: index.json lists no image");
        }
        return Ok(out);
    }
    if tar.entries.contains_key("manifest.json") {
        // docker save format: build a docker schema 2 manifest for it.
        let list = tar.json("manifest.json")?;
        let mut out = Vec::new();
        for entry in list.as_array().into_iter().flatten() {
            let name = entry["RepoTags"]
                .as_array()
                .and_then(|t| t.first())
                .and_then(|t| t.as_str())
                .ok_or_else(|| anyhow!("{shown}: image without RepoTags (no image name)"))?
                .to_string();
            let cfg_path = entry["Config"]
                .as_str()
                .ok_or_else(|| anyhow!("manifest.json entry without Config"))?;
            let cfg = tar
                .blob(cfg_path, "")
                .ok_or_else(|| anyhow!("{cfg_path} missing from the archive"))?
                .bytes(MAX_JSON, cfg_path)?;
            let config = Blob::inline("application/vnd.docker.container.image.v1+json", cfg);
            let listed = entry["Layers"].as_array().map_or(0, Vec::len);
            check_layer_count(listed, &name)?;
            let mut layers = Vec::new();
            for l in entry["Layers"].as_array().into_iter().flatten() {
                let p = l.as_str().ok_or_else(|| anyhow!("bad layer path"))?;
                let mut blob = tar
                    .blob(p, "")
                    .ok_or_else(|| anyhow!("layer {p} missing from the archive"))?;
                let mut magic = Vec::new();
                blob.reader().take(2).read_to_end(&mut magic)?;
                blob.media_type = if magic == [0x1f, 0x8b] {
                    "application/vnd.docker.image.rootfs.diff.tar.gzip"
                } else {
                    "application/vnd.docker.image.rootfs.diff.tar"
                }
                .into();
                // The archive names no digest: the one computed is the one.
                let key = match &blob.src {
                    Source::Region { offset, .. } => (*offset, blob.size),
                    Source::Inline(_) => (u64::MAX, blob.size),
                };
                let known = layers
                    .iter()
                    .find(|b: &&Blob| match &b.src {
                        Source::Region { offset, .. } => (*offset, b.size) == key,
                        Source::Inline(_) => false,
                    })
                    .map(|b| b.digest.clone());
                blob.digest = match known {
                    Some(d) => d,
                    None => sha256_reader(blob.reader()).with_context(|| format!("reading {p}"))?,
                };
                layers.push(blob);
            }
            let diff_ids = diff_ids(&json(
                &config.bytes(MAX_JSON, "image config")?,
                "image config",
            )?)?;
            let m = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": config.media_type, "size": config.size, "digest": config.digest},
                "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "size": l.size, "digest": l.digest})).collect::<Vec<_>>(),
            });
            let manifest = Blob::inline(
                "application/vnd.docker.distribution.manifest.v2+json",
                serde_json::to_vec(&m)?,
            );
            out.push(ArchiveImage {
                name,
                manifest,
                config,
                layers,
                diff_ids,
            });
        }
        if out.is_empty() {
            bail!("{shown}: manifest.json lists no image");
        }
        return Ok(out);
    }
    bail!("{shown}: neither an OCI image layout (index.json) nor a docker archive (manifest.json)")
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
