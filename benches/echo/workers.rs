//! One worker or two sharing the master's listener, beside tokio-mt, each on every core (the
//! load generator keeps core 1: no scaling figure). Connects one at a time find every worker in
//! `epoll_wait`, and mio's listener has no `EPOLLEXCLUSIVE` (epoll_ctl(2)), so each wakes every
//! worker: counted per connection as context switches, CPU and (under `perf`) accept calls.
//! Then pingpong × 500. tokio-mt's samples go to both the one-worker and two-worker rows.

use std::{io, net::SocketAddr, time::Instant};

use crate::common::cycles::{self, Outcome};
use crate::common::load::{timed, Shape};
use crate::common::process::{Kind, Plan, ServerProcess};
use crate::common::table::{cpu_per_message, rate, Better, Table};
use crate::common::{procfs, syscalls, syscalls::Tracer};

/// Judgment call: enough to drown the wake-ups of start and stop, well under a second.
const CONNECTS: usize = 1_000;
const LOAD: &str = "pingpong 64 B × 500";
/// netgrace with this many workers (the row's label), or tokio-mt (0: both rows).
const SERVERS: [(Kind, usize); 3] = [(Kind::Netgrace, 1), (Kind::Netgrace, 2), (Kind::TokioMt, 0)];

pub fn measure(table: &mut Table, plan: &Plan) -> io::Result<()> {
    for round in 1..=plan.rounds {
        for turn in 0..SERVERS.len() {
            let (kind, workers) = SERVERS[(round - 1 + turn) % SERVERS.len()];
            let flags = ["--workers", if workers == 2 { "2" } else { "1" }];
            let server = ServerProcess::start(kind, None, &flags)?;
            let mut figures = herd(&server)?;
            let (stats, cpu) = timed(&server, Shape::pingpong(500), plan.secs)?;
            let cpu_us = cpu.as_secs_f64() * 1e6 / stats.messages as f64;
            figures.push((rate(LOAD), Better::Higher, stats.per_sec()));
            figures.push((cpu_per_message(LOAD), Better::Lower, cpu_us));
            let p99 = (
                format!("{LOAD}: latency p99 µs"),
                Better::Lower,
                stats.latency_us(99.0),
            );
            figures.push(p99);
            server.stop()?;
            let mut line = Vec::new();
            for (what, better, value) in figures {
                for n in [1, 2].into_iter().filter(|n| workers == 0 || workers == *n) {
                    let plural = if n == 1 { "worker" } else { "workers" };
                    table.add(&format!("{n} {plural}: {what}"), better, kind, value);
                }
                line.push(format!("{what} {value:.2}"));
            }
            let (name, line) = (kind.name(), line.join(", "));
            eprintln!("workers round {round}  {name} {workers}  {line}");
        }
    }
    Ok(())
}

/// What connects one at a time cost per connection; accept calls in a second pass under `perf`,
/// since it slows the server.
fn herd(server: &ServerProcess) -> io::Result<Vec<(String, Better, f64)>> {
    let pids = &server.workers;
    let per_connect = |x: f64| x / CONNECTS as f64;
    let (switches, cpu) = (procfs::voluntary_switches(pids)?, procfs::cpu_time(pids)?);
    let rate = churn(server.addr)?;
    let switches = per_connect((procfs::voluntary_switches(pids)? - switches) as f64);
    let cpu = per_connect((procfs::cpu_time(pids)? - cpu).as_secs_f64() * 1e6);
    let row = |what: &str| format!("connects one at a time: {what}");
    let mut figures = vec![
        (row("connections/s"), Better::Higher, rate),
        (
            row("voluntary context switches per connection"),
            Better::Lower,
            switches,
        ),
        (row("server CPU µs per connection"), Better::Lower, cpu),
    ];
    if syscalls::available() {
        let tracer = Tracer::attach(pids)?;
        churn(server.addr)?;
        let (_, by_name) = tracer.finish()?;
        let accepts = by_name
            .iter()
            .filter(|(call, _)| call.starts_with("accept"));
        let calls = per_connect(accepts.map(|(_, calls)| *calls as f64).sum());
        figures.push((row("accept calls per connection"), Better::Lower, calls));
    }
    Ok(figures)
}

/// `CONNECTS` connect/echo/close cycles in a row; returns connections per second.
fn churn(addr: SocketAddr) -> io::Result<f64> {
    let started = Instant::now();
    for _ in 0..CONNECTS {
        let outcome = cycles::one(addr, None, &[7; 64])?;
        if outcome != Outcome::Echoed {
            return Err(io::Error::other(format!("a connection ended {outcome:?}")));
        }
    }
    Ok(CONNECTS as f64 / started.elapsed().as_secs_f64())
}
