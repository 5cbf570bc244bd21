//! [`Report`]: what a run did, returned by [`Server::run`](crate::Server::run).

use std::fmt;
use std::time::Duration;

/// Counters from one [`Server::run`](crate::Server::run), returned when it finishes.
///
/// Every accepted connection ends in exactly one of five ways, so once `run` has returned
/// `accepted == closed + drained + forced + errors + timed_out`.
///
/// Its [`Display`](fmt::Display) form is the one line the binary logs at exit.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let server = netgrace::Server::bind(netgrace::Config::new("127.0.0.1:0".parse().unwrap()))?;
/// server.shutdown_handle().shutdown();
/// let report = server.run()?;
/// let ended = report.closed + report.drained + report.forced + report.errors + report.timed_out;
/// assert_eq!(report.accepted, ended);
/// println!("{report}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Connections accepted.
    pub accepted: u64,
    /// Most connections open at the same moment.
    pub peak_connections: usize,
    /// Bytes written back to clients.
    pub bytes_echoed: u64,
    /// Connections closed cleanly before shutdown began: the client shut down its write side and
    /// received all its echo.
    pub closed: u64,
    /// Connections open when a graceful shutdown began that then closed cleanly: all echo
    /// delivered, then EOF, then the client closed (or had already half-closed).
    pub drained: u64,
    /// Connections closed without finishing: still open at the drain deadline, or open at an
    /// immediate shutdown. A connection whose close the idle timer had started counts as
    /// [`Report::timed_out`] instead, however it ends.
    pub forced: u64,
    /// Connections closed because of an IO error on them (reset, broken pipe, ...), or accepted
    /// but not registered with the poll.
    pub errors: u64,
    /// Connections closed because they were silent for
    /// [`Config::idle_timeout`](crate::Config#structfield.idle_timeout).
    pub timed_out: u64,
    /// From the moment the reactor saw the shutdown request to the moment `run` returned.
    pub shutdown_duration: Duration,
    /// How the run ended: which request it acted on last, or a failure of the loop itself.
    pub stop: Stop,
}

/// How a [`Server::run`](crate::Server::run) ended, in [`Report::stop`].
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let server = netgrace::Server::bind(netgrace::Config::new("127.0.0.1:0".parse().unwrap()))?;
/// server.shutdown_handle().shutdown_now();
/// assert_eq!(server.run()?.stop, netgrace::Stop::Immediate);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stop {
    /// [`ShutdownHandle::shutdown`](crate::ShutdownHandle::shutdown): the backlog was accepted
    /// and drained with the rest. Connections the drain deadline cut are in [`Report::forced`].
    Graceful,
    /// [`ShutdownHandle::hand_over`](crate::ShutdownHandle::hand_over): the backlog was left to
    /// the successor, the open connections drained.
    HandOver,
    /// [`ShutdownHandle::shutdown_now`](crate::ShutdownHandle::shutdown_now), possibly during a
    /// drain: whatever was open was closed at once.
    Immediate,
    /// The event loop itself failed: `run` returned a [`RunError`](crate::RunError), whose
    /// [`report`](crate::RunError::report) this is.
    Failure,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stop::Graceful => "graceful",
            Stop::HandOver => "hand-over",
            Stop::Immediate => "immediate",
            Stop::Failure => "failure",
        })
    }
}

impl Report {
    /// A report with every count at zero, for a run that will end by `stop` unless something
    /// else ends it first.
    pub(crate) fn new(stop: Stop) -> Report {
        Report {
            accepted: 0,
            peak_connections: 0,
            bytes_echoed: 0,
            closed: 0,
            drained: 0,
            forced: 0,
            errors: 0,
            timed_out: 0,
            shutdown_duration: Duration::ZERO,
            stop,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted={} peak={} bytes_echoed={} closed={} drained={} forced={} errors={} timed_out={} shutdown_ms={:.3} stop={}",
            self.accepted,
            self.peak_connections,
            self.bytes_echoed,
            self.closed,
            self.drained,
            self.forced,
            self.errors,
            self.timed_out,
            self.shutdown_duration.as_secs_f64() * 1000.0,
            self.stop
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_every_counter() {
        let report = Report {
            accepted: 10,
            peak_connections: 7,
            bytes_echoed: 1234,
            closed: 1,
            drained: 6,
            forced: 2,
            errors: 1,
            timed_out: 3,
            shutdown_duration: Duration::from_micros(1500),
            stop: Stop::HandOver,
        };
        assert_eq!(
            report.to_string(),
            "accepted=10 peak=7 bytes_echoed=1234 closed=1 drained=6 forced=2 errors=1 timed_out=3 shutdown_ms=1.500 stop=hand-over"
        );
    }
}
