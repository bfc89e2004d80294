//! Property test: random and mutated configurations, environment values and
//! CNI_ARGS never make the plugin panic; every reply is a CNI error (exit 1,
//! `code` and `msg`) or a well-formed result (exit 0).
#![allow(clippy::unwrap_used)]

use cni_host_local::{HostLocal, INFO};
use cni_spec::skel::dispatch;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

fn base_config() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "fuzz",
        "type": "host-local",
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.5.0.0/28", "rangeStart": "10.5.0.2", "rangeEnd": "10.5.0.9", "gateway": "10.5.0.1"}],
                       [{"subnet": "fd05::/120"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "subnet": "10.6.0.0/29"
        },
        "args": {"cni": {"ips": ["10.5.0.3"]}},
        "runtimeConfig": {"ips": ["fd05::7/120"], "ipRanges": [[{"subnet": "10.7.0.0/30"}]]}
    })
}

fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[0-9a-f:./]{0,24}".prop_map(Value::from),
        prop_oneof![
            Just("10.5.0.0/28"),
            Just("10.5.0.1"),
            Just("fd05::/120"),
            Just("0.0.0.0/0"),
            Just("10.5.0.0/31"),
            Just("10.5.0.4/28"),
            Just("::/0"),
            Just("1.1.0"),
            Just("0.2.0"),
            Just("9.9.9"),
            Just(""),
            Just("10.5.0.255"),
        ]
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    arb_scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-zA-Z]{1,10}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A mutation at a path of key choices: replace, delete, or re-case a key.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(Vec<usize>, Value),
    Delete(Vec<usize>),
    Upcase(Vec<usize>),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let path = prop::collection::vec(0usize..8, 1..5);
    prop_oneof![
        (path.clone(), arb_json()).prop_map(|(p, v)| Mutation::Replace(p, v)),
        path.clone().prop_map(Mutation::Delete),
        path.prop_map(Mutation::Upcase),
    ]
}

fn apply(v: &mut Value, m: &Mutation) {
    let (path, last) = match m {
        Mutation::Replace(p, _) | Mutation::Delete(p) | Mutation::Upcase(p) => {
            (&p[..p.len() - 1], p[p.len() - 1])
        }
    };
    let mut cur = v;
    for &i in path {
        cur = match cur {
            Value::Object(o) if !o.is_empty() => {
                let k = o.keys().nth(i % o.len()).cloned().unwrap();
                o.get_mut(&k).unwrap()
            }
            Value::Array(a) if !a.is_empty() => {
                let n = a.len();
                &mut a[i % n]
            }
            _ => return,
        };
    }
    match cur {
        Value::Object(o) if !o.is_empty() => {
            let k = o.keys().nth(last % o.len()).cloned().unwrap();
            match m {
                Mutation::Replace(_, nv) => {
                    o.insert(k, nv.clone());
                }
                Mutation::Delete(_) => {
                    o.shift_remove(&k);
                }
                Mutation::Upcase(_) => {
                    let val = o.shift_remove(&k).unwrap();
                    o.insert(k.to_uppercase(), val);
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            match m {
                Mutation::Replace(_, nv) => a[last % n] = nv.clone(),
                _ => {
                    a.remove(last % n);
                }
            }
        }
        _ => {}
    }
}

/// Forces the store into `dir`, whatever the mutations did to `ipam`.
fn pin_data_dir(v: &mut Value, dir: &str) {
    if let Value::Object(root) = v {
        for (k, ipam) in root.iter_mut() {
            if k.eq_ignore_ascii_case("ipam") {
                if let Value::Object(m) = ipam {
                    m.retain(|k, _| !k.eq_ignore_ascii_case("dataDir"));
                    m.insert("dataDir".into(), Value::from(dir));
                }
            }
        }
    }
}

fn check_reply(command: &str, out: &cni_spec::skel::Reply) -> Result<(), TestCaseError> {
    if command.is_empty() && out.exit_code == 0 {
        prop_assert!(out.stdout.is_empty());
        return Ok(());
    }
    let empty_ok = matches!(command, "DEL" | "CHECK" | "GC" | "STATUS");
    if out.exit_code == 0 && out.stdout.is_empty() {
        prop_assert!(empty_ok, "{command} succeeded with no output");
        return Ok(());
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| TestCaseError::fail(format!("stdout is not JSON: {e}")))?;
    if out.exit_code == 1 {
        prop_assert!(v["code"].as_u64().is_some(), "error without code: {v}");
        prop_assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "error without msg: {v}"
        );
    } else {
        prop_assert_eq!(out.exit_code, 0);
        prop_assert!(
            v["cniVersion"].as_str().is_some(),
            "result without cniVersion: {v}"
        );
        prop_assert!(
            v.get("ips").is_some()
                || v.get("ip4").is_some()
                || v.get("ip6").is_some()
                || v.get("supportedVersions").is_some(),
            "result without addresses: {v}"
        );
    }
    Ok(())
}

fn run(env: HashMap<&'static str, String>, stdin: &[u8]) -> cni_spec::skel::Reply {
    let lookup = move |k: &str| env.get(k).cloned();
    dispatch(&HostLocal, &INFO, &lookup, &mut &stdin[..])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mutated_configs_never_panic(
        muts in prop::collection::vec(arb_mutation(), 0..4),
        command in prop_oneof![Just("ADD"), Just("DEL"), Just("CHECK"), Just("GC"), Just("STATUS"), Just("VERSION"), Just(""), Just("BOGUS")],
        id in prop_oneof![Just("ctr1".to_string()), "[a-zA-Z0-9_./-]{0,12}", any::<String>()],
        ifname in prop_oneof![Just("eth0".to_string()), "[a-z0-9:./ ]{0,18}"],
        args in prop_oneof![Just(String::new()), Just("IgnoreUnknown=1;K8S_POD_NAME=x".to_string()),
            "(IP=[0-9./a-f:]{0,18}|IgnoreUnknown=[a-zA-Z01]{0,5}|[A-Z]{1,4}=[a-z]{0,3}|;|=){0,4}"],
        version in prop_oneof![Just(None), Just(Some("0.1.0")), Just(Some("0.2.0")), Just(Some("0.4.0")), Just(Some("1.1.0"))],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut conf = base_config();
        if let Some(v) = version {
            conf["cniVersion"] = Value::from(v);
        }
        for m in &muts {
            apply(&mut conf, m);
        }
        pin_data_dir(&mut conf, &dir.path().to_string_lossy());
        let stdin = serde_json::to_vec(&conf).unwrap();
        let env: HashMap<&'static str, String> = [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", "/var/run/netns/fuzz".to_string()),
            ("CNI_IFNAME", ifname),
            ("CNI_ARGS", args),
            ("CNI_PATH", "/opt/cni/bin".to_string()),
        ]
        .into_iter()
        .collect();
        let out = run(env, &stdin);
        check_reply(command, &out)?;
    }

    #[test]
    fn arbitrary_stdin_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let env: HashMap<&'static str, String> = [
            ("CNI_COMMAND", "ADD".to_string()),
            ("CNI_CONTAINERID", "c".to_string()),
            ("CNI_NETNS", "/x".to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", "/x".to_string()),
        ]
        .into_iter()
        .collect();
        let out = run(env, &bytes);
        check_reply("ADD", &out)?;
    }
}
