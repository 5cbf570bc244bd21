//! A worker: one [`Server`] on the listening socket its master passed at descriptor 3, taking
//! orders from the master on the control channel at descriptor 4.
//!
//! The channel carries one line per message. The worker writes `ready` when its event loop is
//! one call away, `stopping` when a signal of its own stops it, and `report COUNTERS` when it
//! has finished; the master writes `hand-over`
//! (stop accepting, leave the backlog to the new workers, drain), `stop` (graceful) or
//! `stop-now`. End of file means the master is gone, and the worker stops gracefully rather
//! than serve on unsupervised.
//!
//! Orders from the master are idempotent requests on the [`ShutdownHandle`], while signals
//! count: a second SIGINT stops at once. So Ctrl-C in a terminal, which signals every process
//! of the foreground group, stops a worker gracefully once, though the master passes the same
//! stop on.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use log::{info, warn};
use netgrace::{Config, Report, Server, ShutdownHandle};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

use crate::signals::{self, Order};

/// The messages of the control channel.
pub(crate) const READY: &str = "ready";
pub(crate) const REPORT: &str = "report ";
pub(crate) const STOPPING: &str = "stopping";
pub(crate) const HAND_OVER: &str = "hand-over";
pub(crate) const STOP: &str = "stop";
pub(crate) const STOP_NOW: &str = "stop-now";

/// Serves until the master or a signal says stop; exits 0 after an orderly stop.
pub(crate) fn run(
    config: Config,
    master: u32,
    listener: TcpListener,
    control: UnixStream,
) -> ExitCode {
    match serve(config, master, listener, control) {
        Ok(report) => {
            info!("worker stopped: {report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            crate::fatal(&err);
            ExitCode::FAILURE
        }
    }
}

fn serve(
    config: Config,
    master: u32,
    listener: TcpListener,
    control: UnixStream,
) -> io::Result<Report> {
    let server = Server::from_std(listener, config)?;
    let handle = server.shutdown_handle();
    // Before `ready`: a signal the master or an operator sends from then on must reach our
    // handler, not the default action that kills the process and resets its clients.
    watch_signals(handle.clone(), master, control.try_clone()?)?;
    let mut reports = control.try_clone()?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || take_orders(control, &handle))?;
    // The listener is registered and the loop is one call away: whatever is queued now is
    // accepted on its first turn. A master that cannot hear us times out and replaces us.
    // Our lines so far go out first, so that none lands after the master's answer to `ready`.
    log::logger().flush();
    if let Err(err) = writeln!(reports, "{READY}") {
        warn!("telling the master that we serve: {err}");
    }
    let report = server.run().map_err(|failed| {
        warn!("worker stopped by a failure: {}", failed.report());
        io::Error::from(failed)
    })?;
    if let Err(err) = writeln!(reports, "{REPORT}{report}") {
        warn!("reporting to the master: {err}");
    }
    Ok(report)
}

/// On the `control` thread: the master's orders, until it closes the channel.
fn take_orders(control: UnixStream, handle: &ShutdownHandle) {
    for line in BufReader::new(control).lines() {
        match line.as_deref() {
            Ok(HAND_OVER) => handle.hand_over(),
            Ok(STOP) => handle.shutdown(),
            Ok(STOP_NOW) => handle.shutdown_now(),
            Ok(other) => warn!("unknown order from the master ignored: {other:?}"),
            Err(_) => break,
        }
    }
    // The master exited (or was killed): nobody would reap, replace or stop us.
    info!("the master is gone: stopping gracefully");
    handle.shutdown();
}

/// SIGINT, SIGTERM, SIGQUIT: graceful, then immediate. The rest are the master's to act on.
///
/// A stop signal is also told to the master (`stopping`): the same signal usually reached it
/// too (Ctrl-C, `systemctl stop`), and its own stop may come a moment after our exit, which
/// must not look like a crash.
fn watch_signals(handle: ShutdownHandle, master: u32, mut control: UnixStream) -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2])
        .map_err(|err| io::Error::new(err.kind(), format!("install signal handlers: {err}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stops = 0;
            for signal in signals.forever() {
                match signals::order(signal, &mut stops) {
                    Order::Stop => {
                        info!("{}: stopping gracefully", signals::name(signal));
                        let _ = writeln!(control, "{STOPPING}");
                        handle.shutdown();
                    }
                    Order::StopNow => {
                        warn!("{} again: stopping at once", signals::name(signal));
                        handle.shutdown_now();
                    }
                    Order::Restart | Order::Ignore => info!(
                        "{} ignored by a worker: signal the master, pid {master}",
                        signals::name(signal)
                    ),
                    Order::Reap => {}
                }
            }
        })?;
    Ok(())
}
