//! Slow readers (`common/readers.rs`): ten clients that write without pause and read 4 KiB a
//! millisecond set the pace, so the figure is server CPU per MB echoed. With `max_buffer` above
//! what a writable event frees (the 1 MiB variant), netgrace's pending echo stays full and each
//! flush is partial; at the default 64 KiB each flush empties it.

use std::{io, time::Duration};

use crate::common::table::{cpu_per_mb, throughput, Better, Table};
use crate::common::{process, process::Plan, process::ServerProcess, readers::SlowReaders};

/// Fills the buffers between each client and the server before the timed window.
const WARMUP: Duration = Duration::from_millis(500);

/// Each variant and netgrace's flags (the tokio peers take none).
const VARIANTS: [(&str, &[&str]); 2] = [
    ("slow readers 10 × 4 KiB/ms", &[]),
    (
        "slow readers 10 × 4 KiB/ms, max_buffer 1 MiB",
        &["--max-buffer", "1048576"],
    ),
];

pub fn measure(table: &mut Table, plan: &Plan) -> io::Result<()> {
    for (name, flags) in VARIANTS {
        for (round, kind) in plan.turns() {
            let server = ServerProcess::start(kind, process::pinned(), flags)?;
            let mut readers = SlowReaders::connect(server.addr, 10)?;
            readers.drive(WARMUP)?;
            let before = server.cpu_time()?;
            let mb = readers.drive(plan.secs)? as f64 / 1e6;
            let cpu = server.cpu_time()? - before;
            server.stop()?;
            let per_mb = cpu.as_secs_f64() * 1e6 / mb;
            let rate = mb / plan.secs.as_secs_f64();
            table.add(&cpu_per_mb(name), Better::Lower, kind, per_mb);
            table.add(&throughput(name), Better::Higher, kind, rate);
            let server = kind.name();
            eprintln!("{name} round {round}  {server:<9} {rate:.1} MB/s, {per_mb:.0} µs/MB");
        }
    }
    Ok(())
}
