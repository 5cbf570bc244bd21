//! The efficiency targets and the connection storm's, each checked against the medians of a
//! run: met, not met, or not measured, with the figures that decide it.

use std::fmt::Write as _;

use crate::compare::{
    cpu_per_mb, cpu_per_message, rate, throughput, ALLOCATIONS, BESIDE_RATIO, IDLE_STOP, MEMORY,
    SHUTDOWN, SYSCALLS, UNCLEAN,
};
use crate::process::Kind::{Netgrace, TokioCt};
use crate::storm::{self, BURSTS};
use crate::table::Table;

const PINGPONG_50: &str = "pingpong 64 B × 50";
const STREAM: &str = "stream 64 KiB × 10";

/// The targets as a markdown list.
pub fn report(table: &Table) -> String {
    let mut out = String::from("Targets (efficiency), netgrace against tokio-ct in this run:\n\n");
    let mut line = |met: Option<bool>, text: String| {
        let _ = writeln!(out, "- **{}**: {text}", verdict(met));
    };
    let ratio = |label: &str| table.ratio(label, Netgrace, TokioCt);
    let netgrace = |label: &str| table.median(label, Netgrace);

    let cpu = ratio(&cpu_per_message(PINGPONG_50));
    line(
        cpu.map(|r| r <= 0.95),
        format!(
            "server CPU per message, pingpong 64 B × 50: {} tokio-ct (≤ 0.95×)",
            times(cpu)
        ),
    );
    let rates: Vec<(&str, Option<f64>)> = ["1", "50", "500"]
        .iter()
        .map(|n| (*n, ratio(&rate(&format!("pingpong 64 B × {n}")))))
        .collect();
    let all = rates
        .iter()
        .map(|(_, r)| r.map(|r| r >= 1.0))
        .collect::<Option<Vec<bool>>>();
    let figures: Vec<String> = rates
        .iter()
        .map(|(n, r)| format!("× {n}: {}", times(*r)))
        .collect();
    line(
        all.map(|all| all.iter().all(|ok| *ok)),
        format!(
            "messages/s never below tokio-ct (≥ 1.0×): {}",
            figures.join(", ")
        ),
    );
    let syscalls = netgrace(SYSCALLS);
    line(
        syscalls.map(|s| s <= 2.05),
        format!(
            "syscalls per message, pingpong × 50: {} (≤ 2.05)",
            plain(syscalls)
        ),
    );
    let allocations = netgrace(ALLOCATIONS);
    line(
        allocations.map(|a| a == 0.0),
        format!(
            "heap allocations per message: {} (zero)",
            plain(allocations)
        ),
    );
    let memory = netgrace(MEMORY);
    let tokio_memory = table.median(MEMORY, TokioCt);
    let fraction = memory.zip(tokio_memory).map(|(n, t)| t / n.max(1.0));
    line(
        memory.zip(fraction).map(|(m, f)| m <= 128.0 && f >= 50.0),
        format!(
            "memory per idle connection: {} B, tokio-ct {} B, 1/{} of it (≤ 128 B and ≤ 1/50)",
            plain(memory),
            plain(tokio_memory),
            plain(fraction)
        ),
    );
    let beside = netgrace(BESIDE_RATIO);
    line(
        beside.map(|b| b >= 0.9),
        format!(
            "pingpong × 10 beside 10 000 idle ÷ alone: {} (≥ 0.9×)",
            times(beside)
        ),
    );
    let mb = ratio(&throughput(STREAM));
    let cpu_mb = ratio(&cpu_per_mb(STREAM));
    line(
        mb.zip(cpu_mb).map(|(mb, cpu)| mb >= 1.0 && cpu <= 0.95),
        format!(
            "stream 64 KiB × 10: MB/s {} tokio-ct (≥ 1.0×), CPU per MB {} (≤ 0.95×)",
            times(mb),
            times(cpu_mb)
        ),
    );
    let shutdown = netgrace(SHUTDOWN);
    let unclean = netgrace(UNCLEAN);
    line(
        shutdown
            .zip(unclean)
            .map(|(ms, bad)| ms <= 150.0 && bad == 0.0),
        format!(
            "shutdown with 10 000 idle: {} ms (≤ 150), clients without a clean EOF: {} (0)",
            plain(shutdown),
            plain(unclean)
        ),
    );
    let idle_stop = netgrace(IDLE_STOP);
    line(
        idle_stop.map(|us| us <= 1000.0),
        format!(
            "shutdown() to run() returning, no connections: {} µs, median of 100 (≤ 1 ms)",
            plain(idle_stop)
        ),
    );
    storm_targets(table, &mut out);
    out
}

/// The storm targets: each burst at most as long as tokio-ct's, and the two smaller ones without
/// a single listen overflow. A burst with failed clients is never met: a client refused at once
/// would make the burst short.
fn storm_targets(table: &Table, out: &mut String) {
    let _ = writeln!(
        out,
        "\nTargets (connection storm), netgrace against tokio-ct; ListenOverflows is \
         system-wide, the median over rounds:\n"
    );
    for burst in &BURSTS {
        let n = burst.clients;
        let ratio = table.ratio(&storm::all_echoed(n), Netgrace, TokioCt);
        let failed = table.median(&storm::failed(n), Netgrace);
        let overflows = table.median(&storm::overflows(n), Netgrace);
        let met = (ratio.zip(failed).zip(overflows))
            .map(|((r, f), o)| r <= 1.0 && f == 0.0 && (!burst.no_overflows || o == 0.0));
        let flags = match burst.netgrace_flags {
            [] => "default flags".to_string(),
            flags => flags.join(" "),
        };
        let overflow_note = if burst.no_overflows { " (0)" } else { "" };
        let _ = writeln!(
            out,
            "- **{}**: storm {} ({flags}): time to all echoed {} tokio-ct (≤ 1.0×), \
             ListenOverflows {}{overflow_note}, failed clients {} (0)",
            verdict(met),
            storm::thousands(n),
            times(ratio),
            plain(overflows),
            plain(failed),
        );
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT MET",
        None => "not measured",
    }
}

fn times(ratio: Option<f64>) -> String {
    ratio.map_or("–".into(), |r| format!("{r:.2}×"))
}

fn plain(value: Option<f64>) -> String {
    value.map_or("–".into(), crate::table::number)
}
