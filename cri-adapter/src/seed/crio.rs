//! The CRI-O import: `skopeo copy` into CRI-O's own containers-storage.
//!
//! skopeo's `containers-storage:` transport uses the system's storage
//! defaults unless the store is named, so the store is asked from CRI-O
//! itself. CRI-O serves plain HTTP next to gRPC on its CRI socket
//! (`cmd/crio/main.go` splits the listener; `server/inspect.go` of v1.26.4
//! registers the endpoints):
//! - `GET /info`: JSON `{"storage_driver", "storage_root", "cgroup_driver",
//!   ...}` (`types.CrioInfo` in `pkg/types/types.go`);
//! - `GET /config`: the effective configuration as TOML, whose `[crio]`
//!   table holds `runroot` (not in `/info`).
//!
//! The destination is then `containers-storage:[driver@root+runroot]name`,
//! the source each image as its own OCI layout (see [`oci_layout`]).

use super::archive::{normalize, ArchiveImage};
use super::oci_layout;
use super::{cri_image_id, SeedOptions};
use crate::client;
use anyhow::Context;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Largest answer accepted from CRI-O's HTTP endpoints.
const MAX_ANSWER: u64 = 4 << 20;

/// What went wrong asking CRI-O for its store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The socket does not accept or the exchange fails.
    #[error("asking CRI-O at {socket} for {path}: {source}")]
    Io {
        /// The socket.
        socket: String,
        /// The HTTP path.
        path: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The answer is not what CRI-O sends.
    #[error("CRI-O at {socket} answered {path} with {what}")]
    Answer {
        /// The socket.
        socket: String,
        /// The HTTP path.
        path: &'static str,
        /// What was wrong with it.
        what: String,
    },
}

/// CRI-O's containers-storage: driver, graph root, run root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// `storage_driver`, e.g. `overlay`.
    pub driver: String,
    /// `root` (graph root).
    pub root: String,
    /// `runroot`.
    pub runroot: String,
}

impl Store {
    /// skopeo's explicit store reference for `name`.
    pub fn reference(&self, name: &str) -> String {
        format!(
            "containers-storage:[{}@{}+{}]{name}",
            self.driver, self.root, self.runroot
        )
    }
}

/// `GET path` over HTTP/1.0 on a unix socket; the body of a 200 answer.
fn http_get(socket: &Path, path: &'static str, timeout: Duration) -> Result<String, StoreError> {
    let shown = socket.display().to_string();
    let io = |source| StoreError::Io {
        socket: shown.clone(),
        path,
        source,
    };
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    // HTTP/1.0: the answer is not chunked and ends when CRI-O closes.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: crio\r\n\r\n").as_bytes())
        .map_err(io)?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER + 1).read_to_end(&mut raw).map_err(io)?;
    let answer = |what: String| StoreError::Answer {
        socket: shown.clone(),
        path,
        what,
    };
    if raw.len() as u64 > MAX_ANSWER {
        return Err(answer(format!("more than {MAX_ANSWER} bytes")));
    }
    let text = String::from_utf8(raw).map_err(|_| answer("bytes that are not UTF-8".into()))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| answer("no HTTP header (is this CRI-O's socket?)".into()))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(answer(format!("{status:?}")));
    }
    Ok(body.to_string())
}

/// A TOML basic string's value (the form CRI-O's encoder writes).
fn toml_string(v: &str) -> Option<String> {
    let inner = v.trim().strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// `key`'s string value in table `[crio]` of CRI-O's `/config` TOML.
fn crio_table_value(config: &str, key: &str) -> Option<String> {
    let mut in_crio = false;
    for line in config.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_crio = l == "[crio]";
            continue;
        }
        if !in_crio {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            if k.trim() == key {
                return toml_string(v);
            }
        }
    }
    None
}

/// Asks CRI-O on `socket` where its image store is.
///
/// # Errors
/// CRI-O does not answer, or its answers lack the store.
pub fn discover_store(socket: &Path, timeout: Duration) -> Result<Store, StoreError> {
    let shown = socket.display().to_string();
    let info = http_get(socket, "/info", timeout)?;
    let info: serde_json::Value = serde_json::from_str(&info).map_err(|e| StoreError::Answer {
        socket: shown.clone(),
        path: "/info",
        what: format!("JSON that does not parse ({e})"),
    })?;
    let field = |k: &str| {
        info[k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| StoreError::Answer {
                socket: shown.clone(),
                path: "/info",
                what: format!("no {k}"),
            })
    };
    let driver = field("storage_driver")?;
    let root = field("storage_root")?;
    let config = http_get(socket, "/config", timeout)?;
    let runroot = crio_table_value(&config, "runroot")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| StoreError::Answer {
            socket: shown.clone(),
            path: "/config",
            what: "no [crio] runroot".into(),
        })?;
    Ok(Store {
        driver,
        root,
        runroot,
    })
}

/// The skopeo command importing the OCI layout `layout` into `store` as
/// `name`.
fn skopeo_command(layout: &str, name: &str, store: &Store) -> Vec<String> {
    vec![
        "skopeo".into(),
        "copy".into(),
        format!("oci:{layout}:{}", oci_layout::REF),
        store.reference(name),
    ]
}

/// Imports `images` of `archive` into CRI-O's store; a line per image.
///
/// Each image is checked (every layer a tar matching its diff_id), written
/// as its own OCI layout in a scratch directory, and copied with
/// `skopeo copy oci:DIR:image containers-storage:[driver@root+runroot]NAME`.
/// So gzip and multi-image archives work like any other, and a bad archive
/// fails before the store is touched. (A skopeo killed half-way can still
/// leave layers without an image behind; CRI-O's image GC does not remove
/// those.)
pub(super) async fn import_crio(
    opts: &SeedOptions,
    archive: &Path,
    images: &[ArchiveImage],
) -> anyhow::Result<Vec<String>> {
    let socket: PathBuf = opts.cri_socket.clone();
    let store =
        tokio::task::spawn_blocking(move || discover_store(&socket, Duration::from_secs(5)))
            .await??;
    let mut lines = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let name = normalize(&img.name);
        if opts.dry_run {
            let cmd = skopeo_command(
                &format!("<layout of image {i} of {}>", archive.display()),
                &name,
                &store,
            );
            lines.push(cmd.join(" "));
            continue;
        }
        if let Ok(cri) = client::channel(&opts.cri_socket, Duration::from_secs(5)).await {
            if let Ok(Some(id)) = client::image_id(cri, &name).await {
                lines.push(format!("{name} {id} present"));
                continue;
            }
        }
        let scratch = tempfile::Builder::new()
            .prefix("cri-adapter-seed-")
            .tempdir_in(super::scratch_dir())
            .context("creating a scratch directory")?;
        let layout = scratch.path().to_path_buf();
        let image = img.clone();
        tokio::task::spawn_blocking(move || {
            oci_layout::check_layers(&image)?;
            oci_layout::write_layout(&layout, &image)
        })
        .await?
        .with_context(|| format!("{name} of {}", archive.display()))?;
        let cmd = skopeo_command(&scratch.path().to_string_lossy(), &name, &store);
        // stdout carries only our results: skopeo's progress goes to stderr.
        let st = Command::new(&opts.skopeo)
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .map_err(|e| {
                anyhow::anyhow!(
                    "running {} (is skopeo installed?): {e}",
                    opts.skopeo.display()
                )
            })?;
        if !st.success() {
            anyhow::bail!("{} failed: {st}", cmd.join(" "));
        }
        drop(scratch);
        let id = cri_image_id(&opts.cri_socket, &name).await?;
        lines.push(format!("{name} {id} imported"));
    }
    Ok(lines)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A unix socket answering like CRI-O's HTTP endpoints: `/info` JSON and
    /// `/config` TOML; 404 for anything else. Serves until the test ends.
    pub(crate) fn fake_crio(dir: &Path, info: &str, config: &str) -> PathBuf {
        let sock = dir.join("crio.sock");
        let listener = UnixListener::bind(&sock).unwrap_or_else(|e| panic!("bind: {e}"));
        let (info, config) = (info.to_string(), config.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { return };
                let mut req = Vec::new();
                let mut buf = [0u8; 512];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req);
                let (status, ctype, body) = if req.starts_with("GET /info ") {
                    ("200 OK", "application/json", info.as_str())
                } else if req.starts_with("GET /config ") {
                    ("200 OK", "application/toml", config.as_str())
                } else {
                    ("404 Not Found", "text/plain", "404 page not found\n")
                };
                let _ = write!(
                    c,
                    "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        sock
    }

    /// The shape of CRI-O 1.26's `/config` (BurntSushi's TOML encoder).
    pub(crate) const CONFIG: &str = "[crio]\n  root = \"/srv/crio/storage\"\n  runroot = \"/run/crio-x/storage\"\n  storage_driver = \"vfs\"\n  log_dir = \"/var/log/crio/pods\"\n  [crio.api]\n    listen = \"/run/crio-x/crio.sock\"\n  [crio.runtime]\n    runroot = \"/not/this/one\"\n";
    pub(crate) const INFO: &str = r#"{"storage_driver":"vfs","storage_root":"/srv/crio/storage","cgroup_driver":"cgroupfs","default_id_mappings":{"uids":[],"gids":[]}}"#;

    #[test]
    fn store_from_a_crio_like_socket() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sock = fake_crio(d.path(), INFO, CONFIG);
        let store = discover_store(&sock, Duration::from_secs(2)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            store,
            Store {
                driver: "vfs".into(),
                root: "/srv/crio/storage".into(),
                runroot: "/run/crio-x/storage".into(),
            }
        );
        assert_eq!(
            store.reference("docker.io/library/busybox:1.36"),
            "containers-storage:[vfs@/srv/crio/storage+/run/crio-x/storage]docker.io/library/busybox:1.36"
        );
    }

    #[test]
    fn store_errors_name_the_problem() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let err = discover_store(&d.path().join("none.sock"), Duration::from_secs(1))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("none.sock") && err.contains("/info"), "{err}");
        let sock = fake_crio(d.path(), r#"{"storage_driver":"overlay"}"#, CONFIG);
        let err = discover_store(&sock, Duration::from_secs(1))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no storage_root"), "{err}");
    }

    #[test]
    fn toml_values() {
        assert_eq!(
            toml_string(" \"a\\\"b\\\\c\\u0041\""),
            Some("a\"b\\cA".into())
        );
        assert_eq!(toml_string("'literal'"), None);
        assert_eq!(
            crio_table_value(CONFIG, "runroot").as_deref(),
            Some("/run/crio-x/storage")
        );
        assert_eq!(crio_table_value(CONFIG, "missing"), None);
    }
}
