//! Address ranges and range sets: canonicalisation, membership, overlap.
//!
//! Messages are the reference's (tools and people grep them). Addresses are
//! handled as `u128` offsets inside one family so that iteration and overlap
//! are plain integer arithmetic.

use ipnetwork::IpNetwork;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `n` in the family `v4` selects.
pub fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// A range as written in the configuration, before canonicalisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRange {
    /// `subnet` (required).
    pub subnet: Option<IpNetwork>,
    /// `rangeStart`, inclusive.
    pub range_start: Option<IpAddr>,
    /// `rangeEnd`, inclusive.
    pub range_end: Option<IpAddr>,
    /// `gateway`.
    pub gateway: Option<IpAddr>,
}

/// A canonical range: every bound known and inside the subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The subnet; its prefix length is given to every allocated address.
    pub subnet: IpNetwork,
    /// First allocatable address.
    pub start: IpAddr,
    /// Last allocatable address.
    pub end: IpAddr,
    /// Gateway, returned with each address and never allocated.
    pub gateway: IpAddr,
}

impl Range {
    /// True for an IPv4 range.
    pub fn is_v4(&self) -> bool {
        self.subnet.is_ipv4()
    }

    /// `start..=end` as integers.
    pub fn bounds(&self) -> (u128, u128) {
        (to_u128(self.start), to_u128(self.end))
    }

    /// The gateway as an integer, when it is of this range's family.
    pub fn gateway_u128(&self) -> Option<u128> {
        (self.gateway.is_ipv4() == self.is_v4()).then(|| to_u128(self.gateway))
    }

    /// Whether `ip` is inside the subnet and within the bounds.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.is_v4() || !self.subnet.contains(ip) {
            return false;
        }
        let (s, e) = self.bounds();
        (s..=e).contains(&to_u128(ip))
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &Range) -> bool {
        if self.is_v4() != other.is_v4() {
            return false;
        }
        let (a1, b1) = self.bounds();
        let (a2, b2) = other.bounds();
        a1 <= b2 && a2 <= b1
    }

    /// Number of addresses a container can get (bounds minus the gateway).
    pub fn capacity(&self) -> u128 {
        let (s, e) = self.bounds();
        let gw = self.gateway_u128().is_some_and(|g| (s..=e).contains(&g));
        (e - s + 1) - u128::from(gw)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl RawRange {
    /// Fills the defaults and checks the bounds (reference semantics: an
    /// explicit start or end may be the network or broadcast address; the
    /// gateway is not checked against the subnet).
    ///
    /// # Errors
    /// The reference's message for the first problem found.
    pub fn canonicalize(&self) -> Result<Range, String> {
        let given = self.subnet.ok_or("missing subnet")?;
        let bits: u8 = if given.is_ipv4() { 32 } else { 128 };
        if given.prefix() > bits - 2 {
            return Err(format!("Network {given} too small to allocate from"));
        }
        let network = given.network();
        if network != given.ip() {
            return Err(format!(
                "Network has host bits set. For a subnet mask of length {} the network address is {network}",
                given.prefix()
            ));
        }
        let subnet = IpNetwork::new(network, given.prefix()).map_err(|e| e.to_string())?;
        let v4 = subnet.is_ipv4();
        let net = to_u128(network);
        let first = from_u128(net + 1, v4);
        let host_bits = u32::from(bits - subnet.prefix());
        let last = net + ((1u128 << host_bits) - 1);
        let in_subnet = |ip: IpAddr| ip.is_ipv4() == v4 && subnet.contains(ip);

        let end_given = self.range_end;
        let start = match self.range_start {
            Some(s) => {
                let below_end =
                    end_given.is_none_or(|e| e.is_ipv4() != v4 || to_u128(s) <= to_u128(e));
                if !in_subnet(s) || !below_end {
                    return Err(format!("RangeStart {s} not in network {subnet}"));
                }
                s
            }
            None => first,
        };
        let end = match end_given {
            Some(e) => {
                if !in_subnet(e) || to_u128(e) < to_u128(start) {
                    return Err(format!("RangeEnd {e} not in network {subnet}"));
                }
                e
            }
            // IPv4 leaves out the broadcast address; IPv6 has none.
            None => from_u128(if v4 { last - 1 } else { last }, v4),
        };
        Ok(Range {
            subnet,
            start,
            end,
            gateway: self.gateway.unwrap_or(first),
        })
    }
}

/// A range set: alternative pools that together yield one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    /// Canonicalises every range and checks the set is one family without
    /// internal overlap.
    ///
    /// # Errors
    /// The reference's message (without the `invalid range set N:` prefix).
    pub fn canonicalize(raw: &[RawRange]) -> Result<RangeSet, String> {
        if raw.is_empty() {
            return Err("empty range set".into());
        }
        let mut ranges: Vec<Range> = Vec::with_capacity(raw.len());
        for r in raw {
            let r = r.canonicalize()?;
            if ranges.first().is_some_and(|f| f.is_v4() != r.is_v4()) {
                return Err("mixed address families".into());
            }
            ranges.push(r);
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if a.overlaps(b) {
                    return Err(format!("subnets {a} and {b} overlap"));
                }
            }
        }
        Ok(RangeSet(ranges))
    }

    /// True for an IPv4 set.
    pub fn is_v4(&self) -> bool {
        self.0.first().is_some_and(Range::is_v4)
    }

    /// The range holding `ip`.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    /// Whether any range holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    /// Whether any range of one set overlaps any range of the other.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    /// Addresses a container can get from this set.
    pub fn capacity(&self) -> u128 {
        self.0.iter().map(Range::capacity).sum()
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_spec::result::{parse_cidr, parse_ip};

    fn raw(subnet: &str) -> RawRange {
        RawRange {
            subnet: parse_cidr(subnet).ok(),
            ..RawRange::default()
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        parse_ip(s).ok()
    }

    fn canon(r: &RawRange) -> Range {
        r.canonicalize().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults_v4() {
        let r = canon(&raw("192.0.2.0/24"));
        assert_eq!(r.to_string(), "192.0.2.1-192.0.2.254");
        assert_eq!(Some(r.gateway), ip("192.0.2.1"));
        let r = canon(&raw("192.0.2.0/25"));
        assert_eq!(Some(r.end), ip("192.0.2.126"));
        let r = canon(&raw("10.0.0.0/30"));
        assert_eq!(r.to_string(), "10.0.0.1-10.0.0.2");
        assert_eq!(r.capacity(), 1);
    }

    #[test]
    fn defaults_v6_include_all_ones() {
        let r = canon(&raw("2001:db8:1::/64"));
        assert_eq!(Some(r.end), ip("2001:db8:1::ffff:ffff:ffff:ffff"));
        let r = canon(&raw("2001:db8::/126"));
        assert_eq!(r.to_string(), "2001:db8::1-2001:db8::3");
    }

    #[test]
    fn host_bits_and_small() {
        assert_eq!(
            raw("192.0.2.12/24").canonicalize(),
            Err("Network has host bits set. For a subnet mask of length 24 the network address is 192.0.2.0".into())
        );
        assert_eq!(
            raw("192.168.127.0/23").canonicalize(),
            Err("Network has host bits set. For a subnet mask of length 23 the network address is 192.168.126.0".into())
        );
        assert_eq!(
            raw("2001:DB8:1::24:19ff:fee1:c44a/64").canonicalize(),
            Err("Network has host bits set. For a subnet mask of length 64 the network address is 2001:db8:1::".into())
        );
        assert_eq!(
            raw("10.9.0.0/31").canonicalize(),
            Err("Network 10.9.0.0/31 too small to allocate from".into())
        );
        assert!(raw("2001:db8::/127").canonicalize().is_err());
    }

    #[test]
    fn bounds() {
        let mut r = raw("10.9.0.0/24");
        r.range_start = ip("10.9.1.1");
        assert_eq!(
            r.canonicalize(),
            Err("RangeStart 10.9.1.1 not in network 10.9.0.0/24".into())
        );
        let mut r = raw("10.9.0.0/24");
        r.range_start = ip("10.9.0.50");
        r.range_end = ip("10.9.0.40");
        assert_eq!(
            r.canonicalize(),
            Err("RangeStart 10.9.0.50 not in network 10.9.0.0/24".into())
        );
        let mut r = raw("10.9.0.0/24");
        r.range_end = ip("10.9.1.1");
        assert_eq!(
            r.canonicalize(),
            Err("RangeEnd 10.9.1.1 not in network 10.9.0.0/24".into())
        );
        let mut r = raw("10.40.0.0/29");
        r.range_start = ip("10.40.0.0");
        r.range_end = ip("10.40.0.7");
        assert_eq!(canon(&r).to_string(), "10.40.0.0-10.40.0.7");
        let mut r = raw("10.9.0.0/24");
        r.gateway = ip("10.8.0.1");
        assert_eq!(Some(canon(&r).gateway), ip("10.8.0.1"));
    }

    #[test]
    fn overlap_table() {
        let set = |v: &[RawRange]| RangeSet::canonicalize(v);
        let mut a = raw("10.1.0.0/22");
        let b = raw("10.1.2.0/24");
        assert_eq!(
            set(&[a.clone(), b.clone()]),
            Err("subnets 10.1.0.1-10.1.3.254 and 10.1.2.1-10.1.2.254 overlap".into())
        );
        a = raw("10.1.2.0/24");
        a.range_end = ip("10.1.2.100");
        let mut c = raw("10.1.2.0/24");
        c.range_start = ip("10.1.2.101");
        assert!(set(&[a.clone(), c]).is_ok());
        assert_eq!(
            set(&[raw("10.1.2.0/24"), raw("2001:db8::/64")]),
            Err("mixed address families".into())
        );
        assert_eq!(set(&[]), Err("empty range set".into()));
        let s1 = set(&[raw("10.1.2.0/24")]).unwrap_or_else(|e| panic!("{e}"));
        let s2 = set(&[raw("10.1.0.0/16")]).unwrap_or_else(|e| panic!("{e}"));
        let s3 = set(&[raw("2001:db8::/64")]).unwrap_or_else(|e| panic!("{e}"));
        assert!(s1.overlaps(&s2));
        assert!(!s1.overlaps(&s3));
    }

    #[test]
    fn contains() {
        let mut r = raw("192.168.1.0/24");
        r.range_start = ip("192.168.1.10");
        r.range_end = ip("192.168.1.20");
        let r = canon(&r);
        assert!(r.contains(ip("192.168.1.10").unwrap_or(r.start)));
        assert!(!r.contains(ip("192.168.1.9").unwrap_or(r.start)));
        assert!(!r.contains(ip("192.168.1.21").unwrap_or(r.start)));
        assert!(!r.contains(ip("2001:db8::1").unwrap_or(r.start)));
    }
}
