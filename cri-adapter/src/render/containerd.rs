//! containerd's configuration: schema v2 (containerd 1.x) and v3 (2.x).

use super::{list, q, ContainerdSchema, RenderInput};
use anyhow::{bail, Result};
use std::fmt::Write;

/// Appends containerd's configuration for `i` to `o`.
pub(super) fn render(i: &RenderInput, o: &mut String) -> Result<()> {
    for (flag, set) in [
        ("--storage-driver", i.storage_driver.is_some()),
        ("--runc-path", i.runc_path.is_some()),
        ("--runc-root", i.runc_root.is_some()),
        ("--runc-wrapper", i.runc_wrapper.is_some()),
    ] {
        if set {
            bail!("{flag} is a CRI-O setting (containerd: choose the snapshotter and runtime in containerd's own config)");
        }
    }
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
            top(o);
            let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
            let _ = write!(
                o,
                "\n[{cri}]\n  sandbox_image = {}\n  restrict_oom_score_adj = {}\n\
                 \n[{cri}.cni]\n  bin_dir = {}\n  conf_dir = {}\n\
                 \n[{cri}.containerd]\n  default_runtime_name = \"runc\"\n\
                 \n[{cri}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
                 \n[{cri}.containerd.runtimes.runc.options]\n  SystemdCgroup = {}\n",
                q(&i.sandbox_image),
                i.restrict_oom(),
                q(&i.cni_bin_dirs[0]),
                q(&i.cni_conf_dir),
                i.systemd_cgroup,
            );
        }
        ContainerdSchema::V3 => {
            o.push_str("version = 3\n");
            top(o);
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
                i.restrict_oom(),
                q(&i.cni_conf_dir),
                i.systemd_cgroup,
            );
        }
    }
    Ok(())
}
