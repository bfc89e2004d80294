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
pub(crate) fn write_table(out: &mut String, rows: &[Row], notes: &[String], targets: &[Target]) {
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
    write_targets(out, targets);
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
