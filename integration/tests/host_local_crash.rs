#![allow(clippy::unwrap_used)]
//! Crash safety of our host-local: plugin processes SIGKILLed at random points
//! must never leave an empty or half-written reservation, never make two
//! completed ADDs share an address, and must leave only garbage that GC (and
//! DEL) can clean up.
//!
//! The random delays come from a xorshift generator seeded from the clock; the
//! seed is printed (run with `--nocapture`) and can be forced with
//! `CRASH_SEED=<n>`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Child;
use std::time::Duration;

use integration::*;
use serde_json::Value;

const WORKERS: usize = 6;
const PER_WORKER: usize = 80;
const MAX_DELAY_US: u64 = 5_000;
const COMPLETE_EVERY: usize = 10;
/// Delay meaning "do not kill, let it finish".
const NO_KILL: u64 = u64::MAX;

fn seed() -> u64 {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(XorShift::seed_from_time);
    eprintln!("crash test seed: {seed} (rerun with CRASH_SEED={seed})");
    seed
}

enum Outcome {
    Completed(Vec<IpAddr>),
    Killed,
}

/// Waits `delay`, SIGKILLs the child (unless `delay` is [`NO_KILL`] µs), and
/// reports how it ended: exit code (None = killed), stdout, stderr.
fn run_and_kill(child: Child, delay: Duration, what: &str) -> (Option<i32>, Vec<u8>, String) {
    let mut child = child;
    if delay != Duration::from_micros(NO_KILL) {
        std::thread::sleep(delay);
        // SIGKILL; harmless if it already exited (not reaped yet, so the pid is ours).
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if let Some(code) = out.status.code() {
        assert!(
            code == 0,
            "{what} failed (status {code}) without being killed\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    (out.status.code(), out.stdout, stderr)
}

fn add_env(id: &str, ifname: &str) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("CNI_CONTAINERID", Some(id.to_string())),
        ("CNI_IFNAME", Some(ifname.to_string())),
        ("CNI_NETNS", Some(NETNS.to_string())),
    ]
}

fn spawn(
    plugin: &Plugin,
    command: &str,
    env: &[(&'static str, Option<String>)],
    conf: &Value,
) -> Child {
    let env: Vec<(&str, Option<&str>)> = env.iter().map(|(k, v)| (*k, v.as_deref())).collect();
    plugin.spawn(Some(command), &env, conf.to_string().as_bytes())
}

/// Checks every store invariant that must hold at any time.
#[track_caller]
fn check_store_invariants(store: &Store, started: &BTreeSet<String>) {
    assert_eq!(
        store.unexpected(),
        Vec::<String>::new(),
        "leftover files that are neither reservations, bookkeeping nor dotfiles"
    );
    for name in store.ip_names() {
        let content = store.read(&name).unwrap_or_default();
        assert!(!content.is_empty(), "empty reservation file {name}");
        assert!(
            started.contains(&content),
            "reservation {name} holds {content:?}, which is not `<id>\\r\\n<ifname>` of a started ADD"
        );
    }
}

#[test]
fn killed_adds_leave_a_consistent_store() {
    let mut rng = XorShift::new(seed());
    let net = TestNet::new("crash");
    let conf = net.conf("1.0.0", ranges(&[&["10.200.0.0/16"], &["fd00:200::/64"]]));
    let store = net.store();
    let plugin = ours();
    // Every COMPLETE_EVERY-th ADD gets time to finish, so that some complete
    // whatever the binary's speed; all others are killed 0–5 ms after start.
    let delays: Vec<Vec<u64>> = (0..WORKERS)
        .map(|_| {
            (0..PER_WORKER)
                .map(|i| {
                    let d = rng.below(MAX_DELAY_US + 1);
                    if i % COMPLETE_EVERY == COMPLETE_EVERY - 1 {
                        NO_KILL
                    } else {
                        d
                    }
                })
                .collect()
        })
        .collect();

    // (id, ifname) → outcome
    let outcomes: Vec<((String, String), Outcome)> = std::thread::scope(|s| {
        let handles: Vec<_> = delays
            .iter()
            .enumerate()
            .map(|(w, ds)| {
                let plugin = &plugin;
                let conf = &conf;
                s.spawn(move || {
                    ds.iter()
                        .enumerate()
                        .map(|(i, d)| {
                            let id = format!("k{w}-{i}");
                            let ifname = format!("eth{}", i % 3);
                            let child = spawn(plugin, "ADD", &add_env(&id, &ifname), conf);
                            let what = format!("ADD {id}/{ifname}");
                            let (code, stdout, _) =
                                run_and_kill(child, Duration::from_micros(*d), &what);
                            let outcome = if code == Some(0) {
                                let v: Value = serde_json::from_slice(&stdout)
                                    .unwrap_or_else(|e| panic!("{what}: bad result ({e})"));
                                Outcome::Completed(result_addrs(&v))
                            } else {
                                Outcome::Killed
                            };
                            ((id, ifname), outcome)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });

    let started: BTreeSet<String> = outcomes
        .iter()
        .map(|((id, ifn), _)| owner(id, ifn))
        .collect();
    let completed: BTreeMap<(String, String), Vec<IpAddr>> = outcomes
        .iter()
        .filter_map(|(k, o)| match o {
            Outcome::Completed(a) => Some((k.clone(), a.clone())),
            Outcome::Killed => None,
        })
        .collect();
    let killed = outcomes.len() - completed.len();
    eprintln!(
        "{} ADDs: {} completed, {killed} killed; {} reservation files, dotfiles: {:?}",
        outcomes.len(),
        completed.len(),
        store.ip_names().len(),
        store.dotfiles()
    );
    assert!(
        !completed.is_empty(),
        "no ADD completed: the delays are too short"
    );
    assert!(killed > 0, "no ADD was killed: the delays are too long");

    // Invariants after the crashes.
    check_store_invariants(&store, &started);
    let mut owners: BTreeMap<IpAddr, &(String, String)> = BTreeMap::new();
    for (k, addrs) in &completed {
        assert_eq!(addrs.len(), 2, "{k:?}: {addrs:?}");
        for a in addrs {
            if let Some(prev) = owners.insert(*a, k) {
                panic!("{a} was handed to both {prev:?} and {k:?}");
            }
            assert_eq!(
                store.read(&a.to_string()),
                Some(owner(&k.0, &k.1)),
                "reservation of completed ADD {k:?}"
            );
        }
    }

    // The store is still usable.
    let probe = ok(plugin.add(&conf, "probe", "eth0", &[]), "ADD after crashes");
    for a in result_addrs(&probe) {
        assert!(!owners.contains_key(&a), "probe got {a}, which is in use");
    }
    ok(plugin.del(&conf, "probe", "eth0", &[]), "DEL probe");

    // GC keeps exactly the completed attachments.
    let valid: Vec<(&str, &str)> = completed
        .keys()
        .map(|(i, f)| (i.as_str(), f.as_str()))
        .collect();
    let gc_conf = with_attachments(&with_version(&conf, "1.1.0"), VALID_ATTACHMENTS, &valid);
    ok(plugin.gc(&gc_conf), "GC");
    let want: BTreeSet<IpAddr> = owners.keys().copied().collect();
    assert_eq!(
        store.ips(),
        want,
        "after GC only the completed ADDs' reservations remain"
    );
    check_store_invariants(&store, &started);

    // DEL of the completed attachments empties the store.
    for (id, ifname) in completed.keys() {
        ok(plugin.del(&conf, id, ifname, &[]), "DEL completed");
    }
    assert_eq!(
        store.ips(),
        BTreeSet::new(),
        "entries: {:?}",
        store.entries()
    );

    // Once every started attachment has been DELeted, only bookkeeping remains.
    for ((id, ifname), o) in &outcomes {
        if matches!(o, Outcome::Killed) {
            ok(plugin.del(&conf, id, ifname, &[]), "DEL killed");
        }
    }
    assert_eq!(
        store.non_bookkeeping(),
        Vec::<String>::new(),
        "files left after every attachment was DELeted"
    );
}

#[test]
fn killed_dels_leave_intact_or_no_reservations() {
    let mut rng = XorShift::new(seed());
    let net = TestNet::new("crashdel");
    let conf = net.conf("1.0.0", ranges(&[&["10.201.0.0/16"], &["fd00:201::/64"]]));
    let store = net.store();
    let plugin = ours();
    const N: usize = 150;
    let ids: Vec<String> = (0..N).map(|i| format!("d{i}")).collect();
    let mut addrs: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for id in &ids {
        let r = ok(plugin.add(&conf, id, "eth0", &[]), "ADD");
        addrs.insert(id.clone(), result_addrs(&r));
    }
    let delays: Vec<u64> = (0..N).map(|_| rng.below(MAX_DELAY_US / 2 + 1)).collect();
    std::thread::scope(|s| {
        for chunk in ids.chunks(N / 5).zip(delays.chunks(N / 5)) {
            let (plugin, conf) = (&plugin, &conf);
            s.spawn(move || {
                for (id, d) in chunk.0.iter().zip(chunk.1) {
                    let env = vec![
                        ("CNI_CONTAINERID", Some(id.clone())),
                        ("CNI_IFNAME", Some("eth0".to_string())),
                    ];
                    let child = spawn(plugin, "DEL", &env, conf);
                    run_and_kill(child, Duration::from_micros(*d), &format!("DEL {id}"));
                }
            });
        }
    });
    let started: BTreeSet<String> = ids.iter().map(|id| owner(id, "eth0")).collect();
    check_store_invariants(&store, &started);
    for (id, list) in &addrs {
        for a in list {
            if let Some(c) = store.read(&a.to_string()) {
                assert_eq!(c, owner(id, "eth0"), "{a}");
            }
        }
    }
    eprintln!(
        "{} reservations survived the killed DELs",
        store.ip_names().len()
    );
    for id in &ids {
        ok(plugin.del(&conf, id, "eth0", &[]), "DEL again");
    }
    assert_eq!(store.non_bookkeeping(), Vec::<String>::new());
}
