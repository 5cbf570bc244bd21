//! Errors with context: what we were doing, on what, and the OS error that stopped it.
//!
//! Its own module because both floors use it, the server (bind) and the reactor (poll): a
//! helper in `server.rs` made the reactor import from the module that imports it.

use std::error::Error;
use std::fmt;
use std::io;

use crate::Report;

/// Adds what we were doing to an OS error, keeping the original inside so that nothing is lost:
/// the kind stays the same (callers can still match on it), the message reads
/// `bind 127.0.0.1:5388: address already in use (os error 98)`, and the original error, with its
/// OS code, is the [`Error::source`] of the result.
///
/// std cannot give a rebuilt error the original's `raw_os_error()`: an `io::Error` either is an
/// OS code or carries a message. So the code is one step down:
/// `err.source()` downcast to `io::Error`.
pub(crate) fn context(what: impl fmt::Display, err: io::Error) -> io::Error {
    let kind = err.kind();
    io::Error::new(
        kind,
        Context {
            what: what.to_string(),
            source: err,
        },
    )
}

/// The payload of an error made by [`context`].
#[derive(Debug)]
struct Context {
    what: String,
    source: io::Error,
}

impl fmt::Display for Context {
    /// `what: reason`, the reason starting lowercase as in the rest of the sentence.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = self.source.to_string();
        let mut chars = reason.chars();
        write!(f, "{}: ", self.what)?;
        if let Some(first) = chars.next() {
            write!(f, "{}", first.to_lowercase())?;
        }
        f.write_str(chars.as_str())
    }
}

impl Error for Context {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

/// Attaches the counts of a run to the error that ended it, so they are not lost with the
/// server that `run` consumed. The kind and the message stay those of `err`; the counts are
/// read back with [`report_of`] (publicly, `Report::from_failed_run`).
pub(crate) fn with_report(err: io::Error, report: Report) -> io::Error {
    let kind = err.kind();
    io::Error::new(
        kind,
        Failed {
            source: err,
            report,
        },
    )
}

/// The counts carried by an error made by [`with_report`].
pub(crate) fn report_of(err: &io::Error) -> Option<&Report> {
    err.get_ref()?
        .downcast_ref::<Failed>()
        .map(|failed| &failed.report)
}

/// The payload of an error made by [`with_report`].
#[derive(Debug)]
struct Failed {
    source: io::Error,
    report: Report,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.fmt(f)
    }
}

impl Error for Failed {
    /// One step down, as for a [`context`] error: the OS error itself.
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_reads_what_then_the_lowercased_reason() {
        let err = context("bind 127.0.0.1:5388", io::Error::from_raw_os_error(98));
        assert_eq!(
            err.to_string(),
            "bind 127.0.0.1:5388: address already in use (os error 98)"
        );
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn issue_10_a_failed_runs_error_carries_its_report_and_keeps_its_cause() {
        let report = Report {
            accepted: 3,
            ..Report::default()
        };
        let err = with_report(context("poll", io::Error::from_raw_os_error(22)), report);
        assert_eq!(report_of(&err).map(|report| report.accepted), Some(3));
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), "poll: invalid argument (os error 22)");
        let os = err
            .source()
            .and_then(|source| source.downcast_ref::<io::Error>());
        assert_eq!(os.and_then(io::Error::raw_os_error), Some(22));
        assert!(report_of(&io::Error::from_raw_os_error(22)).is_none());
    }

    #[test]
    fn issue_10_the_os_error_survives_as_the_source() {
        let err = context("bind 127.0.0.1:5388", io::Error::from_raw_os_error(98));
        let source = err
            .source()
            .and_then(|source| source.downcast_ref::<io::Error>());
        assert_eq!(source.and_then(io::Error::raw_os_error), Some(98));
    }
}
