//! The binary's logger: one line per record on stderr, `2026-11-29T12:48:26.172Z INFO  [target]
//! message`, written with a single `write` call.
//!
//! Why not a logger crate: during a restart two processes share one stderr (the successor
//! inherits it), and a logger that writes a line in pieces, as `eprintln!` does (the message,
//! then the newline), lets the other process's line land in between, which garbles the log
//! and the journal record. A write of at most `PIPE_BUF` bytes to a pipe is atomic (pipe(7)), and
//! a stream socket (journald's stdout stream) delivers one write's bytes together.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

/// Logs at `level`, except that the modules under `quiet` (mio's registration lines, which would
/// only interleave with the loop's own trace) stop at `quiet_level`.
struct Logger {
    level: LevelFilter,
    quiet: &'static str,
    quiet_level: LevelFilter,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let target = metadata.target();
        let level = if target == self.quiet || target.starts_with(&format!("{}::", self.quiet)) {
            self.quiet_level
        } else {
            self.level
        };
        metadata.level() <= level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {:<5} [{}] {}\n",
            utc_timestamp(SystemTime::now()),
            record.level(),
            record.target(),
            record.args()
        );
        // Nowhere to report a failed write to stderr; the process goes on serving.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger: `verbosity` is the count of -v minus the count of -q; at 0 the level
/// comes from `RUST_LOG` (a level name such as `debug`), or is `info`.
pub(crate) fn init(verbosity: i32) {
    let level = match verbosity {
        0 => std::env::var("RUST_LOG")
            .ok()
            .and_then(|level| level.parse().ok())
            .unwrap_or(LevelFilter::Info),
        1 => LevelFilter::Debug,
        v if v >= 2 => LevelFilter::Trace,
        -1 => LevelFilter::Warn,
        -2 => LevelFilter::Error,
        _ => LevelFilter::Off,
    };
    let logger = Logger {
        level,
        quiet: "mio",
        quiet_level: level.min(LevelFilter::Debug),
    };
    // Leaked: the logger lives as long as the process, as `log` requires. Setting it fails only
    // if a logger is already set, which nothing else in this binary does.
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        log::set_max_level(level);
    }
}

/// `2026-11-29T12:48:26.172Z`: RFC 3339 in UTC, to the millisecond.
fn utc_timestamp(now: SystemTime) -> String {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let time = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        time / 3600,
        time % 3600 / 60,
        time % 60,
        since_epoch.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch): eras of 400 years, each 146 097 days,
/// with years counted from March so that the leap day falls at a year's end.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_to_the_millisecond() {
        let at = |secs: u64, millis: u64| {
            utc_timestamp(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day in a century year divisible by 400), 23:59:59.999.
        assert_eq!(at(951_868_799, 999), "2000-02-29T23:59:59.999Z");
        assert_eq!(at(951_868_800, 0), "2000-03-01T00:00:00.000Z");
        // 2100 is not a leap year: 28 February is followed by 1 March.
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
        assert_eq!(at(1_795_956_106, 172), "2026-11-29T12:41:46.172Z");
    }
}
