//! (b): one ADD in a 99%-full /16 (store written directly) and in an empty /16.

use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use super::timed_add_then_del;
use crate::plugin::*;
use crate::report::progress;
use crate::Res;

/// Fraction (per mille) of the /16's usable addresses reserved in (b).
pub(crate) const FULL_PER_MILLE: usize = 990;
pub(crate) const FILL_SEED: u64 = 0x5eed_cafe_f00d_0001;
/// Allocatable addresses in 10.77.0.0/16: 10.77.0.1-10.77.255.254 minus the gateway 10.77.0.1.
pub(crate) const USABLE_16: usize = 65_533;
// (b) -----------------------------------------------------------------------------------------

#[derive(Debug)]
pub(crate) struct FullRange {
    pub(crate) filled: usize,
    pub(crate) ours_full: Vec<Duration>,
    pub(crate) ref_full: Vec<Duration>,
    pub(crate) ours_empty: Vec<Duration>,
    pub(crate) ref_empty: Vec<Duration>,
    /// The untimed restoring DELs in the full stores, for information.
    pub(crate) ours_full_del: Vec<Duration>,
    pub(crate) ref_full_del: Vec<Duration>,
    /// The static no-op exec'd as the ADDs are.
    pub(crate) floor: Vec<Duration>,
}

/// SplitMix64: small, deterministic, good enough to pick addresses.
#[derive(Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        // The modulo bias is irrelevant at these sizes.
        (self.next() % n as u64) as usize
    }
}

/// The addresses to reserve in 10.77.0.0/16 (same for both implementations) and the one to
/// write as `last_reserved_ip.0`.
pub(crate) fn fill_plan() -> (Vec<Ipv4Addr>, Ipv4Addr) {
    // Usable: rangeStart 10.77.0.1 .. rangeEnd 10.77.255.254, minus the gateway 10.77.0.1.
    let base = u32::from(Ipv4Addr::new(10, 77, 0, 0));
    let mut all: Vec<Ipv4Addr> = (2..=0xfffe).map(|h| Ipv4Addr::from(base + h)).collect();
    debug_assert_eq!(all.len(), USABLE_16);
    let mut rng = SplitMix64(FILL_SEED);
    // Fisher–Yates shuffle; the first 99% are reserved.
    for i in (1..all.len()).rev() {
        let j = rng.below(i + 1);
        all.swap(i, j);
    }
    let count = (all.len() * FULL_PER_MILLE).div_ceil(1000);
    all.truncate(count);
    let last = all[rng.below(count)];
    (all, last)
}

pub(crate) fn write_file(path: &Path, content: &[u8], mode: u32) -> Res<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(content)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a host-local store for network `bench` directly, as the reference would have left it.
pub(crate) fn prepare_full_store(data_dir: &Path, plan: &[Ipv4Addr], last: Ipv4Addr) -> Res<()> {
    let store = data_dir.join(NET);
    fs::create_dir_all(&store).map_err(|e| format!("{}: {e}", store.display()))?;
    write_file(&store.join("lock"), b"", 0o750)?;
    for (n, ip) in plan.iter().enumerate() {
        write_file(
            &store.join(ip.to_string()),
            format!("fill-{n}\r\n{IFNAME}").as_bytes(),
            0o600,
        )?;
    }
    write_file(
        &store.join("last_reserved_ip.0"),
        last.to_string().as_bytes(),
        0o600,
    )
}

pub(crate) fn bench_full_range(
    ours: &Plugin,
    reference: &Plugin,
    noop: &Path,
    n: usize,
) -> Res<FullRange> {
    let (plan, last) = fill_plan();
    let full_o = tempdir("cni-bench-b-full-ours-")?;
    let full_r = tempdir("cni-bench-b-full-ref-")?;
    let empty_o = tempdir("cni-bench-b-empty-ours-")?;
    let empty_r = tempdir("cni-bench-b-empty-ref-")?;
    // One writer thread per store (about 65k files each).
    std::thread::scope(|s| {
        let a = s.spawn(|| prepare_full_store(full_o.path(), &plan, last));
        let b = prepare_full_store(full_r.path(), &plan, last);
        a.join()
            .map_err(|_| "store writer thread panicked".to_string())
            .and_then(|r| r)
            .and(b)
    })?;
    progress(&format!(
        "(b) wrote {} reservations into each full store",
        plan.len()
    ));
    let subnet = "10.77.0.0/16";
    let cases: [(&Plugin, &tempfile::TempDir); 4] = [
        (ours, &full_o),
        (reference, &full_r),
        (ours, &empty_o),
        (reference, &empty_r),
    ];
    let configs: Vec<String> = cases
        .iter()
        .map(|(_, d)| host_local_config(d.path(), subnet))
        .collect();
    let mut samples: [Vec<Duration>; 4] = Default::default();
    let mut dels: [Vec<Duration>; 4] = Default::default();
    let mut floor = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("bench-b-{i}");
        floor.push(run_plugin(noop, "ADD", &id, &configs[0])?.1);
        // Rotate the starting case each iteration to spread noise over all four.
        for k in 0..cases.len() {
            let c = (i + k) % cases.len();
            let (p, dir) = cases[c];
            let (t, t_del) = timed_add_then_del(p, &configs[c], &dir.path().join(NET), &id)
                .map_err(|e| {
                    format!(
                        "{} {} store: {e}",
                        p.label,
                        ["full", "full", "empty", "empty"][c]
                    )
                })?;
            samples[c].push(t);
            dels[c].push(t_del);
        }
    }
    for (p, dir) in &cases[..2] {
        let left = reservations(&dir.path().join(NET))?;
        if left != plan.len() {
            return Err(format!(
                "{}: full store ends with {left} reservations, expected {}",
                p.label,
                plan.len()
            ));
        }
    }
    // Removing the full stores takes a while too; do both at once.
    std::thread::scope(|s| {
        s.spawn(move || drop(full_o));
        drop(full_r);
    });
    let [ours_full, ref_full, ours_empty, ref_empty] = samples;
    let [ours_full_del, ref_full_del, _, _] = dels;
    Ok(FullRange {
        filled: plan.len(),
        ours_full,
        ref_full,
        ours_empty,
        ref_empty,
        ours_full_del,
        ref_full_del,
        floor,
    })
}
