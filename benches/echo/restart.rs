//! Restarts under load: client threads connect, echo 64 bytes and close as fast as the server
//! answers (`common/cycles.rs`) while netgrace's master gets a SIGHUP every second, ten times.
//! tokio has no restart: the baseline is netgrace without restarts, in the same round, the two
//! drives taking turns at going first. A restart's window runs from its SIGHUP until the master
//! reaped the last old worker; a cycle that overlaps one is *across* a restart, one more than
//! `STEADY_MARGIN` away from all is *steady*.

use std::{io, time::Duration, time::Instant};

use crate::common::cycles::{Cycle, Cycles, Outcome::Echoed};
use crate::common::process::{self, Kind, Plan, ServerProcess};
use crate::common::table::{median, Better, Table};

/// Restarts per drive, one a second, under client threads. Judgment call: enough threads that a
/// restart always meets some cycles, few enough that the one load core is not mostly switching.
const RESTARTS: u32 = 10;
const THREADS: usize = 4;
const INTERVAL: Duration = Duration::from_secs(1);
/// Judgment call: twice the target of 50 ms; it leaves most of each second as steady state.
const STEADY_MARGIN: Duration = Duration::from_millis(100);

/// A restart's window: from its SIGHUP until the master reaped the last old worker.
type Window = [Duration; 2];
/// A drive's cycles, its restarts' windows, and the phases in ms of those that completed.
type Drive = (Vec<Cycle>, Vec<Window>, Vec<[f64; 2]>);

pub const FAILED: &str = "restart every 1 s × 10: failed cycles";
pub const NOT_COMPLETED: &str = "restart every 1 s × 10: restarts not completed";
pub const ACROSS_WORST: &str = "restart every 1 s × 10: worst cycle across a restart, ms";

pub fn measure(table: &mut Table, plan: &Plan) -> io::Result<()> {
    for round in 1..=plan.rounds {
        // Alternating, so that a machine getting busier or quieter favours neither drive.
        let mut drives = Vec::new();
        for restarts in [[0, RESTARTS], [RESTARTS, 0]][round % 2] {
            drives.push(drive(restarts)?);
        }
        // The baseline has no window.
        drives.sort_by_key(|(_, windows, _)| windows.len());
        let [(base, _, _), (cycles, windows, phases)] = &drives[..] else {
            unreachable!("two drives ran")
        };
        let across = latencies(cycles, windows, Duration::ZERO, true);
        let steady = latencies(cycles, windows, STEADY_MARGIN, false);
        let failed = cycles.iter().filter(|c| c.outcome != Echoed).count();
        let ms = |phase: usize| median(&phases.iter().map(|p| p[phase]).collect::<Vec<_>>());
        let secs = (INTERVAL * RESTARTS).as_secs_f64();
        use Better::{Higher, Lower};
        #[rustfmt::skip]
        let rows = [
            ("cycles/s", Higher, cycles.len() as f64 / secs),
            ("baseline cycles/s (no restart)", Higher, base.len() as f64 / secs),
            ("failed cycles", Lower, failed as f64),
            ("restarts not completed", Lower, RESTARTS as f64 - phases.len() as f64),
            ("steady p99 ms", Lower, p99(&steady)),
            ("across p99 ms", Lower, p99(&across)),
            ("worst cycle across a restart, ms", Lower, in_ms(across.last())),
            ("baseline p99 ms", Lower, p99(&latencies(base, &[], STEADY_MARGIN, false))),
            ("SIGHUP until new workers serve, ms (median)", Lower, ms(0).unwrap_or(f64::NAN)),
            ("SIGHUP until old workers exited, ms (median)", Lower, ms(1).unwrap_or(f64::NAN)),
        ];
        let mut line = Vec::new();
        for (what, better, value) in rows {
            let row = format!("restart every 1 s × 10: {what}");
            table.add(&row, better, Kind::Netgrace, value);
            line.push(format!("{what} {value:.2}"));
        }
        eprintln!("restart round {round}  {}", line.join(", "));
    }
    Ok(())
}

/// One drive against a fresh netgrace: `THREADS` clients for `RESTARTS` intervals, `restarts`
/// SIGHUPs from half an interval in (steady state before the first and after the last).
fn drive(restarts: u32) -> io::Result<Drive> {
    let mut server = ServerProcess::start(Kind::Netgrace, process::pinned(), &[])?;
    let epoch = Instant::now();
    let cycles = Cycles::start(server.addr, THREADS, epoch)?;
    let (mut windows, mut phases) = (Vec::new(), Vec::new());
    for k in 0..restarts {
        let at = epoch + INTERVAL * k + INTERVAL / 2;
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let start = epoch.elapsed();
        let restart = server.restart()?;
        windows.push([start, start + restart.exited]);
        match restart.failure {
            Some(failure) => eprintln!("  restart failed: {failure}"),
            None => phases.push([restart.serving, restart.exited].map(|d| in_ms(Some(&d)))),
        }
    }
    std::thread::sleep((epoch + INTERVAL * RESTARTS).saturating_duration_since(Instant::now()));
    let cycles = cycles.finish()?;
    server.stop()?;
    Ok((cycles, windows, phases))
}

/// Sorted latencies of the echoed cycles within `margin` of a window (`near`), or the others.
fn latencies(cycles: &[Cycle], windows: &[Window], margin: Duration, near: bool) -> Vec<Duration> {
    let overlaps = |c: &Cycle, [s, e]: &Window| c.start <= *e + margin && c.end + margin >= *s;
    let echoed = cycles.iter().filter(|c| c.outcome == Echoed);
    let chosen = echoed.filter(|c| windows.iter().any(|w| overlaps(c, w)) == near);
    let mut sorted: Vec<_> = chosen.map(|c| c.end - c.start).collect();
    sorted.sort_unstable();
    sorted
}

fn in_ms(d: Option<&Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// The nearest-rank 99th percentile of sorted latencies, in ms.
fn p99(sorted: &[Duration]) -> f64 {
    in_ms(sorted.get((sorted.len() * 99).div_ceil(100).max(1) - 1))
}
