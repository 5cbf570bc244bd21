//! The `netgrace` binary: parse flags, adopt or bind the listener, wire signals to a
//! [`ShutdownHandle`] and to restarts, run the library, and map errors to exit codes (2 for bad
//! usage, 1 for a failure to start or run).
//!
//! One file per operator concern: `args.rs` (the command line), `activation.rs` (sockets passed
//! in `LISTEN_FDS`), `restart.rs` (SIGHUP), `notify.rs` (systemd), `logger.rs` (stderr).

#[cfg(not(unix))]
compile_error!("the netgrace binary needs Unix; elsewhere use the library without `cli`");

use std::io;
use std::process::ExitCode;

use log::{error, info, warn};
use netgrace::{Report, Server, ShutdownHandle};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

mod activation;
mod args;
mod logger;
mod notify;
mod restart;

use activation::Inherited;
use args::{Command, Options, HELP, USAGE};
use restart::Restart;

fn main() -> ExitCode {
    // First, while this is the only thread: it takes descriptors and edits the environment.
    let inherited = activation::from_env();
    let options = match args::parse(std::env::args_os().skip(1)) {
        Ok(Command::Serve(options)) => options,
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
    if let Err(err) = options.config.validate() {
        return usage_error(&err);
    }
    logger::init(options.verbosity);
    match inherited.and_then(|inherited| serve(options, inherited)) {
        Ok(report) => {
            info!("shutdown complete: {report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            // Not through the logger: -q must not hide why the process failed.
            eprintln!("netgrace: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(options: Options, inherited: Inherited) -> io::Result<Report> {
    let Options {
        config,
        restart_timeout,
        ..
    } = options;
    let idle_timeout = config.idle_timeout;
    let from = if inherited.listener.is_some() {
        " (inherited at descriptor 3; --listen not used)"
    } else {
        ""
    };
    let listen = config.listen;
    let server = match inherited.listener {
        Some(listener) => Server::from_std(listener, config)?,
        None => Server::bind(config).map_err(|err| context(format_args!("bind {listen}"), err))?,
    };
    if inherited.ignored > 0 {
        warn!(
            "LISTEN_FDS passed {} more descriptors; only descriptor 3 is served",
            inherited.ignored
        );
    }
    // Said once at startup: the default closes silent clients, which an operator should know.
    match idle_timeout {
        Some(timeout) => info!(
            "idle timeout {} s (--idle-timeout never turns it off)",
            timeout.as_secs_f64()
        ),
        None => info!("idle timeout off"),
    }
    let handle = server.shutdown_handle();
    let restart = Restart::new(
        server.try_clone_listener()?,
        handle.clone(),
        restart_timeout,
    );
    // Before announcing the address: a signal from someone who saw it must reach our handler,
    // not the default action that kills the process.
    watch_signals(handle, restart.clone())?;
    info!("listening on {}{from}", server.local_addr());
    restart.announce(inherited.ready);
    // The listener is registered and the loop is one call away: whatever is queued now is
    // accepted on its first turn.
    server.run().map_err(|failed| {
        error!("stopped by a failure: {}", failed.report());
        io::Error::from(failed)
    })
}

/// `what: reason` with the kind kept, the OS's reason lowercased to read as one line (the library
/// returns OS errors as they are, so that their `raw_os_error()` stays readable).
fn context(what: std::fmt::Arguments<'_>, err: io::Error) -> io::Error {
    let reason = err.to_string();
    let mut chars = reason.chars();
    let first = chars.next().map(|c| c.to_lowercase().to_string());
    let rest = chars.as_str();
    io::Error::new(
        err.kind(),
        format!("{what}: {}{rest}", first.unwrap_or_default()),
    )
}

/// First SIGINT/SIGTERM: graceful; any later one: immediate (nginx's QUIT then TERM, on one key).
/// SIGHUP: restart without downtime (`restart.rs`).
///
/// Not guaranteed: two signals of the same kind sent back to back, before this thread wakes, may
/// be delivered as one (a pending signal is a flag, signal(7)); a human pressing Ctrl-C twice is
/// always far slower than that.
fn watch_signals(handle: ShutdownHandle, restart: Restart) -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|err| io::Error::new(err.kind(), format!("install signal handlers: {err}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stops = 0;
            for signal in signals.forever() {
                let name = match signal {
                    SIGHUP => {
                        restart.begin();
                        continue;
                    }
                    SIGINT => "SIGINT",
                    _ => "SIGTERM",
                };
                stops += 1;
                if stops == 1 {
                    info!("{name}: shutting down gracefully (send again to stop at once)");
                    if restart.stop() {
                        notify::stopping();
                    }
                    handle.shutdown();
                } else {
                    warn!("{name} again: stopping at once");
                    handle.shutdown_now();
                }
            }
        })?;
    Ok(())
}

fn usage_error(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("netgrace: {err}\n{USAGE}\ntry 'netgrace --help' for more");
    ExitCode::from(2)
}
