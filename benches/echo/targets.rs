//! The targets, in one list (what each asks, the row it reads, how, the bound), from which the
//! report and the chart are derived.

use std::{fmt::Write as _, io, path::Path};

use crate::common::chart::{self, Bar};
use crate::common::process::Kind::{Netgrace, TokioCt, TokioMt};
use crate::common::table::{cpu_per_mb, cpu_per_message, number, rate, throughput, Better, Table};
use crate::idle::{BESIDE_RATIO, MEMORY, SHUTDOWN, UNCLEAN};
use crate::inproc::{ALLOCATIONS, IDLE_STOP};
use crate::load::{PINGPONG_1, PINGPONG_50, PINGPONG_500, STREAM};
use crate::restart::{ACROSS_WORST, FAILED, NOT_COMPLETED};
use crate::storm::{row, ALL_ECHOED, FAILED as STORM_FAILED, OVERFLOWS};
use crate::syscalls::SYSCALLS;

/// How a target reads its row: netgrace's median over the rounds, that median over tokio-ct's,
/// or netgrace's worst round (where one bad round is already a miss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    AtMost,
    AtLeast,
    RatioAtMost,
    RatioAtLeast,
    EveryRoundAtMost,
}
use Check::*;

#[rustfmt::skip]
fn targets() -> Vec<(&'static str, String, Check, f64)> {
    let storm = |n, name, what, bound| (name, row(n, what), EveryRoundAtMost, bound);
    vec![
        ("server CPU per message, pingpong × 50", cpu_per_message(PINGPONG_50), RatioAtMost, 0.95),
        ("messages/s, pingpong × 1", rate(PINGPONG_1), RatioAtLeast, 1.0),
        ("messages/s, pingpong × 50", rate(PINGPONG_50), RatioAtLeast, 1.0),
        ("messages/s, pingpong × 500", rate(PINGPONG_500), RatioAtLeast, 1.0),
        ("stream MB/s", throughput(STREAM), RatioAtLeast, 1.0),
        ("stream server CPU per MB", cpu_per_mb(STREAM), RatioAtMost, 0.95),
        ("syscalls per message, pingpong × 50", SYSCALLS.into(), AtMost, 2.05),
        ("heap allocations per message", ALLOCATIONS.into(), AtMost, 0.0),
        ("memory per idle connection, bytes", MEMORY.into(), AtMost, 128.0),
        ("memory per idle connection, against tokio-ct", MEMORY.into(), RatioAtMost, 0.02),
        ("pingpong × 10 beside 10 000 idle ÷ alone", BESIDE_RATIO.into(), AtLeast, 0.9),
        ("shutdown with 10 000 idle, ms", SHUTDOWN.into(), AtMost, 150.0),
        ("shutdown with 10 000 idle: clients without a clean EOF", UNCLEAN.into(), AtMost, 0.0),
        ("idle shutdown() to run() returning, µs (median of 100)", IDLE_STOP.into(), AtMost, 1000.0),
        ("storm 1 000 (default flags): until all echoed", row(1_000, ALL_ECHOED), RatioAtMost, 1.0),
        ("storm 3 000: until all echoed", row(3_000, ALL_ECHOED), RatioAtMost, 1.0),
        ("storm 10 000: until all echoed", row(10_000, ALL_ECHOED), RatioAtMost, 1.0),
        storm(1_000, "storm 1 000: no listen overflow", OVERFLOWS, 0.0),
        storm(3_000, "storm 3 000: no listen overflow", OVERFLOWS, 0.0),
        storm(1_000, "storm 1 000: no failed client", STORM_FAILED, 0.0),
        storm(3_000, "storm 3 000: no failed client", STORM_FAILED, 0.0),
        storm(10_000, "storm 10 000: no failed client", STORM_FAILED, 0.0),
        ("restarts: no failed cycle", FAILED.into(), EveryRoundAtMost, 0.0),
        ("restarts: every restart completed", NOT_COMPLETED.into(), EveryRoundAtMost, 0.0),
        ("restarts: worst cycle across a restart, ms", ACROSS_WORST.into(), EveryRoundAtMost, 50.0),
    ]
}

/// The targets this run measured as a markdown table, each met or NOT MET, then how many it did
/// not measure (a `compare --only` run measures a few).
pub fn report(table: &Table) -> String {
    let mut out = String::from("| target | bound | in this run | verdict |\n|---|---|---|---|\n");
    let mut unmeasured = 0;
    for (name, row, check, bound) in targets() {
        let median = |kind| table.median(&row, kind).map_or("–".into(), number);
        let (value, note, unit) = match check {
            AtMost | AtLeast => (table.median(&row, Netgrace), String::new(), ""),
            EveryRoundAtMost => (table.worst(&row, Netgrace), " worst".into(), " every round"),
            RatioAtMost | RatioAtLeast => {
                let note = format!("× ({} against {})", median(Netgrace), median(TokioCt));
                (table.ratio(&row, Netgrace, TokioCt), note, "× tokio-ct")
            }
        };
        let Some(value) = value else {
            unmeasured += 1;
            continue;
        };
        let at_least = matches!(check, AtLeast | RatioAtLeast);
        let met = (value >= bound) == at_least || value == bound;
        let verdict = if met { "met" } else { "**NOT MET**" };
        let (value, op) = (number(value), ["≤", "≥"][at_least as usize]);
        let _ = writeln!(
            out,
            "| {name} | {op} {bound}{unit} | {value}{note} | {verdict} |"
        );
    }
    if unmeasured > 0 {
        let _ = writeln!(out, "\n{unmeasured} targets not measured in this run.");
    }
    out
}

/// The chart: every target's row that tokio has too (not the counts that must be zero), as
/// netgrace's advantage over each flavour; a ratio target's bound is its tick.
pub fn chart(table: &Table, path: &Path) -> io::Result<()> {
    let mut bars: Vec<Bar> = Vec::new();
    for (_, row, check, bound) in targets().into_iter().filter(|t| t.3 > 0.0) {
        let Some(better) = table.better(&row) else {
            continue;
        };
        // Above 1 means netgrace is better, whichever way the metric improves.
        let advantage = |ratio: f64| {
            if better == Better::Higher {
                ratio
            } else {
                1.0 / ratio
            }
        };
        let vs = |other| {
            let ratio = table.ratio(&row, Netgrace, other).map(advantage);
            ratio.filter(|a| a.is_finite() && *a > 0.0)
        };
        let mark = matches!(check, RatioAtMost | RatioAtLeast).then(|| advantage(bound));
        match bars.iter_mut().find(|bar| bar.label == row) {
            Some(bar) => bar.mark = bar.mark.or(mark),
            None if vs(TokioCt).is_some() => {
                let advantage = [vs(TokioCt), vs(TokioMt)];
                bars.push(Bar {
                    label: row,
                    advantage,
                    mark,
                });
            }
            None => {}
        }
    }
    let title = format!(
        "netgrace beside tokio: {}",
        crate::common::procfs::machine()
    );
    chart::render(path, &title, &bars)
}
