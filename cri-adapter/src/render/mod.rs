//! `render`: the runtime's configuration for this node, pointing it at the
//! node's CNI directories and sandbox image. Output is deterministic: the
//! same inputs give the same bytes.

mod containerd;
mod crio;

use crate::endpoint::Runtime;
use anyhow::{bail, Result};
use std::fmt::Write;

/// containerd's configuration schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerdSchema {
    /// containerd 1.x: `version = 2`, plugin `io.containerd.grpc.v1.cri`.
    V2,
    /// containerd 2.x: `version = 3`, plugins `io.containerd.cri.v1.*`.
    V3,
}

/// What to render.
#[derive(Debug, Clone)]
pub struct RenderInput {
    /// The runtime.
    pub runtime: Runtime,
    /// containerd schema (ignored for CRI-O).
    pub schema: ContainerdSchema,
    /// CNI configuration directory.
    pub cni_conf_dir: String,
    /// CNI plugin directories, searched in order.
    pub cni_bin_dirs: Vec<String>,
    /// Sandbox (pause) image.
    pub sandbox_image: String,
    /// Whether pod OOM scores are clamped to the runtime's own (needed
    /// without CAP_SYS_RESOURCE).
    pub oom: OomScoreAdj,
    /// Whether this host holds CAP_SYS_RESOURCE (see
    /// [`has_cap_sys_resource`]); decides [`OomScoreAdj::Auto`].
    pub host_has_cap_sys_resource: bool,
    /// Use the systemd cgroup driver for runc.
    pub systemd_cgroup: bool,
    /// containerd `root` (persistent state) or CRI-O's storage `root`, when
    /// not the default.
    pub root: Option<String>,
    /// containerd `state` (runtime state) or CRI-O's storage `runroot`, when
    /// not the default.
    pub state: Option<String>,
    /// containerd's gRPC socket or CRI-O's `api.listen`, when not the
    /// default.
    pub address: Option<String>,
    /// CRI-O only: the containers-storage driver (`storage_driver`).
    pub storage_driver: Option<String>,
    /// CRI-O only: runc's binary (`runtime_path` of the runc handler);
    /// default: `runc` from CRI-O's `$PATH`.
    pub runc_path: Option<String>,
    /// CRI-O only: runc's state directory (`runtime_root` of the runc
    /// handler); default `/run/runc`.
    pub runc_root: Option<String>,
    /// CRI-O only: the `cri-adapter-runc` wrapper (a symlink to
    /// cri-adapter), used as runc when OOM scores must be clamped.
    pub runc_wrapper: Option<String>,
}

/// `--restrict-oom-score-adj`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomScoreAdj {
    /// Restrict when the host lacks CAP_SYS_RESOURCE.
    Auto,
    /// Always restrict.
    Restrict,
    /// Never restrict.
    Unrestricted,
}

impl RenderInput {
    /// Whether OOM scores must be clamped on this host.
    pub fn restrict_oom(&self) -> bool {
        match self.oom {
            OomScoreAdj::Restrict => true,
            OomScoreAdj::Unrestricted => false,
            OomScoreAdj::Auto => !self.host_has_cap_sys_resource,
        }
    }
}

/// Whether this process may raise OOM scores below its own, i.e. holds
/// CAP_SYS_RESOURCE in its bounding set (sandboxes and some CI hosts do not:
/// then runc fails with "failed to update /proc/self/oom_score_adj").
pub fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", parts.join(", "))
}

const HEADER: &str = "# Rendered by cri-adapter (k8s-shims). Do not edit: re-render instead.\n";

/// Renders the configuration.
///
/// # Errors
/// Settings the chosen runtime cannot express.
pub fn render(i: &RenderInput) -> Result<String> {
    if i.cni_bin_dirs.is_empty() {
        bail!("at least one CNI bin dir is needed");
    }
    let mut o = String::from(HEADER);
    match i.runtime {
        Runtime::Containerd => containerd::render(i, &mut o)?,
        Runtime::CriO => crio::render(i, &mut o)?,
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn input(runtime: Runtime, schema: ContainerdSchema) -> RenderInput {
        RenderInput {
            runtime,
            schema,
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/opt/cni/bin".into()],
            sandbox_image: "registry.k8s.io/pause:3.9".into(),
            oom: OomScoreAdj::Restrict,
            host_has_cap_sys_resource: true,
            systemd_cgroup: false,
            root: None,
            state: None,
            address: None,
            storage_driver: None,
            runc_path: None,
            runc_root: None,
            runc_wrapper: None,
        }
    }

    #[test]
    fn golden_containerd_v2() {
        let got = render(&input(Runtime::Containerd, ContainerdSchema::V2)).unwrap_or_default();
        let want = "# Rendered by cri-adapter (k8s-shims). Do not edit: re-render instead.
version = 2

[plugins.\"io.containerd.grpc.v1.cri\"]
  sandbox_image = \"registry.k8s.io/pause:3.9\"
  restrict_oom_score_adj = true

[plugins.\"io.containerd.grpc.v1.cri\".cni]
  bin_dir = \"/opt/cni/bin\"
  conf_dir = \"/etc/cni/net.d\"

[plugins.\"io.containerd.grpc.v1.cri\".containerd]
  default_runtime_name = \"runc\"

[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]
  runtime_type = \"io.containerd.runc.v2\"

[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]
  SystemdCgroup = false
";
        assert_eq!(got, want);
    }

    #[test]
    fn golden_containerd_v3_many_dirs() {
        let mut i = input(Runtime::Containerd, ContainerdSchema::V3);
        i.cni_bin_dirs.push("/usr/lib/cni".into());
        i.systemd_cgroup = true;
        let got = render(&i).unwrap_or_default();
        let want = "# Rendered by cri-adapter (k8s-shims). Do not edit: re-render instead.
version = 3

[plugins.\"io.containerd.cri.v1.images\".pinned_images]
  sandbox = \"registry.k8s.io/pause:3.9\"

[plugins.\"io.containerd.cri.v1.runtime\"]
  restrict_oom_score_adj = true

[plugins.\"io.containerd.cri.v1.runtime\".cni]
  bin_dirs = [\"/opt/cni/bin\", \"/usr/lib/cni\"]
  conf_dir = \"/etc/cni/net.d\"

[plugins.\"io.containerd.cri.v1.runtime\".containerd]
  default_runtime_name = \"runc\"

[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc]
  runtime_type = \"io.containerd.runc.v2\"

[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc.options]
  SystemdCgroup = true
";
        assert_eq!(got, want);
    }

    #[test]
    fn refusals_and_quoting() {
        let mut i = input(Runtime::Containerd, ContainerdSchema::V2);
        i.cni_bin_dirs.push("/b".into());
        assert!(render(&i).is_err());
        assert_eq!(q("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn deterministic() {
        let i = input(Runtime::Containerd, ContainerdSchema::V3);
        assert_eq!(render(&i).ok(), render(&i).ok());
    }
}
