//! `compare`: netgrace beside tokio (`current_thread` and multi-thread), in every scenario: load,
//! idle connections, syscalls and allocations per message, the connection storm (`storm.rs`),
//! the slow readers (`slow.rs`) and one against two workers (`workers.rs`), with medians, ratios,
//! the targets and the SVG chart; then netgrace alone, restarted under load (`restart.rs`: tokio
//! has no restart to compare with).
//!
//! ```text
//! cargo bench --bench echo -- compare [--rounds 5] [--secs 1.5] [--svg target/echo-compare.svg]
//!                                     [--only load|idle|syscalls|inproc|storm|slow|workers|restart]
//! ```
//!
//! Each measurement starts a fresh server process pinned to core 0 (the load generator runs on
//! core 1), and the servers take turns within each round (netgrace, tokio-ct, tokio-mt, then
//! again), so a drift of the machine hits all of them alike. Server CPU is the serving processes'
//! user + system time over the timed window (netgrace's workers, not its master), which starts
//! and ends with nothing in flight.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::idle::IdleSet;
use crate::load::{Load, Shape, Stats, Stop};
use crate::process::{self, Kind, ServerProcess};
use crate::syscalls::{self, Tracer};
pub use crate::table::{cpu_per_mb, cpu_per_message, rate, throughput};
use crate::table::{Better, Table};
use crate::{chart, inproc, restart, slow, storm, workers};

/// Load before each timed window, not measured: connections warm, caches and allocators settled.
const WARMUP: Duration = Duration::from_millis(300);
/// Idle connections for the memory, shutdown and "beside" scenarios.
pub const IDLE: usize = 10_000;
/// Active connections beside the idle ones.
const ACTIVE: usize = 10;
/// Messages counted for syscalls per message and allocations per message.
const COUNTED_MESSAGES: u64 = 20_000;
/// Samples of the no-connection shutdown; the target is on their median.
const SHUTDOWN_SAMPLES: usize = 100;
/// Longest wait for a server with 10 000 connections to close them all.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How `compare` runs.
pub struct Options {
    pub rounds: usize,
    /// The timed window of each load measurement.
    pub secs: f64,
    /// Where the chart goes (the table and the targets go to stdout).
    pub svg: PathBuf,
    /// Runs only this part, one of [`PARTS`] (all when `None`).
    pub only: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            rounds: 5,
            secs: 1.5,
            svg: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/echo-compare.svg"
            )),
            only: None,
        }
    }
}

/// The parts of `compare`, in the order they run; `--only` picks one.
pub const PARTS: [&str; 8] = [
    "load", "idle", "syscalls", "inproc", "storm", "slow", "workers", "restart",
];

/// A timed load: its label and shape.
pub struct Scenario {
    pub name: &'static str,
    pub shape: Shape,
}

/// The load scenarios, each measured on a fresh server.
pub const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "pingpong 64 B × 1",
        shape: Shape::pingpong(1),
    },
    Scenario {
        name: "pingpong 64 B × 50",
        shape: Shape::pingpong(50),
    },
    Scenario {
        name: "pingpong 64 B × 500",
        shape: Shape::pingpong(500),
    },
    Scenario {
        name: "stream 64 KiB × 10",
        shape: Shape::STREAM,
    },
];

// Row labels shared by the table, the targets and the chart.
pub const ALONE: &str = "pingpong 64 B × 10: messages/s";
pub const BESIDE: &str = "pingpong 64 B × 10 beside 10 000 idle: messages/s";
pub const BESIDE_RATIO: &str = "pingpong 64 B × 10: beside idle ÷ alone";
pub const MEMORY: &str = "memory per idle connection (10 000), bytes";
pub const SHUTDOWN: &str = "shutdown with 10 000 idle: signal to exit, ms";
pub const UNCLEAN: &str = "shutdown with 10 000 idle: clients without a clean EOF";
pub const SYSCALLS: &str = "syscalls per message (pingpong 64 B × 50)";
pub const ALLOCATIONS: &str = "heap allocations per message (pingpong 64 B × 50)";
pub const IDLE_STOP: &str = "shutdown() to run() returning, no connections, µs";

/// Runs every scenario and prints the table, the targets and where the chart went.
pub fn run(options: &Options) -> io::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run `cargo bench --bench echo -- compare` for figures");
    }
    process::raise_descriptor_limit()?;
    match process::pinning() {
        Some(_) => process::pin_current_thread(process::LOAD_CPU)?,
        None => eprintln!("warning: one core only; server and load share it"),
    }
    let started = Instant::now();
    eprintln!("{}; {}", machine(), load_average());
    if let Some(path) = process::netgrace_override() {
        eprintln!("netgrace: {} (NETGRACE_BIN)", path.display());
    }
    let secs = Duration::from_secs_f64(options.secs);
    let mut table = Table::default();
    let part = |name: &str| options.only.as_deref().is_none_or(|only| only == name);
    for scenario in SCENARIOS.iter().filter(|_| part("load")) {
        for round in 1..=options.rounds {
            for kind in process::turn_order(Kind::ALL, round) {
                measure_load(&mut table, kind, scenario, secs, round)?;
            }
        }
    }
    for round in (1..=options.rounds).filter(|_| part("idle")) {
        for kind in process::turn_order(Kind::ALL, round) {
            measure_idle(&mut table, kind, secs, round)?;
        }
    }
    if part("syscalls") {
        measure_syscalls(&mut table, options.rounds)?;
    }
    if part("inproc") {
        measure_in_process(&mut table)?;
    }
    if part("storm") {
        storm::measure(&mut table, options.rounds)?;
    }
    if part("slow") {
        slow::measure(&mut table, options.rounds, secs)?;
    }
    let mut workers = String::new();
    if part("workers") {
        workers = workers::measure(&mut table, options.rounds, secs)?;
    }
    let mut restarts = String::new();
    if part("restart") {
        restarts = restart::measure(&mut table, options.rounds)?;
    }

    let markdown = table.markdown();
    let targets = crate::targets::report(&table);
    println!("\n{markdown}\n{targets}\n{workers}\n{restarts}");
    let svg = chart::render(&table, &machine());
    std::fs::write(&options.svg, svg)?;
    eprintln!(
        "chart: {}; {} rounds in {:.0} s; {}",
        options.svg.display(),
        options.rounds,
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}

/// A fresh server, warm-up, a timed window; records rate, CPU and latency.
fn measure_load(
    table: &mut Table,
    kind: Kind,
    scenario: &Scenario,
    secs: Duration,
    round: usize,
) -> io::Result<()> {
    let server = ServerProcess::start(kind, process::pinning())?;
    let (stats, cpu) = timed_load(&server, scenario.shape, secs)?;
    server.stop()?;
    let name = scenario.name;
    let cpu_us = cpu.as_secs_f64() * 1e6;
    if scenario.shape.message_bytes >= 1024 {
        let mb = stats.bytes as f64 / 1e6;
        table.add(&throughput(name), Better::Higher, kind, stats.mb_per_sec());
        table.add(&cpu_per_mb(name), Better::Lower, kind, cpu_us / mb);
    } else {
        let messages = stats.messages as f64;
        table.add(&rate(name), Better::Higher, kind, stats.per_sec());
        table.add(
            &cpu_per_message(name),
            Better::Lower,
            kind,
            cpu_us / messages,
        );
        // Who is the bottleneck: a server busy well below 100 % waits for the load generator.
        let busy = cpu.as_secs_f64() / stats.elapsed.as_secs_f64() * 100.0;
        table.add(&format!("{name}: server busy %"), Better::Lower, kind, busy);
        for (percentile, label) in [(50.0, "p50"), (99.0, "p99"), (99.9, "p99.9")] {
            let row = format!("{name}: latency {label} µs");
            table.add(&row, Better::Lower, kind, stats.latency_us(percentile));
        }
    }
    eprintln!(
        "{name:<22} round {round}  {:<9} {:>9.0} msg/s {:>8.1} MB/s  server CPU {:>5.1} µs/msg  p99 {:>6.1} µs",
        kind.name(),
        stats.per_sec(),
        stats.mb_per_sec(),
        cpu_us / stats.messages as f64,
        stats.latency_us(99.0),
    );
    Ok(())
}

/// Connects `shape`, warms up, then drives for `secs`; returns the stats and the server's CPU
/// time over exactly that window. The connections close when this returns.
fn timed_load(
    server: &ServerProcess,
    shape: Shape,
    secs: Duration,
) -> io::Result<(Stats, Duration)> {
    let mut load = Load::connect(server.addr, shape)?;
    load.drive(Stop::After(WARMUP), false)?;
    let before = server.cpu_time()?;
    let stats = load.drive(Stop::After(secs), false)?;
    let cpu = server.cpu_time()? - before;
    Ok((stats, cpu))
}

/// One server: pingpong × 10 alone, then 10 000 idle connections (memory), pingpong × 10
/// beside them, then SIGTERM with the 10 000 still open (shutdown time).
fn measure_idle(table: &mut Table, kind: Kind, secs: Duration, round: usize) -> io::Result<()> {
    let server = ServerProcess::start(kind, process::pinning())?;
    let (alone, _) = timed_load(&server, Shape::pingpong(ACTIVE), secs)?;
    let rss_before = server.rss_bytes()?;
    let mut idle = IdleSet::open(server.addr, IDLE)?;
    let memory = (server.rss_bytes()? as f64 - rss_before as f64) / IDLE as f64;
    let (beside, _) = timed_load(&server, Shape::pingpong(ACTIVE), secs)?;

    let (signalled, exit) = server.terminate()?;
    let closing = idle.await_close(CLOSE_TIMEOUT)?;
    let exit = exit
        .join()
        .map_err(|_| io::Error::other("waiter panicked"))??;
    if !exit.status.success() {
        let msg = format!("{} exited with {}: {}", kind.name(), exit.status, exit.log);
        return Err(io::Error::other(msg));
    }
    let shutdown_ms = (exit.at - signalled).as_secs_f64() * 1e3;
    let unclean = closing.reset + closing.open;

    table.add(ALONE, Better::Higher, kind, alone.per_sec());
    table.add(BESIDE, Better::Higher, kind, beside.per_sec());
    let ratio = beside.per_sec() / alone.per_sec();
    table.add(BESIDE_RATIO, Better::Higher, kind, ratio);
    table.add(MEMORY, Better::Lower, kind, memory);
    table.add(SHUTDOWN, Better::Lower, kind, shutdown_ms);
    table.add(UNCLEAN, Better::Lower, kind, unclean as f64);
    // netgrace's own figure: from the request to the last connection closed, before exit; the
    // last one logged is the master's, for all its workers.
    let drain =
        (exit.log.rsplit_once("shutdown_ms=")).and_then(|(_, rest)| rest.split_whitespace().next());
    eprintln!(
        "idle 10 000           round {round}  {:<9} {memory:>6.0} B/conn  shutdown {shutdown_ms:>6.1} ms \
         (server's own: {} ms; {} EOF, {unclean} not)  × 10 beside idle ÷ alone {ratio:.2}",
        kind.name(),
        drain.unwrap_or("–"),
        closing.eof,
    );
    Ok(())
}

/// Syscalls per message in pingpong × 50, each server once per round, if `perf` or `strace`
/// is here. The `epoll_wait` share is one over the events each wait returns, so it depends on
/// how busy the server is: the median over rounds tells more than one count.
fn measure_syscalls(table: &mut Table, rounds: usize) -> io::Result<()> {
    let Some(tool) = syscalls::available() else {
        eprintln!("syscalls: neither perf nor strace works here; skipped (see syscalls.rs)");
        return Ok(());
    };
    for round in 1..=rounds {
        for kind in process::turn_order(Kind::ALL, round) {
            count_syscalls(table, tool, kind, round)?;
        }
    }
    Ok(())
}

fn count_syscalls(
    table: &mut Table,
    tool: syscalls::Tool,
    kind: Kind,
    round: usize,
) -> io::Result<()> {
    let server = ServerProcess::start(kind, process::pinning())?;
    let mut load = Load::connect(server.addr, Shape::pingpong(50))?;
    load.drive(Stop::After(WARMUP), false)?;
    let tracer = Tracer::attach(tool, server.workers())?;
    let stats = load.drive(Stop::Messages(COUNTED_MESSAGES), false)?;
    let count = tracer.finish()?;
    drop(load);
    server.stop()?;
    let per = |calls: u64| calls as f64 / stats.messages as f64;
    table.add(SYSCALLS, Better::Lower, kind, per(count.total));
    for (name, calls) in &count.by_name {
        let row = format!("{SYSCALLS}: {name}");
        table.add(&row, Better::Lower, kind, per(*calls));
    }
    let calls: Vec<String> = (count.by_name.iter())
        .map(|(name, calls)| format!("{name} {:.3}", per(*calls)))
        .collect();
    eprintln!(
        "syscalls ({}) round {round}  {:<9} {:.3} per message: {}",
        count.tool.name(),
        kind.name(),
        per(count.total),
        calls.join(", ")
    );
    Ok(())
}

/// Allocations per message and the no-connection shutdown, on the library in this process.
fn measure_in_process(table: &mut Table) -> io::Result<()> {
    let (allocations, messages) = inproc::allocations(Shape::pingpong(50), COUNTED_MESSAGES)?;
    let per_message = allocations as f64 / messages as f64;
    table.add(ALLOCATIONS, Better::Lower, Kind::Netgrace, per_message);
    eprintln!("allocations on the reactor thread: {allocations} in {messages} messages");
    let times = inproc::idle_shutdown(SHUTDOWN_SAMPLES)?;
    for time in &times {
        table.add(
            IDLE_STOP,
            Better::Lower,
            Kind::Netgrace,
            time.as_secs_f64() * 1e6,
        );
    }
    let median = table.median(IDLE_STOP, Kind::Netgrace).unwrap_or(f64::NAN);
    eprintln!("shutdown() to run() returning, no connections: median {median:.0} µs of {SHUTDOWN_SAMPLES}");
    Ok(())
}

/// One line about the machine, for the table's caption.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map_or("unknown CPU", |rest| {
            rest.trim_start_matches([' ', '\t', ':'])
        });
    let cores = process::cores();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores, Linux {}", kernel.trim())
}

fn load_average() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let first: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    format!("load average {}", first.join(" "))
}
