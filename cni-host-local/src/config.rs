//! host-local's configuration: the whole network config, read the way the
//! reference reads it (case-insensitive keys), then validated in the
//! reference's order so the first error reported is the same.

use crate::error::HostLocalError;
use crate::range::{RangeSet, RawRange};
use cni_spec::args::load_args;
use cni_spec::json::Obj;
use cni_spec::result::{parse_cidr, parse_ip, Route};
use cni_spec::{Request, Version};
use serde_json::Value;
use std::net::IpAddr;
use std::path::PathBuf;

/// Where reservations live when `ipam.dataDir` is not set.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// Where one network's store lives; all DEL and GC need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLocation {
    /// `ipam.dataDir`.
    pub data_dir: PathBuf,
    /// The network name (already validated as a safe path component).
    pub network: String,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// The store.
    pub store: StoreLocation,
    /// Range sets in result order: `runtimeConfig.ipRanges`, the legacy
    /// top-level range, then `ipam.ranges`.
    pub range_sets: Vec<RangeSet>,
    /// `ipam.routes`, copied into the result.
    pub routes: Vec<Route>,
    /// `ipam.resolvConf`.
    pub resolv_conf: Option<PathBuf>,
    /// Requested addresses: CNI_ARGS `IP`, `args.cni.ips`,
    /// `runtimeConfig.ips`, in that order, without duplicates.
    pub requested: Vec<IpAddr>,
}

fn decode(e: impl ToString) -> HostLocalError {
    HostLocalError::Decode(e.to_string())
}

/// Parses `ip[/prefix]`, keeping only the address (the reference drops the
/// prefix; the range's subnet gives it).
fn parse_requested(s: &str) -> Result<IpAddr, String> {
    let ip = s.split_once('/').map_or(s, |(ip, _)| ip);
    ip.parse().map_err(|_| format!("invalid IP address {s}"))
}

/// Reads just the store location, tolerating an otherwise invalid `ipam`
/// section so that DEL and GC can still release (a deliberate fix: the
/// reference fails DEL on a broken config).
///
/// # Errors
/// `ipam.dataDir` present but not a string.
pub fn store_location(req: &Request) -> Result<StoreLocation, HostLocalError> {
    let conf = req.conf();
    let data_dir = match conf.obj("ipam").ok().flatten() {
        Some(ipam) => Obj::new(ipam, "ipam").str("dataDir").map_err(decode)?,
        None => None,
    };
    Ok(StoreLocation {
        data_dir: PathBuf::from(
            data_dir
                .filter(|s| !s.is_empty())
                .unwrap_or(DEFAULT_DATA_DIR),
        ),
        network: req.name.clone(),
    })
}

fn raw_range(v: &Value, path: &str) -> Result<RawRange, HostLocalError> {
    let o = Obj::of(v, path).map_err(decode)?;
    let ip = |k: &str| -> Result<Option<IpAddr>, HostLocalError> {
        match o.str(k).map_err(decode)? {
            Some(s) if !s.is_empty() => parse_ip(s).map(Some).map_err(decode),
            _ => Ok(None),
        }
    };
    let subnet = match o.str("subnet").map_err(decode)? {
        Some(s) if !s.is_empty() => Some(parse_cidr(s).map_err(decode)?),
        _ => None,
    };
    Ok(RawRange {
        subnet,
        range_start: ip("rangeStart")?,
        range_end: ip("rangeEnd")?,
        gateway: ip("gateway")?,
    })
}

fn raw_range_sets(o: &Obj<'_>, key: &str) -> Result<Vec<Vec<RawRange>>, HostLocalError> {
    let Some(sets) = o.array(key).map_err(decode)? else {
        return Ok(Vec::new());
    };
    let base = o.child_path(key);
    sets.iter()
        .enumerate()
        .map(|(i, set)| {
            let path = format!("{base}[{i}]");
            let Value::Array(ranges) = set else {
                return Err(decode(format!(
                    "cannot decode {path}: expected array, found {}",
                    cni_spec::json::type_name(set)
                )));
            };
            ranges
                .iter()
                .enumerate()
                .map(|(j, r)| raw_range(r, &format!("{path}[{j}]")))
                .collect()
        })
        .collect()
}

/// Reads and validates the configuration of `req`.
///
/// # Errors
/// The reference's messages (section 2.3 of our reference notes), typed so
/// that decode problems map to code 6, CNI_ARGS to 4 and the rest to 7.
pub fn load(req: &Request) -> Result<IpamConfig, HostLocalError> {
    let conf = req.conf();
    let ipam = conf
        .obj("ipam")
        .map_err(decode)?
        .ok_or_else(|| HostLocalError::Config("IPAM config missing 'ipam' key".into()))?;
    let ipam = Obj::new(ipam, "ipam");

    let mut requested: Vec<IpAddr> = Vec::new();
    load_args(&req.args, &["IP"], |_, v| {
        let ip = parse_requested(v)?;
        // A repeated IP= key: the last one wins.
        requested.clear();
        requested.push(ip);
        Ok(())
    })
    .map_err(|e| HostLocalError::Args(e.to_string()))?;
    if let Some(args) = conf.obj("args").map_err(decode)? {
        let args = Obj::new(args, "args");
        if let Some(cni) = args.obj("cni").map_err(decode)? {
            for s in Obj::new(cni, "args.cni").str_array("ips").map_err(decode)? {
                requested.push(parse_requested(s).map_err(decode)?);
            }
        }
    }
    let runtime = conf
        .obj("runtimeConfig")
        .map_err(decode)?
        .map(|rc| Obj::new(rc, "runtimeConfig"));
    if let Some(rc) = &runtime {
        for s in rc.str_array("ips").map_err(decode)? {
            requested.push(parse_requested(s).map_err(decode)?);
        }
    }
    // A few addresses at most: a list, not a HashSet (whose random keys
    // cost a getrandom(2) on every ADD).
    let mut seen = Vec::with_capacity(requested.len());
    requested.retain(|ip| {
        let new = !seen.contains(ip);
        seen.push(*ip);
        new
    });

    let mut raw_sets = Vec::new();
    if let Some(rc) = &runtime {
        raw_sets.extend(raw_range_sets(rc, "ipRanges")?);
    }
    let legacy = raw_range(&Value::Object(ipam.map().clone()), "ipam")?;
    if legacy.subnet.is_some() {
        raw_sets.push(vec![legacy]);
    }
    raw_sets.extend(raw_range_sets(&ipam, "ranges")?);
    if raw_sets.is_empty() {
        return Err(HostLocalError::Config("no IP ranges specified".into()));
    }
    let mut range_sets = Vec::with_capacity(raw_sets.len());
    for (i, raw) in raw_sets.iter().enumerate() {
        let set = RangeSet::canonicalize(raw)
            .map_err(|e| HostLocalError::Config(format!("invalid range set {i}: {e}")))?;
        range_sets.push(set);
    }
    if req.version < Version::V0_3_0 {
        let v4 = range_sets.iter().filter(|s| s.is_v4()).count();
        if v4 > 1 || range_sets.len() - v4 > 1 {
            return Err(HostLocalError::Config(format!(
                "CNI version {} does not support more than 1 address per family",
                req.version
            )));
        }
    }
    for i in 0..range_sets.len() {
        for j in i + 1..range_sets.len() {
            if range_sets[i].overlaps(&range_sets[j]) {
                return Err(HostLocalError::Config(format!(
                    "range set {i} overlaps with {j}"
                )));
            }
        }
    }

    let mut routes = Vec::new();
    if let Some(list) = ipam.array("routes").map_err(decode)? {
        for (i, r) in list.iter().enumerate() {
            routes.push(Route::from_json(r, &format!("ipam.routes[{i}]")).map_err(decode)?);
        }
    }
    let resolv_conf = ipam
        .str("resolvConf")
        .map_err(decode)?
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    Ok(IpamConfig {
        store: store_location(req)?,
        range_sets,
        routes,
        resolv_conf,
        requested,
    })
}
