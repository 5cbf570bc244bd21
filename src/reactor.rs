//! The event loop: one `mio::Poll`, three kinds of token, one turn at a time.
//!
//! A *turn* is one `poll` plus the dispatch of what it returned:
//!
//! 1. act on a shutdown request, if one is new, and on the drain deadline ([`Reactor::run`]);
//! 2. wait for events, at most until the nearest deadline ([`Reactor::poll_timeout`]);
//! 3. pump each connection that has an event ([`Reactor::on_connection`]);
//! 4. pump again the connections whose last pump ran out of budget ([`Reactor::serve_ready`]);
//! 5. close the connections that have been silent too long ([`Reactor::expire_idle`]);
//! 6. accept, if the listener has connections queued and there is room (`accept_burst`, in
//!    `reactor/accept.rs`).
//!
//! Accepting comes last so that a slab key freed earlier in the turn is not reused while events
//! for the old connection with that key may still be in this turn's batch.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, log_enabled, trace, Level};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Poll, Token};
use slab::Slab;

use crate::backoff::Backoff;
use crate::connection::{interrupted, Connection, Status};
use crate::error::RunError;
use crate::idle::{IdleList, Link, Linked};
use crate::shutdown::{Request, Shared};
use crate::{Config, Report, Stop};

mod accept;
mod drain;
mod idle;
#[cfg(test)]
mod tests;
mod trace;

use trace::Wait;

/// The waker's token. Connection tokens are slab keys, below `max_connections`, which
/// `Config::validate` keeps far below `usize::MAX - 1`; so the top two values are free.
pub(crate) const WAKER: Token = Token(usize::MAX - 1);
/// The listener's token; see [`WAKER`].
pub(crate) const LISTENER: Token = Token(usize::MAX);

// The proof that connection keys never reach the two reserved tokens, checked by the compiler.
const _: () = assert!(crate::MAX_CONNECTIONS_LIMIT <= WAKER.0 && WAKER.0 < LISTENER.0);

/// Events taken from the kernel per `poll`; more simply wait for the next turn.
const EVENTS_PER_TURN: usize = 1024;
/// The shared read buffer (capped by `max_buffer`): one 64 KiB read drains a typical socket
/// receive queue in a single call, and it is allocated once per reactor, not per connection.
const SCRATCH_BYTES: usize = 64 * 1024;

/// A ready-list entry: a slab key (below `MAX_CONNECTIONS_LIMIT`, so it fits) and the
/// [`Slot::id`] of the connection that was queued.
type Queued = (u32, u32);

/// How a connection ended, for the [`Report`] counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Clean,
    Error,
    Forced,
}

/// One slab entry: a connection and the reactor's bookkeeping for it.
#[derive(Debug)]
struct Slot {
    connection: Connection<TcpStream>,
    /// Its place in the idle list (moved to the back whenever a pump moves bytes), or, once its
    /// idle close has begun, in the closing list.
    idle: Link,
    /// On the ready list (`ready`, or `due` once the turn swaps them): a pump ran out of budget.
    /// Set in [`Reactor::enqueue`], cleared by [`Reactor::serve_ready`] as it serves the entry.
    queued: bool,
    /// Which connection holds this key: the run's accept count at its registration (wrapping).
    /// Ready-list entries carry it, so an entry left behind by a closed connection is told
    /// apart from the new connection given the same key. Set once, in `register`.
    id: u32,
    /// The idle timeout started its close: the slot moved from the idle list to the closing
    /// list, and is cut if the close has not finished within the grace. Either way it is counted
    /// in [`Report::timed_out`].
    timed_out: bool,
}

impl Linked for Slot {
    fn link(&mut self) -> &mut Link {
        &mut self.idle
    }
}

/// The state of one `run`: everything the loop owns.
#[derive(Debug)]
pub(crate) struct Reactor {
    poll: Poll,
    /// `None` from the moment graceful shutdown begins: dropping it closes the socket, so new
    /// connection attempts are refused rather than left waiting.
    listener: Option<TcpListener>,
    /// Open connections; the key of each is its poll token.
    connections: Slab<Slot>,
    /// Connections by last traffic, oldest first: the idle timer.
    idle: IdleList,
    /// Connections whose idle close has begun, in the order it began: each is cut after
    /// `idle::close_grace` if its client has not closed by then (`reactor/idle.rs`).
    closing: IdleList,
    /// Connections to pump next turn without waiting for an event (their budget ran out), as
    /// key and [`Slot::id`]. Swapped with `due` each turn, so neither allocates after warming up.
    ready: Vec<Queued>,
    /// This turn's share of `ready`, being served; always empty between turns.
    due: Vec<Queued>,
    /// Shared read buffer, see [`SCRATCH_BYTES`].
    scratch: Vec<u8>,
    config: Config,
    shared: Arc<Shared>,
    /// Pause in accepting after resource exhaustion.
    backoff: Backoff,
    /// True when the listener may hold connections we have not accepted: set by its readable
    /// event, cleared only by an accept that returns `WouldBlock`. Readiness is edge-triggered, so
    /// after stopping at the connection limit (or the burst) no new event would come for the
    /// connections already queued; this flag is what resumes accepting.
    accept_pending: bool,
    /// When the graceful drain began and when it must end; `None` while serving. A deadline of
    /// `None` inside means "wait for ever" (a `drain_timeout` too large to add to `Instant`).
    drain: Option<(Instant, Option<Instant>)>,
    /// During a drain, until when the connections that have sent nothing yet wait for their
    /// first bytes before their FIN (`reactor/drain.rs`); `None` once that grace is over.
    first_bytes_until: Option<Instant>,
    /// Turns taken so far: numbers the trace's lines.
    turns: u64,
    report: Report,
}

impl Reactor {
    pub(crate) fn new(
        poll: Poll,
        listener: TcpListener,
        config: Config,
        shared: Arc<Shared>,
    ) -> Reactor {
        Reactor {
            poll,
            listener: Some(listener),
            connections: Slab::new(),
            idle: IdleList::default(),
            closing: IdleList::default(),
            ready: Vec::new(),
            due: Vec::new(),
            scratch: vec![0; SCRATCH_BYTES.min(config.max_buffer)],
            config,
            shared,
            backoff: Backoff::default(),
            accept_pending: true,
            drain: None,
            first_bytes_until: None,
            turns: 0,
            // Whichever way the run ends sets `stop`; until a request is acted on, only a failure
            // of the loop can end it.
            report: Report::new(Stop::Failure),
        }
    }

    /// Runs turns until shutdown completes.
    pub(crate) fn run(self) -> Result<Report, RunError> {
        self.run_with(Events::with_capacity(EVENTS_PER_TURN))
    }

    /// [`Reactor::run`] with the caller's event buffer (a test gives an empty one, which makes
    /// `epoll_wait` fail with `EINVAL`: the only way to see the loop itself fail).
    pub(crate) fn run_with(mut self, mut events: Events) -> Result<Report, RunError> {
        loop {
            let now = Instant::now();
            // The atomic, not the waker event, is the truth: this sees a request made before run
            // started and one whose wake-up coalesced with another.
            match self.shared.request() {
                Request::Immediate => return Ok(self.stop_now(now)),
                Request::Graceful if self.drain.is_none() => self.begin_drain(now, false),
                Request::HandOver if self.drain.is_none() => self.begin_drain(now, true),
                _ => {}
            }
            if self.first_bytes_until.is_some_and(|until| now >= until) {
                self.end_first_bytes_grace(now);
            }
            if let Some((started, deadline)) = self.drain {
                if deadline.is_some_and(|deadline| now >= deadline) && !self.connections.is_empty()
                {
                    debug!(
                        "drain deadline passed: forcing {} connections",
                        self.connections.len()
                    );
                    self.force_all();
                }
                if self.connections.is_empty() {
                    self.report.shutdown_duration = started.elapsed();
                    return Ok(self.report);
                }
            }
            // The poll is the one step of a turn that can fail.
            if let Err(err) = self.turn(&mut events, now) {
                return Err(self.fail("poll", err));
            }
        }
    }

    /// The loop itself failed while doing `operation`: close what is open (counted as forced)
    /// and hand the counts back inside the error, so they are not lost with the server `run`
    /// consumed.
    fn fail(mut self, operation: &'static str, err: io::Error) -> RunError {
        // Debug, not error: the error goes back to the caller, whose job it is to report it.
        debug!(
            "event loop failed: {operation}: {err}; closing {} connections",
            self.connections.len()
        );
        self.force_all();
        if let Some((started, _)) = self.drain {
            self.report.shutdown_duration = started.elapsed();
        }
        self.report.stop = Stop::Failure;
        RunError::new(operation, err, self.report)
    }

    fn turn(&mut self, events: &mut Events, now: Instant) -> io::Result<()> {
        let (timeout, why) = self.poll_timeout(now);
        match self.poll.poll(events, timeout) {
            Ok(()) => {}
            // A signal landed on this thread: nothing happened, take another turn.
            Err(err) if interrupted(&err) => return Ok(()),
            // The poll itself failed: the loop cannot go on.
            Err(err) => return Err(err),
        }
        self.turns += 1;
        if log_enabled!(Level::Trace) {
            trace::turn(self.turns, timeout, why, events);
        }
        let now = Instant::now();
        std::mem::swap(&mut self.ready, &mut self.due);
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept_pending = true,
                // The wake-up only ended the poll; `run` reads the request itself.
                WAKER => {}
                token => self.on_connection(token, event, now),
            }
        }
        self.serve_ready(now);
        self.expire_idle(now);
        self.accept_burst(now);
        Ok(())
    }

    /// How long `poll` may block: until the nearest deadline, or for ever if there is none (the
    /// waker ends it for a shutdown request). With it, which deadline that is, for the trace.
    fn poll_timeout(&self, now: Instant) -> (Option<Duration>, Wait) {
        if !self.ready.is_empty() {
            // Connections with input left over get no new edge: serve them without waiting.
            return (Some(Duration::ZERO), Wait::ReadyList);
        }
        let mut nearest: Option<(Instant, Wait)> = None;
        let mut consider = |deadline: Option<Instant>, why: Wait| {
            if let Some(deadline) = deadline {
                if nearest.is_none_or(|(nearest, _)| deadline < nearest) {
                    nearest = Some((deadline, why));
                }
            }
        };
        consider(
            self.drain.and_then(|(_, deadline)| deadline),
            Wait::DrainDeadline,
        );
        consider(self.first_bytes_until, Wait::FirstBytesGrace);
        consider(self.next_idle_expiry(), Wait::IdleTimer);
        if self.can_accept() {
            match self.backoff.until() {
                // Paused after exhaustion: retry when the pause ends, not before.
                Some(until) if until > now => consider(Some(until), Wait::Backoff),
                // Connections are waiting in the backlog and no edge will announce them again.
                _ => return (Some(Duration::ZERO), Wait::AcceptPending),
            }
        }
        match nearest {
            Some((deadline, why)) => (Some(deadline.saturating_duration_since(now)), why),
            None => (None, Wait::Events),
        }
    }

    fn on_connection(&mut self, token: Token, event: &Event, now: Instant) {
        // A stale event for a connection closed earlier in the same batch is skipped by `pump`
        // (accepts wait for the end of the turn, so its key cannot have been reused yet).
        self.pump(token.0, trusts_short_read(event), now);
    }

    /// Pumps the connections whose budget ran out last turn. They get no event for the input
    /// they left waiting, so without this they would stall. A connection that also had an event
    /// this turn may be served twice; the budget still bounds what one turn spends on it.
    fn serve_ready(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        if !due.is_empty() {
            trace!("ready list: {} due", due.len());
        }
        for &(key, id) in &due {
            let key = key as usize;
            // A stale entry: its connection was closed after it was queued (`close` leaves the
            // entry, rather than scan the lists), and the key is empty or, if an accept reused
            // it, held by a connection with another id, which must not be served for it.
            let Some(slot) = self.connections.get_mut(key).filter(|slot| slot.id == id) else {
                trace!("ready list: c{key} is stale (closed since it was queued), skipped");
                continue;
            };
            slot.queued = false;
            // Unknown readiness: read until WouldBlock rather than trust a short read.
            self.pump(key, false, now);
        }
        due.clear();
        self.due = due;
    }

    /// Runs one connection's IO and acts on the outcome: requeue, close, or nothing.
    fn pump(&mut self, key: usize, trust_short_read: bool, now: Instant) {
        let Some(slot) = self.connections.get_mut(key) else {
            return;
        };
        let before = slot.connection.traffic();
        // Read before the pump, so the trace can say what the pump changed; `None` (and nothing
        // formatted) when the trace is off.
        let traced = log_enabled!(Level::Trace)
            .then(|| (slot.connection.counters(), slot.connection.phase_name()));
        let max_buffer = self.config.max_buffer;
        let result = slot
            .connection
            .pump(&mut self.scratch, max_buffer, trust_short_read);
        if let Some(before) = traced {
            trace::pump(key, &slot.connection, before, &result);
        }
        // Once the idle timer has started a close, traffic (input discarded while lingering)
        // no longer restarts it: the close gets one idle period, not one per trickle.
        if slot.connection.traffic() != before && !slot.timed_out && self.tracks_idle() {
            self.idle.touch(&mut self.connections, key, now);
        }
        match result {
            Ok(Status::Open) => {}
            Ok(Status::Busy) => self.enqueue(key),
            Ok(Status::Closed) => self.close(key, Ending::Clean),
            Err(err) => {
                debug!("c{key}: closed on error: {err}");
                self.close(key, Ending::Error);
            }
        }
    }

    /// Puts a connection on the ready list, at most once however often it runs out of budget.
    fn enqueue(&mut self, key: usize) {
        if let Some(slot) = self.connections.get_mut(key).filter(|slot| !slot.queued) {
            slot.queued = true;
            // Keys stay below MAX_CONNECTIONS_LIMIT (2^24), so they fit in 32 bits.
            self.ready.push((key as u32, slot.id));
        }
    }

    fn close(&mut self, key: usize, ending: Ending) {
        self.forget_idle(key);
        // Dropping the stream closes the descriptor, which also removes it from the epoll
        // interest list (epoll(7), "Will closing a file descriptor cause it to be removed from
        // all epoll interest lists?": yes, unless it was duplicated): no deregister call needed.
        let Some(slot) = self.connections.try_remove(key) else {
            return;
        };
        // If it was queued, its ready-list entry stays behind: `serve_ready` tells it apart by
        // its id. Scanning the lists here instead would make each close O(ready list), and a
        // flood of connections that are busy and then close, quadratic.
        self.report.bytes_echoed += slot.connection.echoed();
        let counter = match (ending, slot.timed_out, self.drain.is_some()) {
            (Ending::Error, _, _) => &mut self.report.errors,
            (_, true, _) => &mut self.report.timed_out,
            (Ending::Forced, false, _) => &mut self.report.forced,
            (Ending::Clean, false, false) => &mut self.report.closed,
            (Ending::Clean, false, true) => &mut self.report.drained,
        };
        *counter += 1;
        debug!(
            "c{key}: closed ({ending:?}, {} open)",
            self.connections.len()
        );
    }
}

/// Whether a short read on this event proves the socket drained (see `Connection::pump`).
///
/// Not when the event also reports the read side closed or an error: an EOF or reset queued
/// behind the data raises no new edge. Not with urgent data pending (`EPOLLPRI`): Linux stops a
/// read at the urgent mark, short, with data still queued behind it. And only on Linux, where
/// epoll(7) documents the rule; mio itself only promises a new event after `WouldBlock`.
fn trusts_short_read(event: &Event) -> bool {
    cfg!(any(target_os = "linux", target_os = "android"))
        && !(event.is_read_closed() || event.is_error() || event.is_priority())
}
