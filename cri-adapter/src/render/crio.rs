//! CRI-O's configuration: a `crio.conf.d` drop-in.

use super::{list, q, RenderInput};
use anyhow::{bail, Result};
use std::fmt::Write;

/// Appends CRI-O's drop-in for `i` to `o`.
pub(super) fn render(i: &RenderInput, o: &mut String) -> Result<()> {
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
    Ok(())
}
