//! Stale UDP conntrack entries: a UDP flow that hit the host port before the
//! DNAT rule existed keeps its old translation until it expires, so ADD
//! removes the entries of each mapped UDP host port (as the reference does;
//! we run `conntrack -D` where the reference speaks netlink).

use crate::config::{PortMapping, Protocol};
use crate::tools::{find, run};

/// Deletes the conntrack entries of every UDP mapping's host port in one
/// family. Returns what went wrong, for the log only: a failure here never
/// fails ADD. `conntrack -D` exits 1 when nothing matched, which is no
/// failure.
pub fn flush_udp(mappings: &[PortMapping], v4: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let udp: Vec<u16> = mappings
        .iter()
        .filter(|m| m.protocol == Protocol::Udp)
        .map(|m| m.host_port)
        .collect();
    if udp.is_empty() {
        return problems;
    }
    if find("conntrack").is_none() {
        problems.push("conntrack not found in PATH: stale UDP entries kept".to_string());
        return problems;
    }
    let fam = if v4 { "ipv4" } else { "ipv6" };
    for port in udp {
        let p = port.to_string();
        if let Err(e) = run(
            "conntrack",
            &["-D", "-f", fam, "-p", "udp", "--orig-port-dst", &p],
            None,
        ) {
            if !e.contains("0 flow entries have been deleted") {
                problems.push(e);
            }
        }
    }
    problems
}
