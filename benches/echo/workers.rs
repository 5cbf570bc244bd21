//! `compare --only workers`: netgrace with one and with two worker processes sharing the one
//! listening socket, beside tokio's multi-thread runtime, on every core.
//!
//! ```text
//! cargo bench --bench echo -- compare --only workers [--rounds 5] [--secs 1.5]
//! ```
//!
//! Two figures per server. **The shared listener's cost**: `CONNECTS` clients one after the
//! other, each connecting, echoing one byte and closing, so that every connect finds every worker
//! asleep in `epoll_wait`. mio registers the listener without `EPOLLEXCLUSIVE` (epoll_ctl(2)), so
//! each connect wakes every worker's epoll; all but one find the backlog empty, their
//! accept(2) returning `EAGAIN` (WouldBlock). Counted per connection: the accept calls (with
//! `perf stat` or `strace -c`, as in `syscalls.rs`, in a second pass, since `strace` stops the
//! server at every call), the serving processes' voluntary context switches and their CPU time.
//! **Throughput**: pingpong 64 B × 500 as in the load scenario: messages/s and CPU per message.
//!
//! Every server gets both cores (`taskset -c 0-1`), since a second worker on the first worker's
//! core could only cost; tokio's runtime then runs two threads. The load generator keeps core 1,
//! so a server that spreads competes with it: this machine has two cores, and no figure here is
//! a scaling target. tokio-mt's column is the same measurement in the one-worker and two-worker
//! rows, its ratio to each netgrace.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::load::{Load, Shape, Stop};
use crate::process::{self, Kind, ServerProcess};
use crate::procfs;
use crate::syscalls::{self, Tracer};
use crate::table::{self, Better, Table};

/// Connections made one at a time, in each pass. Judgment call: enough that the few wake-ups of
/// the server's start and stop are lost in them, and well under a second per pass.
const CONNECTS: usize = 1_000;
/// The throughput load: the load scenario's "many connections".
const SHAPE: Shape = Shape::pingpong(500);
const LOAD: &str = "pingpong 64 B × 500";
const CHURN: &str = "connects one at a time";
/// Load before the timed window, as in `compare`.
const WARMUP: Duration = Duration::from_millis(300);

/// One server of the scenario: netgrace with this many workers (and the flag that says so), or
/// tokio-mt.
#[derive(Debug, Clone, Copy)]
enum Server {
    Netgrace(usize, &'static [&'static str]),
    TokioMt,
}

const SERVERS: [Server; 3] = [
    Server::Netgrace(1, &["--workers", "1"]),
    Server::Netgrace(2, &["--workers", "2"]),
    Server::TokioMt,
];

impl Server {
    fn name(self) -> String {
        match self {
            Server::Netgrace(n, _) => format!("netgrace --workers {n}"),
            Server::TokioMt => "tokio-mt".to_string(),
        }
    }

    fn start(self) -> io::Result<ServerProcess> {
        match self {
            Server::Netgrace(_, flags) => ServerProcess::start_on_every_core(Kind::Netgrace, flags),
            Server::TokioMt => ServerProcess::start_on_every_core(Kind::TokioMt, &[]),
        }
    }

    /// The rows this server's samples go to, and under which column: tokio-mt's to both.
    fn rows(self) -> Vec<(usize, Kind)> {
        match self {
            Server::Netgrace(n, _) => vec![(n, Kind::Netgrace)],
            Server::TokioMt => vec![(1, Kind::TokioMt), (2, Kind::TokioMt)],
        }
    }
}

/// A row's label: `2 workers: connects one at a time: ...`.
fn label(workers: usize, what: &str) -> String {
    let plural = if workers == 1 { "worker" } else { "workers" };
    format!("{workers} {plural}: {what}")
}

/// Every server once per round, taking turns; returns the report printed after the table.
pub fn measure(table: &mut Table, rounds: usize, secs: Duration) -> io::Result<String> {
    let tool = syscalls::available();
    if tool.is_none() {
        eprintln!("workers: neither perf nor strace works here; accept calls not counted");
    }
    let mut shares = Vec::new();
    for round in 1..=rounds {
        for server in process::turn_order(SERVERS, round) {
            if let Some(share) = measure_one(table, server, tool, secs, round)? {
                shares.push(share);
            }
        }
    }
    Ok(report(table, &shares))
}

/// One server: the connects without and then with the counter, then the throughput. Returns,
/// for two workers, the share of all accepted connections that the busier one took.
fn measure_one(
    table: &mut Table,
    server: Server,
    tool: Option<syscalls::Tool>,
    secs: Duration,
    round: usize,
) -> io::Result<Option<f64>> {
    let process = server.start()?;
    let mut figures = herd(&process, tool)?;
    figures.extend(throughput(&process, secs)?);
    let share = busier_share(process)?;
    for (workers, kind) in server.rows() {
        for (what, better, value) in &figures {
            table.add(&label(workers, what), *better, kind, *value);
        }
    }
    let line: Vec<String> = (figures.iter())
        .map(|(what, _, value)| format!("{what} {}", table::number(*value)))
        .collect();
    let busier = share.map_or(String::new(), |s| {
        format!("; busier worker accepted {:.0} %", s * 100.0)
    });
    eprintln!(
        "workers round {round}  {:<20} {}{busier}",
        server.name(),
        line.join(", ")
    );
    Ok(share)
}

/// A figure: its row (after the worker count), which way is better, the value.
type Figure = (String, Better, f64);

/// What the connects one at a time cost the serving processes, per connection: context
/// switches and CPU in one pass, accept calls in a second pass under the counter (if any).
fn herd(server: &ServerProcess, tool: Option<syscalls::Tool>) -> io::Result<Vec<Figure>> {
    let pids = server.workers();
    let per_connect = |x: f64| x / CONNECTS as f64;
    let (switches, _) = procfs::context_switches(pids)?;
    let cpu = procfs::run_time(pids)?;
    let rate = churn(server.addr, CONNECTS)?;
    let switches = procfs::context_switches(pids)?.0 - switches;
    let cpu = procfs::run_time(pids)? - cpu;
    let mut figures = vec![
        (format!("{CHURN}: connections/s"), Better::Higher, rate),
        (
            format!("{CHURN}: voluntary context switches per connection"),
            Better::Lower,
            per_connect(switches as f64),
        ),
        (
            format!("{CHURN}: server CPU µs per connection"),
            Better::Lower,
            per_connect(cpu.as_secs_f64() * 1e6),
        ),
    ];
    if let Some(tool) = tool {
        let tracer = Tracer::attach(tool, pids)?;
        churn(server.addr, CONNECTS)?;
        let count = tracer.finish()?;
        let calls: u64 = (count.by_name.iter())
            .filter(|(name, _)| name.starts_with("accept"))
            .map(|(_, calls)| calls)
            .sum();
        let what = format!("{CHURN}: accept calls per connection");
        figures.push((what, Better::Lower, per_connect(calls as f64)));
    }
    Ok(figures)
}

/// The load scenario's pingpong × 500: messages/s, serving processes' CPU per message, p99.
fn throughput(server: &ServerProcess, secs: Duration) -> io::Result<Vec<Figure>> {
    let mut load = Load::connect(server.addr, SHAPE)?;
    load.drive(Stop::After(WARMUP), false)?;
    let before = server.cpu_time()?;
    let stats = load.drive(Stop::After(secs), false)?;
    let cpu_us = (server.cpu_time()? - before).as_secs_f64() * 1e6;
    Ok(vec![
        (table::rate(LOAD), Better::Higher, stats.per_sec()),
        (
            table::cpu_per_message(LOAD),
            Better::Lower,
            cpu_us / stats.messages as f64,
        ),
        (
            format!("{LOAD}: latency p99 µs"),
            Better::Lower,
            stats.latency_us(99.0),
        ),
    ])
}

/// `connects` clients one after the other: connect, one byte, its echo, close. Returns
/// connections per second.
fn churn(addr: SocketAddr, connects: usize) -> io::Result<f64> {
    let started = Instant::now();
    for i in 0..connects {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let byte = [i as u8];
        stream.write_all(&byte)?;
        let mut echo = [0];
        stream.read_exact(&mut echo)?;
        if echo != byte {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "wrong echo"));
        }
    }
    Ok(connects as f64 / started.elapsed().as_secs_f64())
}

/// Stops the server (it must exit 0); for more than one worker, the share of the connections
/// the busiest one accepted, from each worker's `worker stopped: accepted=N` line.
fn busier_share(server: ServerProcess) -> io::Result<Option<f64>> {
    let name = server.kind.name();
    let (_, waiter) = server.terminate()?;
    let exit = waiter
        .join()
        .map_err(|_| io::Error::other("waiter panicked"))??;
    if !exit.status.success() {
        return Err(io::Error::other(format!(
            "{name} exited with {}: {}",
            exit.status, exit.log
        )));
    }
    let accepted: Vec<u64> = (exit.log.lines())
        .filter(|line| line.contains("worker stopped"))
        .filter_map(|line| {
            line.split("accepted=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let total: u64 = accepted.iter().sum();
    Ok((accepted.len() > 1 && total > 0)
        .then(|| *accepted.iter().max().unwrap_or(&0) as f64 / total as f64))
}

/// Two workers against one, on the medians of this run.
fn report(table: &Table, shares: &[f64]) -> String {
    let mut out =
        String::from("Workers: netgrace with 2 workers against 1, medians of this run:\n\n");
    let rows = [
        format!("{CHURN}: connections/s"),
        format!("{CHURN}: voluntary context switches per connection"),
        format!("{CHURN}: server CPU µs per connection"),
        format!("{CHURN}: accept calls per connection"),
        table::rate(LOAD),
        table::cpu_per_message(LOAD),
        format!("{LOAD}: latency p99 µs"),
    ];
    for row in rows {
        let one = table.median(&label(1, &row), Kind::Netgrace);
        let two = table.median(&label(2, &row), Kind::Netgrace);
        if let (Some(one), Some(two)) = (one, two) {
            let _ = writeln!(
                out,
                "- {row}: {} → {} ({:.2}×)",
                table::number(one),
                table::number(two),
                two / one
            );
        }
    }
    if let Some(share) = table::median(shares) {
        let _ = writeln!(
            out,
            "- connections accepted by the busier of the 2 workers (median of the rounds): {:.0} %",
            share * 100.0
        );
    }
    out
}
