//! The connection storm: N clients connect at once to a fresh server, as after a restart, each
//! sending one byte and waiting for its echo ([`Load::burst`]). A full accept queue drops the SYN
//! (or the handshake's last ACK) and the client retries after 1 s (RFC 6298 §2.1): every drop
//! shows as a client slower than `SLOW`.

use std::{io, time::Duration, time::Instant};

use crate::common::load::{Load, Stop};
use crate::common::process::{self, Plan, ServerProcess};
use crate::common::{procfs::tcp_counter, table::Better, table::Table};

/// The bursts and netgrace's flags: 1 000 fits the defaults; 10 000 asks for a deeper backlog,
/// which the kernel silently caps at `net.core.somaxconn` (4 096 here).
const BURSTS: [(usize, &[&str]); 3] = [
    (1_000, &[]),
    (3_000, &["--max-connections", "4000"]),
    (
        10_000,
        &["--max-connections", "12000", "--backlog", "16384"],
    ),
];

/// Slower than this, a client lost a SYN: without, loopback echoes in milliseconds.
const SLOW: Duration = Duration::from_millis(900);

/// A row of burst `n`: `storm 1 000: ...`.
pub fn row(n: usize, what: &str) -> String {
    format!("storm {} {:03}: {what}", n / 1000, n % 1000)
}
pub const ALL_ECHOED: &str = "ms until all echoed";
pub const FAILED: &str = "clients failed (refused, reset, timed out)";
pub const OVERFLOWS: &str = "ListenOverflows (system-wide counter)";

pub fn measure(table: &mut Table, plan: &Plan) -> io::Result<()> {
    // The largest burst, and the poll, pipes and standard streams.
    process::grow_descriptor_table(BURSTS[2].0 + 64)?;
    eprintln!("storm: ListenOverflows is system-wide: anything else on the machine counts too");
    for (n, flags) in BURSTS {
        for (round, kind) in plan.turns() {
            let server = ServerProcess::start(kind, process::pinned(), flags)?;
            let before = tcp_counter("ListenOverflows")?;
            let started = Instant::now();
            let mut load = Load::burst(server.addr, n)?;
            let issued = started.elapsed();
            let stats = load.drive(Stop::Messages(0))?;
            let all = started.elapsed();
            let overflowed = tcp_counter("ListenOverflows")?.saturating_sub(before);
            let (failures, first) = load.failures();
            let note = format!(" (first: {first})");
            let first = if failures > 0 { note } else { String::new() };
            // The clients close: the server drains nothing but FINs.
            drop(load);
            server.stop()?;
            let latency = &stats.latency;
            let slowest = latency.max() as f64 / 1e6;
            let slow = latency.count_between(SLOW.as_nanos() as u64, u64::MAX);
            let slow_row = format!("clients slower than {SLOW:?}");
            let rows = [
                (ALL_ECHOED, all.as_secs_f64() * 1e3),
                ("slowest client, ms", slowest),
                (&slow_row, slow as f64),
                (FAILED, failures as f64),
                (OVERFLOWS, overflowed as f64),
            ];
            for (what, value) in rows {
                table.add(&row(n, what), Better::Lower, kind, value);
            }
            let name = kind.name();
            eprintln!(
                "storm {n:<6} round {round}  {name:<9} all echoed in {all:.1?} (connects issued in \
                 {issued:.1?}), slowest {slowest:.1} ms, {slow} over {SLOW:?}, {failures} \
                 failed{first}, ListenOverflows +{overflowed}"
            );
        }
    }
    Ok(())
}
