//! What a restart round prints: the progress lines, the table's rows and the report with the
//! target; cycles sorted into steady and across a restart (see `restart.rs`).

use std::fmt::Write as _;
use std::time::Duration;

use super::cycles::{Cycle, Outcome};
use super::master::Phases;
use super::{Plan, Round, INTERVAL, RESTARTS, STEADY_MARGIN, THREADS, WORST_ACROSS_TARGET};
use crate::process::Kind;
use crate::table::{Better, Table};

/// The figures of one drive's cycles.
pub(super) struct Figures {
    pub(super) cycles: usize,
    refused: usize,
    reset: usize,
    wrong: usize,
    eof: usize,
    timed_out: usize,
    other: usize,
    steady: Latencies,
    across: Latencies,
}

impl Figures {
    /// Cycles that did not get their whole echo, right, in time.
    pub(super) fn failed(&self) -> usize {
        self.refused + self.reset + self.wrong + self.eof + self.timed_out + self.other
    }
}

/// Connect-plus-echo latencies of the echoed cycles of one kind.
struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    fn new(cycles: impl Iterator<Item = Duration>) -> Latencies {
        let mut sorted: Vec<Duration> = cycles.collect();
        sorted.sort_unstable();
        Latencies { sorted }
    }

    /// Nearest rank; `None` without samples.
    fn percentile(&self, p: f64) -> Option<Duration> {
        let rank = (p / 100.0 * self.sorted.len() as f64).ceil() as usize;
        self.sorted.get(rank.max(1) - 1).copied()
    }

    fn worst(&self) -> Option<Duration> {
        self.sorted.last().copied()
    }
}

pub(super) fn figures(cycles: &[Cycle], windows: &[(Duration, Duration)]) -> Figures {
    let count = |outcome: Outcome| cycles.iter().filter(|c| c.outcome == outcome).count();
    let overlaps = |c: &Cycle, margin: Duration| {
        (windows.iter()).any(|(start, end)| c.start <= *end + margin && c.end + margin >= *start)
    };
    let echoed = || cycles.iter().filter(|c| c.outcome == Outcome::Echoed);
    Figures {
        cycles: cycles.len(),
        refused: count(Outcome::Refused),
        reset: count(Outcome::Reset),
        wrong: count(Outcome::PartialOrWrong),
        eof: count(Outcome::EofWithoutEcho),
        timed_out: count(Outcome::TimedOut),
        other: count(Outcome::Other),
        steady: Latencies::new(
            echoed()
                .filter(|c| !overlaps(c, STEADY_MARGIN))
                .map(Cycle::latency),
        ),
        across: Latencies::new(
            echoed()
                .filter(|c| overlaps(c, Duration::ZERO))
                .map(Cycle::latency),
        ),
    }
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// A round's progress lines: what the clients saw, then what the restarts took.
pub(super) fn round_line(round: &Round) -> String {
    let base = figures(&round.baseline.cycles, &[]);
    let f = figures(&round.restarted.cycles, &round.windows);
    let secs = round.drive.as_secs_f64();
    let other =
        (round.restarted.first_other.as_deref()).map_or(String::new(), |e| format!(" ({e})"));
    let clients = format!(
        "{} cycles ({:.0}/s; baseline {:.0}/s)  refused {} reset {} wrong {} EOF-without-echo {} \
         timed out {} other {}{other}  steady p99 {:.2} ms worst {:.2}  across p99 {:.2} ms \
         worst {:.2}  baseline p99 {:.2} ms worst {:.2}",
        f.cycles,
        f.cycles as f64 / secs,
        base.cycles as f64 / secs,
        f.refused,
        f.reset,
        f.wrong,
        f.eof,
        f.timed_out,
        f.other,
        ms(f.steady.percentile(99.0)),
        ms(f.steady.worst()),
        ms(f.across.percentile(99.0)),
        ms(f.across.worst()),
        ms(base.steady.percentile(99.0)),
        ms(base.steady.worst()),
    );
    let restarts = format!(
        "{}/{} restarts: {}; {}; grace waits {}; ListenOverflows +{} ListenDrops +{} \
         (system-wide)",
        round.done.len(),
        round.windows.len(),
        phases(&round.done),
        worst_across(round),
        round.grace_waits,
        round.overflows,
        round.drops,
    );
    format!("{clients}\n    {restarts}")
}

/// The restarts' phases: the median and the slowest restart, each phase from the SIGHUP.
fn phases(done: &[Phases]) -> String {
    let median =
        |get: fn(&Phases) -> Duration| ms(Latencies::new(done.iter().map(get)).percentile(50.0));
    let Some(slowest) = done.iter().max_by_key(|p| p.exited) else {
        return "no restart completed".to_string();
    };
    let logged = |ms: Option<i64>| ms.map_or("–".to_string(), |ms| ms.to_string());
    format!(
        "from SIGHUP, median: serving {:.1} ms, old exited {:.1}; slowest: new workers spawned \
         {:.1} ms, serving {:.1} (waiting for a CPU meanwhile: a new worker {:.1}, the master up \
         to {:.1}, an old worker's thread up to {:.1}), old exited {:.1}; netgrace's own clock: \
         spawned {}, serving {}, old exited {}",
        median(|p| p.serving),
        median(|p| p.exited),
        ms(slowest.spawned),
        ms(Some(slowest.serving)),
        ms(Some(slowest.waited)),
        ms(Some(slowest.master_waited)),
        ms(Some(slowest.old_waited)),
        ms(Some(slowest.exited)),
        logged(slowest.logged[0]),
        logged(slowest.logged[1]),
        logged(slowest.logged[2]),
    )
}

/// Where the slowest cycle across a restart fell: which restart, and when it started.
fn worst_across(round: &Round) -> String {
    let echoed = round
        .restarted
        .cycles
        .iter()
        .filter(|c| c.outcome == Outcome::Echoed);
    let across = echoed.filter_map(|c| {
        let k =
            (round.windows.iter()).position(|(start, end)| c.start <= *end && c.end >= *start)?;
        Some((c, k))
    });
    let Some((cycle, k)) = across.max_by_key(|(c, _)| c.latency()) else {
        return "no cycle across a restart".to_string();
    };
    let (signalled, exited) = round.windows[k];
    format!(
        "slowest across: {:.1} ms, started {:+.1} ms from SIGHUP {} (whose old workers exited \
         {:.1} ms after it)",
        ms(Some(cycle.latency())),
        (cycle.start.as_secs_f64() - signalled.as_secs_f64()) * 1e3,
        k + 1,
        ms(Some(exited - signalled)),
    )
}

/// A row of the table (netgrace's column only: there is no peer).
fn row(what: &str) -> String {
    let every = INTERVAL.as_secs();
    format!("restart every {every} s × {RESTARTS}, {THREADS} clients: {what}")
}

pub(super) fn add_rows(table: &mut Table, round: &Round) {
    let base = figures(&round.baseline.cycles, &[]);
    let f = figures(&round.restarted.cycles, &round.windows);
    let mut add = |what: &str, better: Better, value: f64| {
        table.add(&row(what), better, Kind::Netgrace, value);
    };
    let secs = round.drive.as_secs_f64();
    add("cycles/s", Better::Higher, f.cycles as f64 / secs);
    add(
        "baseline cycles/s (no restart)",
        Better::Higher,
        base.cycles as f64 / secs,
    );
    add("failed cycles", Better::Lower, f.failed() as f64);
    add(
        "steady p99 ms",
        Better::Lower,
        ms(f.steady.percentile(99.0)),
    );
    add(
        "across p99 ms",
        Better::Lower,
        ms(f.across.percentile(99.0)),
    );
    add("across worst ms", Better::Lower, ms(f.across.worst()));
    add(
        "baseline p99 ms",
        Better::Lower,
        ms(base.steady.percentile(99.0)),
    );
    add(
        "restarts completed",
        Better::Higher,
        round.done.len() as f64,
    );
}

/// The restart report: every round's counts summed, worst latencies the worst of any round,
/// p99s the median over rounds; ratios to the baseline; the targets, met or not.
pub(super) fn report(rounds: &[Round]) -> String {
    let mut out = String::new();
    let plan = rounds.first().map_or(Plan::EVERY_SECOND, |r| r.plan);
    let (threads, secs) = (plan.threads, plan.interval.as_secs_f64());
    let _ = writeln!(
        out,
        "Restart: a SIGHUP to the master every {secs} s, {} in all, {threads} client threads doing \
         connect → 64 B → echo → close; no peer (tokio has no restart): the baseline is netgrace \
         with no restart, in the same run. Steady = more than {} ms from any restart window \
         (SIGHUP to the old workers' exit); across = overlapping one. {} round(s):\n",
        plan.restarts,
        STEADY_MARGIN.as_millis(),
        rounds.len(),
    );
    let all: Vec<(Figures, Figures)> = (rounds.iter())
        .map(|r| {
            let f = figures(&r.restarted.cycles, &r.windows);
            (figures(&r.baseline.cycles, &[]), f)
        })
        .collect();
    let sum = |get: &dyn Fn(&Figures) -> usize| -> usize { all.iter().map(|(_, f)| get(f)).sum() };
    let median_ms = |get: &dyn Fn(&(Figures, Figures)) -> Option<Duration>| {
        let samples: Vec<f64> = all.iter().map(|pair| ms(get(pair))).collect();
        crate::table::median(&samples).unwrap_or(f64::NAN)
    };
    let worst =
        |get: &dyn Fn(&(Figures, Figures)) -> Option<Duration>| all.iter().filter_map(get).max();
    let restarts: usize = rounds.iter().map(|r| r.windows.len()).sum();
    let completed: usize = rounds.iter().map(|r| r.done.len()).sum();
    let done: Vec<Phases> = rounds.iter().flat_map(|r| r.done.iter().copied()).collect();
    let (refused, reset, eof) = (sum(&|f| f.refused), sum(&|f| f.reset), sum(&|f| f.eof));
    let (wrong, timed_out, other) = (sum(&|f| f.wrong), sum(&|f| f.timed_out), sum(&|f| f.other));
    let base_p99 = median_ms(&|(b, _)| b.steady.percentile(99.0));
    let steady_p99 = median_ms(&|(_, f)| f.steady.percentile(99.0));
    let across_p99 = median_ms(&|(_, f)| f.across.percentile(99.0));
    let steady_worst = worst(&|(_, f)| f.steady.worst());
    let across_worst = worst(&|(_, f)| f.across.worst());
    let base_worst = worst(&|(b, _)| b.steady.worst());
    let lines = [
        format!("restarts completed: {completed} of {restarts}"),
        format!(
            "cycles: {} ({} steady, {} across a restart); baseline {}",
            sum(&|f| f.cycles),
            sum(&|f| f.steady.sorted.len()),
            sum(&|f| f.across.sorted.len()),
            all.iter().map(|(b, _)| b.cycles).sum::<usize>(),
        ),
        format!(
            "refused {refused}, reset {reset}, partial or wrong echoes {wrong}, EOF without echo \
             {eof}, timed out {timed_out}, other {other}",
        ),
        format!(
            "steady state: p99 {steady_p99:.2} ms ({:.2}× the baseline's), worst {:.2} ms",
            steady_p99 / base_p99,
            ms(steady_worst)
        ),
        format!(
            "across restarts: p99 {across_p99:.2} ms ({:.2}× the baseline's), worst {:.2} ms \
             ({:.0}× the baseline's p99)",
            across_p99 / base_p99,
            ms(across_worst),
            ms(across_worst) / base_p99,
        ),
        format!(
            "baseline, no restart: p99 {base_p99:.2} ms, worst {:.2} ms",
            ms(base_worst)
        ),
        format!(
            "restarts {}; drains that waited for a client's first bytes: {}",
            phases(&done),
            rounds.iter().map(|r| r.grace_waits).sum::<usize>(),
        ),
    ];
    for line in lines {
        let _ = writeln!(out, "- {line}");
    }
    let met = completed == restarts
        && refused + reset + eof + wrong + timed_out + other == 0
        && across_worst.is_some_and(|w| w <= WORST_ACROSS_TARGET);
    let _ = writeln!(
        out,
        "\nTarget (no client hurt by a restart): **{}**: 0 refused ({refused}), 0 reset ({reset}), 0 EOF without \
         echo ({eof}), worst across a restart ≤ {} ms ({:.2}); also every restart completed, \
         and no wrong echo, timeout or client-side error",
        if met { "met" } else { "NOT MET" },
        WORST_ACROSS_TARGET.as_millis(),
        ms(across_worst),
    );
    out
}
