//! Concurrent ADDs and DELs of our `portmap` on one node: every attachment
//! keeps its rules (a transaction built from a stale read must not empty a
//! chain another ADD just filled), the shared jumps exist once, and
//! concurrent DELs leave nothing.
//!
//! Run: `cargo build -p cni-portmap && cargo test -p integration --test portmap_concurrency`

use integration::netns::{sha512_hex, Netns};
use integration::portmap::*;
use serde_json::json;

const PODS: u16 = 12;

fn dn_of(id: &str) -> String {
    let h = sha512_hex(&format!("{PM_NET}{id}"));
    format!("CNI-DN-{}", &h[..21])
}

#[test]
fn concurrent_adds_keep_every_attachment() {
    for round in 0..3 {
        let host = Netns::new("pmconc");
        let confs: Vec<(String, serde_json::Value)> = (0..PODS)
            .map(|i| {
                let prev = prev_result(
                    "1.0.0",
                    &[
                        &format!("10.20.0.{}/24", i + 2),
                        &format!("fd20::{}/64", i + 2),
                    ],
                );
                let mut c = pm_conf(
                    "1.0.0",
                    json!([{"hostPort": 10000 + i, "containerPort": 80, "protocol": "tcp"}]),
                    json!({}),
                );
                c["prevResult"] = prev;
                (format!("conc{i}"), c)
            })
            .collect();
        std::thread::scope(|s| {
            for (id, c) in &confs {
                let host = &host;
                s.spawn(move || Portmap::ours().must_add(host, c, id));
            }
        });
        for v6 in [false, true] {
            let rules = nat(&host, v6);
            for (id, c) in &confs {
                let chain = dn_of(id);
                let entries = rules
                    .iter()
                    .filter(|l| {
                        l.starts_with("-A CNI-HOSTPORT-DNAT ")
                            && l.ends_with(&format!("-j {chain}"))
                    })
                    .count();
                assert_eq!(
                    entries, 1,
                    "round {round} v6={v6}: {id} lost its entry rule: {rules:#?}"
                );
                Portmap::ours()
                    .check(&host, c, id)
                    .unwrap_or_else(|e| panic!("round {round}: CHECK {id}: {e}"));
            }
            for jump in [
                "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
                "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
            ] {
                assert_eq!(
                    rules.iter().filter(|l| *l == jump).count(),
                    1,
                    "v6={v6} {jump}: {rules:#?}"
                );
            }
        }
        std::thread::scope(|s| {
            for (id, c) in &confs {
                let host = &host;
                s.spawn(move || Portmap::ours().must_del(host, c, id));
            }
        });
        assert_eq!(
            attachment_state(&host),
            Vec::<String>::new(),
            "round {round}"
        );
    }
}
