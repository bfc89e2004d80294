//! CRI-O's configuration: a drop-in for `/etc/crio/crio.conf.d/`, which
//! CRI-O (1.26 and later) merges over its main configuration.
//!
//! The drop-in is one CRI-O starts with as it is:
//! - `conmon_cgroup` always goes with `cgroup_manager`: CRI-O's default
//!   (`system.slice`) is fatal with cgroupfs ("cgroupfs manager conmon cgroup
//!   should be 'pod' or empty", `pkg/config/config.go`,
//!   `TranslateMonitorFieldsForHandler`);
//! - drop-ins merge key by key, except that a later drop-in's
//!   `[crio.runtime.runtimes.runc]` table replaces an earlier one whole, so
//!   the runc table is rendered complete (every key CRI-O would otherwise
//!   default).

use super::{list, q, OomScoreAdj, RenderInput};
use anyhow::{bail, Result};
use std::fmt::Write;

/// runc's default state directory (CRI-O's `DefaultRuntimeRoot`).
const RUNC_ROOT: &str = "/run/runc";
/// conmon's environment in CRI-O's default runc handler.
const MONITOR_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The annotation CRI-O's default runc handler allows.
const SECCOMP_BPF_HOOK: &str = "io.containers.trace-syscall";

/// Whether the runc handler must be the `cri-adapter-runc` wrapper, or an
/// error for an OOM setting CRI-O cannot honour without it.
///
/// CRI-O has no counterpart of containerd's `restrict_oom_score_adj`: it
/// gives every pod infra container oom_score_adj -998
/// (`server/sandbox_run_linux.go`, `PodInfraOOMAdj` in
/// `server/sandbox_run.go`) and every container kubelet's value
/// (`server/container_create_linux.go`), with no setting to clamp either in
/// `pkg/config/config.go` of v1.26.4 (nor of any later release up to
/// v1.36). The only switch that drops the value is the `_CRIO_ROOTLESS`
/// environment variable (`server/rootless.go`,
/// `makeOCIConfigurationRootless`), which also drops the pod's cgroup path,
/// device rules and AppArmor profile: no setting for a real node. What
/// works is a runc wrapper that clamps the bundle's score before runc sees
/// it: `cri-adapter-runc` (see `runc_wrapper.rs`).
fn use_wrapper(i: &RenderInput) -> Result<bool> {
    const WHY: &str = "CRI-O has no setting that restricts oom_score_adj (containerd's restrict_oom_score_adj): \
         it sets -998 on every pod infra container and kubelet's value (down to -997) on containers, \
         and runc then fails with \"failed to update /proc/self/oom_score_adj: Permission denied\" \
         on a host without CAP_SYS_RESOURCE";
    const HOW: &str = "pass --runc-wrapper PATH (a symlink named cri-adapter-runc to cri-adapter, \
         which clamps the score as containerd does)";
    let clamp = match i.oom {
        OomScoreAdj::Restrict => true,
        OomScoreAdj::Auto => !i.host_has_cap_sys_resource,
        OomScoreAdj::Unrestricted => false,
    };
    match (&i.runc_wrapper, clamp) {
        (Some(w), true) => {
            if !w.ends_with(&format!("/{}", crate::runc_wrapper::NAME)) {
                bail!(
                    "--runc-wrapper {w}: the wrapper must be named {} (a symlink to cri-adapter)",
                    crate::runc_wrapper::NAME
                );
            }
            if i.runc_path.is_some() {
                bail!("--runc-path and --runc-wrapper exclude each other: the wrapper runs the runc on CRI-O's PATH");
            }
            Ok(true)
        }
        (Some(_), false) if i.oom == OomScoreAdj::Unrestricted => {
            bail!("--runc-wrapper clamps OOM scores, which --restrict-oom-score-adj false says not to do")
        }
        (Some(_), false) => Ok(false),
        (None, true) if i.oom == OomScoreAdj::Restrict => {
            bail!("--restrict-oom-score-adj true: {WHY}; {HOW}")
        }
        (None, true) => bail!(
            "this host lacks CAP_SYS_RESOURCE and {WHY}; {HOW}, \
             or pass --restrict-oom-score-adj false to render anyway"
        ),
        (None, false) => Ok(false),
    }
}

/// Appends CRI-O's drop-in for `i` to `o`.
pub(super) fn render(i: &RenderInput, o: &mut String) -> Result<()> {
    let wrapper = use_wrapper(i)?;
    // [crio]: storage.
    let storage = [
        ("root", &i.root),
        ("runroot", &i.state),
        ("storage_driver", &i.storage_driver),
    ];
    if storage.iter().any(|(_, v)| v.is_some()) {
        o.push_str("[crio]\n");
        for (key, value) in storage {
            if let Some(v) = value {
                let _ = writeln!(o, "{key} = {}", q(v));
            }
        }
        o.push('\n');
    }
    if let Some(a) = &i.address {
        let _ = write!(o, "[crio.api]\nlisten = {}\n\n", q(a));
    }
    let (manager, monitor_cgroup) = if i.systemd_cgroup {
        ("systemd", "system.slice")
    } else {
        ("cgroupfs", "pod")
    };
    let _ = write!(
        o,
        "[crio.image]\npause_image = {}\n\
         \n[crio.network]\nnetwork_dir = {}\nplugin_dirs = {}\n\
         \n[crio.runtime]\ncgroup_manager = {}\nconmon_cgroup = {}\ndefault_runtime = \"runc\"\n\
         \n[crio.runtime.runtimes.runc]\nruntime_path = {}\nruntime_type = \"oci\"\nruntime_root = {}\n\
         monitor_cgroup = {}\nmonitor_env = {}\nallowed_annotations = {}\n",
        q(&i.sandbox_image),
        q(&i.cni_conf_dir),
        list(&i.cni_bin_dirs),
        q(manager),
        q(monitor_cgroup),
        q(if wrapper {
            i.runc_wrapper.as_deref().unwrap_or("")
        } else {
            i.runc_path.as_deref().unwrap_or("")
        }),
        q(i.runc_root.as_deref().unwrap_or(RUNC_ROOT)),
        q(monitor_cgroup),
        list(&[MONITOR_PATH_ENV.to_string()]),
        list(&[SECCOMP_BPF_HOOK.to_string()]),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::input;
    use super::super::{render, ContainerdSchema, OomScoreAdj};
    use crate::endpoint::Runtime;

    #[test]
    fn golden_defaults() {
        let mut i = input(Runtime::CriO, ContainerdSchema::V2);
        i.oom = OomScoreAdj::Unrestricted;
        i.cni_bin_dirs = vec!["/run/k8s-shims/cni/bin".into(), "/opt/cni/bin".into()];
        let got = render(&i).unwrap_or_else(|e| panic!("{e:#}"));
        let want = r#"# Rendered by cri-adapter (k8s-shims). Do not edit: re-render instead.
[crio.image]
pause_image = "registry.k8s.io/pause:3.9"

[crio.network]
network_dir = "/etc/cni/net.d"
plugin_dirs = ["/run/k8s-shims/cni/bin", "/opt/cni/bin"]

[crio.runtime]
cgroup_manager = "cgroupfs"
conmon_cgroup = "pod"
default_runtime = "runc"

[crio.runtime.runtimes.runc]
runtime_path = ""
runtime_type = "oci"
runtime_root = "/run/runc"
monitor_cgroup = "pod"
monitor_env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
allowed_annotations = ["io.containers.trace-syscall"]
"#;
        assert_eq!(got, want);
    }

    #[test]
    fn golden_everything_set_systemd() {
        let mut i = input(Runtime::CriO, ContainerdSchema::V2);
        i.oom = OomScoreAdj::Auto;
        i.systemd_cgroup = true;
        i.root = Some("/srv/crio/storage".into());
        i.state = Some("/run/crio-x/storage".into());
        i.storage_driver = Some("vfs".into());
        i.address = Some("/run/crio-x/crio.sock".into());
        i.runc_path = Some("/usr/sbin/runc".into());
        i.runc_root = Some("/run/crio-x/runc".into());
        let got = render(&i).unwrap_or_else(|e| panic!("{e:#}"));
        let want = r#"# Rendered by cri-adapter (k8s-shims). Do not edit: re-render instead.
[crio]
root = "/srv/crio/storage"
runroot = "/run/crio-x/storage"
storage_driver = "vfs"

[crio.api]
listen = "/run/crio-x/crio.sock"

[crio.image]
pause_image = "registry.k8s.io/pause:3.9"

[crio.network]
network_dir = "/etc/cni/net.d"
plugin_dirs = ["/opt/cni/bin"]

[crio.runtime]
cgroup_manager = "systemd"
conmon_cgroup = "system.slice"
default_runtime = "runc"

[crio.runtime.runtimes.runc]
runtime_path = "/usr/sbin/runc"
runtime_type = "oci"
runtime_root = "/run/crio-x/runc"
monitor_cgroup = "system.slice"
monitor_env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
allowed_annotations = ["io.containers.trace-syscall"]
"#;
        assert_eq!(got, want);
    }

    #[test]
    fn oom_restriction_is_refused_not_ignored() {
        let mut i = input(Runtime::CriO, ContainerdSchema::V2);
        i.oom = OomScoreAdj::Restrict;
        let err = format!(
            "{:#}",
            render(&i).err().unwrap_or_else(|| panic!("accepted"))
        );
        assert!(
            err.contains("CRI-O has no setting that restricts oom_score_adj"),
            "{err}"
        );
        // auto on a host without the capability: refused, naming the way out.
        i.oom = OomScoreAdj::Auto;
        i.host_has_cap_sys_resource = false;
        let err = format!(
            "{:#}",
            render(&i).err().unwrap_or_else(|| panic!("accepted"))
        );
        assert!(err.contains("lacks CAP_SYS_RESOURCE"), "{err}");
        assert!(err.contains("--restrict-oom-score-adj false"), "{err}");
        // auto with the capability, or explicitly unrestricted: fine.
        i.host_has_cap_sys_resource = true;
        let with_cap = render(&i).unwrap_or_else(|e| panic!("{e:#}"));
        i.oom = OomScoreAdj::Unrestricted;
        i.host_has_cap_sys_resource = false;
        assert_eq!(render(&i).ok(), Some(with_cap));
    }

    #[test]
    fn containerd_refuses_crio_settings() {
        let mut i = input(Runtime::Containerd, ContainerdSchema::V3);
        i.storage_driver = Some("overlay".into());
        let err = format!(
            "{:#}",
            render(&i).err().unwrap_or_else(|| panic!("accepted"))
        );
        assert!(err.contains("--storage-driver is a CRI-O setting"), "{err}");
    }
}

#[cfg(test)]
mod wrapper_tests {
    use super::super::tests::input;
    use super::super::{render, ContainerdSchema, OomScoreAdj};
    use crate::endpoint::Runtime;

    #[test]
    fn the_wrapper_becomes_runc_when_scores_must_be_clamped() {
        let mut i = input(Runtime::CriO, ContainerdSchema::V2);
        i.oom = OomScoreAdj::Restrict;
        i.runc_wrapper = Some("/run/k8s-shims/cri-adapter-runc".into());
        let out = render(&i).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            out.contains("runtime_path = \"/run/k8s-shims/cri-adapter-runc\"\n"),
            "{out}"
        );
        // auto with the capability: no clamping, plain runc.
        i.oom = OomScoreAdj::Auto;
        let out = render(&i).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(out.contains("runtime_path = \"\"\n"), "{out}");
        // auto without: the wrapper.
        i.host_has_cap_sys_resource = false;
        let out = render(&i).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(out.contains("cri-adapter-runc"), "{out}");
        // Contradictions and wrong names are refused.
        let refused = |i: &super::super::RenderInput| {
            format!(
                "{:#}",
                render(i).err().unwrap_or_else(|| panic!("accepted"))
            )
        };
        i.runc_path = Some("/usr/sbin/runc".into());
        assert!(refused(&i).contains("exclude each other"));
        i.runc_path = None;
        i.oom = OomScoreAdj::Unrestricted;
        assert!(refused(&i).contains("says not to do"));
        i.oom = OomScoreAdj::Restrict;
        i.runc_wrapper = Some("/usr/bin/cri-adapter".into());
        assert!(refused(&i).contains("must be named cri-adapter-runc"));
    }
}
