//! System calls per message in pingpong × 50, on the serving processes. The `epoll_wait` share
//! (one over the events a wait returns) depends on how busy the server is: see the median.

use std::io;

use crate::common::load::{Load, Shape, Stop, WARMUP};
use crate::common::process::{self, Plan, ServerProcess};
use crate::common::{syscalls, syscalls::Tracer, table::Better, table::Table};

const COUNTED_MESSAGES: u64 = 20_000;
pub const SYSCALLS: &str = "syscalls per message (pingpong 64 B × 50)";

pub fn measure(table: &mut Table, plan: &Plan) -> io::Result<()> {
    if !syscalls::available() {
        eprintln!("syscalls: perf cannot count syscalls here; skipped");
        return Ok(());
    }
    for (round, kind) in plan.turns() {
        let server = ServerProcess::start(kind, process::pinned(), process::NETGRACE_FLAGS)?;
        let mut load = Load::connect(server.addr, Shape::pingpong(50))?;
        load.drive(Stop::After(WARMUP))?;
        // Attached and detached while the load is quiet: only the counted messages count.
        let tracer = Tracer::attach(&server.workers)?;
        let stats = load.drive(Stop::Messages(COUNTED_MESSAGES))?;
        let (total, by_name) = tracer.finish()?;
        drop(load);
        server.stop()?;
        let per = |calls: u64| calls as f64 / stats.messages as f64;
        table.add(SYSCALLS, Better::Lower, kind, per(total));
        let calls = by_name
            .iter()
            .map(|(name, n)| format!("{name} {:.3}", per(*n)));
        let calls: Vec<String> = calls.collect();
        let (name, total, calls) = (kind.name(), per(total), calls.join(", "));
        eprintln!("syscalls round {round}  {name:<9} {total:.3} per message: {calls}");
    }
    Ok(())
}
