//! `cri-adapter`'s help and error texts, as a caller reads them: `detect
//! --json` stays JSON when nothing answers, `wait` names the OS error once,
//! the help names the default sockets and what the CNI bin dir must hold.
//! Needs only the built binary (`cargo build --workspace --bins`).
#![allow(clippy::unwrap_used)]

use integration::cri::{adapter, adapter_fails, adapter_ok};

fn missing_socket() -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().unwrap();
    let ep = format!("unix://{}/none.sock", d.path().display());
    (d, ep)
}

#[test]
fn detect_json_prints_a_json_error_when_nothing_answers() {
    let (_d, ep) = missing_socket();
    let out = adapter(&["detect", "--json", "--endpoint", &ep, "--timeout", "1"]);
    assert_eq!(out.code(), Some(1), "{}", out.stderr_str());
    let v: serde_json::Value = serde_json::from_str(out.stdout_str().trim())
        .unwrap_or_else(|e| panic!("stdout is no JSON ({e}): {:?}", out.stdout_str()));
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("none.sock"), "{v}");
    assert!(out.stderr_str().contains("no container runtime answered"));
}

#[test]
fn detect_text_error_leaves_stdout_empty() {
    let (_d, ep) = missing_socket();
    let out = adapter(&["detect", "--endpoint", &ep, "--timeout", "1"]);
    assert_eq!(out.code(), Some(1));
    assert_eq!(out.stdout_str(), "");
}

#[test]
fn wait_names_the_os_error_once() {
    let d = tempfile::tempdir().unwrap();
    // A file that is no socket: connect fails with ECONNREFUSED.
    let sock = d.path().join("file.sock");
    std::fs::write(&sock, "").unwrap();
    for ep in [
        format!("unix://{}/none.sock", d.path().display()),
        format!("unix://{}", sock.display()),
    ] {
        let err = adapter_fails(&["wait", "--endpoint", &ep, "--timeout", "1"]);
        assert_eq!(err.matches("(os error").count(), 1, "{err}");
        assert!(err.contains("not ready after 1s"), "{err}");
    }
}

#[test]
fn help_names_the_default_sockets_and_loopback() {
    for sub in ["wait", "seed", "serve"] {
        let h = adapter_ok(&[sub, "--help"]);
        for path in ["/run/containerd/containerd.sock", "/var/run/crio/crio.sock"] {
            assert!(h.contains(path), "{sub} --help lacks {path}:\n{h}");
        }
    }
    let h = adapter_ok(&["render", "--help"]);
    assert!(h.contains("loopback"), "render --help:\n{h}");
    for default in ["/etc/cni/net.d", "/opt/cni/bin", "registry.k8s.io/pause"] {
        assert!(h.contains(default), "render --help lacks {default}:\n{h}");
    }
}
