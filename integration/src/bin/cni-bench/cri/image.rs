//! OCI image layout archives built in memory, to make `ListImages` large without a registry.

use std::fmt::Write as _;

use super::CRI_IMAGE_PREFIX;
use crate::Res;

// The image archive ----------------------------------------------------------------------------

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub(crate) fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

pub(crate) fn tar_append(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) -> Res<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    builder
        .append_data(&mut header, path, data)
        .map_err(|e| format!("building the image archive ({path}): {e}"))
}

/// `n` OCI image layout archives (tar), one image each, named `<CRI_IMAGE_PREFIX><i>:latest`:
/// one shared tiny layer, and a config per image that differs by a label, so every name is a
/// distinct image (containerd's CRI groups names by config digest). Returns (name, archive).
pub(crate) fn cri_image_archives(n: usize) -> Res<Vec<(String, Vec<u8>)>> {
    let mut layer = tar::Builder::new(Vec::new());
    tar_append(
        &mut layer,
        "cni-bench.txt",
        b"cni-bench cri ListImages filler\n",
    )?;
    let layer = layer
        .into_inner()
        .map_err(|e| format!("building the layer: {e}"))?;
    let layer_digest = sha256_hex(&layer);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let config = serde_json::json!({
            "architecture": oci_arch(),
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Cmd": ["/cni-bench.txt"],
                "Labels": { "io.k8s-shims.cni-bench.index": i.to_string() },
            },
            "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] },
        })
        .to_string();
        let config_digest = sha256_hex(config.as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{config_digest}"),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{layer_digest}"),
                "size": layer.len(),
            }],
        })
        .to_string();
        let manifest_digest = sha256_hex(manifest.as_bytes());
        let name = format!("{CRI_IMAGE_PREFIX}{i:04}:latest");
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{manifest_digest}"),
                "size": manifest.len(),
                "annotations": { "io.containerd.image.name": name },
            }],
        })
        .to_string();
        let mut archive = tar::Builder::new(Vec::new());
        for (path, data) in [
            (
                "oci-layout".to_string(),
                &br#"{"imageLayoutVersion":"1.0.0"}"#[..],
            ),
            (format!("blobs/sha256/{layer_digest}"), &layer[..]),
            (format!("blobs/sha256/{config_digest}"), config.as_bytes()),
            (
                format!("blobs/sha256/{manifest_digest}"),
                manifest.as_bytes(),
            ),
            ("index.json".to_string(), index.as_bytes()),
        ] {
            tar_append(&mut archive, &path, data)?;
        }
        let archive = archive
            .into_inner()
            .map_err(|e| format!("building the image archive: {e}"))?;
        out.push((name, archive));
    }
    Ok(out)
}
