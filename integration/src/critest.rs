//! critest (cri-tools' CRI validation suite) against a test containerd
//! ([`Containerd`]): the images its specs need, seeded offline; critest run
//! inside containerd's network namespace, where the pods and their host
//! ports are; and its closing summary, parsed.
//!
//! critest is not packaged for Debian 12, so it comes from `CRITEST_BIN`
//! (cri-tools 1.26.1 was used). Its images are ours (see [`crate::oci`]):
//! the pause image, its default busybox image and a busybox `httpd`
//! stand-in under the names of its nginx and httpd images, seeded with
//! `cri-adapter seed` before critest starts. critest pulls an image only
//! when the runtime lacks it, so no registry is needed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cri::{link_multicall, subdir, Containerd, CHAIN_PLUGINS};
use crate::netns::run_with_timeout;
use crate::{oci, ours_dir, Output};

/// The environment variable naming the critest binary.
pub const CRITEST_ENV: &str = "CRITEST_BIN";
/// The environment variable naming a node's CNI bin dir as
/// `scripts/build-plugins` prints it (its four plugin names linked to the
/// static `k8s-shims-cni`).
pub const NODE_DIR_ENV: &str = "CNI_NODE_DIR";
/// critest's `-ginkgo.focus` for its two port-mapping specs (`[k8s.io]
/// Networking`: container port only, host port and container port).
pub const PORT_MAPPING_FOCUS: &str = "port mapping";
/// How long one critest run may take.
pub const CRITEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The critest binary from [`CRITEST_ENV`], if set.
pub fn critest_bin() -> Option<PathBuf> {
    std::env::var_os(CRITEST_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The critest binary; panics with how to provide it when
/// [`CRITEST_ENV`] is unset or names no file.
pub fn need_critest() -> PathBuf {
    let bin = critest_bin().unwrap_or_else(|| {
        panic!(
            "set {CRITEST_ENV} to a critest binary (cri-tools 1.26): this test is meant to be run \
             with --include-ignored only then"
        )
    });
    assert!(
        bin.is_file(),
        "{CRITEST_ENV}={} is not a file",
        bin.display()
    );
    bin
}

/// The CNI bin dir of our chain: [`NODE_DIR_ENV`] when set, else
/// `<dir>/cni-multicall` with the plugin names linked to `k8s-shims-cni`
/// from [`ours_dir`]. Panics unless each of bridge, host-local, loopback and
/// portmap there resolves to a file named `k8s-shims-cni`.
pub fn multicall_bin_dir(dir: &Path) -> PathBuf {
    let bin_dir = match std::env::var_os(NODE_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let d = subdir(dir, "cni-multicall");
            link_multicall(&d, &ours_dir().join("k8s-shims-cni"));
            d
        }
    };
    for name in CHAIN_PLUGINS {
        let p = bin_dir.join(name);
        let real = std::fs::canonicalize(&p)
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/build-plugins)", p.display()));
        assert!(
            real.is_file() && real.file_name().is_some_and(|f| f == "k8s-shims-cni"),
            "{} is {}, not the multi-call executable k8s-shims-cni",
            p.display(),
            real.display()
        );
    }
    bin_dir
}

/// Seeds the images critest's networking specs use: the pause image, the
/// busybox test image and the web server stand-in, as nginx and as httpd
/// (the multi-container specs' "should support network").
pub fn seed_critest_images(cd: &Containerd) -> Vec<String> {
    let dir = subdir(cd.tmp.path(), "images");
    let archives = [
        oci::pause_image().write_oci(&dir, "pause.oci.tar"),
        oci::busybox_image().write_oci(&dir, "busybox.oci.tar"),
        oci::nginx_image().write_oci(&dir, "nginx.oci.tar"),
        oci::nginx_image()
            .renamed(oci::HTTPD_NAME)
            .write_oci(&dir, "httpd.oci.tar"),
    ];
    let refs: Vec<&Path> = archives.iter().map(PathBuf::as_path).collect();
    cd.seed_each(&cd.socket, &refs)
}

/// Runs `critest` inside `cd`'s network namespace against its socket, with
/// `-ginkgo.focus=<focus>`; its output (the summary is on stdout).
pub fn run_critest(cd: &Containerd, critest: &Path, focus: &str) -> Output {
    let endpoint = cd.endpoint();
    let bin = critest.to_string_lossy();
    let focus_arg = format!("-ginkgo.focus={focus}");
    let mut cmd = cd.ns.command(&[
        &bin,
        "-runtime-endpoint",
        &endpoint,
        "-image-endpoint",
        &endpoint,
        &focus_arg,
        "-ginkgo.no-color",
        "-ginkgo.v",
    ]);
    // critest looks for a crictl.yaml in its working directory.
    cmd.current_dir(cd.tmp.path());
    run_with_timeout(cmd, b"", CRITEST_TIMEOUT, &format!("critest {focus_arg}"))
}

/// The counts of a ginkgo run's closing summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Specs run (`Ran N of M Specs`).
    pub ran: u32,
    /// Specs in the suite.
    pub total: u32,
    pub passed: u32,
    pub failed: u32,
    pub pending: u32,
    pub skipped: u32,
}

/// The summary lines of ginkgo's output (`Ran N of M Specs ...` and
/// `SUCCESS! -- N Passed | ...` or `FAIL! -- ...`), colourless.
pub fn summary_lines(out: &str) -> Vec<&str> {
    out.lines()
        .map(str::trim)
        .filter(|l| {
            (l.starts_with("Ran ") && l.contains(" Specs in "))
                || ((l.starts_with("SUCCESS!") || l.starts_with("FAIL!")) && l.contains(" Passed"))
        })
        .collect()
}

/// Parses ginkgo's closing summary out of `out`; `None` when it has none
/// (critest did not get that far).
pub fn parse_summary(out: &str) -> Option<Summary> {
    let lines = summary_lines(out);
    let ran_line = lines.iter().rev().find(|l| l.starts_with("Ran "))?;
    let mut words = ran_line.split_whitespace().skip(1);
    let ran = words.next()?.parse().ok()?;
    (words.next()? == "of").then_some(())?;
    let total = words.next()?.parse().ok()?;
    let counts = lines.iter().rev().find(|l| l.contains(" Passed"))?;
    let (_, counts) = counts.split_once("--")?;
    let mut s = Summary {
        ran,
        total,
        ..Summary::default()
    };
    let mut seen = 0;
    for part in counts.split('|') {
        let mut w = part.split_whitespace();
        let (Some(n), Some(word)) = (w.next(), w.next()) else {
            continue;
        };
        let Ok(n) = n.parse() else { continue };
        let slot = match word {
            "Passed" => &mut s.passed,
            "Failed" => &mut s.failed,
            "Pending" => &mut s.pending,
            "Skipped" => &mut s.skipped,
            _ => continue,
        };
        *slot = n;
        seen += 1;
    }
    (seen == 4).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSED: &str = "\
Ran 2 of 85 Specs in 12.345 seconds
SUCCESS! -- 2 Passed | 0 Failed | 0 Pending | 83 Skipped
PASS
";

    #[test]
    fn parses_a_passed_run() {
        assert_eq!(
            parse_summary(PASSED),
            Some(Summary {
                ran: 2,
                total: 85,
                passed: 2,
                failed: 0,
                pending: 0,
                skipped: 83,
            })
        );
        assert_eq!(summary_lines(PASSED).len(), 2);
    }

    #[test]
    fn parses_a_failed_run_with_flakes() {
        let out = "Summarizing 1 Failure:\n  [FAIL] x\n\n\
                   Ran 4 of 85 Specs in 70.1 seconds\n\
                   FAIL! -- 3 Passed | 1 Failed | 1 Flaked | 0 Pending | 81 Skipped\n--- FAIL: TestE2ECRI\n";
        let s = parse_summary(out).expect("summary");
        assert_eq!((s.ran, s.passed, s.failed, s.skipped), (4, 3, 1, 81));
    }

    #[test]
    fn no_summary_is_none() {
        assert_eq!(parse_summary(""), None);
        assert_eq!(parse_summary("Ran 2 of 85 Specs in 1 seconds\n"), None);
        assert_eq!(
            parse_summary("SUCCESS! -- 2 Passed | 0 Failed | 0 Pending | 83 Skipped"),
            None
        );
        assert_eq!(
            parse_summary("Ran x of 85 Specs in 1 seconds\nSUCCESS! -- 2 Passed | 0 Failed\n"),
            None
        );
    }
}
