//! One function per CNI command; orchestration only.

use crate::allocator::RangeIter;
use crate::config::{self, IpamConfig};
use crate::dns::parse_resolv_conf;
use crate::error::HostLocalError;
use crate::range::{to_u128, RangeSet};
use crate::store::{ensure_dir, Owner, OwnerFile, Prober, Store};
use cni_spec::{CniResult, Dns, IpConfig, Request};
use ipnetwork::IpNetwork;

use std::collections::HashSet;
use std::net::IpAddr;

type Result<T, E = HostLocalError> = std::result::Result<T, E>;

/// Taken candidates (a failed `link`, then a name check each) before
/// we list the directory once and skip taken addresses in memory. With 1%
/// of a range free, 1024 misses in a row happen with probability 3e-5.
const PROBES_BEFORE_LISTING: usize = 1024;

fn read_dns(cfg: &IpamConfig) -> Result<Dns> {
    let Some(path) = &cfg.resolv_conf else {
        return Ok(Dns::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| HostLocalError::io(format!("open {}", path.display()), e))?;
    Ok(parse_resolv_conf(&text))
}

/// ADD: one address from each range set, all or nothing.
///
/// # Errors
/// Configuration, allocation or store failures; nothing stays reserved.
pub fn add(req: &Request) -> Result<CniResult> {
    let cfg = config::load(req)?;
    let dns = read_dns(&cfg)?;
    // Everything that needs no lock happens before taking it: concurrent
    // ADDs queue on the lock only for the reservation itself.
    let dir = cfg.store.data_dir.join(&cfg.store.network);
    let dir_fd = ensure_dir(&dir)?;
    let mut store = Store::unlocked(dir, dir_fd);
    let owner = store.owner_file(&req.container_id, &req.ifname)?;
    if let Err(e) = store.lock() {
        store.finish(owner);
        return Err(e);
    }
    let mut made: Vec<IpAddr> = Vec::with_capacity(cfg.range_sets.len());
    let outcome = allocate_all(req, &cfg, &store, &owner, &mut made);
    let outcome = outcome.and_then(|ips| {
        for (idx, ip) in made.iter().enumerate() {
            store.set_last_reserved(idx, *ip)?;
        }
        store.index(&owner, &req.container_id, &req.ifname, &made)?;
        Ok(ips)
    });
    let ips = match outcome {
        Ok(ips) => ips,
        Err(e) => {
            // Roll back exactly what this ADD reserved (the reference
            // releases by ID, which also frees an older duplicate).
            for ip in &made {
                let _ = store.release(*ip);
            }
            store.finish(owner);
            return Err(e);
        }
    };
    store.finish(owner);
    Ok(CniResult {
        interfaces: Vec::new(),
        ips,
        routes: cfg.routes.clone(),
        dns,
    })
}

fn allocate_all(
    req: &Request,
    cfg: &IpamConfig,
    store: &Store,
    owner: &OwnerFile,
    made: &mut Vec<IpAddr>,
) -> Result<Vec<IpConfig>> {
    let mut pending = cfg.requested.clone();
    let mut held: Option<Vec<IpAddr>> = None;
    let mut out = Vec::with_capacity(cfg.range_sets.len());
    for (idx, set) in cfg.range_sets.iter().enumerate() {
        let wrap = |m: String| {
            HostLocalError::Unavailable(format!("failed to allocate for range {idx}: {m}"))
        };
        let requested = pending
            .iter()
            .position(|ip| set.contains(*ip))
            .map(|p| pending.remove(p));
        let ip = match requested {
            Some(ip) => {
                let range = set
                    .range_for(ip)
                    .ok_or_else(|| wrap(format!("{ip} not in range set {set}")))?;
                if range.gateway_u128() == Some(to_u128(ip)) {
                    return Err(wrap(format!("requested ip {ip} is subnet's gateway")));
                }
                if !store.try_reserve(owner, ip)? {
                    return Err(wrap(format!(
                        "requested IP address {ip} is not available in range set {set}"
                    )));
                }
                ip
            }
            None => {
                if held.is_none() {
                    held = Some(store.indexed(&req.container_id, &req.ifname)?);
                }
                let held = held.as_deref().unwrap_or_default();
                if let Some(dup) = held.iter().find(|ip| set.contains(**ip)) {
                    return Err(wrap(format!(
                        "{dup} has been allocated to {}, duplicate allocation is not allowed",
                        req.container_id
                    )));
                }
                next_free(store, owner, set, idx)?
                    .ok_or_else(|| wrap(format!("no IP addresses available in range set: {set}")))?
            }
        };
        made.push(ip);
        let range = set
            .range_for(ip)
            .ok_or_else(|| wrap(format!("{ip} not in range set {set}")))?;
        let address = IpNetwork::new(ip, range.subnet.prefix())
            .map_err(|e| HostLocalError::Config(e.to_string()))?;
        out.push(IpConfig {
            interface: None,
            address,
            gateway: Some(range.gateway),
        });
    }
    if !pending.is_empty() {
        let list: Vec<String> = pending.iter().map(ToString::to_string).collect();
        return Err(HostLocalError::Unavailable(format!(
            "failed to allocate all requested IPs: {}",
            list.join(" ")
        )));
    }
    Ok(out)
}

/// Reserves the next free address of `set` in round-robin order.
fn next_free(
    store: &Store,
    owner: &OwnerFile,
    set: &RangeSet,
    idx: usize,
) -> Result<Option<IpAddr>> {
    let mut taken: Option<HashSet<IpAddr>> = None;
    // After the first miss, candidates are checked by name first (about a
    // fifth of the cost of a failed reservation): a crowded range is crossed
    // cheaply, and an empty one pays nothing for it.
    let mut prober: Option<Prober> = None;
    let mut misses = 0;
    for (_, ip) in RangeIter::new(set, store.last_reserved(idx)) {
        if taken.as_ref().is_some_and(|t| t.contains(&ip)) {
            continue;
        }
        let known_taken = prober.as_ref().is_some_and(|p| p.exists(ip));
        if !known_taken {
            if store.try_reserve(owner, ip)? {
                return Ok(Some(ip));
            }
            if prober.is_none() {
                prober = Some(store.prober());
            }
        }
        misses += 1;
        if misses == PROBES_BEFORE_LISTING {
            taken = Some(store.reserved()?);
        }
    }
    Ok(None)
}

/// DEL: release every reservation of this attachment, whatever the ranges
/// say now. Legacy ID-only files are released when no exact match exists.
/// (A reservation the reference plugin made for an attachment that our index
/// also lists, which only a runtime repeating ADD can cause, is left to GC.)
///
/// # Errors
/// Store failures, after every release was attempted.
pub fn del(req: &Request) -> Result<()> {
    let loc = config::store_location(req)?;
    let Some(store) = Store::open(&loc, false)? else {
        return Ok(());
    };
    let id = req.container_id.trim();
    // Fast path: an attachment we allocated is in our index; its entries
    // are verified before anything is removed. Without one (an attachment
    // of the reference plugin, or a stale index) every file is read.
    let held = store.indexed(id, &req.ifname)?;
    let from_index = !held.is_empty();
    let (targets, temporaries) = if !from_index {
        let entries = store.entries()?;
        let mut exact = Vec::new();
        let mut legacy = Vec::new();
        for ip in &entries.ips {
            match store.owner_of(*ip) {
                Ok(Some(Owner::Attachment { id: i, ifname }))
                    if i == id && ifname == req.ifname =>
                {
                    exact.push(*ip)
                }
                Ok(Some(Owner::Legacy(i))) if i == id => legacy.push(*ip),
                _ => {}
            }
        }
        let targets = if exact.is_empty() { legacy } else { exact };
        (targets, entries.temporaries)
    } else {
        (held, Vec::new())
    };
    let mut first_err = None;
    for ip in targets {
        if let Err(e) = store.release(ip) {
            first_err.get_or_insert(e);
        }
    }
    if from_index && first_err.is_none() {
        store.unindex_to_spare(id, &req.ifname);
    } else {
        store.unindex(id, &req.ifname);
    }
    store.remove_temporaries(&temporaries);
    first_err.map_or(Ok(()), Err)
}

/// CHECK: the attachment holds a reservation; with a `prevResult`, every
/// address of it inside our ranges is reserved to this attachment.
///
/// # Errors
/// What is missing.
pub fn check(req: &Request) -> Result<()> {
    let cfg = config::load(req)?;
    let not_found = || {
        HostLocalError::NotFound(format!(
            "host-local: Failed to find address added by container {}",
            req.container_id
        ))
    };
    let Some(store) = Store::open(&cfg.store, false)? else {
        return Err(not_found());
    };
    let id = req.container_id.trim();
    let mut found = false;
    let mut legacy = false;
    let mut mine = HashSet::new();
    for ip in store.entries()?.ips {
        match store.owner_of(ip)? {
            Some(Owner::Attachment { id: i, ifname }) if i == id && ifname == req.ifname => {
                found = true;
                mine.insert(ip);
            }
            Some(Owner::Legacy(i)) if i == id => {
                legacy = true;
                mine.insert(ip);
            }
            _ => {}
        }
    }
    if !found && !legacy {
        return Err(not_found());
    }
    if let Some(prev) = req.conf().get("prevResult") {
        let (prev, _) = CniResult::decode(prev, req.version).map_err(|e| {
            HostLocalError::Decode(format!("could not parse prevResult: {}", e.msg))
        })?;
        for ipc in prev.ips {
            let ip = ipc.address.ip();
            if cfg.range_sets.iter().any(|s| s.contains(ip)) && !mine.contains(&ip) {
                return Err(HostLocalError::NotFound(format!(
                    "host-local: address {ip} of prevResult is not reserved for container {}",
                    req.container_id
                )));
            }
        }
    }
    Ok(())
}

/// GC: release every reservation whose attachment is not in the valid list.
/// Legacy ID-only files stay when any valid attachment has that ID (so an
/// upgrade does not free live addresses), and an entry without `ifname`
/// keeps every attachment of its ID; empty files are released.
///
/// # Errors
/// A missing valid list, or store failures after trying everything.
pub fn gc(req: &Request) -> Result<()> {
    let valid = req
        .valid_attachments()
        .map_err(HostLocalError::from)?
        .ok_or_else(|| {
            HostLocalError::Config("GC needs cni.dev/valid-attachments in the configuration".into())
        })?;
    let loc = config::store_location(req)?;
    let Some(store) = Store::open(&loc, false)? else {
        return Ok(());
    };
    let entries = store.entries()?;
    let mut errors = Vec::new();
    for ip in &entries.ips {
        let keep = match store.owner_of(*ip) {
            Ok(Some(Owner::Attachment { id, ifname })) => valid.keeps(&id, &ifname),
            Ok(Some(Owner::Legacy(id))) => valid.keeps_id(&id),
            Ok(Some(Owner::Nobody)) | Ok(None) => false,
            // Not a reservation file: not ours to remove.
            Ok(Some(Owner::Foreign)) => true,
            Err(e) => {
                errors.push(e.to_string());
                true
            }
        };
        if !keep {
            if let Err(e) = store.release(*ip) {
                errors.push(e.to_string());
            }
        }
    }
    for (id, ifname) in &entries.attachments {
        if !valid.keeps(id, ifname) {
            store.unindex(id, ifname);
        }
    }
    store.remove_temporaries(&entries.temporaries);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(HostLocalError::io(
            errors.join("; "),
            std::io::Error::other("garbage collection incomplete"),
        ))
    }
}

/// STATUS: fails with code 50 when a range set has no free address (an ADD
/// needs one from every set).
///
/// # Errors
/// The exhausted sets, or an invalid configuration.
pub fn status(req: &Request) -> Result<()> {
    let cfg = config::load(req)?;
    let Some(store) = Store::open(&cfg.store, false)? else {
        return Ok(());
    };
    let reserved = store.reserved()?;
    let mut full = Vec::new();
    for (idx, set) in cfg.range_sets.iter().enumerate() {
        let used = reserved
            .iter()
            .filter(|ip| {
                set.range_for(**ip)
                    .is_some_and(|r| r.gateway_u128() != Some(to_u128(**ip)))
            })
            .count() as u128;
        if used >= set.capacity() {
            full.push(format!(
                "range set {idx}: no IP addresses available in range set: {set}"
            ));
        }
    }
    if full.is_empty() {
        Ok(())
    } else {
        Err(HostLocalError::Exhausted(full.join("; ")))
    }
}
