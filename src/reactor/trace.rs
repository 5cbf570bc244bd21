//! The trace (`netgrace -vv`, log level trace): the loop narrating itself, one short line per
//! poll and per pump, for a learner to follow turn by turn (docs/event-loop.md, "Watch it run").
//!
//! Every function here is called only behind `log_enabled!(Level::Trace)`, so with the trace off
//! the loop pays one relaxed load and a comparison per poll and per pump: nothing is formatted
//! and nothing is allocated. The other trace lines (accepts, the ready list, idle expiry, the
//! drain) are `trace!` calls in place, whose arguments `log` evaluates only when enabled.

use std::fmt::Write;
use std::io;
use std::time::Duration;

use log::trace;
use mio::event::Event;
use mio::Events;

use super::{LISTENER, WAKER};
use crate::connection::{Connection, Status, LINGERING};

/// Which deadline bounded a `poll`: the "why" in `poll(timeout 0 ms: ready list)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// Connections that ran out of budget wait on the ready list: do not block.
    ReadyList,
    /// The backlog may hold clients no new edge will announce: do not block.
    AcceptPending,
    /// Accepting is paused after descriptor exhaustion until then.
    Backoff,
    /// The idle timer: the silent-longest connection, or the oldest idle close.
    IdleTimer,
    /// The end of the first-bytes grace of a drain.
    FirstBytesGrace,
    /// The drain deadline.
    DrainDeadline,
    /// No deadline: block until an event or a wake-up.
    Events,
}

impl Wait {
    fn describe(self) -> &'static str {
        match self {
            Wait::ReadyList => "ready list",
            Wait::AcceptPending => "accept pending",
            Wait::Backoff => "accept backoff",
            Wait::IdleTimer => "idle timer",
            Wait::FirstBytesGrace => "first-bytes grace",
            Wait::DrainDeadline => "drain deadline",
            Wait::Events => "until an event",
        }
    }
}

/// `turn 41: poll(timeout 0 ms: ready list) -> 3 events: L, c4 R, c7 W`
pub(super) fn turn(turn: u64, timeout: Option<Duration>, why: Wait, events: &Events) {
    let mut line = format!("turn {turn}: poll(timeout ");
    match timeout {
        Some(timeout) => {
            let _ = write!(line, "{} ms", timeout.as_millis());
        }
        None => line.push_str("none"),
    }
    let count = events.iter().count();
    let _ = write!(line, ": {}) -> {}", why.describe(), plural(count, "event"));
    for (i, event) in events.iter().enumerate() {
        line.push_str(if i == 0 { ": " } else { ", " });
        describe_event(&mut line, event);
    }
    trace!("{line}");
}

/// `L` (the listener), `wake` (the waker), or `c4 RW hup` (connection 4: readable, writable,
/// the client's write side closed).
fn describe_event(line: &mut String, event: &Event) {
    match event.token() {
        LISTENER => line.push('L'),
        WAKER => line.push_str("wake"),
        token => {
            let _ = write!(line, "c{} ", token.0);
            if event.is_readable() {
                line.push('R');
            }
            if event.is_writable() {
                line.push('W');
            }
            for (set, flag) in [
                (event.is_read_closed(), " hup"),
                (event.is_write_closed(), " out-hup"),
                (event.is_error(), " err"),
                (event.is_priority(), " pri"),
            ] {
                if set {
                    line.push_str(flag);
                }
            }
        }
    }
}

/// `c4: read 64, wrote 64, read WouldBlock -> open`, or for a pump that changed the phase,
/// `c4: read 0, wrote 512, read WouldBlock -> lingering (was draining: FIN sent)`.
///
/// `before` is the connection's [`Connection::counters`] and phase name before the pump.
pub(super) fn pump<S: crate::connection::Stream>(
    key: usize,
    connection: &Connection<S>,
    before: ((u32, u64), &'static str),
    result: &io::Result<Status>,
) {
    let ((read_before, wrote_before), phase_before) = before;
    let (read, wrote) = connection.counters();
    let read = read.wrapping_sub(read_before);
    let wrote = wrote - wrote_before;
    let pending = connection.pending_len();
    let pending = if pending > 0 {
        format!(", pending {pending}")
    } else {
        String::new()
    };
    let phase = connection.phase_name();
    let change = if phase == phase_before {
        String::new()
    } else if phase == LINGERING {
        // Only a drain leads into lingering, and it does so by sending the FIN.
        format!(" (was {phase_before}: FIN sent)")
    } else {
        format!(" (was {phase_before})")
    };
    match result {
        Ok(status) => {
            let outcome = match status {
                Status::Open => format!("{phase}{change}"),
                Status::Busy => format!("{phase}{change}, busy, queued"),
                Status::Closed => "closed".to_string(),
            };
            trace!(
                "c{key}: read {read}, wrote {wrote}, {}{pending} -> {outcome}",
                connection.end().describe()
            );
        }
        Err(err) => trace!("c{key}: read {read}, wrote {wrote} -> error: {err}"),
    }
}

/// "1 event", "3 events".
pub(super) fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}
