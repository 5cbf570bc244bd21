//! The echo benchmark: a load generator on mio, a tokio peer, and netgrace against the peer.
//!
//! One binary, several modes; arguments go after `--`:
//!
//! ```text
//! cargo bench --bench echo -- compare            # the side-by-side run of docs/benchmarks.md (~5 min)
//! cargo bench --bench echo -- compare --only storm   # just the connection storm
//! cargo bench --bench echo -- compare --only workers # 1 against 2 netgrace workers, and tokio-mt
//! cargo bench --bench echo -- pingpong -c 50     # load against a server already on 127.0.0.1:5388
//! cargo bench --bench echo -- stream --spawn tokio-ct -t 5
//! cargo bench --bench echo -- idle -c 10000 -t 30
//! cargo bench --bench echo -- storm -c 1000 --spawn netgrace
//! cargo bench --bench echo -- slow -c 10 -t 5 --spawn netgrace
//! cargo bench --bench echo -- restart -c 4 -n 10      # SIGHUP every second under load
//! cargo test  --bench echo -- smoke              # CI: a few seconds, fails on any wrong byte
//! ```
//!
//! `cargo bench` alone runs `compare`. The `netgrace` binary it starts is the one Cargo builds
//! beside this benchmark, in the same profile (`CARGO_BIN_EXE_netgrace`): release under
//! `cargo bench`, debug under `cargo test`. `NETGRACE_BIN=PATH` runs another build instead (an
//! older commit's, for a before/after figure); `compare` then says so on its first line.
//!
//! # Layout
//! - `load.rs`: the engine: C connections, P messages of S bytes in flight, every byte checked;
//!   `stats.rs`: what a drive counts (messages, latency histogram, progress lines).
//! - `idle.rs`: N connections opened in batches, held, and watched for EOF at shutdown.
//! - `storm.rs`: N connects at once against a fresh server, each waiting for one echo;
//!   `storm/clients.rs`: the clients, driven on one mio `Poll`.
//! - `slow.rs`: N clients that write without pause and read slowly, paced by a sleep per tick.
//! - `workers.rs`: netgrace with one and two workers on a shared listener, beside tokio-mt: the
//!   accept calls and wake-ups per connection, and throughput.
//! - `restart.rs`: connect/echo/close cycles while netgrace's master gets a SIGHUP every second;
//!   `restart/cycles.rs`: the client threads; `restart/master.rs`: the master and what its log
//!   says of its workers; `restart/timing.rs`: waits for a CPU, log timestamps;
//!   `restart/report.rs`: output.
//! - `peer.rs`: the tokio echo server as users write it (`serve-tokio-ct`, `serve-tokio-mt`).
//! - `process.rs`: servers as child processes: pinning, their workers, signals; `log.rs`: a
//!   server's log, followed; `procfs.rs`: the serving processes' `/proc` readings.
//! - `syscalls.rs`: system calls per message, counted with `perf stat` or `strace -c`.
//! - `inproc.rs`: a counting allocator and the idle shutdown latency, on the library in-process.
//! - `compare.rs`, `table.rs`, `targets.rs`, `chart.rs`: the scenarios; medians and ratios;
//!   the efficiency and connection-storm targets, met or not; the SVG chart.
//! - `smoke.rs`: the CI check.

mod chart;
mod compare;
mod idle;
mod inproc;
mod load;
mod log;
mod peer;
mod process;
mod procfs;
mod restart;
mod slow;
mod smoke;
mod stats;
mod storm;
mod syscalls;
mod table;
mod targets;
mod workers;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use lexopt::prelude::*;

use crate::load::Shape;
use crate::process::Kind;

const USAGE: &str = "\
usage: echo MODE [OPTIONS]   (through cargo: cargo bench --bench echo -- MODE [OPTIONS])

modes:
  compare [--rounds N] [--secs S] [--svg PATH]
          [--only load|idle|syscalls|inproc|storm|slow|workers|restart]
                                                 netgrace beside tokio, every scenario (default mode)
  pingpong [-c CONNS] [-s BYTES] [-p IN_FLIGHT] [-t SECS] [-a ADDR | --spawn SERVER]
  stream   [-c CONNS] [-s BYTES] [-p IN_FLIGHT] [-t SECS] [-a ADDR | --spawn SERVER]
  idle     [-c CONNS] [-t SECS] [-a ADDR | --spawn SERVER]
  storm    [-c CONNS] [-a ADDR | --spawn SERVER]   CONNS connects at once, one echo each
  slow     [-c CONNS] [-t SECS] [-a ADDR | --spawn SERVER]   clients that read 4 KiB/ms
  restart  [-c THREADS] [-n RESTARTS]            connect/echo/close while netgrace's master
                                                 gets a SIGHUP every second (spawns netgrace)
  smoke                                          seconds long; exit 1 on any wrong byte
  serve-tokio-ct ADDR | serve-tokio-mt ADDR      the peer (compare starts it by itself)

SERVER is netgrace, tokio-ct or tokio-mt; ADDR defaults to 127.0.0.1:5388.";

fn main() -> ExitCode {
    // `cargo bench` appends `--bench` to the arguments of every harness-less benchmark.
    let args = std::env::args_os().skip(1).filter(|arg| arg != "--bench");
    let result = match parse(args) {
        Ok(mode) => run(mode),
        Err(err) => {
            eprintln!("echo: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("echo: {err}");
            ExitCode::FAILURE
        }
    }
}

/// What the command line asks for.
enum Mode {
    Compare(compare::Options),
    /// `pingpong`, `stream` or `idle` against one server: the given address or a spawned one.
    Load {
        name: String,
        shape: Shape,
        secs: f64,
        target: Target,
    },
    /// One connection storm against the given address or a spawned server.
    Storm {
        clients: usize,
        target: Target,
    },
    /// Slow readers against the given address or a spawned server.
    Slow {
        clients: usize,
        secs: f64,
        target: Target,
    },
    /// Restarts under load, against a netgrace it starts (no other server restarts).
    Restart(restart::Plan),
    Smoke,
    Serve {
        multi_thread: bool,
        addr: SocketAddr,
    },
}

/// Where a standalone load goes.
enum Target {
    Addr(SocketAddr),
    Spawn(Kind),
}

fn run(mode: Mode) -> std::io::Result<()> {
    match mode {
        Mode::Compare(options) => compare::run(&options),
        Mode::Smoke => smoke::run(),
        Mode::Storm { clients, target } => {
            process::raise_descriptor_limit()?;
            let (addr, _server) = spawn(target)?;
            storm::standalone(addr, clients)
        }
        Mode::Slow {
            clients,
            secs,
            target,
        } => {
            let (addr, server) = spawn(target)?;
            let secs = Duration::from_secs_f64(secs);
            slow::standalone(addr, server.as_ref(), clients, secs)
        }
        Mode::Restart(plan) => restart::standalone(plan),
        Mode::Serve { multi_thread, addr } => peer::serve(addr, multi_thread),
        Mode::Load {
            name,
            shape,
            secs,
            target,
        } => {
            process::raise_descriptor_limit()?;
            let (addr, _server) = spawn(target)?;
            let secs = Duration::from_secs_f64(secs);
            if name == "idle" {
                idle::hold(addr, shape.connections, secs)
            } else {
                load::standalone(addr, shape, secs)
            }
        }
    }
}

/// The address to load, and the server started for it if any: keep it alive until the load is
/// done, since dropping it stops the server.
fn spawn(target: Target) -> std::io::Result<(SocketAddr, Option<process::ServerProcess>)> {
    Ok(match target {
        Target::Addr(addr) => (addr, None),
        Target::Spawn(kind) => {
            let server = process::ServerProcess::start(kind, process::pinning())?;
            (server.addr, Some(server))
        }
    })
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Mode, lexopt::Error> {
    let mut parser = lexopt::Parser::from_args(args);
    let name = match parser.next()? {
        None => "compare".to_string(),
        Some(Value(mode)) => mode.string()?,
        Some(arg) => return Err(arg.unexpected()),
    };
    match name.as_str() {
        "compare" => parse_compare(&mut parser),
        "smoke" => no_more(&mut parser).map(|()| Mode::Smoke),
        "serve-tokio-ct" | "serve-tokio-mt" => {
            let addr = parser.value()?.parse()?;
            no_more(&mut parser)?;
            let multi_thread = name == "serve-tokio-mt";
            Ok(Mode::Serve { multi_thread, addr })
        }
        "pingpong" | "stream" | "idle" => parse_load(name, &mut parser),
        "storm" => parse_storm(&mut parser),
        "slow" => parse_slow(&mut parser),
        "restart" => parse_restart(&mut parser),
        _ => Err(format!("unknown mode '{name}'").into()),
    }
}

fn parse_compare(parser: &mut lexopt::Parser) -> Result<Mode, lexopt::Error> {
    let mut options = compare::Options::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("rounds") => options.rounds = parser.value()?.parse()?,
            Long("secs") => options.secs = parser.value()?.parse()?,
            Long("svg") => options.svg = parser.value()?.into(),
            Long("only") => {
                let part = parser.value()?.string()?;
                if !compare::PARTS.contains(&part.as_str()) {
                    let parts = compare::PARTS.join(", ");
                    return Err(format!("unknown part '{part}': {parts}").into());
                }
                options.only = Some(part);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Mode::Compare(options))
}

fn parse_storm(parser: &mut lexopt::Parser) -> Result<Mode, lexopt::Error> {
    let mut clients = 1_000;
    let mut target = Target::Addr(SocketAddr::from(([127, 0, 0, 1], 5388)));
    while let Some(arg) = parser.next()? {
        match arg {
            Short('c') => clients = parser.value()?.parse()?,
            Short('a') => target = Target::Addr(parser.value()?.parse()?),
            Long("spawn") => target = Target::Spawn(parse_kind(&parser.value()?.string()?)?),
            _ => return Err(arg.unexpected()),
        }
    }
    if clients == 0 {
        return Err("-c must be at least 1".into());
    }
    Ok(Mode::Storm { clients, target })
}

fn parse_slow(parser: &mut lexopt::Parser) -> Result<Mode, lexopt::Error> {
    let (mut clients, mut secs) = (slow::CLIENTS, 5.0);
    let mut target = Target::Addr(SocketAddr::from(([127, 0, 0, 1], 5388)));
    while let Some(arg) = parser.next()? {
        match arg {
            Short('c') => clients = parser.value()?.parse()?,
            Short('t') => secs = parser.value()?.parse()?,
            Short('a') => target = Target::Addr(parser.value()?.parse()?),
            Long("spawn") => target = Target::Spawn(parse_kind(&parser.value()?.string()?)?),
            _ => return Err(arg.unexpected()),
        }
    }
    if clients == 0 {
        return Err("-c must be at least 1".into());
    }
    Ok(Mode::Slow {
        clients,
        secs,
        target,
    })
}

fn parse_restart(parser: &mut lexopt::Parser) -> Result<Mode, lexopt::Error> {
    let mut plan = restart::Plan::EVERY_SECOND;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('c') => plan.threads = parser.value()?.parse()?,
            Short('n') => plan.restarts = parser.value()?.parse()?,
            _ => return Err(arg.unexpected()),
        }
    }
    if plan.threads == 0 || plan.restarts == 0 {
        return Err("-c and -n must be at least 1".into());
    }
    Ok(Mode::Restart(plan))
}

fn parse_load(name: String, parser: &mut lexopt::Parser) -> Result<Mode, lexopt::Error> {
    let mut shape = match name.as_str() {
        "stream" => Shape::STREAM,
        // Idle uses only the connection count; each sends one opening echo.
        "idle" => Shape::pingpong(10_000),
        _ => Shape::pingpong(50),
    };
    let mut secs = 10.0;
    let mut target = Target::Addr(SocketAddr::from(([127, 0, 0, 1], 5388)));
    while let Some(arg) = parser.next()? {
        match arg {
            Short('c') => shape.connections = parser.value()?.parse()?,
            Short('s') => shape.message_bytes = parser.value()?.parse()?,
            Short('p') => shape.in_flight = parser.value()?.parse()?,
            Short('t') => secs = parser.value()?.parse()?,
            Short('a') => target = Target::Addr(parser.value()?.parse()?),
            Long("spawn") => target = Target::Spawn(parse_kind(&parser.value()?.string()?)?),
            _ => return Err(arg.unexpected()),
        }
    }
    if shape.connections == 0 || shape.message_bytes == 0 || shape.in_flight == 0 {
        return Err("-c, -s and -p must be at least 1".into());
    }
    Ok(Mode::Load {
        name,
        shape,
        secs,
        target,
    })
}

fn parse_kind(name: &str) -> Result<Kind, lexopt::Error> {
    Kind::ALL
        .into_iter()
        .find(|kind| kind.name() == name)
        .ok_or_else(|| format!("unknown server '{name}': netgrace, tokio-ct or tokio-mt").into())
}

fn no_more(parser: &mut lexopt::Parser) -> Result<(), lexopt::Error> {
    match parser.next()? {
        Some(arg) => Err(arg.unexpected()),
        None => Ok(()),
    }
}
