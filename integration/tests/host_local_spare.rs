#![allow(clippy::unwrap_used)]
//! host-local's spare inode: DEL keeps the released reservation's inode as
//! `.spare` and the next ADD rewrites and renames it instead of allocating
//! one. The reuse must be invisible: exact file content whatever the
//! lengths, nothing a live reservation holds ever rewritten, and a spare
//! that is anything but a lone regular file left alone.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::process::Command;
use std::time::Duration;

use integration::*;
use serde_json::Value;

const IF: &str = "eth0";

fn conf(net: &TestNet) -> Value {
    net.conf("1.1.0", ranges(&[&["10.1.3.0/24"]]))
}

fn ino(store: &Store, name: &str) -> u64 {
    fs::symlink_metadata(store.path(name)).unwrap().ino()
}

#[test]
fn del_keeps_the_inode_and_the_next_add_rewrites_it_exactly() {
    let net = TestNet::new("spare");
    let conf = conf(&net);
    let store = net.store();
    let long = "a-rather-long-container-id-0123456789abcdef0123456789abcdef";
    let first = single_addr(&ok(ours().add(&conf, long, IF, &[]), "ADD long"));
    let first_ino = ino(&store, &first.to_string());
    ok(ours().del(&conf, long, IF, &[]), "DEL long");
    assert_eq!(store.ip_names(), Vec::<String>::new());
    assert_eq!(store.dotfiles(), vec![".spare".to_string()]);
    assert_eq!(ino(&store, ".spare"), first_ino, "DEL kept the inode");
    let meta = fs::metadata(store.path(".spare")).unwrap();
    assert_eq!((meta.nlink(), meta.mode() & 0o777), (1, 0o600));

    // Shorter, then longer owners than the spare held: exact content.
    for id in ["c2", "another-container-id-longer-than-c2-0123456789"] {
        let r = ok(ours().add(&conf, id, IF, &[]), "ADD");
        let addr = single_addr(&r).to_string();
        assert_eq!(ino(&store, &addr), first_ino, "{id}: the spare was reused");
        assert_eq!(store.read_ip(&addr), Some(owner(id, IF)));
        assert!(!store.path(".spare").exists(), "{id}: the spare is taken");
        let dots = store.dotfiles();
        assert_eq!(dots, vec![format!(".attachment.{id}:{IF}")], "{id}");
        ok(
            ours().check(&with_key(&conf, "prevResult", r.clone()), id, IF, &[]),
            "CHECK",
        );
        ok(ours().del(&conf, id, IF, &[]), "DEL");
        assert_eq!(store.non_bookkeeping(), Vec::<String>::new());
    }
}

#[test]
fn two_addresses_and_a_failed_add_keep_the_spare_sound() {
    let net = TestNet::new("spare2");
    let conf = net.conf("1.1.0", ranges(&[&["10.1.4.0/24"], &["fd00:4::/64"]]));
    let store = net.store();
    ok(ours().add(&conf, "c1", IF, &[]), "ADD c1");
    ok(ours().del(&conf, "c1", IF, &[]), "DEL c1");
    let spare = ino(&store, ".spare");
    let r = ok(ours().add(&conf, "c2", IF, &[]), "ADD c2");
    for a in result_addrs(&r) {
        assert_eq!(ino(&store, &a.to_string()), spare, "{a}");
        assert_eq!(store.read_ip(&a.to_string()), Some(owner("c2", IF)));
    }
    // A requested address that is taken: the ADD fails, reserves nothing,
    // and the claimed spare is the spare again (no temporary left).
    ok(ours().del(&conf, "c2", IF, &[]), "DEL c2");
    ok(ours().add(&conf, "c3", IF, &[]), "ADD c3");
    let taken = store.ip_names();
    ok(ours().add(&conf, "c5", IF, &[]), "ADD c5");
    ok(ours().del(&conf, "c5", IF, &[]), "DEL c5");
    assert_eq!(store.ip_names(), taken);
    let taken = taken[0].clone();
    let spare = ino(&store, ".spare");
    fails(
        ours().add(
            &conf,
            "c4",
            IF,
            &[("CNI_ARGS", format!("IP={taken}").as_str())],
        ),
        "ADD of a taken address",
    );
    assert_eq!(store.read_ip(&taken), Some(owner("c3", IF)));
    assert_eq!(ino(&store, ".spare"), spare, "given back");
    assert_eq!(
        store.dotfiles(),
        vec![".attachment.c3:eth0".to_string(), ".spare".to_string()]
    );
}

#[test]
fn a_spare_that_is_no_lone_regular_file_is_left_alone() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    fs::write(&target, "outside").unwrap();
    let net = TestNet::new("sparebad");
    let conf = conf(&net);
    let store = net.store();
    let c1 = single_addr(&ok(ours().add(&conf, "c1", IF, &[]), "ADD c1")).to_string();
    type Plant = Box<dyn Fn(&std::path::Path)>;
    let plants: Vec<(&str, Plant)> = vec![
        // A second name of c1's live reservation: rewriting it would give
        // c1's address to another attachment.
        (
            "a link of a reservation",
            Box::new({
                let live = store.path(&c1);
                move |p| fs::hard_link(&live, p).unwrap()
            }),
        ),
        (
            "a symlink",
            Box::new({
                let t = target.clone();
                move |p| symlink(&t, p).unwrap()
            }),
        ),
        ("a directory", Box::new(|p| fs::create_dir(p).unwrap())),
        (
            "a FIFO",
            Box::new(|p| {
                let s = Command::new("mkfifo").arg(p).status().unwrap();
                assert!(s.success());
            }),
        ),
    ];
    for (i, (what, plant)) in plants.iter().enumerate() {
        let spare = store.path(".spare");
        plant(&spare);
        let before = fs::symlink_metadata(&spare).unwrap();
        let id = format!("x{i}");
        let r = run_with_timeout(&conf, &id, Duration::from_secs(20));
        let addr = single_addr(&ok(r, what)).to_string();
        assert_ne!(ino(&store, &addr), before.ino(), "{what}: not reused");
        assert_eq!(store.read_ip(&addr), Some(owner(&id, IF)), "{what}");
        let after = fs::symlink_metadata(&spare).unwrap();
        assert_eq!(after.ino(), before.ino(), "{what}: left in place");
        assert_eq!(store.read_ip(&c1), Some(owner("c1", IF)), "{what}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "outside", "{what}");
        ok(ours().del(&conf, &id, IF, &[]), what);
        assert!(store.read_ip(&addr).is_none(), "{what}: released");
        // DEL made its own inode the spare, replacing the planted one
        // (a directory cannot be replaced by a file: it stays, and the
        // index is removed instead).
        if after.is_dir() {
            fs::remove_dir(&spare).unwrap();
        }
        assert!(
            store.dotfiles().iter().all(|d| !d.starts_with(".tmp.")),
            "{what}: {:?}",
            store.dotfiles()
        );
        let _ = fs::remove_file(&spare);
    }
    assert_eq!(store.read_ip(&c1), Some(owner("c1", IF)));
}

/// An ADD that must not block (a FIFO named `.spare` must never be opened
/// for writing in a way that waits for a reader).
fn run_with_timeout(conf: &Value, id: &str, limit: Duration) -> Result<Value, Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (conf, id) = (conf.clone(), id.to_string());
    std::thread::spawn(move || {
        let _ = tx.send(ours().add(&conf, &id, IF, &[]));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("ADD blocked for {limit:?}"))
}

#[test]
fn the_reference_works_beside_a_spare() {
    let net = TestNet::new("spareref");
    let conf = with_version(&conf(&net), "1.0.0");
    let store = net.store();
    ok(ours().add(&conf, "c1", IF, &[]), "ADD c1");
    ok(ours().del(&conf, "c1", IF, &[]), "DEL c1");
    // The reference allocates and releases beside it...
    let r = ok(reference().add(&conf, "r1", IF, &[]), "reference ADD");
    let a = single_addr(&r).to_string();
    assert_eq!(store.read_ip(&a), Some(owner("r1", IF)));
    ok(reference().del(&conf, "r1", IF, &[]), "reference DEL");
    assert!(store.path(".spare").exists());
    // ...and a repeated DEL of the spare's last owner by the reference
    // (which releases every file holding that owner's text) only costs
    // the spare.
    ok(
        reference().del(&conf, "c1", IF, &[]),
        "reference DEL c1 again",
    );
    assert_eq!(store.non_bookkeeping(), Vec::<String>::new());
    let r = ok(ours().add(&conf, "c2", IF, &[]), "ADD c2");
    let a = single_addr(&r).to_string();
    assert_eq!(store.read_ip(&a), Some(owner("c2", IF)));
}

/// Concurrent ADDs and DELs around the spare: each round starts with a
/// spare, half the pods of the last round are deleted (each DEL renames its
/// inode over `.spare`) while as many new ADDs run, so a claimed spare can
/// be replaced before the claimer takes the lock. No address is handed out
/// twice, every reservation holds its own owner's text, at most one ADD per
/// spare reuses it, and the store ends clean.
#[test]
fn concurrent_adds_and_dels_never_share_a_spare() {
    const N: usize = 16;
    let net = TestNet::new("sparerace");
    let conf = conf(&net);
    let store = net.store();
    ok(ours().add(&conf, "seed", IF, &[]), "ADD seed");
    ok(ours().del(&conf, "seed", IF, &[]), "DEL seed");
    let mut live: Vec<String> = Vec::new();
    for round in 0..6 {
        // The spare at the round's start, if the last round left one.
        let spare = fs::symlink_metadata(store.path(".spare"))
            .ok()
            .map(|m| m.ino());
        let gone: Vec<String> = live.drain(..live.len() / 2).collect();
        let born: Vec<String> = (0..N).map(|i| format!("r{round}-{i}")).collect();
        let results = parallel(gone.len() + born.len(), |k| match gone.get(k) {
            Some(id) => ours().del(&conf, id, IF, &[]).map(|_| None),
            None => ours().add(&conf, &born[k - gone.len()], IF, &[]).map(Some),
        });
        for (k, r) in results.into_iter().enumerate() {
            ok(r, &format!("round {round}, call {k}"));
        }
        live.extend(born);
        assert_eq!(store.ip_names().len(), live.len(), "round {round}");
        let mut reused = 0;
        for id in &live {
            let held: Vec<String> = store
                .ip_names()
                .into_iter()
                .filter(|a| store.read_ip(a) == Some(owner(id, IF)))
                .collect();
            assert_eq!(held.len(), 1, "round {round}: {id} holds {held:?}");
            reused += usize::from(Some(ino(&store, &held[0])) == spare);
        }
        assert!(
            reused <= 1,
            "round {round}: the spare went to {reused} ADDs"
        );
        assert!(
            store
                .dotfiles()
                .iter()
                .all(|n| n == ".spare" || n.starts_with(".attachment.")),
            "round {round}: {:?}",
            store.dotfiles()
        );
    }
    let ends = parallel(live.len(), |k| ours().del(&conf, &live[k], IF, &[]));
    for (k, r) in ends.into_iter().enumerate() {
        ok(r, &format!("final DEL {k}"));
    }
    assert_eq!(store.non_bookkeeping(), Vec::<String>::new());
    assert_eq!(store.dotfiles(), vec![".spare".to_string()]);
    let meta = fs::symlink_metadata(store.path(".spare")).unwrap();
    assert_eq!((meta.nlink(), meta.file_type().is_file()), (1, true));
}
