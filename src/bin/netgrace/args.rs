//! The command line: flags, their defaults and their errors (each names the flag; the caller
//! exits 2 with the usage).

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;
use netgrace::{Config, MAX_CONNECTIONS_LIMIT};

pub(crate) const USAGE: &str = "usage: netgrace [-l ADDR] [--max-connections N] [--backlog N] \
                     [--max-buffer BYTES] [--drain-timeout SECS] [--idle-timeout SECS] \
                     [--restart-timeout SECS] [--workers N] [--pid-file PATH] [-v | -q] [-h] [-V]";

pub(crate) const HELP: &str = "\
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
      --restart-timeout SECS how long SIGHUP waits for the new workers to serve before it
                             gives up and keeps serving [default: 10]
      --workers N            worker processes sharing the listening socket, each one
                             single-threaded event loop [default: 1]
      --pid-file PATH        write the master's pid here once serving; removed at exit
  -v, --verbose              more log output (repeat for trace)
  -q, --quiet                less log output (repeat for errors only, then none)
  -h, --help                 print this help
  -V, --version              print the version

processes: the process you start is the master. It holds the listening socket for the life of
the service, starts the workers that serve it, replaces a worker that dies, and exits last, with
the service's exit code. Signal the master; its pid never changes.

signals: the first SIGINT, SIGTERM or SIGQUIT stops gracefully (refuse new clients, echo what
was read, then EOF); a second one stops at once. SIGHUP restarts without dropping a client: new
workers are started from the program file with the same arguments, and once they serve, the old
ones hand over and drain their own connections. SIGUSR1 and SIGUSR2 are ignored.

environment: LISTEN_FDS (socket activation: serve the listening socket at descriptor 3
instead of binding --listen), NOTIFY_SOCKET (systemd readiness), RUST_LOG (the log level when
neither -v nor -q is given). Logs go to stdout.
";

/// How long SIGHUP waits for the new workers to serve, by default: a fresh worker binds nothing
/// (it inherits the socket), so it is ready in milliseconds unless something is wrong; ten
/// seconds leaves room for a cold disk cache on a loaded machine.
pub(crate) const DEFAULT_RESTART_TIMEOUT: Duration = Duration::from_secs(10);

/// What the command line asks for.
pub(crate) enum Command {
    Serve(Options),
    Help,
    Version,
}

/// The options of `Command::Serve`.
pub(crate) struct Options {
    pub(crate) config: Config,
    /// Count of -v minus count of -q.
    pub(crate) verbosity: i32,
    pub(crate) restart_timeout: Duration,
    pub(crate) workers: usize,
    pub(crate) pid_file: Option<PathBuf>,
}

/// The most `--workers`: far more than this machine's cores would use; a bound so that a typo
/// cannot fork thousands of processes.
pub(crate) const MAX_WORKERS: usize = 256;

pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, lexopt::Error> {
    let mut config = Config::new(([127, 0, 0, 1], netgrace::DEFAULT_PORT).into());
    let mut verbosity = 0;
    let mut restart_timeout = DEFAULT_RESTART_TIMEOUT;
    let mut workers = 1;
    let mut pid_file = None;
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
            Long("restart-timeout") => {
                restart_timeout = parse_secs(parser.value()?, "--restart-timeout")?;
                if restart_timeout.is_zero() {
                    // Zero would fail every restart before the new workers could start.
                    return Err(
                        "invalid value for '--restart-timeout': must be more than 0 seconds".into(),
                    );
                }
            }
            Long("workers") => workers = parse_count(parser.value()?, "--workers", MAX_WORKERS)?,
            Long("pid-file") => pid_file = Some(PathBuf::from(parser.value()?)),
            Short('v') | Long("verbose") => verbosity += 1,
            Short('q') | Long("quiet") => verbosity -= 1,
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Command::Serve(Options {
        config,
        verbosity,
        restart_timeout,
        workers,
        pid_file,
    }))
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
