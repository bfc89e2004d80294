//! `render`: the runtime's configuration for this node, pointing it at the
//! node's CNI directories and sandbox image. Output is deterministic: the
//! same inputs give the same bytes.

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
    /// Clamp pod OOM scores to the runtime's own (needed without
    /// CAP_SYS_RESOURCE).
    pub restrict_oom_score_adj: bool,
    /// Use the systemd cgroup driver for runc.
    pub systemd_cgroup: bool,
    /// containerd `root` (persistent state), when not the default.
    pub root: Option<String>,
    /// containerd `state` (runtime state), when not the default.
    pub state: Option<String>,
    /// containerd gRPC socket, when not the default.
    pub address: Option<String>,
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
        Runtime::Containerd => {
            let top = |o: &mut String| {
                if let Some(r) = &i.root {
                    let _ = writeln!(o, "root = {}", q(r));
                }
                if let Some(s) = &i.state {
                    let _ = writeln!(o, "state = {}", q(s));
                }
                if let Some(a) = &i.address {
                    let _ = write!(o, "\n[grpc]\n  address = {}\n", q(a));
                }
            };
            match i.schema {
                ContainerdSchema::V2 => {
                    if i.cni_bin_dirs.len() > 1 {
                        bail!(
                            "containerd 1.x takes one CNI bin dir; assemble one directory (got {})",
                            i.cni_bin_dirs.len()
                        );
                    }
                    o.push_str("version = 2\n");
                    top(&mut o);
                    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
                    let _ = write!(
                        o,
                        "\n[{cri}]\n  sandbox_image = {}\n  restrict_oom_score_adj = {}\n\
                         \n[{cri}.cni]\n  bin_dir = {}\n  conf_dir = {}\n\
                         \n[{cri}.containerd]\n  default_runtime_name = \"runc\"\n\
                         \n[{cri}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
                         \n[{cri}.containerd.runtimes.runc.options]\n  SystemdCgroup = {}\n",
                        q(&i.sandbox_image),
                        i.restrict_oom_score_adj,
                        q(&i.cni_bin_dirs[0]),
                        q(&i.cni_conf_dir),
                        i.systemd_cgroup,
                    );
                }
                ContainerdSchema::V3 => {
                    o.push_str("version = 3\n");
                    top(&mut o);
                    let rt = "plugins.\"io.containerd.cri.v1.runtime\"";
                    let img = "plugins.\"io.containerd.cri.v1.images\"";
                    let dirs = if i.cni_bin_dirs.len() == 1 {
                        format!("bin_dir = {}", q(&i.cni_bin_dirs[0]))
                    } else {
                        // containerd 2.1 and later take a list.
                        format!("bin_dirs = {}", list(&i.cni_bin_dirs))
                    };
                    let _ = write!(
                        o,
                        "\n[{img}.pinned_images]\n  sandbox = {}\n\
                         \n[{rt}]\n  restrict_oom_score_adj = {}\n\
                         \n[{rt}.cni]\n  {dirs}\n  conf_dir = {}\n\
                         \n[{rt}.containerd]\n  default_runtime_name = \"runc\"\n\
                         \n[{rt}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
                         \n[{rt}.containerd.runtimes.runc.options]\n  SystemdCgroup = {}\n",
                        q(&i.sandbox_image),
                        i.restrict_oom_score_adj,
                        q(&i.cni_conf_dir),
                        i.systemd_cgroup,
                    );
                }
            }
        }
        Runtime::CriO => {
            if i.root.is_some() || i.state.is_some() || i.address.is_some() {
                bail!("--root, --state and --address are containerd settings");
            }
            // A drop-in for /etc/crio/crio.conf.d/; CRI-O merges it over its
            // main configuration.
            let _ = write!(
                o,
                "[crio.image]\npause_image = {}\n\
                 \n[crio.network]\nnetwork_dir = {}\nplugin_dirs = {}\n\
                 \n[crio.runtime]\ncgroup_manager = {}\n",
                q(&i.sandbox_image),
                q(&i.cni_conf_dir),
                list(&i.cni_bin_dirs),
                q(if i.systemd_cgroup {
                    "systemd"
                } else {
                    "cgroupfs"
                }),
            );
        }
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
            restrict_oom_score_adj: true,
            systemd_cgroup: false,
            root: None,
            state: None,
            address: None,
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
    fn golden_crio() {
        let mut i = input(Runtime::CriO, ContainerdSchema::V2);
        i.cni_bin_dirs = vec!["/run/k8s-shims/cni/bin".into(), "/opt/cni/bin".into()];
        let got = render(&i).unwrap_or_default();
        let want = "# Rendered by cri-adapter (k8s-shims). Do not edit: re-render instead.
[crio.image]
pause_image = \"registry.k8s.io/pause:3.9\"

[crio.network]
network_dir = \"/etc/cni/net.d\"
plugin_dirs = [\"/run/k8s-shims/cni/bin\", \"/opt/cni/bin\"]

[crio.runtime]
cgroup_manager = \"cgroupfs\"
";
        assert_eq!(got, want);
    }

    #[test]
    fn refusals_and_quoting() {
        let mut i = input(Runtime::Containerd, ContainerdSchema::V2);
        i.cni_bin_dirs.push("/b".into());
        assert!(render(&i).is_err());
        let mut i = input(Runtime::CriO, ContainerdSchema::V2);
        i.address = Some("/x".into());
        assert!(render(&i).is_err());
        assert_eq!(q("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn deterministic() {
        let i = input(Runtime::Containerd, ContainerdSchema::V3);
        assert_eq!(render(&i).ok(), render(&i).ok());
    }
}
