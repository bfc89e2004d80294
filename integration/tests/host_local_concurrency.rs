#![allow(clippy::unwrap_used)]
//! Concurrency tests of our host-local: many plugin processes at once on one
//! dataDir must never hand out an address twice and must leave a clean store.

use std::collections::BTreeSet;
use std::net::IpAddr;

use integration::*;
use serde_json::Value;

const IF: &str = "eth0";

#[track_caller]
fn assert_store_matches(store: &Store, expected: &[(String, IpAddr)]) {
    let want: BTreeSet<IpAddr> = expected.iter().map(|(_, a)| *a).collect();
    assert_eq!(store.ips(), want, "entries: {:?}", store.entries());
    for (id, a) in expected {
        assert_eq!(
            store.read(&a.to_string()),
            Some(owner(id, IF)),
            "file of {a}"
        );
    }
    assert_eq!(store.unexpected(), Vec::<String>::new());
}

#[test]
fn parallel_adds_get_distinct_addresses_and_parallel_dels_clean_up() {
    const N: usize = 200;
    let net = TestNet::new("conc");
    let conf = net.conf("1.0.0", ranges(&[&["10.100.0.0/23"]]));
    let store = net.store();
    let plugin = ours();
    let got: Vec<(String, IpAddr)> = parallel(N, |i| {
        let id = format!("ctr-{i}");
        let r = ok(plugin.add(&conf, &id, IF, &[]), &format!("ADD {id}"));
        let a = single_addr(&r);
        (id, a)
    });
    let distinct: BTreeSet<IpAddr> = got.iter().map(|(_, a)| *a).collect();
    assert_eq!(distinct.len(), N, "an address was handed out twice");
    assert_eq!(store.ip_names().len(), N);
    assert_store_matches(&store, &got);
    for a in &distinct {
        let s = a.to_string();
        assert!(
            s.starts_with("10.100.0.") || s.starts_with("10.100.1."),
            "{s}"
        );
        assert_ne!(s, "10.100.0.1", "gateway handed out");
    }
    // The round robin was followed: with no release, the N lowest addresses.
    let lowest: BTreeSet<IpAddr> = (2..=u32::try_from(N).unwrap() + 1)
        .map(|k| {
            IpAddr::from(std::net::Ipv4Addr::from(
                u32::from_be_bytes([10, 100, 0, 0]) + k,
            ))
        })
        .collect();
    assert_eq!(distinct, lowest);
    let last = store.last_reserved(0).expect("last_reserved_ip.0");
    assert!(
        distinct.contains(&last.parse().unwrap()),
        "last_reserved_ip.0 = {last}"
    );

    parallel(N, |i| ok(plugin.del(&conf, &got[i].0, IF, &[]), "DEL"));
    assert_eq!(store.ips(), BTreeSet::new());
    assert_eq!(
        store.non_bookkeeping(),
        Vec::<String>::new(),
        "leftovers after DEL"
    );
}

#[test]
fn parallel_dual_stack_adds() {
    const N: usize = 120;
    let net = TestNet::new("conc6");
    let conf = net.conf("1.1.0", ranges(&[&["10.101.0.0/16"], &["fd00:101::/64"]]));
    let store = net.store();
    let plugin = ours();
    let got: Vec<(String, Vec<IpAddr>)> = parallel(N, |i| {
        let id = format!("ctr-{i}");
        let r = ok(plugin.add(&conf, &id, IF, &[]), &format!("ADD {id}"));
        (id, result_addrs(&r))
    });
    let mut all = BTreeSet::new();
    for (id, addrs) in &got {
        assert_eq!(addrs.len(), 2);
        assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6());
        for a in addrs {
            assert!(all.insert(*a), "{a} handed out twice");
            assert_eq!(store.read(&a.to_string()), Some(owner(id, IF)));
        }
    }
    assert_eq!(store.ips(), all);
    parallel(N, |i| ok(plugin.del(&conf, &got[i].0, IF, &[]), "DEL"));
    assert_eq!(store.non_bookkeeping(), Vec::<String>::new());
}

#[test]
fn racing_for_the_last_addresses() {
    const N: usize = 60;
    let net = TestNet::new("race");
    // .2-.30: 29 addresses for 60 contenders.
    let conf = net.conf("0.4.0", ranges(&[&["10.102.0.0/27"]]));
    let store = net.store();
    let plugin = ours();
    let got: Vec<(String, Result<Value, Value>)> = parallel(N, |i| {
        let id = format!("ctr-{i}");
        let r = plugin.add(&conf, &id, IF, &[]);
        (id, r)
    });
    let mut won = Vec::new();
    for (id, r) in &got {
        match r {
            Ok(v) => won.push((id.clone(), single_addr(v))),
            Err(e) => assert_err(
                e,
                100,
                "failed to allocate for range 0: no IP addresses available in range set: 10.102.0.1-10.102.0.30",
            ),
        }
    }
    assert_eq!(
        won.len(),
        29,
        "exactly every usable address is handed out once"
    );
    assert_store_matches(&store, &won);
    let e = fails(plugin.status(&with_version(&conf, "1.1.0")), "STATUS");
    assert_eq!(err_code(&e), 50, "{e}");
}

#[test]
fn parallel_duplicate_adds_only_one_wins() {
    const N: usize = 24;
    let net = TestNet::new("dup");
    let conf = net.conf("1.0.0", ranges(&[&["10.103.0.0/24"], &["fd00:103::/64"]]));
    let store = net.store();
    let plugin = ours();
    let got: Vec<Result<Value, Value>> = parallel(N, |_| plugin.add(&conf, "same", IF, &[]));
    let wins: Vec<&Value> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(wins.len(), 1, "results: {got:?}");
    let addrs = result_addrs(wins[0]);
    for r in &got {
        if let Err(e) = r {
            assert_err(
                e,
                100,
                &format!(
                    "failed to allocate for range 0: {} has been allocated to same, duplicate allocation is not allowed",
                    addrs[0]
                ),
            );
        }
    }
    assert_eq!(store.ips(), addrs.iter().copied().collect::<BTreeSet<_>>());
    ok(plugin.del(&conf, "same", IF, &[]), "DEL");
    assert_eq!(store.non_bookkeeping(), Vec::<String>::new());
}

#[test]
fn parallel_adds_and_dels_interleaved() {
    // Half the workers ADD new attachments while the other half DEL older ones.
    const N: usize = 100;
    let net = TestNet::new("mix");
    let conf = net.conf("1.0.0", ranges(&[&["10.104.0.0/23"]]));
    let store = net.store();
    let plugin = ours();
    let first: Vec<(String, IpAddr)> = parallel(N, |i| {
        let id = format!("old-{i}");
        let a = single_addr(&ok(plugin.add(&conf, &id, IF, &[]), "ADD old"));
        (id, a)
    });
    let second: Vec<Option<(String, IpAddr)>> = parallel(2 * N, |i| {
        if i % 2 == 0 {
            ok(plugin.del(&conf, &first[i / 2].0, IF, &[]), "DEL old");
            None
        } else {
            let id = format!("new-{i}");
            let a = single_addr(&ok(plugin.add(&conf, &id, IF, &[]), "ADD new"));
            Some((id, a))
        }
    });
    let new: Vec<(String, IpAddr)> = second.into_iter().flatten().collect();
    assert_eq!(new.len(), N);
    assert_store_matches(&store, &new);
    parallel(N, |i| ok(plugin.del(&conf, &new[i].0, IF, &[]), "DEL new"));
    assert_eq!(store.non_bookkeeping(), Vec::<String>::new());
}
