//! The cri bench's report: one row per figure with its three targets (direct, via serve, via
//! the bare relay), the CPU per call, the targets line and what the bare relay shows.

use std::fmt::Write as _;
use std::time::Duration;

use super::client::{
    CpuOf, CriResults, PerTarget, Rpc, Throughput, CPU_CLIENT, CPU_CONTAINERD, CPU_OF, CPU_RELAY,
    CPU_SERVE, DIRECT, RELAY, SERVE,
};
use super::{CRI_TARGET_P50_US, CRI_TARGET_P99_US, CRI_TARGET_THROUGHPUT};
use crate::report::{failed_target, fmt_ratio, fmt_us, percentile, ratio, write_targets, Target};
use crate::Res;

/// serve ÷ relay in time per call from which serve is called clearly worse than the relay.
pub(crate) const CRI_CLEARLY_WORSE: f64 = 1.10;

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Figure {
    /// A percentile of sequential call latency, in seconds.
    Latency(usize),
    /// Calls per second of concurrent clients.
    Throughput,
}

/// One table row: per target its figure, `None` when the measurement failed.
#[derive(Debug)]
pub(crate) struct CriRow {
    pub(crate) rpc: Rpc,
    pub(crate) what: String,
    pub(crate) figure: Figure,
    pub(crate) values: Option<PerTarget<f64>>,
}

impl CriRow {
    /// Time per call of target `t` ÷ that of target `base` (the latency, or 1 ÷ calls/s).
    pub(crate) fn time_ratio(&self, t: usize, base: usize) -> Option<f64> {
        let v = self.values?;
        Some(match self.figure {
            Figure::Latency(_) => ratio(v[t], v[base]),
            Figure::Throughput => ratio(v[base], v[t]),
        })
    }

    /// Target `t`'s latency minus direct's, in µs (latency rows only).
    pub(crate) fn added_us(&self, t: usize) -> Option<f64> {
        match (self.figure, self.values) {
            (Figure::Latency(_), Some(v)) => Some((v[t] - v[DIRECT]) * 1e6),
            _ => None,
        }
    }

    /// Target `t`'s calls/s ÷ direct's (throughput rows only).
    pub(crate) fn rate_ratio(&self, t: usize) -> Option<f64> {
        match (self.figure, self.values) {
            (Figure::Throughput, Some(v)) => Some(ratio(v[t], v[DIRECT])),
            _ => None,
        }
    }

    fn cell(&self, t: usize) -> String {
        match (self.figure, self.values) {
            (_, None) => "FAILED".into(),
            (Figure::Latency(_), Some(v)) => fmt_us(Duration::from_secs_f64(v[t])),
            (Figure::Throughput, Some(v)) => format!("{:.0}", v[t]),
        }
    }

    /// Target `t` against direct: latency added, or calls/s ratio.
    fn versus_direct(&self, t: usize) -> String {
        if let Some(a) = self.added_us(t) {
            format!("{a:+.1} µs")
        } else {
            self.rate_ratio(t)
                .map_or_else(|| "FAILED".into(), fmt_ratio)
        }
    }
}

/// The rows (p50 and p99 per RPC, then throughput per RPC) and the serve targets.
pub(crate) fn cri_rows(
    res: &CriResults,
    n_images: usize,
    clients: usize,
    failures: &mut Vec<String>,
) -> (Vec<CriRow>, Vec<Target>) {
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (rpc, n, r) in &res.latency {
        let label = match rpc {
            Rpc::ListImages => format!(
                "ListImages ({n_images} images, {} response)",
                crate::report::fmt_kib(res.list_images_bytes[DIRECT])
            ),
            _ => rpc.name().to_string(),
        };
        let (p50_name, p99_name) = match rpc {
            Rpc::Version => ("Version p50", "Version p99"),
            Rpc::ListContainers => ("ListContainers p50", "ListContainers p99"),
            Rpc::ListImages => ("ListImages p50", "ListImages p99"),
        };
        for (pct, name, limit) in [
            (50, p50_name, CRI_TARGET_P50_US),
            (99, p99_name, CRI_TARGET_P99_US),
        ] {
            let text = format!("added ≤ {limit:.0} µs");
            let row = CriRow {
                rpc: *rpc,
                what: format!("{label}: p{pct} of {n} sequential calls"),
                figure: Figure::Latency(pct),
                values: r
                    .as_ref()
                    .ok()
                    .map(|s| s.each_ref().map(|s| percentile(s, pct).as_secs_f64())),
            };
            match (&row.added_us(SERVE), r) {
                (Some(added), _) => targets.push(Target {
                    name,
                    text: format!("{text}: {added:+.1} µs"),
                    met: Some(*added <= limit),
                }),
                (None, Err(e)) => {
                    failures.push(format!("{name}: {e}"));
                    targets.push(failed_target(name, &text));
                }
                (None, Ok(_)) => targets.push(failed_target(name, &text)),
            }
            rows.push(row);
        }
    }
    for (rpc, r) in &res.throughput {
        let name = match rpc {
            Rpc::Version => "Version throughput",
            Rpc::ListContainers => "ListContainers throughput",
            Rpc::ListImages => "ListImages throughput",
        };
        let text = format!(
            "via serve ≥ {:.0}% of direct",
            CRI_TARGET_THROUGHPUT * 100.0
        );
        let row = CriRow {
            rpc: *rpc,
            what: format!(
                "{} throughput, {clients} concurrent clients, calls/s",
                rpc.name()
            ),
            figure: Figure::Throughput,
            values: r.as_ref().ok().map(|tp| tp.rate),
        };
        match (row.rate_ratio(SERVE), r) {
            (Some(ra), _) => targets.push(Target {
                name,
                text: format!("{text}: {:.1}%", ra * 100.0),
                met: Some(ra >= CRI_TARGET_THROUGHPUT),
            }),
            (None, Err(e)) => {
                failures.push(format!("{name}: {e}"));
                targets.push(failed_target(name, &text));
            }
            (None, Ok(_)) => targets.push(failed_target(name, &text)),
        }
        rows.push(row);
    }
    (rows, targets)
}

/// The table: the existing direct / serve columns, then the bare relay's.
pub(crate) fn write_cri_table(out: &mut String, rows: &[CriRow]) {
    let _ = writeln!(
        out,
        "| measurement | floor: direct | ours: via serve | added / ratio | ours ÷ floor \
         | bare relay | relay added / ratio | serve ÷ relay |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    );
    let time_ratio = |r: &CriRow, t, base| {
        r.time_ratio(t, base)
            .map_or_else(|| "FAILED".into(), fmt_ratio)
    };
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.what,
            r.cell(DIRECT),
            r.cell(SERVE),
            r.versus_direct(SERVE),
            time_ratio(r, SERVE, DIRECT),
            r.cell(RELAY),
            r.versus_direct(RELAY),
            time_ratio(r, SERVE, RELAY),
        );
    }
    let _ = writeln!(
        out,
        "\nfloor = containerd's socket, called directly by the same client in the same run. \
         added = via serve (or relay) − direct at the same percentile (lower is better); ratio \
         = via serve (or relay) ÷ direct calls/s (higher is better); ours ÷ floor = via serve ÷ \
         direct in time per call (the percentile's latency, or 1 ÷ calls/s; 1.00× is the \
         floor). bare relay = `cni-bench relay` in front of the same socket: one thread, epoll, \
         one read and one write per readiness, no parsing (the floor of any user-space hop); \
         serve ÷ relay is in time per call."
    );
}

/// One RPC's CPU per call on each target (the processes on its path), and the throughput
/// that leaves via serve and via the relay when the CPUs are saturated: the client and
/// containerd then share the CPU with the hop, so at best via ÷ direct = their CPU per call
/// direct ÷ everyone's CPU per call via the hop.
pub(crate) fn cpu_note(rpc: Rpc, tp: &Throughput) -> String {
    // The processes on each target's path (the others are idle then).
    const ON_PATH: PerTarget<&[usize]> = [
        &[CPU_CLIENT, CPU_CONTAINERD],
        &[CPU_CLIENT, CPU_CONTAINERD, CPU_SERVE],
        &[CPU_CLIENT, CPU_CONTAINERD, CPU_RELAY],
    ];
    let sums: PerTarget<f64> = tp.cpu_per_call.map(|c: CpuOf<f64>| c.iter().sum());
    let parts: Vec<String> = super::client::TARGETS
        .iter()
        .zip(ON_PATH)
        .zip(tp.cpu_per_call.iter().zip(&sums))
        .map(|((target, on), (cpu, sum))| {
            let each: Vec<String> = on
                .iter()
                .filter_map(|&p| Some(format!("{} {:.1} µs", CPU_OF.get(p)?, cpu.get(p)?)))
                .collect();
            format!("{target} {} (sum {sum:.1} µs)", each.join(", "))
        })
        .collect();
    format!(
        "{}: {}; CPU-bound limit of via ÷ direct = {:.2}× via serve, {:.2}× via relay",
        rpc.name(),
        parts.join("; "),
        ratio(sums[DIRECT], sums[SERVE]),
        ratio(sums[DIRECT], sums[RELAY])
    )
}

/// Per RPC, what the bare relay shows about the goals: whether any user-space hop can meet
/// them here, or whether serve is what misses them; with the CPU per call of both hops and the
/// throughput that leaves when the CPUs are saturated (see [`cpu_note`]).
pub(crate) fn relay_notes(rows: &[CriRow], throughput: &[(Rpc, Res<Throughput>)]) -> Vec<String> {
    let mut notes = Vec::new();
    for rpc in Rpc::ALL {
        let find = |f: Figure| rows.iter().find(|r| r.rpc == rpc && r.figure == f);
        let (Some(p50), Some(tp)) = (find(Figure::Latency(50)), find(Figure::Throughput)) else {
            continue;
        };
        let (Some(relay_added), Some(serve_added), Some(relay_tp), Some(serve_tp)) = (
            p50.added_us(RELAY),
            p50.added_us(SERVE),
            tp.rate_ratio(RELAY),
            tp.rate_ratio(SERVE),
        ) else {
            continue;
        };
        let (Some(p50_worse), Some(tp_worse)) =
            (p50.time_ratio(SERVE, RELAY), tp.time_ratio(SERVE, RELAY))
        else {
            continue;
        };
        let mut verdicts = vec![
            goal_verdict(
                &format!("p50 goal (added ≤ {CRI_TARGET_P50_US:.0} µs)"),
                relay_added <= CRI_TARGET_P50_US,
                serve_added <= CRI_TARGET_P50_US,
            ),
            goal_verdict(
                &format!(
                    "throughput goal (≥ {:.2}× of direct)",
                    CRI_TARGET_THROUGHPUT
                ),
                relay_tp >= CRI_TARGET_THROUGHPUT,
                serve_tp >= CRI_TARGET_THROUGHPUT,
            ),
        ];
        let measured = [("at p50", p50_worse), ("in throughput", tp_worse)];
        let beyond = |clearly: &dyn Fn(f64) -> bool| -> String {
            measured
                .iter()
                .filter(|(_, w)| clearly(*w))
                .map(|(what, w)| format!("{what} ({})", fmt_ratio(*w)))
                .collect::<Vec<_>>()
                .join(" and ")
        };
        let worse = beyond(&|w| w >= CRI_CLEARLY_WORSE);
        let better = beyond(&|w| w * CRI_CLEARLY_WORSE <= 1.0);
        let versus: Vec<String> = [("clearly worse than", worse), ("faster than", better)]
            .into_iter()
            .filter(|(_, at)| !at.is_empty())
            .map(|(how, at)| format!("{how} the relay {at}"))
            .collect();
        verdicts.push(if versus.is_empty() {
            format!(
                "serve is within {:.0}% of the relay in time per call",
                (CRI_CLEARLY_WORSE - 1.0) * 100.0
            )
        } else {
            format!(
                "in time per call (serve ÷ relay), serve is {}",
                versus.join(" but ")
            )
        });
        let cpu = throughput
            .iter()
            .find(|(r, _)| *r == rpc)
            .and_then(|(_, tp)| tp.as_ref().ok())
            .map(|tp| {
                let sums: PerTarget<f64> = tp.cpu_per_call.map(|c| c.iter().sum());
                format!(
                    "; CPU per call of the hop: relay {:.1} µs, serve {:.1} µs, so at most {} \
                     and {} of direct's calls/s when the CPUs are saturated",
                    tp.cpu_per_call[RELAY][CPU_RELAY],
                    tp.cpu_per_call[SERVE][CPU_SERVE],
                    fmt_ratio(ratio(sums[DIRECT], sums[RELAY])),
                    fmt_ratio(ratio(sums[DIRECT], sums[SERVE]))
                )
            })
            .unwrap_or_default();
        notes.push(format!(
            "{}: a bare relay adds {relay_added:+.1} µs at p50 and reaches {} of direct's \
             calls/s (serve: {serve_added:+.1} µs, {}{cpu}): {}",
            rpc.name(),
            fmt_ratio(relay_tp),
            fmt_ratio(serve_tp),
            verdicts.join("; ")
        ));
    }
    notes
}

/// What the relay's and serve's result for one goal say.
fn goal_verdict(goal: &str, relay_meets: bool, serve_meets: bool) -> String {
    match (relay_meets, serve_meets) {
        (false, _) => format!(
            "the {goal} is out of reach of any user-space hop in this run (the bare relay \
             misses it too)"
        ),
        (true, false) => {
            format!("a bare hop meets the {goal} in this run: serve misses it by its own cost")
        }
        (true, true) => format!("both meet the {goal} in this run"),
    }
}

/// The notes and the targets line that close the report.
pub(crate) fn write_cri_closing(
    out: &mut String,
    cpu_notes: &[String],
    relay: &[String],
    targets: &[Target],
) {
    if !cpu_notes.is_empty() {
        let _ = writeln!(
            out,
            "\nCPU per call during the throughput runs (user + system, /proc/PID/stat, of the \
             processes on each target's path; the client is this bench; sums are of all {}):",
            CPU_OF.len()
        );
        for n in cpu_notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    if !relay.is_empty() {
        let _ = writeln!(out, "\nWhat the bare relay shows (same run, same clients):");
        for n in relay {
            let _ = writeln!(out, "- {n}");
        }
    }
    write_targets(out, targets);
}
