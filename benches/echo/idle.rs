//! Idle connections: pingpong × 10 alone, 10 000 idle connections (memory), pingpong × 10 beside
//! them, then SIGTERM with them open: the time until the server is reaped, and the clean EOFs.

use std::{io, time::Duration};

use crate::common::load::{timed, Load, Shape};
use crate::common::process::{self, Exit, Plan, ServerProcess};
use crate::common::{log, table::Better, table::Table};

const IDLE: usize = 10_000;
const ACTIVE: Shape = Shape::pingpong(10);

pub const BESIDE_RATIO: &str = "pingpong 64 B × 10: beside idle ÷ alone";
pub const MEMORY: &str = "memory per idle connection (10 000), bytes";
pub const SHUTDOWN: &str = "shutdown with 10 000 idle: signal to exit, ms";
pub const UNCLEAN: &str = "shutdown with 10 000 idle: clients without a clean EOF";

pub fn measure(table: &mut Table, plan: &Plan) -> io::Result<()> {
    for (round, kind) in plan.turns() {
        let server = ServerProcess::start(kind, process::pinned(), process::NETGRACE_FLAGS)?;
        let (alone, _) = timed(&server, ACTIVE, plan.secs)?;
        let rss_before = server.rss_bytes()? as f64;
        let mut idle = Load::connect(server.addr, Shape::pingpong(IDLE))?;
        let memory = (server.rss_bytes()? as f64 - rss_before) / IDLE as f64;
        let (beside, _) = timed(&server, ACTIVE, plan.secs)?;
        let (signalled, waiter) = server.terminate()?;
        let [eof, reset, open] = idle.await_close(Duration::from_secs(10))?;
        let exit = Exit::checked(kind.name(), waiter)?;
        let shutdown_ms = (exit.at - signalled).as_secs_f64() * 1e3;
        let unclean = (reset + open) as f64;
        let ratio = beside.per_sec() / alone.per_sec();
        #[rustfmt::skip]
        let rows = [
            ("pingpong 64 B × 10: messages/s", Better::Higher, alone.per_sec()),
            ("pingpong 64 B × 10 beside 10 000 idle: messages/s", Better::Higher, beside.per_sec()),
            (BESIDE_RATIO, Better::Higher, ratio),
            (MEMORY, Better::Lower, memory),
            (SHUTDOWN, Better::Lower, shutdown_ms),
            (UNCLEAN, Better::Lower, unclean),
        ];
        for (row, better, value) in rows {
            table.add(row, better, kind, value);
        }
        // netgrace's own figure, from the request to the last close (the master's line).
        let master = exit
            .log
            .lines()
            .rev()
            .find(|l| l.contains("shutdown complete"));
        let own = master.and_then(|l| log::field::<f64>(l, "shutdown_ms"));
        let own = own.map_or("–".into(), |ms| format!("{ms:.1} ms"));
        let name = kind.name();
        eprintln!(
            "idle 10 000 round {round}  {name:<9} {memory:>6.0} B/conn  shutdown {shutdown_ms:>6.1} \
             ms (its own: {own}; {eof} EOF, {unclean} not)  beside ÷ alone {ratio:.2}"
        );
    }
    Ok(())
}
