//! The binary's logger: simple_logger formats and writes every record to stdout, one line each,
//! `2026-11-29T12:48:26.172Z INFO  [netgrace[4242] netgrace::server] listening on ...`, through a
//! thin wrapper that does two things simple_logger does not.
//!
//! - **It names the process.** The master and its workers, old and new, share one stdout (each
//!   worker inherits the master's), so the target says whose record it is: `netgrace[PID]`, then
//!   the module.
//! - **It keeps the event loop from waiting on the log's reader.** A write to a pipe or socket
//!   whose reader has stopped blocks (pipe(7)); on the loop's thread that would stop serving. So
//!   records go through a bounded queue to a writer thread, and while that queue is full they are
//!   dropped and counted; the count is logged where the gap is, once the reader catches up
//!   (docs/design.md, "Logs through simple_logger, on stdout", says why).
//!
//! One record, one `write(2)`: simple_logger prints with `println!`, and stdout's line buffer
//! (1 KiB) hands the text and its newline to the kernel together; a write of at most `PIPE_BUF`
//! bytes to a pipe is atomic (pipe(7)), so two processes never splice each other's lines. Records
//! over about 1 KiB are written in two pieces.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use log::{Level, LevelFilter, Log, Metadata, Record};
use simple_logger::SimpleLogger;

/// Records held for the writer while stdout's reader is behind, about 100 KiB of text at a
/// typical 100 bytes a record: enough for a burst of `-v` lines at a busy moment, small enough
/// that a reader who stalls costs little memory. Past it, records are dropped and counted.
const QUEUE_RECORDS: usize = 1024;

/// How long `flush` waits for queued records to be written: at exit, and before a worker tells
/// its master that it serves. A reader that has stopped for good must not keep the
/// process from exiting or a restart from completing; a live one writes the whole queue in far
/// less (a few milliseconds to a pipe).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Filters each record by its own target, then queues it for the writer thread.
struct Logger {
    /// Formats and writes; shared with the writer thread, which owns the writing.
    inner: Arc<SimpleLogger>,
    /// `None` only if the writer thread could not be started: then records are written on the
    /// caller's thread, as simple_logger alone would.
    queue: Option<Arc<Queue>>,
    /// This process's id, read once at `init` in the process that logs (a worker is a new
    /// program with its own `init`).
    pid: u32,
}

/// The records waiting for the writer thread.
struct Queue {
    state: Mutex<State>,
    /// Signalled when a record is queued (the writer waits for one) and when the writer finishes
    /// one or stops (`flush` waits for the queue to empty).
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Pushed by `log` on any thread, popped by the writer thread.
    records: VecDeque<Entry>,
    /// Set by the writer while it writes a record it has popped; cleared when the write returns.
    writing: bool,
    /// Set once, when the writer thread ends (it panics if stdout fails: `println!` does); from
    /// then on records are dropped uncounted and `flush` returns at once.
    closed: bool,
}

/// A record copied out of the caller's `Record`, which borrows the caller's stack.
struct Entry {
    level: Level,
    target: String,
    message: String,
    /// Records dropped right after this one because the queue was full: the writer reports the
    /// count just after writing this record, where the gap is.
    dropped_after: u64,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let entry = Entry {
            level: record.level(),
            target: record.target().to_owned(),
            message: record.args().to_string(),
            dropped_after: 0,
        };
        let Some(queue) = &self.queue else {
            return write(&self.inner, self.pid, &entry);
        };
        let mut state = queue.lock();
        if state.closed {
            return;
        }
        if state.records.len() < QUEUE_RECORDS {
            state.records.push_back(entry);
            queue.changed.notify_all();
        } else if let Some(last) = state.records.back_mut() {
            // The queue is full: the writer is blocked on a reader that has stopped or fallen
            // behind. Dropping keeps this thread (the event loop's, often) serving.
            last.dropped_after += 1;
        }
    }

    fn flush(&self) {
        let Some(queue) = &self.queue else { return };
        let state = queue.lock();
        // Timed out or not, the process goes on (to exit, usually): nothing more can be done.
        let _ = queue
            .changed
            .wait_timeout_while(state, FLUSH_TIMEOUT, |state| {
                !state.closed && (state.writing || !state.records.is_empty())
            });
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-changed (each change is one
        // field assignment or one push/pop), so a poisoned lock is still a consistent one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: pops records in order and writes each, with nothing locked meanwhile.
    fn write_all(&self, inner: &SimpleLogger, pid: u32) {
        let _closed = CloseOnDrop(self);
        let mut state = self.lock();
        loop {
            state = self
                .changed
                .wait_while(state, |state| state.records.is_empty())
                .unwrap_or_else(PoisonError::into_inner);
            let Some(entry) = state.records.pop_front() else {
                continue;
            };
            state.writing = true;
            drop(state);
            write(inner, pid, &entry);
            if entry.dropped_after > 0 {
                let report = Entry {
                    level: Level::Warn,
                    target: module_path!().to_owned(),
                    message: format!(
                        "dropped {} log records while stdout was full",
                        entry.dropped_after
                    ),
                    dropped_after: 0,
                };
                write(inner, pid, &report);
            }
            state = self.lock();
            state.writing = false;
            self.changed.notify_all();
        }
    }
}

/// Marks the queue closed when the writer thread ends, by panic included, so that `log` stops
/// queueing and `flush` stops waiting.
struct CloseOnDrop<'a>(&'a Queue);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.closed = true;
        state.records.clear();
        self.0.changed.notify_all();
    }
}

/// Hands `entry` to simple_logger with the target `netgrace[PID] TARGET`.
fn write(inner: &SimpleLogger, pid: u32, entry: &Entry) {
    let target = format!("netgrace[{pid}] {}", entry.target);
    inner.log(
        &Record::builder()
            .level(entry.level)
            .target(&target)
            .args(format_args!("{}", entry.message))
            .build(),
    );
}

/// Installs the logger: `verbosity` is the count of -v minus the count of -q; at 0 the level
/// comes from `RUST_LOG` (a level name such as `debug`), or is `info`.
pub(crate) fn init(verbosity: i32) {
    let inner = Arc::new(simple_logger(verbosity));
    let level = inner.max_level();
    let pid = std::process::id();
    let queue = Arc::new(Queue {
        state: Mutex::default(),
        changed: Condvar::new(),
    });
    let writer = {
        let (inner, queue) = (inner.clone(), queue.clone());
        std::thread::Builder::new()
            .name("log".into())
            .spawn(move || queue.write_all(&inner, pid))
    };
    let logger = Logger {
        inner,
        queue: writer.ok().map(|_| queue),
        pid,
    };
    // Setting it fails only if a logger is already set, which nothing else in this binary does.
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

/// simple_logger at the level `verbosity` asks for (see [`init`]), except that mio's own lines
/// (its registrations, at trace) stop at debug, so that -vv shows the loop's narration without
/// them in between.
fn simple_logger(verbosity: i32) -> SimpleLogger {
    let logger = match verbosity {
        0 => SimpleLogger::new().with_level(LevelFilter::Info).env(),
        1 => SimpleLogger::new().with_level(LevelFilter::Debug),
        v if v >= 2 => SimpleLogger::new().with_level(LevelFilter::Trace),
        -1 => SimpleLogger::new().with_level(LevelFilter::Warn),
        -2 => SimpleLogger::new().with_level(LevelFilter::Error),
        _ => SimpleLogger::new().with_level(LevelFilter::Off),
    };
    let level = logger.max_level();
    logger.with_module_level("mio", level.min(LevelFilter::Debug))
}

/// Writes `netgrace: MESSAGE` and a newline to stderr in one `write(2)`, not through the logger:
/// -q must not hide why the process failed, and a line written in pieces could be spliced by a
/// process sharing stderr.
pub(crate) fn fatal(message: &str) {
    let line = format!("netgrace: {message}\n");
    // Nowhere to report a failed write to stderr; the process is about to exit anyway.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `simple_logger(verbosity)` lets a record of `level` from `target` through.
    fn passes(verbosity: i32, target: &str, level: Level) -> bool {
        let metadata = Metadata::builder().target(target).level(level).build();
        simple_logger(verbosity).enabled(&metadata)
    }

    #[test]
    fn each_v_and_q_moves_the_level_one_step() {
        let lowest = |verbosity| {
            [
                Level::Trace,
                Level::Debug,
                Level::Info,
                Level::Warn,
                Level::Error,
            ]
            .into_iter()
            .find(|&level| passes(verbosity, "netgrace::reactor", level))
        };
        assert_eq!(lowest(2), Some(Level::Trace));
        assert_eq!(lowest(3), Some(Level::Trace));
        assert_eq!(lowest(1), Some(Level::Debug));
        assert_eq!(lowest(-1), Some(Level::Warn));
        assert_eq!(lowest(-2), Some(Level::Error));
        assert_eq!(lowest(-3), None);
    }

    #[test]
    fn mio_stops_at_debug_even_at_trace() {
        assert!(passes(2, "netgrace::reactor::trace", Level::Trace));
        assert!(!passes(2, "mio::poll", Level::Trace));
        assert!(passes(2, "mio::poll", Level::Debug));
        assert!(!passes(-1, "mio::poll", Level::Info));
    }
}
