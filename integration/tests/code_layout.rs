#![allow(clippy::unwrap_used)]
//! The code layout of the plugin build (scripts/link-ordered): the symbol
//! ordering it hands LLD, and the list it is made from.

use std::io::Write as _;
use std::process::{Command, Stdio};

use integration::{ours_dir, workspace_root, PATH};

/// Runs scripts/symbol-order.awk over `nm` lines with `hot` as the list.
fn symbol_order(hot: &str, nm: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("hot-symbols");
    std::fs::write(&list, hot).unwrap();
    let mut awk = Command::new("awk")
        .env("PATH", PATH)
        .arg("-v")
        .arg(format!("hot={}", list.display()))
        .arg("-f")
        .arg(workspace_root().join("scripts/symbol-order.awk"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("awk");
    awk.stdin.take().unwrap().write_all(nm.as_bytes()).unwrap();
    let out = awk.wait_with_output().unwrap();
    assert!(out.status.success(), "awk: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn ordering_takes_exact_names_then_normalised_ones_then_libc_verbatim() {
    let hot = "# comment\n\
        _start\n\
        _ZN4core3fmt5write17h0123456789abcdefE\n\
        _ZN5serde2de4from17h1111111111111111E\n\
        _RNvNtCsAbC123_4core3fmt5write\n\
        _ZN4gone4away17h2222222222222222E\n\
        _start\n";
    let nm = "obj.o:\n\
        _ZN4core3fmt5write17h0123456789abcdefE T 10 20\n\
        _ZN4core3fmt5write17hffffffffffffffffE T 30 20\n\
        _ZN5serde2de4from17haaaaaaaaaaaaaaaaE t 50 20\n\
        _ZN5serde2de4from17hbbbbbbbbbbbbbbbbE t 70 20\n\
        _RNvNtCsXyZ9_4core3fmt5write T 90 20\n\
        main T 99 1\n";
    assert_eq!(
        symbol_order(hot, nm),
        [
            // libc's, verbatim and once
            "_start",
            // defined as listed: that one only
            "_ZN4core3fmt5write17h0123456789abcdefE",
            // another hash (other toolchain): every instance of the name
            "_ZN5serde2de4from17haaaaaaaaaaaaaaaaE",
            "_ZN5serde2de4from17hbbbbbbbbbbbbbbbbE",
            // v0 with another crate disambiguator
            "_RNvNtCsXyZ9_4core3fmt5write",
            // _ZN4gone…: matches nothing, left out
        ]
    );
}

/// packaging/hot-symbols must name functions that exist: after code moves
/// it costs speed silently (the link never fails), so a stale list fails
/// here. Checked against the debug build's symbols, by normalised name
/// (its hashes differ from the plugin build's): scripts/hot-symbols
/// rewrites the list.
#[test]
fn the_hot_list_names_functions_of_the_multi_call_executable() {
    let exe = ours_dir().join("k8s-shims-cni");
    assert!(
        exe.is_file(),
        "{} missing (cargo build --workspace --bins)",
        exe.display()
    );
    let nm = Command::new("nm")
        .env("PATH", PATH)
        .args(["-P", "--defined-only"])
        .arg(&exe)
        .output()
        .expect("nm");
    assert!(nm.status.success(), "nm: {nm:?}");
    let hot = std::fs::read_to_string(workspace_root().join("packaging/hot-symbols")).unwrap();
    let rust: Vec<&str> = hot
        .lines()
        .filter(|l| l.starts_with("_ZN") || l.starts_with("_R"))
        .collect();
    assert!(rust.len() > 200, "only {} Rust names listed", rust.len());
    let ordered = symbol_order(&rust.join("\n"), &String::from_utf8_lossy(&nm.stdout));
    let norm = |s: &str| {
        let mut n = s.to_string();
        if n.starts_with("_ZN") {
            if let Some(i) = n.rfind("17h") {
                n.replace_range(i.., "E");
            }
        }
        n
    };
    let found: std::collections::BTreeSet<String> = ordered.iter().map(|s| norm(s)).collect();
    let missing: Vec<&&str> = rust
        .iter()
        .filter(|l| l.starts_with("_ZN") && !found.contains(&norm(l)))
        .collect();
    let legacy = rust.iter().filter(|l| l.starts_with("_ZN")).count();
    // Release builds inline what debug builds keep and the reverse, and a
    // few names are release-only; most must be there.
    assert!(
        missing.len() * 5 <= legacy,
        "{} of {legacy} listed functions are not in {}: run scripts/hot-symbols\n{missing:#?}",
        missing.len(),
        exe.display()
    );
    // Our own crates' functions, though, all are (the debug build inlines
    // none of them): one missing means code moved, e.g. into another module,
    // which changes its mangled path, and the layout lost it.
    let ours: Vec<&str> = missing.iter().map(|l| **l).filter(|l| is_ours(l)).collect();
    assert!(
        rust.iter().filter(|l| is_ours(l)).count() > 50,
        "too few of our own functions listed"
    );
    assert!(
        ours.is_empty(),
        "listed functions of our crates not in {}: run scripts/hot-symbols\n{ours:#?}",
        exe.display()
    );
}

/// A legacy-mangled name of a function of one of our plugin crates.
fn is_ours(name: &str) -> bool {
    const CRATES: [&str; 6] = [
        "cni_spec",
        "cni_host_local",
        "cni_bridge",
        "cni_loopback",
        "cni_portmap",
        "cni_plugins",
    ];
    CRATES
        .iter()
        .any(|c| name.starts_with(&format!("_ZN{}{c}", c.len())))
}
