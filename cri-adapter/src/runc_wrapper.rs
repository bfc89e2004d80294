//! `cri-adapter-runc`: cri-adapter invoked under this name (a symlink) is a
//! runc wrapper that clamps a container's `oom_score_adj` to its own before
//! handing over to the real runc. It gives CRI-O what containerd calls
//! `restrict_oom_score_adj`: CRI-O has no such setting (see
//! `render/crio.rs`) and asks for -998 on every pod infra container, which a
//! host without CAP_SYS_RESOURCE cannot grant ("failed to update
//! /proc/self/oom_score_adj: Permission denied").
//!
//! Every call is passed to the real runc unchanged (`exec`), except that for
//! `create` the bundle's `config.json` gets `process.oomScoreAdj` raised to
//! this process's own value when it is lower. The real runc is
//! `$CRI_ADAPTER_RUNC`, else `runc` from `$PATH`.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// The name under which cri-adapter acts as the wrapper.
pub const NAME: &str = "cri-adapter-runc";

/// What went wrong before runc could be started.
#[derive(Debug, thiserror::Error)]
pub enum WrapperError {
    /// No runc to hand over to.
    #[error("cri-adapter-runc: no runc found (set CRI_ADAPTER_RUNC or put runc on PATH)")]
    NoRunc,
    /// The bundle's config cannot be read or written.
    #[error("cri-adapter-runc: {path}: {what}")]
    Config {
        /// The config.json.
        path: String,
        /// What failed.
        what: String,
    },
    /// `exec` of the real runc failed.
    #[error("cri-adapter-runc: cannot run {runc}: {source}")]
    Exec {
        /// The real runc.
        runc: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Whether `argv0` names the wrapper.
pub fn invoked_as_wrapper(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name() == Some(OsStr::new(NAME))
}

/// The bundle of a `create` call (`--bundle B`, `-b B`, `--bundle=B`;
/// default: the working directory), or None for any other call.
fn create_bundle(args: &[OsString]) -> Option<PathBuf> {
    let pos = args.iter().position(|a| a == "create")?;
    let rest = &args[pos + 1..];
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--bundle" || s == "-b" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--bundle=") {
            return Some(PathBuf::from(v));
        }
    }
    Some(PathBuf::from("."))
}

/// This process's oom_score_adj.
fn own_oom_score_adj() -> Option<i64> {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Raises `process.oomScoreAdj` in the bundle's config to `floor`; whether
/// it changed.
pub fn clamp_bundle(bundle: &Path, floor: i64) -> Result<bool, WrapperError> {
    let path = bundle.join("config.json");
    let err = |what: String| WrapperError::Config {
        path: path.display().to_string(),
        what,
    };
    let text = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| err(format!("not JSON ({e})")))?;
    let Some(v) = spec
        .get_mut("process")
        .and_then(|p| p.get_mut("oomScoreAdj"))
    else {
        return Ok(false);
    };
    match v.as_i64() {
        Some(adj) if adj < floor => *v = serde_json::json!(floor),
        _ => return Ok(false),
    }
    let out = serde_json::to_vec(&spec).map_err(|e| err(e.to_string()))?;
    let tmp = bundle.join(".config.json.cri-adapter");
    std::fs::write(&tmp, out).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(e.to_string()))?;
    Ok(true)
}

fn real_runc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CRI_ADAPTER_RUNC").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("runc"))
        .find(|c| c.is_file() && c.canonicalize().ok() != me)
}

/// Runs as the wrapper: clamps a `create`'s bundle, then `exec`s runc.
/// Returns only on failure.
pub fn run(args: Vec<OsString>) -> WrapperError {
    let Some(runc) = real_runc() else {
        return WrapperError::NoRunc;
    };
    if let (Some(bundle), Some(floor)) = (create_bundle(&args), own_oom_score_adj()) {
        if let Err(e) = clamp_bundle(&bundle, floor) {
            return e;
        }
    }
    let e = std::process::Command::new(&runc).args(&args).exec();
    WrapperError::Exec {
        runc: runc.display().to_string(),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn finds_the_bundle_of_create_only() {
        let a = os(&[
            "--root", "/r", "--log", "/l", "create", "--bundle", "/b", "id",
        ]);
        assert_eq!(create_bundle(&a), Some(PathBuf::from("/b")));
        assert_eq!(
            create_bundle(&os(&["create", "--bundle=/x", "id"])),
            Some(PathBuf::from("/x"))
        );
        assert_eq!(
            create_bundle(&os(&["create", "id"])),
            Some(PathBuf::from("."))
        );
        assert_eq!(create_bundle(&os(&["--root", "/r", "state", "id"])), None);
        assert!(invoked_as_wrapper(OsStr::new("/run/x/cri-adapter-runc")));
        assert!(!invoked_as_wrapper(OsStr::new("/usr/bin/cri-adapter")));
    }

    #[test]
    fn clamps_only_lower_scores() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cfg = d.path().join("config.json");
        let write = |adj: i64| {
            std::fs::write(
                &cfg,
                serde_json::to_vec(&serde_json::json!({
                    "ociVersion": "1.0.2",
                    "process": {"args": ["/pause"], "oomScoreAdj": adj},
                    "root": {"path": "rootfs"},
                }))
                .unwrap_or_default(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        };
        let adj = || {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&cfg).unwrap_or_default())
                    .unwrap_or_default();
            (
                v["process"]["oomScoreAdj"].as_i64(),
                v["root"]["path"].clone(),
            )
        };
        write(-998);
        assert!(clamp_bundle(d.path(), 0).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(adj(), (Some(0), serde_json::json!("rootfs")));
        write(500);
        assert!(!clamp_bundle(d.path(), 0).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(adj().0, Some(500));
        let err = clamp_bundle(&d.path().join("none"), 0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("config.json"), "{err}");
    }
}
