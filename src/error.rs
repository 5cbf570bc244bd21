//! [`RunError`]: a run whose event loop failed, and what it did until then.

use std::error::Error;
use std::fmt;
use std::io;

use crate::Report;

/// Why a [`Server::run`](crate::Server::run) failed, with the [`Report`] of what it did until
/// then.
///
/// `run` consumes the server, so the counts travel with the error, and a caller that wants them
/// does not have to dig: [`RunError::report`]. In that report [`Report::stop`] is
/// [`Stop::Failure`](crate::Stop::Failure), and the connections still open when the loop failed
/// are counted as [`Report::forced`]: `run` closed them before returning.
///
/// The cause is the OS error that stopped the loop (today only `epoll_wait(2)` can, with
/// anything but `EINTR`, which is retried): it is the [`source`](Error::source), and
/// [`RunError::kind`] and [`RunError::raw_os_error`] read it as on an [`io::Error`]. The message
/// names the operation and the cause in one line, as `poll: invalid argument (os error 22)`.
///
/// It converts into an [`io::Error`] of the same kind and message, so `?` works in a function
/// that returns [`io::Result`]; the OS error is then that error's `source()`, and the
/// `RunError`, with its report, is inside it ([`io::Error::get_ref`]).
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::error::Error as _;
///
/// let server = netgrace::Server::bind(netgrace::Config::new("127.0.0.1:0".parse().unwrap()))?;
/// server.shutdown_handle().shutdown();
/// match server.run() {
///     Ok(report) => println!("{report}"),
///     Err(err) => {
///         eprintln!("stopped by a failure after: {}", err.report());
///         eprintln!("os error: {:?}, cause: {:?}", err.raw_os_error(), err.source());
///         return Err(err.into());
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RunError {
    /// What the loop was doing when it failed, for the message: `poll`.
    operation: &'static str,
    /// The OS error, as the OS gave it.
    source: io::Error,
    /// The counts up to the failure, with `stop` set to `Failure`.
    report: Report,
}

impl RunError {
    pub(crate) fn new(operation: &'static str, source: io::Error, report: Report) -> RunError {
        RunError {
            operation,
            source,
            report,
        }
    }

    /// What the run did before it failed.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let server = netgrace::Server::bind(netgrace::Config::new("127.0.0.1:0".parse().unwrap()))?;
    /// server.shutdown_handle().shutdown();
    /// let report = match server.run() {
    ///     Ok(report) => report,
    ///     Err(err) => err.report().clone(),
    /// };
    /// println!("{report}");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The kind of the OS error that stopped the loop, as [`io::Error::kind`] gives it.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let server = netgrace::Server::bind(netgrace::Config::new("127.0.0.1:0".parse().unwrap()))?;
    /// server.shutdown_handle().shutdown();
    /// if let Err(err) = server.run() {
    ///     assert_ne!(err.kind(), std::io::ErrorKind::Interrupted, "retried, never returned");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// The OS error code (`errno`) that stopped the loop, as [`io::Error::raw_os_error`] gives
    /// it: `Some` for every failure `run` reports today.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let server = netgrace::Server::bind(netgrace::Config::new("127.0.0.1:0".parse().unwrap()))?;
    /// server.shutdown_handle().shutdown();
    /// if let Err(err) = server.run() {
    ///     eprintln!("epoll_wait failed with errno {:?}", err.raw_os_error());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

impl fmt::Display for RunError {
    /// `operation: reason`, the OS's reason starting lowercase, as in the rest of the line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = self.source.to_string();
        let mut chars = reason.chars();
        write!(f, "{}: ", self.operation)?;
        if let Some(first) = chars.next() {
            write!(f, "{}", first.to_lowercase())?;
        }
        f.write_str(chars.as_str())
    }
}

impl Error for RunError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

impl From<RunError> for io::Error {
    /// The same kind and message; the `RunError` stays inside, so nothing is lost.
    fn from(err: RunError) -> io::Error {
        io::Error::new(err.kind(), err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Stop;

    fn failed() -> RunError {
        let mut report = Report::new(Stop::Failure);
        report.accepted = 3;
        RunError::new("poll", io::Error::from_raw_os_error(22), report)
    }

    #[test]
    fn the_message_reads_operation_then_the_lowercased_reason() {
        assert_eq!(failed().to_string(), "poll: invalid argument (os error 22)");
    }

    #[test]
    fn the_os_error_is_the_source_and_its_code_and_kind_are_read_directly() {
        let err = failed();
        assert_eq!(err.raw_os_error(), Some(22));
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let source = err.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(source.and_then(io::Error::raw_os_error), Some(22));
        assert_eq!(err.report().accepted, 3);
    }

    /// `?` into an `io::Result` keeps the kind, the message, the OS error as the source, and the
    /// report inside.
    #[test]
    fn into_io_error_keeps_kind_message_source_and_report() {
        let err = io::Error::from(failed());
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), "poll: invalid argument (os error 22)");
        let source = err.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(source.and_then(io::Error::raw_os_error), Some(22));
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<RunError>());
        assert_eq!(inner.map(|e| e.report().accepted), Some(3));
    }
}
