//! Shared by every benchmark: timing (progress lines), statistics (median, percentiles),
//! number formatting, and the Markdown table and targets-line writer.

use std::fmt::Write as _;
use std::fs;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Statistics and formatting
// ---------------------------------------------------------------------------------------------

pub(crate) fn percentile(samples: &[Duration], pct: usize) -> Duration {
    let mut v = samples.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = (pct * v.len()).div_ceil(100).clamp(1, v.len());
    v[rank - 1]
}

pub(crate) fn median(samples: &[Duration]) -> Duration {
    let mut v = samples.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

pub(crate) fn median_u64(samples: &[u64]) -> u64 {
    let mut v = samples.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

pub(crate) fn fmt_dur(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.3} ms")
    } else if ms < 100.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

pub(crate) fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        f64::INFINITY
    }
}

pub(crate) fn fmt_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

/// A Markdown table row; `None` cells are printed as `FAILED`.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) what: String,
    pub(crate) ours: Option<String>,
    pub(crate) reference: Option<String>,
    pub(crate) ratio: Option<String>,
}

pub(crate) fn cell(c: &Option<String>) -> &str {
    c.as_deref().unwrap_or("FAILED")
}

#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) name: &'static str,
    pub(crate) text: String,
    pub(crate) met: Option<bool>,
}

pub(crate) static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A progress line on stderr, stamped with the time since the bench started.
pub(crate) fn progress(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("cni-bench [{t:6.1}s] {msg}");
}

pub(crate) fn failed_row(what: &str) -> Row {
    Row {
        what: what.into(),
        ours: None,
        reference: None,
        ratio: None,
    }
}

pub(crate) fn failed_target(name: &'static str, text: &str) -> Target {
    Target {
        name,
        text: text.into(),
        met: None,
    }
}

pub(crate) fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let tmp = std::env::temp_dir();
    format!(
        "nproc {nproc}, Linux {kernel}, {cpu}; stores under {}",
        tmp.display()
    )
}

// Driver and report ----------------------------------------------------------------------------

/// A statistic of one side's samples, `None` when that side failed.
pub(crate) fn side_stat<T, S>(r: &Result<Vec<T>, String>, f: impl Fn(&[T]) -> S) -> Option<S> {
    r.as_ref().ok().map(|v| f(v))
}

/// A time row; returns reference ÷ ours when both sides have a value.
pub(crate) fn time_row(
    rows: &mut Vec<Row>,
    what: String,
    o: Option<Duration>,
    r: Option<Duration>,
) -> Option<f64> {
    let ra = o
        .zip(r)
        .map(|(o, r)| ratio(r.as_secs_f64(), o.as_secs_f64()));
    rows.push(Row {
        what,
        ours: o.map(fmt_dur),
        reference: r.map(fmt_dur),
        ratio: ra.map(fmt_ratio),
    });
    ra
}

/// An RSS row; returns ours ÷ reference when both sides have a value.
pub(crate) fn kib_row(
    rows: &mut Vec<Row>,
    what: String,
    o: Option<u64>,
    r: Option<u64>,
) -> Option<f64> {
    let ra = o.zip(r).map(|(o, r)| ratio(o as f64, r as f64));
    rows.push(Row {
        what,
        ours: o.map(|k| format!("{k} KiB")),
        reference: r.map(|k| format!("{k} KiB")),
        ratio: ra.map(fmt_ratio),
    });
    ra
}

pub(crate) fn time_target(name: &'static str, ra: Option<f64>, text: &str) -> Target {
    match ra {
        Some(ra) => Target {
            name,
            text: format!("{text}: {}", fmt_ratio(ra)),
            met: Some(ra >= 3.0),
        },
        None => failed_target(name, text),
    }
}

/// A target on a floor-table row: ours ÷ floor at most `limit`.
pub(crate) fn floor_target(name: &'static str, row: Option<&FloorRow>, limit: f64) -> Target {
    let text = format!("ours ÷ floor ≤ {limit}×");
    match row.and_then(FloorRow::ours_over_floor) {
        Some(over) => Target {
            name,
            text: format!("{text}: {}", fmt_ratio(over)),
            met: Some(over <= limit),
        },
        None => failed_target(name, &text),
    }
}

pub(crate) fn sum_pairs(v: &[(Duration, Duration)]) -> Vec<Duration> {
    v.iter().map(|(a, d)| *a + *d).collect()
}

pub(crate) fn firsts<A: Copy, B>(v: &[(A, B)]) -> Vec<A> {
    v.iter().map(|p| p.0).collect()
}

pub(crate) fn seconds<A, B: Copy>(v: &[(A, B)]) -> Vec<B> {
    v.iter().map(|p| p.1).collect()
}

// Driver and report ------------------------------------------------------------------------------

pub(crate) fn fmt_us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 {
        format!("{us:.1} µs")
    } else {
        fmt_dur(d)
    }
}

pub(crate) fn fmt_kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// The ours / reference / ratio table, the notes and the targets line.
pub(crate) fn write_table(
    out: &mut String,
    rows: &[Row],
    notes: &[String],
    floor: &FloorTable,
    targets: &[Target],
) {
    let _ = writeln!(
        out,
        "| measurement | ours | reference | ratio |\n|---|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.what,
            cell(&r.ours),
            cell(&r.reference),
            cell(&r.ratio)
        );
    }
    let _ = writeln!(
        out,
        "\nratio = reference ÷ ours for times (higher is better), ours ÷ reference for RSS \
         (lower is better)."
    );
    for n in notes {
        let _ = writeln!(out, "{n}");
    }
    write_floor_table(out, floor);
    write_targets(out, targets);
}

// The floor ---------------------------------------------------------------------------------

/// Rounds every figure of the floor table is split into (fewer when there are fewer samples).
pub(crate) const FLOOR_ROUNDS: usize = 5;

/// What a floor-table value is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unit {
    /// Seconds, printed as a time.
    Time,
    /// KiB.
    Kib,
}

/// One figure against its floor: per round, the median of that round's samples (seconds or
/// KiB); `None` when that side failed.
#[derive(Debug)]
pub(crate) struct FloorRow {
    pub(crate) what: String,
    pub(crate) unit: Unit,
    pub(crate) floor: Option<Vec<f64>>,
    pub(crate) ours: Option<Vec<f64>>,
    pub(crate) reference: Option<Vec<f64>>,
}

/// The closing table: every figure with its floor, ours ÷ floor and reference ÷ floor.
#[derive(Debug, Default)]
pub(crate) struct FloorTable {
    /// What the floor is, per figure (printed under the table).
    pub(crate) notes: Vec<String>,
    pub(crate) rows: Vec<FloorRow>,
}

/// `samples` in `FLOOR_ROUNDS` consecutive rounds (as even as possible; one per sample when
/// there are fewer), and the median of each.
pub(crate) fn round_medians<T: Copy + Into<f64>>(samples: &[T]) -> Vec<f64> {
    let rounds = FLOOR_ROUNDS.min(samples.len());
    (0..rounds)
        .map(|r| {
            let (a, b) = (r * samples.len() / rounds, (r + 1) * samples.len() / rounds);
            median_f64(samples[a..b].iter().map(|&x| x.into()).collect())
        })
        .collect()
}

impl FloorRow {
    /// A row of times; `None` for a side that failed.
    pub(crate) fn time(
        what: String,
        floor: Option<&[Duration]>,
        ours: Option<&[Duration]>,
        reference: Option<&[Duration]>,
    ) -> FloorRow {
        FloorRow {
            what,
            unit: Unit::Time,
            floor: floor.map(time_rounds),
            ours: ours.map(time_rounds),
            reference: reference.map(time_rounds),
        }
    }

    /// A row of KiB figures; `None` for a side that failed.
    pub(crate) fn kib(
        what: String,
        floor: Option<&[u64]>,
        ours: Option<&[u64]>,
        reference: Option<&[u64]>,
    ) -> FloorRow {
        FloorRow {
            what,
            unit: Unit::Kib,
            floor: floor.map(kib_rounds),
            ours: ours.map(kib_rounds),
            reference: reference.map(kib_rounds),
        }
    }
}

impl FloorTable {
    /// Rows `<tag> ADD, <what>`, `<tag> DEL, <what>` and `<tag> ADD+DEL, <what>` from (ADD, DEL)
    /// samples.
    pub(crate) fn push_pairs(
        &mut self,
        tag: &str,
        what: &str,
        floor: Option<&[(Duration, Duration)]>,
        ours: Option<&[(Duration, Duration)]>,
        reference: Option<&[(Duration, Duration)]>,
    ) {
        type Pick = fn(&[(Duration, Duration)]) -> Vec<Duration>;
        let picks: [(&str, Pick); 3] = [("ADD", firsts), ("DEL", seconds), ("ADD+DEL", sum_pairs)];
        for (name, pick) in picks {
            let (f, o, r) = (floor.map(pick), ours.map(pick), reference.map(pick));
            self.rows.push(FloorRow::time(
                format!("{tag} {name}, {what}"),
                f.as_deref(),
                o.as_deref(),
                r.as_deref(),
            ));
        }
    }
}

impl FloorRow {
    /// Ours ÷ floor: the median of the per-round ratios (`None` when a side failed).
    pub(crate) fn ours_over_floor(&self) -> Option<f64> {
        let (ours, floor) = (self.ours.as_ref()?, self.floor.as_ref()?);
        let per_round: Vec<f64> = ours.iter().zip(floor).map(|(o, f)| ratio(*o, *f)).collect();
        (!per_round.is_empty()).then(|| median_f64(per_round))
    }
}

/// `round_medians` of times, in seconds.
pub(crate) fn time_rounds(samples: &[Duration]) -> Vec<f64> {
    let secs: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    round_medians(&secs)
}

/// `round_medians` of KiB figures.
pub(crate) fn kib_rounds(samples: &[u64]) -> Vec<f64> {
    let kib: Vec<f64> = samples.iter().map(|&k| k as f64).collect();
    round_medians(&kib)
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn fmt_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Time => fmt_dur(Duration::from_secs_f64(v.max(0.0))),
        Unit::Kib => format!("{v:.0} KiB"),
    }
}

/// `side ÷ floor`: the median of the per-round ratios, with their range when there are
/// several rounds (each round's floor was measured alongside that round's side).
fn floor_ratio(side: Option<&Vec<f64>>, floor: Option<&Vec<f64>>) -> String {
    let (Some(side), Some(floor)) = (side, floor) else {
        return "–".into();
    };
    let per_round: Vec<f64> = side.iter().zip(floor).map(|(s, f)| ratio(*s, *f)).collect();
    if per_round.is_empty() {
        return "–".into();
    }
    let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = per_round.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mid = fmt_ratio(median_f64(per_round.clone()));
    if per_round.len() > 1 {
        format!("{mid} ({lo:.2}–{hi:.2})")
    } else {
        mid
    }
}

/// The floor table and its notes (nothing when there are no rows).
pub(crate) fn write_floor_table(out: &mut String, table: &FloorTable) {
    if table.rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n| against the floor | floor | ours | reference | ours ÷ floor | ref ÷ floor |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    for r in &table.rows {
        let value = |v: &Option<Vec<f64>>| match v {
            Some(rounds) if !rounds.is_empty() => fmt_value(r.unit, median_f64(rounds.clone())),
            _ => "FAILED".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.what,
            value(&r.floor),
            value(&r.ours),
            value(&r.reference),
            floor_ratio(r.ours.as_ref(), r.floor.as_ref()),
            floor_ratio(r.reference.as_ref(), r.floor.as_ref())
        );
    }
    let _ = writeln!(
        out,
        "\nEach figure is split into up to {FLOOR_ROUNDS} consecutive rounds (the floor measured \
         in the same rounds, interleaved with ours and the reference); a value is the median of \
         the round medians, a ratio the median of the per-round ratios (their range in \
         brackets); 1.00× is the floor."
    );
    for n in &table.notes {
        let _ = writeln!(out, "{n}");
    }
}

/// The targets line: each target, met or MISSED (FAILED when not measured).
pub(crate) fn write_targets(out: &mut String, targets: &[Target]) {
    let met = targets.iter().filter(|t| t.met == Some(true)).count();
    let summary: Vec<String> = targets
        .iter()
        .map(|t| {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "FAILED",
            };
            format!("{} {} {verdict}", t.name, t.text)
        })
        .collect();
    let _ = writeln!(
        out,
        "\nTargets ({met}/{} met): {}",
        targets.len(),
        summary.join("; ")
    );
}
