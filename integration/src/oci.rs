//! Image archives built from files, for seeding a runtime with no registry
//! (cri.md §5.2): OCI image layouts (plain tar, optionally gzip), with or
//! without the name annotations, and docker archives (`manifest.json`).
//!
//! Every image has one uncompressed layer whose entries carry uid/gid 0 and
//! mtime 0, hard links preserved, so the same inputs give the same bytes.
//!
//! The images the CRI tests need:
//! * [`pause_image`] — `registry.k8s.io/pause:3.6`, entrypoint `["/pause"]`,
//!   our own `integration/assets/pause.c` built with `gcc -static -Os -s`;
//! * [`busybox_image`] — `registry.k8s.io/e2e-test-images/busybox:1.29-2`,
//!   Debian's static `/bin/busybox` with a hard link per applet,
//!   `/etc/passwd`, `/etc/group`, `/tmp` (1777), command `["sh"]`;
//!
//! and a stand-in critest's networking specs run as their web server:
//! * [`nginx_image`] — `registry.k8s.io/e2e-test-images/nginx:1.14-2`, the
//!   busybox files plus a page, busybox `httpd` on port 80 (renamed to
//!   [`HTTPD_NAME`] for critest's multi-container specs).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::PATH;

/// The sandbox image name the tests configure.
pub const PAUSE_NAME: &str = "registry.k8s.io/pause:3.6";
/// critest's default test image name.
pub const BUSYBOX_NAME: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
/// critest's web server image (its networking specs' `webServerImage`).
pub const NGINX_NAME: &str = "registry.k8s.io/e2e-test-images/nginx:1.14-2";
/// critest's httpd image (its multi-container specs' web server).
pub const HTTPD_NAME: &str = "registry.k8s.io/e2e-test-images/httpd:2.4.39-4";

const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// One entry of a layer.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory (path without a leading `/`).
    Dir { path: String, mode: u32 },
    /// A regular file.
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    /// A hard link to an earlier entry.
    HardLink { path: String, target: String },
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `sha256:<hex>`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// A tar of `entries`, in order (uid/gid 0, mtime 0).
pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::Dir { path, mode } => {
                let mut h = header(tar::EntryType::Directory, *mode, 0);
                let p = format!("{}/", path.trim_end_matches('/'));
                b.append_data(&mut h, p, std::io::empty())
                    .expect("tar: directory");
            }
            Entry::File { path, data, mode } => {
                let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                b.append_data(&mut h, path, &data[..]).expect("tar: file");
            }
            Entry::HardLink { path, target } => {
                let mut h = header(tar::EntryType::Link, 0o755, 0);
                b.append_link(&mut h, path, target).expect("tar: hard link");
            }
        }
    }
    b.into_inner().expect("tar: finish")
}

/// A plain (uncompressed) tar of top-level files, in order.
fn archive_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, path, &data[..])
            .expect("tar: archive file");
    }
    b.into_inner().expect("tar: finish")
}

/// Gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip finish")
}

/// Gunzip of `data` (for checks).
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

/// How an OCI layout names its image in `index.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `io.containerd.image.name=<full ref>` and
    /// `org.opencontainers.image.ref.name=<tag>`.
    Annotated,
    /// No annotations at all: the archive carries no image name.
    Anonymous,
}

/// An image: one layer plus its runtime configuration.
#[derive(Debug, Clone)]
pub struct ImageDef {
    /// Full reference, e.g. `registry.k8s.io/pause:3.6`.
    pub name: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// The uncompressed layer tar.
    pub layer: Vec<u8>,
    /// When set, the config's `rootfs.diff_ids` names this digest instead of
    /// the layer's own (an image whose config lies about its layer).
    pub diff_id_override: Option<String>,
}

/// The parts of a built image: `(digest, bytes)` each.
#[derive(Debug, Clone)]
pub struct Blobs {
    pub manifest: (String, Vec<u8>),
    pub config: (String, Vec<u8>),
    pub layer: (String, Vec<u8>),
}

/// The tag of a reference (`registry.k8s.io/pause:3.6` → `3.6`), `latest` when none.
pub fn tag_of(name: &str) -> &str {
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[i + 1..],
        _ => "latest",
    }
}

impl ImageDef {
    /// The same image under another name.
    pub fn renamed(&self, name: &str) -> ImageDef {
        ImageDef {
            name: name.to_string(),
            ..self.clone()
        }
    }

    /// The image config JSON.
    pub fn config_json(&self) -> Vec<u8> {
        let mut cfg = serde_json::Map::new();
        cfg.insert("Env".into(), json!(self.env));
        if !self.entrypoint.is_empty() {
            cfg.insert("Entrypoint".into(), json!(self.entrypoint));
        }
        if !self.cmd.is_empty() {
            cfg.insert("Cmd".into(), json!(self.cmd));
        }
        cfg.insert("WorkingDir".into(), json!("/"));
        let diff_id = self
            .diff_id_override
            .clone()
            .unwrap_or_else(|| digest(&self.layer));
        let v = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": Value::Object(cfg),
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "k8s-shims integration tests"}],
        });
        serde_json::to_vec(&v).expect("config JSON")
    }

    /// Config, layer and manifest with their digests.
    pub fn blobs(&self) -> Blobs {
        let config = self.config_json();
        let cd = digest(&config);
        let ld = digest(&self.layer);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": cd, "size": config.len()},
            "layers": [{"mediaType": MT_LAYER, "digest": ld, "size": self.layer.len()}],
        }))
        .expect("manifest JSON");
        Blobs {
            manifest: (digest(&manifest), manifest),
            config: (cd, config),
            layer: (ld, self.layer.clone()),
        }
    }

    /// An OCI image-layout archive (plain tar): `oci-layout`, `index.json`,
    /// then `blobs/sha256/` manifest, config, layer.
    pub fn oci_archive(&self, naming: Naming) -> Vec<u8> {
        let b = self.blobs();
        let mut entry = serde_json::Map::new();
        entry.insert("mediaType".into(), json!(MT_MANIFEST));
        entry.insert("digest".into(), json!(b.manifest.0));
        entry.insert("size".into(), json!(b.manifest.1.len()));
        entry.insert(
            "platform".into(),
            json!({"architecture": "amd64", "os": "linux"}),
        );
        if naming == Naming::Annotated {
            entry.insert(
                "annotations".into(),
                json!({
                    "io.containerd.image.name": self.name,
                    "org.opencontainers.image.ref.name": tag_of(&self.name),
                }),
            );
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [Value::Object(entry)],
        }))
        .expect("index JSON");
        let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        archive_of(&[
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".into(), index),
            (blob(&b.manifest.0), b.manifest.1),
            (blob(&b.config.0), b.config.1),
            (blob(&b.layer.0), b.layer.1),
        ])
    }

    /// A docker archive (`docker save` layout): `manifest.json` with
    /// `RepoTags`, `<config hex>.json`, `<layer hex>/layer.tar`.
    pub fn docker_archive(&self) -> Vec<u8> {
        let b = self.blobs();
        let cfg_path = format!("{}.json", b.config.0.trim_start_matches("sha256:"));
        let layer_path = format!("{}/layer.tar", b.layer.0.trim_start_matches("sha256:"));
        let manifest = serde_json::to_vec(&json!([{
            "Config": cfg_path,
            "RepoTags": [self.name],
            "Layers": [layer_path],
        }]))
        .expect("manifest.json");
        archive_of(&[
            ("manifest.json".into(), manifest),
            (cfg_path, b.config.1),
            (layer_path, b.layer.1),
        ])
    }

    /// Writes the annotated OCI archive to `dir/<file>`; returns its path.
    pub fn write_oci(&self, dir: &Path, file: &str) -> PathBuf {
        let p = dir.join(file);
        std::fs::write(&p, self.oci_archive(Naming::Annotated))
            .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

fn compile_pause() -> Vec<u8> {
    let src = crate::workspace_root()
        .join("integration")
        .join("assets")
        .join("pause.c");
    let dir = tempfile::Builder::new()
        .prefix("pause-build-")
        .tempdir()
        .expect("temp dir for gcc");
    let out = dir.path().join("pause");
    let res = Command::new("gcc")
        .env("PATH", PATH)
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run gcc (install gcc): {e}"));
    assert!(
        res.status.success(),
        "gcc -static -Os -s {} failed: {}",
        src.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    std::fs::read(&out).expect("read the built pause binary")
}

/// The pause binary, compiled once per test process.
pub fn pause_binary() -> &'static [u8] {
    static BIN: OnceLock<Vec<u8>> = OnceLock::new();
    BIN.get_or_init(compile_pause)
}

const ENV_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `registry.k8s.io/pause:3.6` with our pause program.
pub fn pause_image() -> ImageDef {
    let layer = layer_tar(&[Entry::File {
        path: "pause".into(),
        data: pause_binary().to_vec(),
        mode: 0o755,
    }]);
    ImageDef {
        name: PAUSE_NAME.into(),
        entrypoint: vec!["/pause".into()],
        cmd: Vec::new(),
        env: vec![ENV_PATH.into()],
        layer,
        diff_id_override: None,
    }
}

/// The applets of the host's `/bin/busybox` (`busybox --list`).
pub fn busybox_applets() -> Vec<String> {
    let out = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap_or_else(|e| panic!("cannot run /bin/busybox (install busybox-static): {e}"));
    assert!(out.status.success(), "busybox --list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/') && *a != "busybox")
        .map(str::to_string)
        .collect()
}

/// The entries of the busybox image's layer.
fn busybox_entries() -> Vec<Entry> {
    let bin = std::fs::read("/bin/busybox")
        .unwrap_or_else(|e| panic!("read /bin/busybox (install busybox-static): {e}"));
    let mut entries = vec![
        Entry::Dir {
            path: "bin".into(),
            mode: 0o755,
        },
        Entry::File {
            path: "bin/busybox".into(),
            data: bin,
            mode: 0o755,
        },
    ];
    for a in busybox_applets() {
        entries.push(Entry::HardLink {
            path: format!("bin/{a}"),
            target: "bin/busybox".into(),
        });
    }
    entries.extend([
        Entry::Dir {
            path: "etc".into(),
            mode: 0o755,
        },
        Entry::File {
            path: "etc/passwd".into(),
            data: b"root:x:0:0:root:/root:/bin/sh\n\
                    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
                    www-data:x:33:33:www-data:/var/www:/bin/false\n"
                .to_vec(),
            mode: 0o644,
        },
        Entry::File {
            path: "etc/group".into(),
            data: b"root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n".to_vec(),
            mode: 0o644,
        },
        Entry::Dir {
            path: "root".into(),
            mode: 0o700,
        },
        Entry::Dir {
            path: "tmp".into(),
            mode: 0o1777,
        },
    ]);
    entries
}

fn busybox_layer() -> Vec<u8> {
    layer_tar(&busybox_entries())
}

/// `registry.k8s.io/e2e-test-images/busybox:1.29-2` from `/bin/busybox`.
pub fn busybox_image() -> ImageDef {
    static LAYER: OnceLock<Vec<u8>> = OnceLock::new();
    ImageDef {
        name: BUSYBOX_NAME.into(),
        entrypoint: Vec::new(),
        cmd: vec!["sh".into()],
        env: vec![ENV_PATH.into()],
        layer: LAYER.get_or_init(busybox_layer).clone(),
        diff_id_override: None,
    }
}

/// The page [`nginx_image`] serves at `/`.
pub const NGINX_PAGE: &str = "<html><body>k8s-shims web server stand-in</body></html>\n";

/// A stand-in for critest's web server image
/// [`NGINX_NAME`]: the busybox image's files plus `/var/www/index.html`
/// ([`NGINX_PAGE`]), entrypoint busybox `httpd -f -p 80 -h /var/www`
/// (answers `GET /` with 200, as nginx does; nothing else of nginx).
pub fn nginx_image() -> ImageDef {
    static LAYER: OnceLock<Vec<u8>> = OnceLock::new();
    let layer = LAYER.get_or_init(|| {
        let mut entries = busybox_entries();
        for dir in ["var", "var/www"] {
            entries.push(Entry::Dir {
                path: dir.into(),
                mode: 0o755,
            });
        }
        entries.push(Entry::File {
            path: "var/www/index.html".into(),
            data: NGINX_PAGE.as_bytes().to_vec(),
            mode: 0o644,
        });
        layer_tar(&entries)
    });
    ImageDef {
        name: NGINX_NAME.into(),
        entrypoint: ["httpd", "-f", "-p", "80", "-h", "/var/www"]
            .map(String::from)
            .to_vec(),
        cmd: Vec::new(),
        env: vec![ENV_PATH.into()],
        layer: layer.clone(),
        diff_id_override: None,
    }
}

/// Names and kinds of a layer's entries: `(path, entry type, link target)`.
pub fn layer_entries(layer: &[u8]) -> Vec<(String, tar::EntryType, Option<String>)> {
    let mut ar = tar::Archive::new(layer);
    ar.entries()
        .expect("layer is a tar")
        .map(|e| {
            let e = e.expect("layer entry");
            let path = e.path().expect("entry path").to_string_lossy().into_owned();
            let link = e
                .link_name()
                .expect("link name")
                .map(|l| l.to_string_lossy().into_owned());
            (path, e.header().entry_type(), link)
        })
        .collect()
}

/// A docker archive holding several images (`docker save a b`).
pub fn multi_docker_archive(images: &[ImageDef]) -> Vec<u8> {
    let mut files = Vec::new();
    let mut entries = Vec::new();
    for img in images {
        let b = img.blobs();
        let cfg_path = format!("{}.json", b.config.0.trim_start_matches("sha256:"));
        let layer_path = format!("{}/layer.tar", b.layer.0.trim_start_matches("sha256:"));
        entries.push(json!({"Config": cfg_path, "RepoTags": [img.name], "Layers": [layer_path]}));
        files.push((cfg_path, b.config.1));
        files.push((layer_path, b.layer.1));
    }
    files.insert(
        0,
        (
            "manifest.json".into(),
            serde_json::to_vec(&entries).expect("manifest.json"),
        ),
    );
    archive_of(&files)
}

/// An OCI image-layout archive holding several images, each annotated
/// with its name.
pub fn multi_oci_archive(images: &[ImageDef]) -> Vec<u8> {
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let mut files = vec![(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let mut manifests = Vec::new();
    for img in images {
        let b = img.blobs();
        manifests.push(json!({
            "mediaType": MT_MANIFEST,
            "digest": b.manifest.0,
            "size": b.manifest.1.len(),
            "annotations": {
                "io.containerd.image.name": img.name,
                "org.opencontainers.image.ref.name": tag_of(&img.name),
            },
        }));
        files.push((blob(&b.manifest.0), b.manifest.1));
        files.push((blob(&b.config.0), b.config.1));
        files.push((blob(&b.layer.0), b.layer.1));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": manifests,
    }))
    .expect("index JSON");
    files.insert(1, ("index.json".into(), index));
    archive_of(&files)
}

/// A docker archive of one image with two layers, the second of which is
/// `second` (raw bytes, e.g. not a tar); the config's diff_ids name the
/// bytes as they are, so only a look inside the layer finds the problem.
pub fn two_layer_docker_archive(name: &str, first: &[u8], second: &[u8]) -> Vec<u8> {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(first), digest(second)]},
    }))
    .expect("config JSON");
    let cfg_path = format!("{}.json", sha256_hex(&config));
    let l1 = format!("{}/layer.tar", sha256_hex(first));
    let l2 = format!("{}/layer.tar", sha256_hex(second));
    let manifest = serde_json::to_vec(&json!([{
        "Config": cfg_path, "RepoTags": [name], "Layers": [l1, l2],
    }]))
    .expect("manifest.json");
    archive_of(&[
        ("manifest.json".into(), manifest),
        (cfg_path, config),
        (l1, first.to_vec()),
        (l2, second.to_vec()),
    ])
}
