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
//! CRI-O: `skopeo copy` into containers-storage.

use crate::client;
use crate::endpoint::Runtime;
use anyhow::{anyhow, bail, Context, Result};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, CreateRequest, DeleteContentRequest, DeleteImageRequest,
    DeleteRequest, GetImageRequest, Image, Info, InfoRequest, UpdateImageRequest, UpdateRequest,
    WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Request;

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
}

/// A blob to import.
#[derive(Debug, Clone)]
struct Blob {
    media_type: String,
    digest: String,
    data: Vec<u8>,
}

/// One image read from an archive.
#[derive(Debug, Clone)]
struct ArchiveImage {
    name: String,
    /// Manifest first, then config, then layers.
    manifest: Blob,
    config: Blob,
    layers: Vec<Blob>,
    diff_ids: Vec<String>,
    oci_layout: bool,
}

fn sha256_digest(data: &[u8]) -> String {
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
fn parse_archive(path: &Path) -> Result<Vec<ArchiveImage>> {
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
fn normalize(name: &str) -> String {
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
        Runtime::CriO => {
            for img in images {
                let name = normalize(&img.name);
                let transport = if img.oci_layout {
                    "oci-archive"
                } else {
                    "docker-archive"
                };
                let src = format!("{transport}:{}", archive.display());
                let cmd = [
                    "skopeo",
                    "copy",
                    &src,
                    &format!("containers-storage:{name}"),
                ];
                if opts.dry_run {
                    lines.push(cmd.join(" "));
                    continue;
                }
                if let Ok(cri) = client::channel(&opts.cri_socket, Duration::from_secs(5)).await {
                    if let Ok(Some(id)) = client::image_id(cri, &name).await {
                        lines.push(format!("{name} {id} present"));
                        continue;
                    }
                }
                let st = std::process::Command::new(cmd[0])
                    .args(&cmd[1..])
                    .status()
                    .with_context(|| "running skopeo (is it installed?)")?;
                if !st.success() {
                    bail!("{} failed: {st}", cmd.join(" "));
                }
                let id = cri_image_id(&opts.cri_socket, &name).await?;
                lines.push(format!("{name} {id} imported"));
            }
        }
    }
    Ok(lines)
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

fn req<T>(msg: T, ns: &str, lease: Option<&str>) -> Result<Request<T>> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("containerd-namespace", ns.parse()?);
    if let Some(l) = lease {
        r.metadata_mut().insert("containerd-lease", l.parse()?);
    }
    Ok(r)
}

/// What an import created, to undo on failure.
#[derive(Debug, Default)]
struct Created {
    blobs: Vec<String>,
    snapshots: Vec<String>,
    image: bool,
}

async fn import_containerd(
    opts: &SeedOptions,
    ch: Channel,
    img: &ArchiveImage,
    name: &str,
) -> Result<&'static str> {
    let ns = opts.namespace.as_str();
    let mut images = ImagesClient::new(ch.clone());
    let existing = images
        .get(req(
            GetImageRequest {
                name: name.to_string(),
            },
            ns,
            None,
        )?)
        .await;
    let existing_target = existing
        .ok()
        .and_then(|r| r.into_inner().image)
        .and_then(|i| i.target)
        .map(|t| t.digest);
    if existing_target.as_deref() == Some(img.manifest.digest.as_str())
        && unpacked(opts, ch.clone(), img).await?
    {
        return Ok("present");
    }
    let lease = format!(
        "cri-adapter-seed-{}-{}",
        std::process::id(),
        &img.manifest.digest[7..19]
    );
    let mut leases = LeasesClient::new(ch.clone());
    let expire = HashMap::from([(
        "containerd.io/gc.expire".to_string(),
        rfc3339_in(Duration::from_secs(3600)),
    )]);
    leases
        .create(req(
            CreateRequest {
                id: lease.clone(),
                labels: expire,
            },
            ns,
            None,
        )?)
        .await
        .context("creating a containerd lease")?;
    let mut created = Created::default();
    let result = import_under_lease(
        opts,
        ch.clone(),
        img,
        name,
        &lease,
        existing_target.is_some(),
        &mut created,
    )
    .await;
    if result.is_err() {
        rollback(opts, ch.clone(), name, &created).await;
    }
    let _ = leases
        .delete(req(
            DeleteRequest {
                id: lease,
                sync: false,
            },
            ns,
            None,
        )?)
        .await;
    result
}

fn rfc3339_in(d: Duration) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|n| n.as_secs())
        .unwrap_or(0)
        + d.as_secs();
    // Civil time from days since the epoch (Howard Hinnant's algorithm).
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The chain IDs of the layers (the snapshot names).
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

async fn unpacked(opts: &SeedOptions, ch: Channel, img: &ArchiveImage) -> Result<bool> {
    let Some(top) = chain_ids(&img.diff_ids).pop() else {
        return Ok(true);
    };
    let mut snaps = SnapshotsClient::new(ch);
    Ok(snaps
        .stat(req(
            StatSnapshotRequest {
                snapshotter: opts.snapshotter.clone(),
                key: top,
            },
            &opts.namespace,
            None,
        )?)
        .await
        .is_ok())
}

async fn write_blob(
    ch: Channel,
    ns: &str,
    lease: &str,
    blob: &Blob,
    labels: HashMap<String, String>,
    created: &mut Created,
) -> Result<()> {
    let mut content = ContentClient::new(ch);
    let present = content
        .info(req(
            InfoRequest {
                digest: blob.digest.clone(),
            },
            ns,
            Some(lease),
        )?)
        .await
        .is_ok();
    if present {
        if !labels.is_empty() {
            content
                .update(req(
                    UpdateRequest {
                        info: Some(Info {
                            digest: blob.digest.clone(),
                            labels: labels.clone(),
                            ..Info::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: labels.keys().map(|k| format!("labels.{k}")).collect(),
                        }),
                    },
                    ns,
                    Some(lease),
                )?)
                .await
                .with_context(|| format!("labelling {}", blob.digest))?;
        }
        return Ok(());
    }
    let total = i64::try_from(blob.data.len())?;
    let r#ref = format!("cri-adapter-{}", blob.digest);
    let mut msgs = Vec::new();
    let chunk = 1 << 20;
    let mut offset = 0usize;
    while offset < blob.data.len() {
        let end = (offset + chunk).min(blob.data.len());
        msgs.push(WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: r#ref.clone(),
            total,
            expected: blob.digest.clone(),
            offset: i64::try_from(offset)?,
            data: blob.data[offset..end].to_vec(),
            labels: HashMap::new(),
        });
        offset = end;
    }
    msgs.push(WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref,
        total,
        expected: blob.digest.clone(),
        offset: total,
        data: Vec::new(),
        labels,
    });
    let stream = tokio_stream::iter(msgs);
    let mut resp = content
        .write(req(stream, ns, Some(lease))?)
        .await
        .with_context(|| format!("writing {}", blob.digest))?
        .into_inner();
    while let Some(m) = resp
        .message()
        .await
        .with_context(|| format!("writing {}", blob.digest))?
    {
        if m.action == WriteAction::Commit as i32 {
            break;
        }
    }
    created.blobs.push(blob.digest.clone());
    Ok(())
}

async fn import_under_lease(
    opts: &SeedOptions,
    ch: Channel,
    img: &ArchiveImage,
    name: &str,
    lease: &str,
    exists: bool,
    created: &mut Created,
) -> Result<&'static str> {
    let ns = opts.namespace.as_str();
    if img.layers.len() != img.diff_ids.len() {
        bail!(
            "{name}: {} layers but {} diff_ids",
            img.layers.len(),
            img.diff_ids.len()
        );
    }
    let chains = chain_ids(&img.diff_ids);
    // GC references, as containerd's own importer and unpacker set them.
    let mut manifest_labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        img.config.digest.clone(),
    )]);
    for (i, l) in img.layers.iter().enumerate() {
        manifest_labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.clone(),
        );
    }
    let mut config_labels = HashMap::new();
    if let Some(top) = chains.last() {
        config_labels.insert(
            format!("containerd.io/gc.ref.snapshot.{}", opts.snapshotter),
            top.clone(),
        );
    }
    for l in &img.layers {
        write_blob(ch.clone(), ns, lease, l, HashMap::new(), created).await?;
    }
    write_blob(ch.clone(), ns, lease, &img.config, config_labels, created).await?;
    write_blob(
        ch.clone(),
        ns,
        lease,
        &img.manifest,
        manifest_labels,
        created,
    )
    .await?;

    // Unpack: each layer onto its parent's snapshot, named by chain ID.
    let mut snaps = SnapshotsClient::new(ch.clone());
    let mut diff = DiffClient::new(ch.clone());
    for (i, layer) in img.layers.iter().enumerate() {
        let chain = &chains[i];
        let stat = snaps
            .stat(req(
                StatSnapshotRequest {
                    snapshotter: opts.snapshotter.clone(),
                    key: chain.clone(),
                },
                ns,
                Some(lease),
            )?)
            .await;
        if stat.is_ok() {
            continue;
        }
        let key = format!("extract-{}-{chain}", std::process::id());
        let parent = if i == 0 {
            String::new()
        } else {
            chains[i - 1].clone()
        };
        let prepared = snaps
            .prepare(req(
                PrepareSnapshotRequest {
                    snapshotter: opts.snapshotter.clone(),
                    key: key.clone(),
                    parent,
                    labels: HashMap::new(),
                },
                ns,
                Some(lease),
            )?)
            .await
            .with_context(|| format!("preparing snapshot for layer {i}"))?
            .into_inner();
        created.snapshots.push(key.clone());
        let applied = diff
            .apply(req(
                ApplyRequest {
                    diff: Some(Descriptor {
                        media_type: layer.media_type.clone(),
                        digest: layer.digest.clone(),
                        size: i64::try_from(layer.data.len())?,
                        annotations: HashMap::new(),
                    }),
                    mounts: prepared.mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                ns,
                Some(lease),
            )?)
            .await
            .with_context(|| format!("applying layer {i} ({})", layer.digest))?
            .into_inner();
        let got = applied.applied.map(|d| d.digest).unwrap_or_default();
        if got != img.diff_ids[i] {
            bail!(
                "layer {i} unpacked to {got}, but the image config says {}",
                img.diff_ids[i]
            );
        }
        snaps
            .commit(req(
                CommitSnapshotRequest {
                    snapshotter: opts.snapshotter.clone(),
                    name: chain.clone(),
                    key: key.clone(),
                    labels: HashMap::new(),
                },
                ns,
                Some(lease),
            )?)
            .await
            .with_context(|| format!("committing snapshot for layer {i}"))?;
        created.snapshots.pop();
        created.snapshots.push(chain.clone());
    }

    let image = Image {
        name: name.to_string(),
        labels: HashMap::new(),
        target: Some(Descriptor {
            media_type: img.manifest.media_type.clone(),
            digest: img.manifest.digest.clone(),
            size: i64::try_from(img.manifest.data.len())?,
            annotations: HashMap::new(),
        }),
        created_at: None,
        updated_at: None,
    };
    let mut images = ImagesClient::new(ch);
    if exists {
        images
            .update(req(
                UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".into()],
                    }),
                    source_date_epoch: None,
                },
                ns,
                Some(lease),
            )?)
            .await
            .with_context(|| format!("updating image {name}"))?;
    } else {
        images
            .create(req(
                CreateImageRequest {
                    image: Some(image),
                    source_date_epoch: None,
                },
                ns,
                Some(lease),
            )?)
            .await
            .with_context(|| format!("creating image {name}"))?;
        created.image = true;
    }
    Ok(if exists { "updated" } else { "imported" })
}

async fn rollback(opts: &SeedOptions, ch: Channel, name: &str, created: &Created) {
    let ns = opts.namespace.as_str();
    if created.image {
        if let Ok(r) = req(
            DeleteImageRequest {
                name: name.to_string(),
                sync: false,
                target: None,
            },
            ns,
            None,
        ) {
            let _ = ImagesClient::new(ch.clone()).delete(r).await;
        }
    }
    let mut snaps = SnapshotsClient::new(ch.clone());
    for key in created.snapshots.iter().rev() {
        if let Ok(r) = req(
            RemoveSnapshotRequest {
                snapshotter: opts.snapshotter.clone(),
                key: key.clone(),
            },
            ns,
            None,
        ) {
            let _ = snaps.remove(r).await;
        }
    }
    let mut content = ContentClient::new(ch);
    for d in &created.blobs {
        if let Ok(r) = req(DeleteContentRequest { digest: d.clone() }, ns, None) {
            let _ = content.delete(r).await;
        }
    }
}

#[cfg(test)]
mod tests {
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
