//! The iptables backend: reads table `nat` with `iptables-save` and applies
//! every change of one family in one `iptables-restore --noflush`
//! transaction (the reference execs iptables once per rule).

pub mod rules;

use crate::config::PortmapConf;
use crate::tools::{find, restore_nat, NatTable};
use cni_spec::ValidAttachments;
use ipnetwork::IpNetwork;
use nix::fcntl::{Flock, FlockArg};
use rules::{Attachment, DNAT_CHAIN, OLD_SNAT_CHAIN};
use std::collections::HashSet;

/// One address family's tools.
#[derive(Debug)]
pub struct Family {
    save: &'static str,
    restore: &'static str,
}

/// IPv4.
pub const V4: Family = Family {
    save: "iptables-save",
    restore: "iptables-restore",
};
/// IPv6.
pub const V6: Family = Family {
    save: "ip6tables-save",
    restore: "ip6tables-restore",
};

fn family(v4: bool) -> &'static Family {
    if v4 {
        &V4
    } else {
        &V6
    }
}

/// Rule lines of `chain` jumping to `target`.
fn jumps<'a>(
    table: &'a NatTable,
    chain: &'a str,
    target: &'a str,
) -> impl Iterator<Item = &'a str> {
    let prefix = format!("-A {chain} ");
    table
        .rules
        .iter()
        .filter(move |r| r.starts_with(&prefix) && rules::jump_target(r) == Some(target))
        .map(String::as_str)
}

fn read_nat(f: &Family) -> Result<NatTable, String> {
    NatTable::read(f.save)
}

fn restore(f: &Family, body: &str) -> Result<(), String> {
    restore_nat(f.restore, body)
}

/// A restore script: chain creations go first. Chains are created with
/// `-N`, which fails when the chain exists, never with a `:chain` line,
/// which with `--noflush` empties an existing chain: a concurrent ADD that
/// created it meanwhile makes the transaction fail (and [`apply`] retry)
/// instead of losing that ADD's rules.
#[derive(Default)]
struct Script {
    decl: String,
    body: String,
}

/// How often a transaction is rebuilt from a fresh read when it fails (a
/// concurrent plugin changed the table between our read and our write).
const ATTEMPTS: u32 = 5;

/// Serialises our read-modify-write of one family's nat table across
/// plugin processes: `iptables-restore -w` locks only its own commit, so
/// two ADDs could both find a shared jump rule missing and both append it
/// (seen as a doubled `PREROUTING` jump under concurrent ADDs). Released
/// when the returned value is dropped.
fn lock(f: &Family) -> Result<Flock<std::fs::File>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/run/k8s-shims-portmap.{}.lock", f.save);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .map_err(|e| format!("open {path}: {e}"))?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(l) => return Ok(l),
            Err((f, nix::errno::Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(format!("flock {path}: {e}")),
        }
    }
}

/// Reads the table, builds a script from it and applies it, under
/// [`lock`]; on failure reads again and retries, up to [`ATTEMPTS`] times.
/// An empty script is success without a write.
fn apply(f: &Family, build: impl Fn(&NatTable) -> Script) -> Result<(), String> {
    let _lock = lock(f)?;
    let mut attempt = 1;
    loop {
        let table = read_nat(f)?;
        let s = build(&table);
        if s.is_empty() {
            return Ok(());
        }
        match restore(f, &s.text()) {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= ATTEMPTS => return Err(e),
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(5 * u64::from(attempt)));
                attempt += 1;
            }
        }
    }
}

impl Script {
    fn declare(&mut self, chain: &str) {
        self.decl.push_str(&format!("-N {chain}\n"));
    }
    fn line(&mut self, l: &str) {
        self.body.push_str(l);
        self.body.push('\n');
    }
    /// `-D <chain> <spec>` for a saved `-A <chain> <spec>` line.
    fn delete(&mut self, saved: &str) {
        if let Some(spec) = saved.strip_prefix("-A ") {
            self.line(&format!("-D {spec}"));
        }
    }
    fn text(&self) -> String {
        format!("{}{}", self.decl, self.body)
    }
    fn is_empty(&self) -> bool {
        self.decl.is_empty() && self.body.is_empty()
    }
}

/// ADD for one container address: creates what is missing of the shared
/// chains, and (re)writes the attachment's chain and its entry rules, all in
/// one transaction.
///
/// # Errors
/// The tools fail.
pub fn setup(conf: &PortmapConf, container_id: &str, container: IpNetwork) -> Result<(), String> {
    let f = family(container.is_ipv4());
    let shared = rules::shared(conf);
    let a = rules::attachment(conf, container_id, container);
    apply(f, |table| {
        let mut s = Script::default();
        for sh in &shared {
            if !table.chains.contains(sh.chain) {
                s.declare(sh.chain);
            }
            for r in sh.rules.iter().filter(|r| !table.has(r)) {
                s.line(r);
            }
            for e in sh.entries.iter().filter(|e| !table.has(e)) {
                match e.strip_prefix("-A POSTROUTING ") {
                    Some(spec) => s.line(&format!("-I POSTROUTING 1 {spec}")),
                    None => s.line(e),
                }
            }
        }
        if table.chains.contains(&a.chain) {
            for old in jumps(table, DNAT_CHAIN, &a.chain) {
                s.delete(old);
            }
            s.line(&format!("-F {}", a.chain));
        } else {
            s.declare(&a.chain);
        }
        for r in a.rules.iter().chain(&a.entries) {
            s.line(r);
        }
        s
    })
}

/// CHECK for one container address.
///
/// # Errors
/// The tools fail, or a chain or rule is missing (named).
pub fn check(conf: &PortmapConf, container_id: &str, container: IpNetwork) -> Result<(), String> {
    let f = family(container.is_ipv4());
    let table = read_nat(f)?;
    let a: Attachment = rules::attachment(conf, container_id, container);
    if !table.chains.contains(&a.chain) {
        return Err(format!("chain {} not found in iptables table nat", a.chain));
    }
    let missing = |r: &String| (!table.has(r)).then(|| format!("rule missing: {r}"));
    for sh in rules::shared(conf) {
        if let Some(m) = sh.rules.iter().chain(&sh.entries).find_map(missing) {
            return Err(m);
        }
    }
    if let Some(m) = a.rules.iter().find_map(missing) {
        return Err(m);
    }
    if a.conditioned {
        let n = jumps(&table, DNAT_CHAIN, &a.chain).count();
        if n < a.entries.len() {
            return Err(format!(
                "{DNAT_CHAIN} has {n} of {} rules jumping to {}",
                a.entries.len(),
                a.chain
            ));
        }
    } else if let Some(m) = a.entries.iter().find_map(missing) {
        return Err(m);
    }
    Ok(())
}

/// Appends to `s` the removal of `chain` and of `entry`'s rules jumping
/// to it.
fn remove_chain(s: &mut Script, table: &NatTable, entry: &str, chain: &str) {
    for j in jumps(table, entry, chain) {
        s.delete(j);
    }
    if table.chains.contains(chain) {
        s.line(&format!("-F {chain}"));
        s.line(&format!("-X {chain}"));
    }
}

/// Runs `f` for each family whose tools are installed; fails only when
/// every family that was tried failed (a kernel without IPv6 NAT must not
/// block DEL), as the reference does.
fn each_family(mut f: impl FnMut(&Family) -> Result<(), String>) -> Result<(), String> {
    let mut errors = Vec::new();
    let mut tried = 0;
    for fam in [&V4, &V6] {
        if find(fam.save).is_none() {
            continue;
        }
        tried += 1;
        if let Err(e) = f(fam) {
            errors.push(e);
        }
    }
    if tried > 0 && errors.len() == tried {
        Err(errors.join("; "))
    } else {
        Ok(())
    }
}

/// DEL: removes the attachment's chain (and the pre-0.7 SNAT chain) and
/// every rule jumping to them, in both families. Needs neither addresses
/// nor mappings, so it works without `prevResult` or netns.
///
/// # Errors
/// The tools fail in every family.
pub fn teardown(network: &str, container_id: &str) -> Result<(), String> {
    let dn = rules::dn_chain(network, container_id);
    let sn = rules::old_sn_chain(network, container_id);
    each_family(|f| {
        apply(f, |table| {
            let mut s = Script::default();
            remove_chain(&mut s, table, DNAT_CHAIN, &dn);
            remove_chain(&mut s, table, OLD_SNAT_CHAIN, &sn);
            s
        })
    })
}

/// GC: removes the chains of this network's attachments whose container
/// is not in `valid`. An attachment is found by its entry rules' comment;
/// a chain is removed only when its name is the one the comment's container
/// ID gives (a cut comment keeps it).
///
/// # Errors
/// The tools fail in every family.
pub fn gc(network: &str, valid: &ValidAttachments) -> Result<(), String> {
    each_family(|f| apply(f, |table| stale_chains(network, valid, table)))
}

/// The removal of this network's chains whose container is not valid.
fn stale_chains(network: &str, valid: &ValidAttachments, table: &NatTable) -> Script {
    let prefix = format!("-A {DNAT_CHAIN} ");
    let stale: HashSet<String> = table
        .rules
        .iter()
        .filter(|r| r.starts_with(&prefix))
        .filter_map(|r| {
            let id = rules::entry_owner(network, r)?;
            let target = rules::jump_target(r)?;
            (!valid.keeps_id(id) && target == rules::dn_chain(network, id))
                .then(|| target.to_string())
        })
        .collect();
    let mut s = Script::default();
    for chain in &stale {
        remove_chain(&mut s, table, DNAT_CHAIN, chain);
    }
    s
}
