//! The `netgrace` binary: parse flags, then run as the master (the process the operator
//! starts, which holds the listening socket and supervises the workers) or, when started by a
//! master, as one of its workers (one [`netgrace::Server`] each). Exit codes: 2 for bad usage,
//! 1 for a failure to start or run, 0 after an orderly stop.
//!
//! One file per concern: `args.rs` (the command line), `activation.rs` (descriptors passed in
//! at startup), `master.rs` (the master's loop), `children.rs` (its workers as it sees them),
//! `worker.rs` (a worker), `signals.rs` (what each signal means), `program.rs` (which file
//! workers run), `pidfile.rs`, `notify.rs` (systemd) and `logger.rs` (stdout).

#[cfg(not(unix))]
compile_error!("the netgrace binary needs Unix; elsewhere use the library without `cli`");

use std::process::ExitCode;

use log::info;

mod activation;
mod args;
mod children;
mod logger;
mod master;
mod notify;
mod pidfile;
mod program;
mod signals;
mod worker;

use activation::Inherited;
use args::{Command, HELP, USAGE};

fn main() -> ExitCode {
    // First, while this is the only thread. No descriptor this process inherited by accident (a
    // parent's socket or pipe without close-on-exec) may reach a worker: workers get exactly the
    // two they are passed on purpose, mapped anew at 3 and 4.
    close_fds::set_fds_cloexec(3, &[]);
    // It takes descriptors and edits the environment.
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
    let code = match inherited {
        Ok(Inherited::Worker {
            master,
            listener,
            control,
        }) => worker::run(options.config, master, listener, control),
        Ok(Inherited::Listener(listener)) => master::run(options, Some(listener)),
        Ok(Inherited::Nothing) => master::run(options, None),
        Ok(Inherited::NotOurs(why)) => {
            info!("{why}");
            master::run(options, None)
        }
        Err(err) => {
            fatal(&err);
            ExitCode::FAILURE
        }
    };
    // The logger's writer thread may still hold records; exiting would lose them.
    log::logger().flush();
    code
}

/// `what: reason` with the kind kept, the OS's reason lowercased to read as one line (the library
/// returns OS errors as they are, so that their `raw_os_error()` stays readable).
pub(crate) fn context(what: std::fmt::Arguments<'_>, err: std::io::Error) -> std::io::Error {
    let reason = err.to_string();
    let mut chars = reason.chars();
    let first = chars.next().map(|c| c.to_lowercase().to_string());
    let rest = chars.as_str();
    std::io::Error::new(
        err.kind(),
        format!("{what}: {}{rest}", first.unwrap_or_default()),
    )
}

/// Why the process fails, on stderr: not through the logger, since -q must not hide it.
pub(crate) fn fatal(err: &dyn std::fmt::Display) {
    logger::fatal(&err.to_string());
}

fn usage_error(err: &dyn std::fmt::Display) -> ExitCode {
    logger::fatal(&format!("{err}\n{USAGE}\ntry 'netgrace --help' for more"));
    ExitCode::from(2)
}
