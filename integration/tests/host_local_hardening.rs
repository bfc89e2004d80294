#![allow(clippy::unwrap_used)]
//! host-local against a hostile or damaged store and ambiguous GC input:
//! nothing a live attachment holds is freed, nothing an attachment held is
//! leaked, and nothing outside the store is written.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::process::Command;

use integration::*;
use proptest::prelude::*;
use serde_json::{json, Value};

const IF: &str = "eth0";

fn v4_conf(net: &TestNet) -> Value {
    net.conf("1.1.0", ranges(&[&["10.1.2.0/24"]]))
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

fn addr_of(r: &Value) -> String {
    single_addr(r).to_string()
}

// ---------------------------------------------------------------------------
// GC: an entry without ifname, an entry without containerID
// ---------------------------------------------------------------------------

#[test]
fn gc_entry_without_ifname_keeps_every_interface_of_that_container() {
    let net = TestNet::new("gcid");
    let conf = v4_conf(&net);
    let c1 = addr_of(&ok(ours().add(&conf, "c1", "eth0", &[]), "ADD c1/eth0"));
    let c1b = addr_of(&ok(ours().add(&conf, "c1", "net1", &[]), "ADD c1/net1"));
    let c2 = addr_of(&ok(ours().add(&conf, "c2", "eth0", &[]), "ADD c2/eth0"));
    let c2b = addr_of(&ok(ours().add(&conf, "c2", "eth1", &[]), "ADD c2/eth1"));
    let gc = with_key(
        &conf,
        VALID_ATTACHMENTS,
        json!([{"containerID": "c1"}, {"containerID": "c2", "ifname": "eth0"}]),
    );
    ok(ours().gc(&gc), "GC");
    let kept: BTreeSet<String> = net.store().ip_names().into_iter().collect();
    let want: BTreeSet<String> = [c1.clone(), c1b, c2].into_iter().collect();
    assert_eq!(kept, want, "c2/eth1 ({c2b}) alone is not listed");
    // The kept attachment is still whole: its DEL releases it.
    ok(ours().del(&conf, "c1", "eth0", &[]), "DEL c1/eth0");
    assert!(net.store().read_ip(&c1).is_none());
}

#[test]
fn gc_entry_without_container_id_is_refused_and_frees_nothing() {
    let net = TestNet::new("gcnoid");
    let conf = v4_conf(&net);
    ok(ours().add(&conf, "c1", IF, &[]), "ADD");
    ok(ours().add(&conf, "c2", IF, &[]), "ADD");
    let before = net.store().entries();
    for entry in [json!({"ifname": "eth0"}), json!({"containerID": ""})] {
        let gc = with_key(
            &conf,
            VALID_ATTACHMENTS,
            json!([{"containerID": "c1", "ifname": "eth0"}, entry]),
        );
        let e = fails(ours().gc(&gc), "GC");
        assert_err(
            &e,
            7,
            "cni.dev/valid-attachments[1]: no containerID; refusing to collect anything",
        );
        assert_eq!(net.store().entries(), before);
    }
}

// ---------------------------------------------------------------------------
// A repeated ADD of one attachment, then DEL
// ---------------------------------------------------------------------------

#[test]
fn del_after_a_repeated_add_with_another_ip_releases_both() {
    let net = TestNet::new("readd");
    let conf = net.conf("1.1.0", ranges(&[&["10.1.2.0/24"], &["2001:db8::/64"]]));
    let first = result_addrs(&ok(ours().add(&conf, "c1", IF, &[]), "ADD"));
    let wanted = with_key(
        &conf,
        "args",
        json!({"cni": {"ips": ["10.1.2.77", "2001:db8::77"]}}),
    );
    let again = ok(
        ours().add(&wanted, "c1", IF, &[]),
        "ADD again with args.cni.ips",
    );
    let second = result_addrs(&again);
    assert_eq!(second, vec![ip("10.1.2.77"), ip("2001:db8::77")]);
    let store = net.store();
    for ip in first.iter().chain(&second) {
        assert_eq!(store.read_ip(&ip.to_string()), Some(owner("c1", IF)));
    }
    // Another attachment is not touched by either.
    ok(ours().add(&conf, "c2", IF, &[]), "ADD c2");
    ok(ours().del(&conf, "c1", IF, &[]), "DEL");
    let left = store.ips();
    for ip in first.iter().chain(&second) {
        assert!(!left.contains(ip), "{ip} leaked: {:?}", store.entries());
    }
    assert_eq!(left.len(), 2, "c2's two addresses stay: {left:?}");
    ok(ours().del(&conf, "c2", IF, &[]), "DEL c2");
    assert_eq!(store.non_bookkeeping(), Vec::<String>::new());
}

#[test]
fn the_reference_del_releases_a_repeated_add_of_ours() {
    let net = TestNet::new("readdref");
    let conf = with_version(&v4_conf(&net), "1.0.0");
    ok(ours().add(&conf, "c1", IF, &[]), "ADD");
    ok(
        ours().add(&conf, "c1", IF, &[("CNI_ARGS", "IP=10.1.2.77")]),
        "ADD again",
    );
    ok(reference().del(&conf, "c1", IF, &[]), "reference DEL");
    assert_eq!(net.store().non_bookkeeping(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// Symlinks in the store
// ---------------------------------------------------------------------------

#[test]
fn a_cursor_symlink_is_replaced_not_written_through() {
    let net = TestNet::new("symcur");
    let conf = v4_conf(&net);
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    let store = net.store();
    fs::create_dir_all(&store.dir).unwrap();
    symlink(&victim, store.path("last_reserved_ip.0")).unwrap();
    let r = ok(ours().add(&conf, "c1", IF, &[]), "ADD");
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    let meta = fs::symlink_metadata(store.path("last_reserved_ip.0")).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the link was replaced by a file"
    );
    assert_eq!(store.last_reserved(0), Some(addr_of(&r)));
}

#[test]
fn a_dangling_cursor_symlink_creates_nothing_outside() {
    let net = TestNet::new("symdang");
    let conf = v4_conf(&net);
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("created-by-plugin");
    let store = net.store();
    fs::create_dir_all(&store.dir).unwrap();
    symlink(&target, store.path("last_reserved_ip.0")).unwrap();
    ok(ours().add(&conf, "c1", IF, &[]), "ADD");
    assert!(!target.exists(), "ADD created the symlink's target");
}

#[test]
fn a_lock_symlink_is_refused_with_code_5_and_nothing_reserved() {
    let net = TestNet::new("symlock");
    let conf = v4_conf(&net);
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("lock-target");
    let store = net.store();
    fs::create_dir_all(&store.dir).unwrap();
    symlink(&target, store.path("lock")).unwrap();
    let e = fails(ours().add(&conf, "c1", IF, &[]), "ADD");
    assert_eq!(err_code(&e), 5, "{e}");
    assert!(
        err_msg(&e).contains("lock: is a symbolic link"),
        "message names the link: {e}"
    );
    assert!(!target.exists(), "ADD created the lock's target");
    assert!(store.ips().is_empty());
    assert_eq!(store.dotfiles(), Vec::<String>::new());
    // DEL and CHECK refuse the same way; DEL creates nothing either.
    let e = fails(ours().del(&conf, "c1", IF, &[]), "DEL");
    assert_eq!(err_code(&e), 5, "{e}");
    assert!(!target.exists());
}

#[test]
fn a_symlinked_network_directory_is_refused() {
    let net = TestNet::new("symdir");
    let conf = v4_conf(&net);
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), net.store().dir).unwrap();
    let e = fails(ours().add(&conf, "c1", IF, &[]), "ADD");
    assert_eq!(err_code(&e), 5, "{e}");
    assert!(err_msg(&e).contains("is a symbolic link"), "{e}");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn an_address_symlink_is_skipped_kept_and_never_read() {
    let net = TestNet::new("symip");
    let conf = v4_conf(&net);
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    // Content that would make the reference's DEL release it.
    fs::write(&victim, owner("c1", IF)).unwrap();
    let store = net.store();
    fs::create_dir_all(&store.dir).unwrap();
    symlink(&victim, store.path("10.1.2.2")).unwrap();
    let r = ok(ours().add(&conf, "c1", IF, &[]), "ADD");
    assert_eq!(addr_of(&r), "10.1.2.3", "the linked address is taken");
    ok(ours().check(&conf, "c1", IF, &[]), "CHECK");
    ok(ours().del(&conf, "c1", IF, &[]), "DEL");
    ok(
        ours().gc(&with_attachments(&conf, VALID_ATTACHMENTS, &[])),
        "GC",
    );
    assert!(fs::symlink_metadata(store.path("10.1.2.2")).is_ok());
    assert_eq!(fs::read(&victim).unwrap(), owner("c1", IF).as_bytes());
}

// ---------------------------------------------------------------------------
// Junk beside valid entries; a read-only store
// ---------------------------------------------------------------------------

#[test]
fn a_stray_directory_named_like_an_address_breaks_neither_check_nor_gc() {
    let net = TestNet::new("junk");
    let conf = v4_conf(&net);
    let r = ok(ours().add(&conf, "c1", IF, &[]), "ADD");
    let store = net.store();
    fs::create_dir(store.path("10.1.2.200")).unwrap();
    // A FIFO must not block a reader either.
    let fifo = store.path("10.1.2.201");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    ok(ours().check(&conf, "c1", IF, &[]), "CHECK");
    ok(
        ours().gc(&with_attachments(&conf, VALID_ATTACHMENTS, &[("c1", IF)])),
        "GC",
    );
    assert!(store.path("10.1.2.200").is_dir());
    assert!(store.read_ip(&addr_of(&r)).is_some());
    // DEL of an attachment without an index reads every file: junk too.
    ok(
        ours().del(&conf, "nobody", IF, &[]),
        "DEL of an unknown attachment",
    );
}

/// A tmpfs mounted at a fresh directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new() -> Self {
        let d = tempfile::tempdir().unwrap();
        run_ok("mount", &["-t", "tmpfs", "-o", "size=4m", "none", path(&d)]);
        Tmpfs(d)
    }
    fn remount_ro(&self) {
        run_ok("mount", &["-o", "remount,ro", path(&self.0)]);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn path(d: &tempfile::TempDir) -> &str {
    d.path().to_str().unwrap()
}

fn run_ok(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?} failed");
}

#[test]
fn check_passes_on_a_read_only_store() {
    let fs = Tmpfs::new();
    let conf = net_conf("1.0.0", "ronet", fs.0.path(), ranges(&[&["10.1.2.0/24"]]));
    ok(ours().add(&conf, "c1", IF, &[]), "ADD");
    fs.remount_ro();
    ok(
        ours().check(&conf, "c1", IF, &[]),
        "CHECK on a read-only store",
    );
    ok(reference().check(&conf, "c1", IF, &[]), "reference CHECK");
    let e = fails(ours().check(&conf, "c2", IF, &[]), "CHECK of another");
    assert_eq!(err_code(&e), 3, "{e}");
}

// ---------------------------------------------------------------------------
// Property: GC never frees what the list names
// ---------------------------------------------------------------------------

/// One file of a random store: (address index, container, ifname or legacy).
type Entry = (u8, u8, Option<u8>);

const IDS: [&str; 4] = ["c0", "c1", "c2", "c3"];
const IFS: [&str; 3] = ["eth0", "eth1", "net1"];

fn entry_content((_, id, ifname): &Entry) -> String {
    let id = IDS[usize::from(*id) % IDS.len()];
    match ifname {
        Some(i) => owner(id, IFS[usize::from(*i) % IFS.len()]),
        None => id.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn gc_never_frees_a_listed_attachment(
        files in proptest::collection::btree_map(2u8..250, (0u8..4, proptest::option::of(0u8..3)), 0..12),
        valid in proptest::collection::vec((0u8..4, proptest::option::of(0u8..3)), 0..5),
    ) {
        let net = TestNet::new("gcprop");
        let conf = v4_conf(&net);
        let store = net.store();
        let entries: Vec<Entry> = files.iter().map(|(a, (i, f))| (*a, *i, *f)).collect();
        for e in &entries {
            store.write(&format!("10.1.2.{}", e.0), entry_content(e).as_bytes(), 0o644);
        }
        let list: Vec<Value> = valid
            .iter()
            .map(|(i, f)| match f {
                Some(f) => json!({"containerID": IDS[usize::from(*i)], "ifname": IFS[usize::from(*f)]}),
                None => json!({"containerID": IDS[usize::from(*i)]}),
            })
            .collect();
        ok(ours().gc(&with_key(&conf, VALID_ATTACHMENTS, Value::Array(list))), "GC");
        for e in &entries {
            let id = IDS[usize::from(e.1)];
            let listed = valid.iter().any(|(i, f)| {
                IDS[usize::from(*i)] == id
                    && (f.is_none() || e.2.is_none() || *f == e.2)
            });
            let present = store.read(&format!("10.1.2.{}", e.0)).is_some();
            if listed {
                prop_assert!(present, "GC freed listed {:?} (list {:?})", e, valid);
            } else {
                prop_assert!(!present, "GC kept unlisted {:?} (list {:?})", e, valid);
            }
        }
    }
}
