//! The connection storm: N clients connect at once to a server that has just started, as they do
//! when a server comes back after a restart; each sends one byte and waits for its echo.
//!
//! ```text
//! cargo bench --bench echo -- compare --only storm [--rounds 5]   # 1 000, 3 000, 10 000 × 3 servers
//! cargo bench --bench echo -- storm -c 3000 --spawn tokio-ct       # one burst, alone
//! ```
//!
//! One thread issues all N nonblocking connects in a tight loop, then drives every client with
//! one mio `Poll` until each has its echo or has failed, or `STORM_TIMEOUT` has passed
//! (`storm/clients.rs`). On
//! loopback the kernel completes a handshake as soon as the SYN arrives, so the server's accept
//! queue fills as fast as this loop connects, and the server must empty it faster. When the
//! queue is full, the kernel drops the SYN (or the handshake's last ACK) and counts one
//! `ListenOverflows`; the client retransmits after the initial RTO of 1 s (RFC 6298 §2.1, the
//! kernel's `TCP_TIMEOUT_INIT`). So every drop shows as a client slower than `SLOW`.
//!
//! Every burst meets a fresh server process: the case measured is the first burst a server ever
//! sees, with nothing accepted yet and its accept loop cold, not a server already warm.

mod clients;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

pub use self::clients::{Storm, SLOW};
use crate::process::{self, Kind, ServerProcess};
use crate::table::{Better, Table};

/// Longest a burst may take. A dropped SYN is retried after 1, 3, 7 and 15 s (the RTO doubles),
/// so this leaves room for four retries; a client still waiting then counts as timed out.
pub const STORM_TIMEOUT: Duration = Duration::from_secs(30);

/// Descriptors beside the clients' when the table is grown ahead of a burst: the poll, pipes,
/// the standard streams.
const DESCRIPTOR_SPARE: usize = 64;

/// One burst of the `compare` storm: how many clients, and netgrace's flags for it.
pub struct Burst {
    pub clients: usize,
    /// After `-l 127.0.0.1:0`. 1 000 fits the defaults (1 024 connections); 3 000 and 10 000
    /// need room, and 10 000 a deeper listen backlog than the default. The kernel caps any
    /// backlog at `net.core.somaxconn` (4 096 on current kernels), silently.
    pub netgrace_flags: &'static [&'static str],
    /// Whether the storm target also asks for zero listen overflows. Not at 10 000: the kernel
    /// caps any backlog at `net.core.somaxconn`, below that burst.
    pub no_overflows: bool,
}

pub const BURSTS: [Burst; 3] = [
    Burst {
        clients: 1_000,
        netgrace_flags: &[],
        no_overflows: true,
    },
    Burst {
        clients: 3_000,
        netgrace_flags: &["--max-connections", "4000"],
        no_overflows: true,
    },
    Burst {
        clients: 10_000,
        netgrace_flags: &["--max-connections", "12000", "--backlog", "16384"],
        no_overflows: false,
    },
];

// Row labels shared by the table, the targets and the chart.
pub fn all_echoed(clients: usize) -> String {
    format!("storm {}: ms until all echoed", thousands(clients))
}
pub fn slowest(clients: usize) -> String {
    let n = thousands(clients);
    format!("storm {n}: slowest client, ms (median of each round's slowest)")
}
pub fn slow(clients: usize) -> String {
    let (n, ms) = (thousands(clients), SLOW.as_millis());
    format!("storm {n}: clients slower than {ms} ms")
}
pub fn failed(clients: usize) -> String {
    format!(
        "storm {}: clients failed (refused, reset, timed out)",
        thousands(clients)
    )
}
pub fn overflows(clients: usize) -> String {
    let n = thousands(clients);
    format!("storm {n}: ListenOverflows (system-wide counter)")
}

/// `1 000` for 1000: the labels' spelling of counts (a plain space, as in "10 000 idle").
pub fn thousands(n: usize) -> String {
    match n {
        0..=999 => n.to_string(),
        _ => format!("{} {:03}", n / 1000, n % 1000),
    }
}

/// Every burst, each server once per round, the servers taking turns as in the other scenarios.
pub fn measure(table: &mut Table, rounds: usize) -> io::Result<()> {
    let largest = BURSTS.iter().map(|b| b.clients).max().unwrap_or(0);
    process::grow_descriptor_table(largest + DESCRIPTOR_SPARE)?;
    eprintln!(
        "storm: a fresh server per burst; ListenOverflows is the system-wide TcpExt counter of \
         /proc/net/netstat over the burst, so anything else on the machine counts too"
    );
    for burst in &BURSTS {
        for round in 1..=rounds {
            for kind in process::turn_order(Kind::ALL, round) {
                measure_burst(table, kind, burst, round)?;
            }
        }
    }
    Ok(())
}

fn measure_burst(table: &mut Table, kind: Kind, burst: &Burst, round: usize) -> io::Result<()> {
    let flags = burst.netgrace_flags;
    let server = ServerProcess::start_with_flags(kind, process::pinning(), flags)?;
    let before = listen_overflows()?;
    let outcome = Storm::connect(server.addr, burst.clients)?.drive(STORM_TIMEOUT)?;
    let overflowed = listen_overflows()?.saturating_sub(before);
    // The clients have closed (the storm is dropped): the server drains nothing but FINs.
    server.stop()?;

    let n = burst.clients;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    table.add(&all_echoed(n), Better::Lower, kind, ms(outcome.elapsed));
    table.add(&slowest(n), Better::Lower, kind, ms(outcome.slowest()));
    table.add(&slow(n), Better::Lower, kind, outcome.slow() as f64);
    table.add(
        &failed(n),
        Better::Lower,
        kind,
        outcome.failures.total() as f64,
    );
    table.add(&overflows(n), Better::Lower, kind, overflowed as f64);
    eprintln!(
        "storm {:<6} round {round}  {:<9} {}  ListenOverflows +{overflowed}",
        thousands(n),
        kind.name(),
        outcome.summary(),
    );
    Ok(())
}

/// The `storm` mode: one burst against a server already listening, then a summary.
pub fn standalone(addr: SocketAddr, clients: usize) -> io::Result<()> {
    process::grow_descriptor_table(clients + DESCRIPTOR_SPARE)?;
    let before = listen_overflows()?;
    let outcome = Storm::connect(addr, clients)?.drive(STORM_TIMEOUT)?;
    let overflowed = listen_overflows()?.saturating_sub(before);
    println!(
        "{addr}: {clients} simultaneous connects: {}; ListenOverflows +{overflowed} (system-wide)",
        outcome.summary()
    );
    Ok(())
}

/// The kernel's `TcpExt: ListenOverflows` counter: connections dropped because an accept queue
/// was full, for every listener of the network namespace, not only the server under test.
pub fn listen_overflows() -> io::Result<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat")?;
    // Lines come in pairs: `TcpExt: Name1 Name2 …`, then `TcpExt: value1 value2 …`.
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (tcp_ext.next(), tcp_ext.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no TcpExt in /proc/net/netstat",
        ));
    };
    let position = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows");
    position
        .and_then(|i| values.split_whitespace().nth(i))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no ListenOverflows"))
}
