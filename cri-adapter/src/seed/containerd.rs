//! Importing into containerd through its content, snapshot, diff, image
//! and lease services.

use anyhow::{bail, Context, Result};
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
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Request;

use super::archive::{sha256_digest, ArchiveImage, Blob};
use super::SeedOptions;

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

pub(super) async fn import_containerd(
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

pub(super) fn rfc3339_in(d: Duration) -> String {
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
pub(super) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
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

/// Reads until `buf` is full or the reader ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
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
    let total = i64::try_from(blob.size)?;
    let r#ref = format!("cri-adapter-{}", blob.digest);
    // Streamed: one 1 MiB chunk in memory at a time. A read error ends the
    // stream without a commit, so containerd refuses the write; the error
    // is reported below.
    let read_error: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
    let chunks = {
        let r#ref = r#ref.clone();
        let digest = blob.digest.clone();
        let read_error = read_error.clone();
        futures_util::stream::unfold(
            (blob.reader(), 0u64, false),
            move |(mut reader, offset, done)| {
                let r#ref = r#ref.clone();
                let digest = digest.clone();
                let labels = labels.clone();
                let read_error = read_error.clone();
                async move {
                    if done {
                        return None;
                    }
                    let mut data = vec![0u8; 1 << 20];
                    let n = match read_full(&mut reader, &mut data) {
                        Ok(n) => n,
                        Err(e) => {
                            if let Ok(mut slot) = read_error.lock() {
                                *slot = Some(e);
                            }
                            return None;
                        }
                    };
                    let off = i64::try_from(offset).unwrap_or(i64::MAX);
                    if n == 0 {
                        let commit = WriteContentRequest {
                            action: WriteAction::Commit as i32,
                            r#ref,
                            total,
                            expected: digest,
                            offset: off,
                            data: Vec::new(),
                            labels,
                        };
                        return Some((commit, (reader, offset, true)));
                    }
                    data.truncate(n);
                    let write = WriteContentRequest {
                        action: WriteAction::Write as i32,
                        r#ref,
                        total,
                        expected: digest,
                        offset: off,
                        data,
                        labels: HashMap::new(),
                    };
                    Some((write, (reader, offset + n as u64, false)))
                }
            },
        )
    };
    let outcome = async {
        let mut resp = content
            .write(req(chunks, ns, Some(lease))?)
            .await?
            .into_inner();
        while let Some(m) = resp.message().await? {
            if m.action == WriteAction::Commit as i32 {
                break;
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Some(e) = read_error.lock().ok().and_then(|mut slot| slot.take()) {
        return Err(
            anyhow::Error::new(e).context(format!("reading {} from the archive", blob.digest))
        );
    }
    outcome.with_context(|| format!("writing {}", blob.digest))?;
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
                        size: i64::try_from(layer.size)?,
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
            size: i64::try_from(img.manifest.size)?,
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
