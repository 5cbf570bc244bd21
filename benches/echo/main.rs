//! The echo benchmark (docs/benchmarks.md): netgrace beside a tokio peer in every scenario. One
//! way: `main.rs` (modes, `compare`) and `targets.rs` (the one list of targets) → one file per
//! scenario → `common/` (clients, servers, `/proc`, table, chart), which imports no scenario.
//! The netgrace run is Cargo's build beside this one, or `NETGRACE_BIN=PATH`.

mod common;
mod idle;
mod inproc;
mod load;
mod peer;
mod restart;
mod slow;
mod smoke;
mod storm;
mod syscalls;
mod targets;
mod workers;

use std::time::{Duration, Instant};
use std::{io, net::SocketAddr, path::PathBuf, process::ExitCode};

use lexopt::prelude::*;

use common::process::{self, Kind, Plan, ServerProcess};
use common::{load::Shape, procfs::machine, table::Table};

const USAGE: &str = "\
usage: cargo bench --bench echo -- MODE [OPTIONS]
  compare [--rounds 5] [--secs 1.5] [--svg PATH] [--only PART]
      netgrace beside tokio, every part (the default mode), or one:
      PART is load, idle, syscalls, inproc, storm, slow, workers or restart
  pingpong|stream [-c CONNS] [-s BYTES] [-p IN_FLIGHT] [-t SECS] [-a ADDR | --spawn SERVER]
      the load generator alone, against any echo server (ADDR: 127.0.0.1:5388)
  smoke                                         seconds long; exit 1 on any wrong byte
  serve-tokio-ct ADDR | serve-tokio-mt ADDR     the peer (compare starts it by itself)
SERVER: netgrace, tokio-ct or tokio-mt";

/// A part of `compare`: it adds its rows to the table, as the plan says.
type Part = fn(&mut Table, &Plan) -> io::Result<()>;

/// The parts of `compare`, in the order they run; `--only` picks one.
const PARTS: [(&str, Part); 8] = [
    ("load", load::measure),
    ("idle", idle::measure),
    ("syscalls", syscalls::measure),
    ("inproc", inproc::measure),
    ("storm", storm::measure),
    ("slow", slow::measure),
    ("workers", workers::measure),
    ("restart", restart::measure),
];

/// The command line: the mode, and each option given (by its name: `c`, `rounds`, ...).
struct Args {
    mode: String,
    options: Vec<(String, String)>,
}

impl Args {
    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        let value = self.options.iter().rev().find(|(n, _)| n == name);
        value.and_then(|(_, v)| v.parse().ok()).unwrap_or(default)
    }
}

fn main() -> ExitCode {
    // `cargo bench` appends `--bench` to the arguments of every harness-less benchmark.
    let args = std::env::args_os().skip(1).filter(|arg| arg != "--bench");
    let args = lexopt::Parser::from_args(args);
    let (code, err) = match parse(args).map(|args| run(&args)) {
        Ok(Ok(())) => return ExitCode::SUCCESS,
        Ok(Err(err)) => (1, err.to_string()),
        Err(err) => (2, format!("{err}\n{USAGE}")),
    };
    eprintln!("echo: {err}");
    ExitCode::from(code)
}

fn run(args: &Args) -> io::Result<()> {
    let mode = args.mode.as_str();
    let addr = args.get("a", SocketAddr::from(([127, 0, 0, 1], 5388)));
    match mode {
        "compare" => return compare(args),
        "smoke" => return smoke::run(),
        "serve-tokio-ct" | "serve-tokio-mt" => return peer::serve(addr, mode.ends_with("mt")),
        _ => {}
    }
    let spawn = args.get("spawn", String::new());
    let spawn = Kind::ALL.into_iter().find(|kind| kind.name() == spawn);
    process::prepare_load(spawn.is_some())?;
    // Dropping the server stops it: keep it until the load is done.
    let start = |kind| ServerProcess::start(kind, process::pinned(), process::NETGRACE_FLAGS);
    let server = spawn.map(start).transpose()?;
    let addr = server.as_ref().map_or(addr, |server| server.addr);
    let [n, s, p] = [[50, 64, 1], [10, 65536, 4]][usize::from(mode == "stream")];
    let shape = Shape::new(args.get("c", n), args.get("s", s), args.get("p", p));
    load::standalone(addr, shape, Duration::from_secs_f64(args.get("t", 10.0)))
}

/// Every part (or the one `--only` names), then the table, the targets and the chart.
fn compare(args: &Args) -> io::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; `cargo bench --bench echo -- compare` for figures");
    }
    process::prepare_load(true)?;
    let started = Instant::now();
    eprintln!("{}", machine());
    let rounds = args.get("rounds", 5);
    let secs = Duration::from_secs_f64(args.get("secs", 1.5));
    let plan = Plan { rounds, secs };
    let only = args.get("only", String::new());
    let mut table = Table::default();
    for (name, measure) in PARTS {
        if only.is_empty() || only == name {
            measure(&mut table, &plan)?;
        }
    }
    println!("\n{}\n{}", table.markdown(), targets::report(&table));
    let default_svg = concat!(env!("CARGO_MANIFEST_DIR"), "/target/echo-compare.svg");
    let svg: PathBuf = args.get("svg", default_svg.into());
    targets::chart(&table, &svg)?;
    let (svg, took, machine) = (svg.display(), started.elapsed().as_secs_f64(), machine());
    eprintln!("chart: {svg}; {rounds} rounds in {took:.0} s; {machine}");
    Ok(())
}

/// The mode and its options; one the mode does not take, or a bad value, is an error here.
fn parse(mut parser: lexopt::Parser) -> Result<Args, lexopt::Error> {
    let mode = match parser.next()? {
        None => "compare".to_string(),
        Some(Value(mode)) => mode.string()?,
        Some(arg) => return Err(arg.unexpected()),
    };
    let (counts, secs): (&[&str], &[&str]) = (&["c", "s", "p", "rounds"], &["t", "secs"]);
    let takes: &[&str] = match mode.as_str() {
        "compare" => &["rounds", "secs", "svg", "only"],
        "pingpong" | "stream" => &["c", "s", "p", "t", "a", "spawn"],
        "smoke" | "serve-tokio-ct" | "serve-tokio-mt" => &[],
        _ => return Err(format!("unknown mode '{mode}'").into()),
    };
    let mut options = Vec::new();
    if mode.starts_with("serve-") {
        options.push(("a".to_string(), parser.value()?.string()?));
    }
    while let Some(arg) = parser.next()? {
        let name = match &arg {
            Short(c) => c.to_string(),
            Long(name) => name.to_string(),
            Value(_) => return Err(arg.unexpected()),
        };
        if !takes.contains(&name.as_str()) {
            return Err(arg.unexpected());
        }
        let value = parser.value()?.string()?;
        let valid = match name.as_str() {
            n if counts.contains(&n) => value.parse::<usize>().is_ok_and(|n| n > 0),
            n if secs.contains(&n) => value.parse::<f64>().is_ok_and(|s| s > 0.0),
            "a" => value.parse::<SocketAddr>().is_ok(),
            "only" => PARTS.iter().any(|(part, _)| *part == value),
            "spawn" => Kind::ALL.iter().any(|kind| kind.name() == value),
            _ => true,
        };
        if !valid {
            return Err(format!("invalid value '{value}' for '{name}'").into());
        }
        options.push((name, value));
    }
    Ok(Args { mode, options })
}
