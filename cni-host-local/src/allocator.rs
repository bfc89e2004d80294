//! Pure address selection: the reference's round-robin order over a range
//! set. No I/O; the command layer decides which candidates are free.
//!
//! Order: start right after `last_reserved_ip.N` when it lies in the set,
//! else at the first range's start; step through each range and on to the
//! next one (wrapping), skipping each range's gateway; every address is
//! produced once, the last reserved one last.

use crate::range::{from_u128, to_u128, RangeSet};
use std::net::IpAddr;

/// Iterates the candidate addresses of one range set.
#[derive(Debug, Clone)]
pub struct RangeIter<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: Option<u128>,
    first: Option<u128>,
    done: bool,
}

impl<'a> RangeIter<'a> {
    /// Starts after `last_reserved` when the set holds it.
    pub fn new(set: &'a RangeSet, last_reserved: Option<IpAddr>) -> Self {
        let mut it = RangeIter {
            set,
            idx: 0,
            cur: None,
            first: None,
            done: set.0.is_empty(),
        };
        if let Some(last) = last_reserved {
            if let Some(i) = set.0.iter().position(|r| r.contains(last)) {
                it.idx = i;
                it.cur = Some(to_u128(last));
            }
        }
        it
    }
}

impl Iterator for RangeIter<'_> {
    /// The index of the range in the set, and the address.
    type Item = (usize, IpAddr);

    fn next(&mut self) -> Option<Self::Item> {
        let n = self.set.0.len();
        while !self.done {
            let cur = match self.cur {
                None => {
                    let s = to_u128(self.set.0[self.idx].start);
                    self.first = Some(s);
                    s
                }
                Some(c) => {
                    let (_, end) = self.set.0[self.idx].bounds();
                    let next = if c == end {
                        self.idx = (self.idx + 1) % n;
                        self.set.0[self.idx].bounds().0
                    } else {
                        c + 1
                    };
                    match self.first {
                        None => self.first = Some(next),
                        Some(f) if f == next => {
                            self.done = true;
                            return None;
                        }
                        Some(_) => {}
                    }
                    next
                }
            };
            self.cur = Some(cur);
            let range = &self.set.0[self.idx];
            if range.gateway_u128() == Some(cur) {
                continue;
            }
            return Some((self.idx, from_u128(cur, range.is_v4())));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::RawRange;
    use cni_spec::result::{parse_cidr, parse_ip};
    use proptest::prelude::*;

    fn set(subnets: &[&str]) -> RangeSet {
        let raw: Vec<RawRange> = subnets
            .iter()
            .map(|s| RawRange {
                subnet: parse_cidr(s).ok(),
                ..RawRange::default()
            })
            .collect();
        RangeSet::canonicalize(&raw).unwrap_or_else(|e| panic!("{e}"))
    }

    fn order(s: &RangeSet, last: Option<&str>) -> Vec<String> {
        RangeIter::new(s, last.and_then(|l| parse_ip(l).ok()))
            .map(|(_, ip)| ip.to_string())
            .collect()
    }

    #[test]
    fn from_the_beginning() {
        let s = set(&["192.168.1.0/29"]);
        assert_eq!(
            order(&s, None),
            [
                "192.168.1.2",
                "192.168.1.3",
                "192.168.1.4",
                "192.168.1.5",
                "192.168.1.6"
            ]
        );
    }

    #[test]
    fn from_the_end_and_middle() {
        let s = set(&["192.168.1.0/29"]);
        assert_eq!(
            order(&s, Some("192.168.1.6")),
            [
                "192.168.1.2",
                "192.168.1.3",
                "192.168.1.4",
                "192.168.1.5",
                "192.168.1.6"
            ]
        );
        assert_eq!(
            order(&s, Some("192.168.1.3")),
            [
                "192.168.1.4",
                "192.168.1.5",
                "192.168.1.6",
                "192.168.1.2",
                "192.168.1.3"
            ]
        );
    }

    #[test]
    fn out_of_set_cursor_starts_at_beginning() {
        let s = set(&["10.0.0.0/29"]);
        assert_eq!(order(&s, Some("10.0.0.128"))[0], "10.0.0.2");
    }

    #[test]
    fn multiple_subnets_wrap() {
        let s = set(&["10.0.0.0/30", "10.0.1.0/30", "10.0.2.0/30"]);
        assert_eq!(order(&s, None), ["10.0.0.2", "10.0.1.2", "10.0.2.2"]);
        assert_eq!(order(&s, Some("10.0.0.2"))[0], "10.0.1.2");
        assert_eq!(order(&s, Some("10.0.2.2"))[0], "10.0.0.2");
    }

    #[test]
    fn explicit_bounds_include_network_and_broadcast() {
        let raw = |s: &str, a: &str, b: &str| RawRange {
            subnet: parse_cidr(s).ok(),
            range_start: parse_ip(a).ok(),
            range_end: parse_ip(b).ok(),
            gateway: None,
        };
        let s = RangeSet::canonicalize(&[
            raw("192.168.1.0/30", "192.168.1.0", "192.168.1.3"),
            raw("192.168.2.0/30", "192.168.2.0", "192.168.2.3"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(order(&s, Some("192.168.1.3"))[0], "192.168.2.0");
        assert_eq!(order(&s, None)[0], "192.168.1.0");
    }

    #[test]
    fn v6_all_ones_allocatable() {
        let s = set(&["2001:db8::/126"]);
        assert_eq!(order(&s, None), ["2001:db8::2", "2001:db8::3"]);
    }

    proptest! {
        /// Every candidate appears once, never a gateway, always in the set,
        /// and the last reserved address (when in the set) comes last.
        #[test]
        fn each_address_once(prefix in 24u8..=30, last_off in 0u32..300) {
            let s = set(&[&format!("10.7.0.0/{prefix}")]);
            let last = from_u128(u128::from(0x0a07_0000u32 + last_off), true);
            let got: Vec<IpAddr> = RangeIter::new(&s, Some(last)).map(|(_, ip)| ip).collect();
            let mut uniq = got.clone();
            uniq.sort();
            uniq.dedup();
            prop_assert_eq!(uniq.len(), got.len());
            prop_assert_eq!(got.len() as u128, s.capacity());
            for ip in &got {
                prop_assert!(s.contains(*ip));
                prop_assert!(*ip != s.0[0].gateway);
            }
            if s.contains(last) && last != s.0[0].gateway {
                prop_assert_eq!(got.last().copied(), Some(last));
            }
        }
    }
}
