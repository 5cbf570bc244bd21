//! Restarts under load: client threads connect, send 64 bytes, read the echo and close, as fast
//! as the server answers, while netgrace's master gets a SIGHUP every second, ten times; each
//! replaces the workers that serve with new ones.
//!
//! ```text
//! cargo bench --bench echo -- compare --only restart [--rounds 5]   # ~20 s a round
//! cargo bench --bench echo -- restart [-c 4] [-n 10]                 # one round, alone
//! ```
//!
//! A round is two drives of the same length, each against a fresh netgrace pinned to core 0 (the
//! clients run on core 1): the baseline, with no restart, and the restarts, taking turns at going
//! first. A restart's window runs from its SIGHUP until every old worker has exited (as the
//! master logs it: `restart/master.rs`). A cycle (connect to the end of its echo) that overlaps a window is
//! *across* a restart; one that starts and ends more than `STEADY_MARGIN` away from every window
//! is *steady*; the few in between are neither. tokio has no restart, so there is no peer: the baseline is the cost
//! without restarts, from the same run, and the restart figures are given as ratios to it.

mod cycles;
mod master;
mod report;
mod timing;

use std::io;
use std::time::{Duration, Instant};

use self::cycles::{Cycles, Recorded};
use self::master::{Master, Phases, Restart};
use self::report::{add_rows, figures, report, round_line};
use crate::process;
use crate::table::Table;

/// Restarts per drive, and the time between them: every second for ten seconds.
pub const RESTARTS: usize = 10;
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Client threads, so cycles in flight. Judgment call: more than one, so a restart always meets
/// some connections mid-cycle, and few enough that the one load core is not mostly switching.
pub const THREADS: usize = 4;
/// How far from a restart's window a cycle must stay to count as steady. Judgment call: twice the
/// target of 50 ms; it leaves about two thirds of each second as steady state, and a cycle
/// delayed by the restart itself overlaps the window and counts as across it anyway.
const STEADY_MARGIN: Duration = Duration::from_millis(100);
/// The target for the worst cycle across a restart.
const WORST_ACROSS_TARGET: Duration = Duration::from_millis(50);
/// Longest wait for "restart complete" after a SIGHUP: past netgrace's own `--restart-timeout`
/// (10 s), so a stuck new worker shows as netgrace's "restart failed" line, not as our timeout.
const SERVING_TIMEOUT: Duration = Duration::from_secs(15);

/// What a round does: client threads, restarts, and the time between two restarts.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub threads: usize,
    pub restarts: usize,
    pub interval: Duration,
}

impl Plan {
    /// A SIGHUP every second for ten seconds, `THREADS` clients.
    pub const EVERY_SECOND: Plan = Plan {
        threads: THREADS,
        restarts: RESTARTS,
        interval: INTERVAL,
    };
}

/// One round: the baseline drive and the restart drive.
struct Round {
    plan: Plan,
    baseline: Recorded,
    drive: Duration,
    restarted: Recorded,
    /// Each restart's window, from the restart drive's start.
    windows: Vec<(Duration, Duration)>,
    /// The phases of each completed restart.
    done: Vec<Phases>,
    failures: Vec<String>,
    grace_waits: usize,
    /// ListenOverflows and ListenDrops over the restart drive (system-wide counters).
    overflows: u64,
    drops: u64,
}

/// Runs `restarts` restarts `threads` deep, `rounds` times, adding netgrace's rows to `table`;
/// returns the report that `compare` prints after its targets.
pub fn measure(table: &mut Table, rounds: usize) -> io::Result<String> {
    eprintln!("restart: no peer (tokio has no restart); the baseline is netgrace without restarts");
    let mut all = Vec::with_capacity(rounds);
    for number in 1..=rounds {
        let restarts_first = number % 2 == 0;
        let round = run_round(Plan::EVERY_SECOND, process::pinning(), restarts_first)?;
        let order = if restarts_first {
            "restarts first"
        } else {
            "baseline first"
        };
        eprintln!("restart round {number} ({order})  {}", round_line(&round));
        add_rows(table, &round);
        all.push(round);
    }
    Ok(report(&all))
}

/// The `restart` mode: one round, then the report.
pub fn standalone(plan: Plan) -> io::Result<()> {
    if process::pinning().is_some() {
        process::pin_current_thread(process::LOAD_CPU)?;
    }
    let round = run_round(plan, process::pinning(), false)?;
    eprintln!("restart  {}", round_line(&round));
    println!("{}", report(&[round]));
    Ok(())
}

/// The smoke check: one short round, unpinned; `Err` unless every restart completed and every
/// cycle was echoed. Latency is not checked (a debug build, a shared CI machine).
pub fn smoke(plan: Plan) -> io::Result<String> {
    let round = run_round(plan, None, false)?;
    let f = figures(&round.restarted.cycles, &round.windows);
    let line = round_line(&round);
    if round.done.len() != plan.restarts || f.failed() > 0 || f.cycles == 0 {
        return Err(io::Error::other(format!(
            "{line}; {}",
            round.failures.join("; ")
        )));
    }
    Ok(line)
}

/// A baseline drive and a restart drive, each against a fresh netgrace pinned to `cpu`; the
/// baseline first unless `restarts_first`. `compare` alternates the order from round to round,
/// so that a machine getting busier or quieter during a round does not always favour the same
/// drive (the machine is shared: see docs/benchmarks.md).
fn run_round(plan: Plan, cpu: Option<usize>, restarts_first: bool) -> io::Result<Round> {
    if restarts_first {
        let mut round = restart_drive(plan, cpu)?;
        round.baseline = baseline_drive(plan, cpu)?;
        Ok(round)
    } else {
        let baseline = baseline_drive(plan, cpu)?;
        let mut round = restart_drive(plan, cpu)?;
        round.baseline = baseline;
        Ok(round)
    }
}

/// The drive's length: one interval per restart.
fn drive_length(plan: Plan) -> io::Result<Duration> {
    let restarts = u32::try_from(plan.restarts).map_err(|_| io::ErrorKind::InvalidInput)?;
    Ok(plan.interval * restarts)
}

/// The workload against a netgrace that is never restarted.
fn baseline_drive(plan: Plan, cpu: Option<usize>) -> io::Result<Recorded> {
    let master = Master::start(cpu, &[])?;
    let cycles = Cycles::start(master.addr, plan.threads, Instant::now())?;
    std::thread::sleep(drive_length(plan)?);
    let baseline = cycles.finish()?;
    master.stop()?;
    Ok(baseline)
}

/// The workload with a SIGHUP every interval, half an interval after the drive's start and
/// then after each restart: steady state before the first restart and after the last. The
/// round's baseline is left empty.
fn restart_drive(plan: Plan, cpu: Option<usize>) -> io::Result<Round> {
    let drive = drive_length(plan)?;
    let mut master = Master::start(cpu, &[])?;
    let before = listen_counters()?;
    let epoch = Instant::now();
    let cycles = Cycles::start(master.addr, plan.threads, epoch)?;
    let empty = || Recorded {
        cycles: Vec::new(),
        first_other: None,
    };
    let mut round = Round {
        plan,
        baseline: empty(),
        drive,
        restarted: empty(),
        windows: Vec::new(),
        done: Vec::new(),
        failures: Vec::new(),
        grace_waits: 0,
        overflows: 0,
        drops: 0,
    };
    for k in 0..plan.restarts {
        let k = u32::try_from(k).unwrap_or(u32::MAX);
        let at = epoch + plan.interval * k + plan.interval / 2;
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let start = epoch.elapsed();
        match master.restart(SERVING_TIMEOUT)? {
            Restart::Done { phases, statuses } => {
                for status in statuses.iter().filter(|s| *s != "exit status: 0") {
                    round.failures.push(format!("old worker: {status}"));
                }
                round.windows.push((start, start + phases.exited));
                round.done.push(phases);
            }
            Restart::Failed { after, line } => {
                round.windows.push((start, start + after));
                round.failures.push(line);
            }
        }
    }
    std::thread::sleep((epoch + drive).saturating_duration_since(Instant::now()));
    round.restarted = cycles.finish()?;
    let after = listen_counters()?;
    round.overflows = after.0.saturating_sub(before.0);
    round.drops = after.1.saturating_sub(before.1);
    master.read_pending();
    round.grace_waits = master.grace_waits;
    master.stop()?;
    Ok(round)
}

/// `TcpExt: ListenOverflows` and `ListenDrops` of `/proc/net/netstat` (system-wide).
fn listen_counters() -> io::Result<(u64, u64)> {
    let netstat = std::fs::read_to_string("/proc/net/netstat")?;
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (tcp_ext.next(), tcp_ext.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no TcpExt"));
    };
    let value = |name: &str| {
        let at = names.split_whitespace().position(|n| n == name)?;
        values.split_whitespace().nth(at)?.parse().ok()
    };
    match (value("ListenOverflows"), value("ListenDrops")) {
        (Some(overflows), Some(drops)) => Ok((overflows, drops)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "no ListenDrops")),
    }
}
