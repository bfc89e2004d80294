//! The README's first command, `scripts/demo`: a pod network built by our
//! plugins in throwaway namespaces. It must end with its OK line and leave no
//! namespace behind (its own checks cover links, rules and reservations).

use std::process::Command;

use integration::workspace_root;

#[test]
fn the_demo_ends_ok_and_leaves_no_namespace() {
    let out = Command::new(workspace_root().join("scripts/demo"))
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("scripts/demo: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("scripts/demo: OK: "),
        "last line: {last:?}\n{stderr}"
    );
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap_or_else(|e| panic!("ip netns list: {e}"));
    let left = String::from_utf8_lossy(&netns.stdout);
    assert!(
        !left.contains("k8s-shims-demo-"),
        "the demo left namespaces: {left}"
    );
}
