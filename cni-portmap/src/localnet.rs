//! `route_localnet` on the interface that routes to the container, so that
//! connections from 127.0.0.1 to a host port can be DNATed to the pod (IPv4
//! only; IPv6 has no such path).

use std::net::Ipv4Addr;

/// The interface of the longest-prefix route to `ip` in the main table
/// (`/proc/net/route`). The reference asks the kernel (`ip route get`);
/// for the connected pod subnet both give the bridge.
pub fn route_iface(ip: Ipv4Addr) -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    best_route(&text, ip)
}

fn hex_addr(s: &str) -> Option<u32> {
    // /proc/net/route prints the address's bytes (network order) read as
    // a native-endian integer.
    let v = u32::from_str_radix(s, 16).ok()?;
    Some(u32::from(Ipv4Addr::from(v.to_ne_bytes())))
}

fn best_route(text: &str, ip: Ipv4Addr) -> Option<String> {
    let target = u32::from(ip);
    let mut best: Option<(u32, String)> = None;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(iface), Some(dst), Some(mask)) = (f.first(), f.get(1), f.get(7)) else {
            continue;
        };
        let (Some(dst), Some(mask)) = (hex_addr(dst), hex_addr(mask)) else {
            continue;
        };
        if target & mask == dst & mask
            && best
                .as_ref()
                .is_none_or(|(m, _)| mask.count_ones() > m.count_ones())
        {
            best = Some((mask, (*iface).to_string()));
        }
    }
    best.map(|(_, i)| i)
}

/// Sets `net.ipv4.conf.<iface>.route_localnet` to 1.
///
/// # Errors
/// The sysctl cannot be written.
pub fn enable(iface: &str) -> Result<(), String> {
    let path = format!("/proc/sys/net/ipv4/conf/{iface}/route_localnet");
    std::fs::write(&path, "1").map_err(|e| format!("unable to enable route_localnet: {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
cni0\t0000010A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn longest_prefix_wins() {
        assert_eq!(
            best_route(TABLE, Ipv4Addr::new(10, 1, 0, 5)).as_deref(),
            Some("cni0")
        );
        assert_eq!(
            best_route(TABLE, Ipv4Addr::new(8, 8, 8, 8)).as_deref(),
            Some("eth0")
        );
        assert_eq!(best_route("Iface\n", Ipv4Addr::new(8, 8, 8, 8)), None);
    }
}
