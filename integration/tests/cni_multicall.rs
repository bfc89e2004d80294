#![allow(clippy::unwrap_used)]
//! The multi-call executable `k8s-shims-cni`: run as `bridge` and
//! `host-local`, it behaves exactly as the two separate binaries, and its
//! bridge runs a `host-local` that is this same file in-process (no exec)
//! while another `host-local` (the reference) is still exec'd.

use integration::netns::*;
use integration::{err_code, err_msg, ours_dir};
use serde_json::{json, Value};
use std::process::Command;

fn conf(host: &Host, version: &str, subnets: &[&str]) -> Value {
    host.conf(
        version,
        json!({"isGateway": true, "ipMasq": true, "ipam": host_local(subnets)}),
    )
}

/// One pod's ADD result, its store entries and its leftovers after DEL,
/// normalized for comparison across implementation sets.
fn attach_and_detach(imp: &Impl, version: &str) -> (Value, Vec<String>) {
    let host = Host::new(imp);
    let pod = Pod::new("multi");
    let c = conf(&host, version, &["10.60.0.0/24", "fd60::/64"]);
    let r = host.must_add(&c, &pod);
    let store = host.store(NET);
    let entries: Vec<String> = store
        .entries()
        .into_iter()
        .filter(|n| !n.starts_with(".attachment."))
        .collect();
    pod.ns
        .assert_reaches(r["ips"][0]["gateway"].as_str().unwrap());
    host.must_del(&with_prev(&c, &r), &pod);
    host.assert_clean(NET, &[&pod], "after DEL");
    (normalize_result(&r), entries)
}

#[test]
fn the_multicall_executable_matches_the_separate_binaries() {
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        let separate = attach_and_detach(&Impl::ours(), version);
        let multi = attach_and_detach(&Impl::multicall(), version);
        assert_eq!(multi, separate, "{version}");
    }
}

#[test]
fn errors_of_an_in_process_ipam_are_those_of_an_exec_d_one() {
    for imp in [Impl::ours(), Impl::multicall()] {
        let host = Host::new(&imp);
        // A /30 has room for one pod besides the gateway.
        let c = conf(&host, "1.0.0", &["10.61.0.0/30"]);
        let a = Pod::new("a");
        let ra = host.must_add(&c, &a);
        let b = Pod::new("b");
        let e = host.add(&c, &b, &[]).expect_err("exhausted range");
        assert_eq!(err_code(&e), 100, "{}: {e}", imp.label);
        assert_eq!(
            err_msg(&e),
            "failed to allocate for range 0: no IP addresses available in range set: 10.61.0.1-10.61.0.2",
            "{}",
            imp.label
        );
        assert!(b.ns.link(&b.ifname).is_none(), "{}", imp.label);
        host.must_del(&with_prev(&c, &ra), &a);
        host.assert_clean(NET, &[&a, &b], "after the failed ADD and DEL");
    }
}

/// The programs a `bridge` ADD execs, as traced by strace.
fn execs_of_one_add(imp: &Impl) -> Vec<String> {
    let host = Host::new(imp);
    let pod = Pod::new("trace");
    let c = host.conf(
        "1.0.0",
        json!({"isGateway": true, "ipam": host_local(&["10.62.0.0/24"])}),
    );
    let trace = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        host.ns.name(),
        "strace",
        "-f",
        "-qq",
        "-e",
        "trace=execve",
        "-o",
    ])
    .arg(trace.path())
    .arg(imp.bridge())
    .env("CNI_COMMAND", "ADD")
    .env("CNI_CONTAINERID", &pod.id)
    .env("CNI_NETNS", pod.ns.path())
    .env("CNI_IFNAME", &pod.ifname)
    .env("CNI_PATH", &imp.dir);
    let out = run_with_timeout(
        cmd,
        c.to_string().as_bytes(),
        std::time::Duration::from_secs(30),
        "strace bridge",
    );
    assert!(out.status.success(), "{}: {}", imp.label, out.stdout_str());
    let text = std::fs::read_to_string(trace.path()).unwrap();
    text.lines()
        .filter(|l| l.contains("execve(") && !l.contains("ENOENT"))
        .filter_map(|l| {
            l.split('"')
                .nth(1)
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        })
        .collect()
}

#[test]
fn bridge_runs_its_own_host_local_in_process_and_execs_any_other() {
    assert_eq!(execs_of_one_add(&Impl::multicall()), vec!["bridge"]);
    // Links to links, as a NixOS node's bin dir has them (nix/packages.nix).
    assert_eq!(
        execs_of_one_add(&Impl::multicall_nix_layout()),
        vec!["bridge"]
    );
    assert_eq!(
        execs_of_one_add(&Impl::multicall_ref_ipam()),
        vec!["bridge", "host-local"]
    );
    assert_eq!(
        execs_of_one_add(&Impl::ours()),
        vec!["bridge", "host-local"]
    );
}

#[test]
fn the_reference_host_local_behind_the_multicall_bridge_works() {
    let host = Host::new(&Impl::multicall_ref_ipam());
    let pod = Pod::new("refipam");
    let c = conf(&host, "1.0.0", &["10.63.0.0/24"]);
    let r = host.must_add(&c, &pod);
    assert_eq!(r["ips"][0]["address"], "10.63.0.2/24");
    host.must_del(&with_prev(&c, &r), &pod);
    host.assert_clean(NET, &[&pod], "after DEL");
}

#[test]
fn run_under_another_name_it_explains_itself() {
    let bin = ours_dir().join("k8s-shims-cni");
    let out = Command::new(&bin).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("run me as one of [\"bridge\", \"host-local\", \"loopback\", \"portmap\"]"));
    let help = Command::new(&bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("k8s-shims-cni:"));
}

/// The executable skips Rust's runtime set-up (`no_main`) but still ignores
/// SIGPIPE itself: runtimes start plugins with SIGPIPE at its default, and a
/// runtime that stops reading must see an exit status, not a death by signal.
#[test]
fn a_closed_stdout_is_an_exit_status_not_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("host-local");
    std::os::unix::fs::symlink(ours_dir().join("k8s-shims-cni"), &link).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = Command::new(&link)
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}");
}
