//! The `netgrace` binary: parse flags, wire signals to a [`ShutdownHandle`], run the library, and
//! map errors to exit codes (2 for bad usage, 1 for a failure to start or run).

use std::ffi::OsString;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use lexopt::prelude::*;
use log::{error, info, warn, LevelFilter};
use netgrace::{Config, Server, ShutdownHandle, MAX_CONNECTIONS_LIMIT};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

const USAGE: &str = "usage: netgrace [-l ADDR] [--max-connections N] [--backlog N] \
                     [--max-buffer BYTES] [--drain-timeout SECS] [--idle-timeout SECS] \
                     [-v | -q] [-h] [-V]";

const HELP: &str = "\
netgrace: a TCP echo server that shuts down gracefully

usage: netgrace [OPTIONS]

options:
  -l, --listen ADDR          address to listen on [default: 127.0.0.1:5388]
      --max-connections N    connections served at once; more wait in the backlog [default: 1024]
      --backlog N            connections the kernel queues until they are accepted; Linux caps
                             it at net.core.somaxconn [default: 1024]
      --max-buffer BYTES     unsent echo held per connection before reading pauses [default: 65536]
      --drain-timeout SECS   how long a graceful shutdown waits for clients [default: 5]
      --idle-timeout SECS    close connections silent this long; 'never' or 0 turns it off
                             [default: 300]
  -v, --verbose              more log output (repeat for trace)
  -q, --quiet                less log output (repeat for errors only, then none)
  -h, --help                 print this help
  -V, --version              print the version

signals: the first SIGINT or SIGTERM stops gracefully (refuse new clients, echo what was read,
then EOF); a second one stops at once. Logs go to stderr; RUST_LOG sets the level when neither
-v nor -q is given.
";

/// What the command line asks for.
enum Command {
    Serve { config: Config, verbosity: i32 },
    Help,
    Version,
}

fn main() -> ExitCode {
    let (config, verbosity) = match parse(std::env::args_os().skip(1)) {
        Ok(Command::Serve { config, verbosity }) => (config, verbosity),
        Ok(Command::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("netgrace {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(err) => return usage_error(&err),
    };
    // parse_count already bounds the limits; this catches any rule Config adds later, as a usage
    // error, before any socket exists.
    if let Err(err) = config.validate() {
        return usage_error(&err);
    }
    init_logger(verbosity);
    match serve(config) {
        Ok(report) => {
            info!("shutdown complete: {report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            if let Some(report) = netgrace::Report::from_failed_run(&err) {
                error!("stopped by a failure: {report}");
            }
            // Not through the logger: -q must not hide why the process failed.
            eprintln!("netgrace: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> io::Result<netgrace::Report> {
    let idle_timeout = config.idle_timeout;
    let server = Server::bind(config)?;
    // Said once at startup: the default closes silent clients, which an operator should know.
    match idle_timeout {
        Some(timeout) => info!(
            "idle timeout {} s (--idle-timeout never turns it off)",
            timeout.as_secs_f64()
        ),
        None => info!("idle timeout off"),
    }
    // Before announcing the address: a signal from someone who saw it must reach our handler,
    // not the default action that kills the process.
    watch_signals(server.shutdown_handle())?;
    info!("listening on {}", server.local_addr());
    server.run()
}

/// First SIGINT/SIGTERM: graceful; any later one: immediate (nginx's QUIT then TERM, on one key).
///
/// Not guaranteed: two signals of the same kind sent back to back, before this thread wakes, may
/// be delivered as one (a pending signal is a flag, signal(7)); a human pressing Ctrl-C twice is
/// always far slower than that.
fn watch_signals(handle: ShutdownHandle) -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|err| io::Error::new(err.kind(), format!("install signal handlers: {err}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for (count, signal) in signals.forever().enumerate() {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                if count == 0 {
                    info!("{name}: shutting down gracefully (send again to stop at once)");
                    handle.shutdown();
                } else {
                    warn!("{name} again: stopping at once");
                    handle.shutdown_now();
                }
            }
        })?;
    Ok(())
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, lexopt::Error> {
    let mut config = Config::default();
    let mut verbosity = 0;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('l') | Long("listen") => config.listen = parse_addr(parser.value()?)?,
            Long("max-connections") => {
                config.max_connections =
                    parse_count(parser.value()?, "--max-connections", MAX_CONNECTIONS_LIMIT)?;
            }
            Long("backlog") => {
                // listen(2) takes an int; the fits-in-u32 conversion cannot fail below i32::MAX.
                let backlog = parse_count(parser.value()?, "--backlog", i32::MAX as usize)?;
                config.backlog = u32::try_from(backlog).unwrap_or(u32::MAX);
            }
            Long("max-buffer") => {
                config.max_buffer =
                    parse_count(parser.value()?, "--max-buffer", isize::MAX as usize)?;
            }
            Long("drain-timeout") => {
                config.drain_timeout = parse_secs(parser.value()?, "--drain-timeout")?;
            }
            Long("idle-timeout") => {
                let value = parser.value()?;
                config.idle_timeout = if value == "never" {
                    None
                } else {
                    // Zero turns it off too, as a zero SO_RCVTIMEO means no timeout (socket(7)).
                    Some(parse_secs(value, "--idle-timeout")?).filter(|t| !t.is_zero())
                };
            }
            Short('v') | Long("verbose") => verbosity += 1,
            Short('q') | Long("quiet") => verbosity -= 1,
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Command::Serve { config, verbosity })
}

/// `IP:PORT`, or `HOST:PORT` resolved now (the first address wins).
fn parse_addr(value: OsString) -> Result<SocketAddr, lexopt::Error> {
    let text = value.string()?;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let resolved = text
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next());
    resolved.ok_or_else(|| {
        format!("invalid value '{text}' for '--listen': expected HOST:PORT such as 127.0.0.1:5388")
            .into()
    })
}

/// A whole number in `1..=max`, with the option named in the error (lexopt's own message does
/// not name it, and `Config::validate` speaks of fields, not flags).
fn parse_count(value: OsString, option: &str, max: usize) -> Result<usize, lexopt::Error> {
    let text = value.string()?;
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(_) => Err(
            format!("invalid value '{text}' for '{option}': must be between 1 and {max}").into(),
        ),
        Err(err) => Err(format!("invalid value '{text}' for '{option}': {err}").into()),
    }
}

/// Seconds, fractions allowed (`0.5`); negative or not a number is an error.
fn parse_secs(value: OsString, option: &str) -> Result<Duration, lexopt::Error> {
    let text = value.string()?;
    text.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| {
            format!("invalid value '{text}' for '{option}': expected seconds, such as 5 or 0.5")
                .into()
        })
}

fn usage_error(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("netgrace: {err}\n{USAGE}\ntry 'netgrace --help' for more");
    ExitCode::from(2)
}

fn init_logger(verbosity: i32) {
    let logger = simple_logger::SimpleLogger::new().with_utc_timestamps();
    let logger = match verbosity {
        0 => logger.with_level(LevelFilter::Info).env(),
        1 => logger.with_level(LevelFilter::Debug),
        v if v >= 2 => logger.with_level(LevelFilter::Trace),
        -1 => logger.with_level(LevelFilter::Warn),
        -2 => logger.with_level(LevelFilter::Error),
        _ => logger.with_level(LevelFilter::Off),
    };
    // Fails only if a logger is already set, which nothing else in this binary does.
    let _ = logger.init();
}
