//! Pingpong and stream, each on a fresh server: a warm-up, then a window that starts and ends
//! with nothing in flight, so the CPU readings count exactly its messages. Also the `pingpong`
//! and `stream` modes, against any echo server.

use std::{io, net::SocketAddr, time::Duration};

use crate::common::load::{timed, Load, Shape, Stop};
use crate::common::process::{self, Plan, ServerProcess};
use crate::common::table::{cpu_per_mb, cpu_per_message, rate, throughput, Better, Table};

pub const PINGPONG_1: &str = "pingpong 64 B × 1";
pub const PINGPONG_50: &str = "pingpong 64 B × 50";
pub const PINGPONG_500: &str = "pingpong 64 B × 500";
pub const STREAM: &str = "stream 64 KiB × 10";

const SCENARIOS: [(&str, Shape); 4] = [
    (PINGPONG_1, Shape::pingpong(1)),
    (PINGPONG_50, Shape::pingpong(50)),
    (PINGPONG_500, Shape::pingpong(500)),
    (STREAM, Shape::STREAM),
];

pub fn measure(table: &mut Table, plan: &Plan) -> io::Result<()> {
    for (name, shape) in SCENARIOS {
        for (round, kind) in plan.turns() {
            let server = ServerProcess::start(kind, process::pinned(), process::NETGRACE_FLAGS)?;
            let (stats, cpu) = timed(&server, shape, plan.secs)?;
            server.stop()?;
            let cpu_us = cpu.as_secs_f64() * 1e6;
            let (per_mb, per_message) = (
                cpu_us * 1e6 / stats.bytes as f64,
                cpu_us / stats.messages as f64,
            );
            let mut add = |what: String, better, value| table.add(&what, better, kind, value);
            if shape.message_bytes >= 1024 {
                add(throughput(name), Better::Higher, stats.mb_per_sec());
                add(cpu_per_mb(name), Better::Lower, per_mb);
            } else {
                add(rate(name), Better::Higher, stats.per_sec());
                add(cpu_per_message(name), Better::Lower, per_message);
                // A server busy well below 100 % waits for the load generator.
                let busy = cpu.as_secs_f64() / stats.elapsed.as_secs_f64() * 100.0;
                add(format!("{name}: server busy %"), Better::Lower, busy);
                for p in [50.0, 99.0, 99.9] {
                    let latency = stats.latency_us(p);
                    add(format!("{name}: latency p{p} µs"), Better::Lower, latency);
                }
            }
            let (msgs, mb, p99) = (stats.per_sec(), stats.mb_per_sec(), stats.latency_us(99.0));
            let (server, cpu) = (kind.name(), per_message);
            eprintln!(
                "{name:<20} round {round}  {server:<9} {msgs:>9.0} msg/s {mb:>8.1} MB/s  \
                 server CPU {cpu:>5.1} µs/msg  p99 {p99:>6.1} µs"
            );
        }
    }
    Ok(())
}

/// The `pingpong` and `stream` modes: one drive of `secs`, then a summary.
pub fn standalone(addr: SocketAddr, shape: Shape, secs: Duration) -> io::Result<()> {
    eprintln!("{addr}: {shape:?}, {secs:?}");
    let stats = Load::connect(addr, shape)?.drive(Stop::After(secs))?;
    let (n, took) = (stats.messages, stats.elapsed);
    let (rate, mb) = (stats.per_sec(), stats.mb_per_sec());
    let [p50, p99, p999] = [50.0, 99.0, 99.9].map(|p| stats.latency_us(p));
    println!(
        "{n} messages in {took:.2?}: {rate:.0} msg/s, {mb:.1} MB/s, latency p50 {p50:.1} µs, \
         p99 {p99:.1} µs, p99.9 {p999:.1} µs; every byte checked"
    );
    Ok(())
}
