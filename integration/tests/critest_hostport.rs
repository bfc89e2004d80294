//! critest's port-mapping specs (`[k8s.io] Networking`: "port mapping with
//! only container port" and "with host port and container port") through
//! containerd's CRI on a CNI chain that is ours end to end: loopback,
//! bridge + host-local and portmap, all the multi-call `k8s-shims-cni`; and,
//! as the control, the same on the reference plugins (`REF_CNI_DIR`,
//! default `/usr/lib/cni`). The host-port spec fetches
//! `http://127.0.0.1:12000/` from the node (containerd's network
//! namespace): portmap's DNAT of local traffic, route_localnet and SNAT.
//!
//! critest is not packaged for Debian 12, so CI has none: these tests are
//! ignored, and run with
//! `CRITEST_BIN=/path/to/critest cargo test -p integration --test critest_hostport -- --include-ignored --nocapture`.
//! Our chain is `k8s-shims-cni` from `CNI_BIN_DIR` (target/debug, `cargo
//! build --workspace --bins`) linked under the four names, or
//! `CNI_NODE_DIR=$(scripts/build-plugins)`, the static build a node runs.
//! `CRITEST_FOCUS` replaces the focus (e.g. `Networking`); every spec it
//! selects must pass.
//!
//! No registry: the images (pause, critest's busybox, and a busybox `httpd`
//! stand-in named as its nginx and httpd images) are built by
//! `integration::oci` and seeded offline. Otherwise it needs what
//! `scripts/test` installs (containerd, runc, gcc, busybox-static, the
//! reference plugins) and root.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use integration::cri::{Containerd, Installed};
use integration::critest::*;
use integration::ref_dir;

fn focus() -> String {
    std::env::var("CRITEST_FOCUS")
        .ok()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| PORT_MAPPING_FOCUS.to_string())
}

/// Starts containerd on `cni_bin_dir`, runs critest's focused specs,
/// asserts every one passed and nothing of the pods is left.
fn critest_on(chain: &str, cni_bin_dir: PathBuf) {
    let critest = need_critest();
    let cd = Containerd::start_with(
        &format!("critest-{chain}"),
        &Installed {
            adapter: None,
            cni_bin_dir: Some(cni_bin_dir),
        },
    );
    seed_critest_images(&cd);
    let focus = focus();
    let out = run_critest(&cd, &critest, &focus);
    let text = out.stdout_str();
    let lines = summary_lines(&text);
    eprintln!(
        "critest {chain} chain, focus {focus:?}:\n  {}",
        lines.join("\n  ")
    );
    let Some(s) = parse_summary(&text) else {
        panic!(
            "{chain}: critest printed no summary ({:?})\nstdout:\n{text}\nstderr:\n{}\n--- containerd log ---\n{}",
            out.status,
            out.stderr_str(),
            cd.log_text()
        );
    };
    let whole = || {
        format!(
            "{chain}: {s:?}\n{text}\n--- containerd log ---\n{}",
            cd.log_text()
        )
    };
    assert!(
        s.ran > 0,
        "no spec matched the focus {focus:?}: {}",
        whole()
    );
    if focus == PORT_MAPPING_FOCUS {
        assert_eq!(s.ran, 2, "critest's port-mapping specs: {}", whole());
    }
    assert_eq!((s.passed, s.failed), (s.ran, 0), "{}", whole());
    assert!(
        out.status.success(),
        "critest exit {:?}: {}",
        out.status,
        whole()
    );
    // critest removed its pods: their DNAT chains and addresses went too.
    let left = cd.ns.portmap_attachment_rules();
    assert_eq!(left, Vec::<String>::new(), "{chain}: rules left");
    assert!(cd.ipam().ips().is_empty(), "{chain}: reservations left");
}

#[test]
#[ignore = "needs CRITEST_BIN: cri-tools' critest"]
fn critest_port_mapping_on_our_chain() {
    need_critest();
    let links = tempfile::Builder::new()
        .prefix("critest-cni-")
        .tempdir()
        .unwrap();
    critest_on("ours", multicall_bin_dir(links.path()));
}

#[test]
#[ignore = "needs CRITEST_BIN: cri-tools' critest"]
fn critest_port_mapping_on_the_reference_chain() {
    critest_on("reference", ref_dir());
}
