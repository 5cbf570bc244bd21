//! The event loop: one `mio::Poll`, three kinds of token, one turn at a time.
//!
//! A *turn* is one `poll` plus the dispatch of what it returned:
//!
//! 1. act on a shutdown request, if one is new ([`Reactor::run`]);
//! 2. wait for events, at most until the nearest deadline ([`Reactor::poll_timeout`]);
//! 3. pump each connection that has an event ([`Reactor::on_connection`]);
//! 4. accept, if the listener has connections queued and there is room ([`Reactor::accept_burst`]).
//!
//! Accepting comes last so that a slab key freed in step 3 is not reused while events for the old
//! connection with that key may still be in this turn's batch.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::backoff::Backoff;
use crate::connection::{interrupted, would_block, Connection, Status};
use crate::server::context;
use crate::shutdown::{Request, Shared};
use crate::{Config, Report};

/// The waker's token. Connection tokens are slab keys, below `max_connections`, which
/// `Config::validate` keeps far below `usize::MAX - 1`; so the top two values are free.
pub(crate) const WAKER: Token = Token(usize::MAX - 1);
/// The listener's token; see [`WAKER`].
pub(crate) const LISTENER: Token = Token(usize::MAX);

/// Events taken from the kernel per `poll`; more simply wait for the next turn.
const EVENTS_PER_TURN: usize = 1024;
/// The shared read buffer (capped by `max_buffer`): one 64 KiB read drains a typical socket
/// receive queue in a single call, and it is allocated once per reactor, not per connection.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Most accepts per turn, so a connection storm cannot starve the connections already open;
/// the rest are accepted on the next turn, which then polls with a zero timeout.
const ACCEPT_BURST: usize = 256;

/// How a connection ended, for the [`Report`] counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Clean,
    Error,
    Forced,
}

/// The state of one `run`: everything the loop owns.
#[derive(Debug)]
pub(crate) struct Reactor {
    poll: Poll,
    /// `None` from the moment graceful shutdown begins: dropping it closes the socket, so new
    /// connection attempts are refused rather than left waiting.
    listener: Option<TcpListener>,
    /// Open connections; the key of each is its poll token.
    connections: Slab<Connection<TcpStream>>,
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
            scratch: vec![0; SCRATCH_BYTES.min(config.max_buffer)],
            config,
            shared,
            backoff: Backoff::default(),
            accept_pending: true,
            drain: None,
            report: Report::default(),
        }
    }

    /// Runs turns until shutdown completes.
    pub(crate) fn run(mut self) -> io::Result<Report> {
        let mut events = Events::with_capacity(EVENTS_PER_TURN);
        loop {
            let now = Instant::now();
            // The atomic, not the waker event, is the truth: this sees a request made before run
            // started and one whose wake-up coalesced with another.
            match self.shared.request() {
                Request::Immediate => return Ok(self.stop_now(now)),
                Request::Graceful if self.drain.is_none() => self.begin_drain(now),
                _ => {}
            }
            if let Some((started, deadline)) = self.drain {
                if deadline.is_some_and(|deadline| now >= deadline) && !self.connections.is_empty()
                {
                    info!(
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
            self.turn(&mut events, now)?;
        }
    }

    fn turn(&mut self, events: &mut Events, now: Instant) -> io::Result<()> {
        match self.poll.poll(events, self.poll_timeout(now)) {
            Ok(()) => {}
            // A signal landed on this thread: nothing happened, take another turn.
            Err(err) if interrupted(&err) => return Ok(()),
            // The poll itself failed: the loop cannot go on.
            Err(err) => return Err(context("poll", err)),
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept_pending = true,
                // The wake-up only ended the poll; `run` reads the request itself.
                WAKER => {}
                token => self.on_connection(token, event),
            }
        }
        self.accept_burst(Instant::now());
        Ok(())
    }

    /// How long `poll` may block: until the nearest deadline, or for ever if there is none (the
    /// waker ends it for a shutdown request, and no other timer exists).
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let mut nearest: Option<Instant> = self.drain.and_then(|(_, deadline)| deadline);
        if self.can_accept() {
            match self.backoff.until() {
                // Paused after exhaustion: retry when the pause ends, not before.
                Some(until) if until > now => {
                    nearest = Some(nearest.map_or(until, |d| d.min(until)))
                }
                // Connections are waiting in the backlog and no edge will announce them again.
                _ => return Some(Duration::ZERO),
            }
        }
        nearest.map(|deadline| deadline.saturating_duration_since(now))
    }

    fn can_accept(&self) -> bool {
        self.accept_pending
            && self.listener.is_some()
            && self.connections.len() < self.config.max_connections
    }

    fn on_connection(&mut self, token: Token, event: &Event) {
        // A stale event: this connection was closed earlier in the same batch (accepts wait for
        // the end of the turn, so its key cannot have been reused yet).
        let Some(connection) = self.connections.get_mut(token.0) else {
            return;
        };
        let trust_short_read = !(event.is_read_closed() || event.is_error());
        let result = connection.pump(&mut self.scratch, self.config.max_buffer, trust_short_read);
        self.settle(token.0, result);
    }

    /// Acts on what a pump returned: nothing, a clean close, or a close on error.
    fn settle(&mut self, key: usize, result: io::Result<Status>) {
        match result {
            Ok(Status::Open) => {}
            Ok(Status::Closed) => self.close(key, Ending::Clean),
            Err(err) => {
                debug!("connection {key}: closed on error: {err}");
                self.close(key, Ending::Error);
            }
        }
    }

    fn close(&mut self, key: usize, ending: Ending) {
        // Dropping the stream closes the descriptor, which also removes it from the epoll
        // interest list (epoll(7), Q6): no deregister call needed.
        let Some(connection) = self.connections.try_remove(key) else {
            return;
        };
        self.report.bytes_echoed += connection.echoed();
        let counter = match (ending, self.drain.is_some()) {
            (Ending::Clean, false) => &mut self.report.closed,
            (Ending::Clean, true) => &mut self.report.drained,
            (Ending::Error, _) => &mut self.report.errors,
            (Ending::Forced, _) => &mut self.report.forced,
        };
        *counter += 1;
        debug!("connection {key}: closed ({ending:?})");
    }

    /// Accepts until the backlog is empty, the limit is reached or the burst is spent.
    fn accept_burst(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BURST {
            if !self.can_accept() || self.backoff.is_paused(now) {
                return;
            }
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    let failures = self.backoff.succeed();
                    if failures > 0 {
                        info!("accepting again after {failures} failed attempts");
                    }
                    self.register(stream, peer);
                }
                // The backlog is empty: the next readable edge announces the next client.
                Err(err) if would_block(&err) => self.accept_pending = false,
                // That one client gave up or a signal interrupted: try the next.
                Err(err) if is_per_connection(&err) => debug!("accept: {err}"),
                // Out of descriptors or memory: pause accepting, keep serving (see backoff.rs).
                Err(err) => self.pause_accepting(err, now),
            }
        }
    }

    fn pause_accepting(&mut self, err: io::Error, now: Instant) {
        let open = self.connections.len();
        // One warning per episode, not one per attempt: a full descriptor table can last minutes.
        if self.backoff.fail(now) {
            let cause = if is_resource_exhaustion(&err) {
                "out of resources"
            } else {
                "unexpected error"
            };
            warn!("accept: {err} ({cause}); pausing accepts, 5 ms doubling to 1 s; serving {open} connections");
        } else {
            debug!("accept: {err}; still paused");
        }
    }

    fn register(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        self.report.accepted += 1;
        // Small echoes must not wait for the previous segment's ACK (Nagle, RFC 1122 §4.2.3.4).
        if let Err(err) = stream.set_nodelay(true) {
            debug!("set_nodelay {peer}: {err}");
        }
        let entry = self.connections.vacant_entry();
        let token = Token(entry.key());
        // Both interests, once: edge-triggered readiness never needs re-registering.
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(err) = self.poll.registry().register(&mut stream, token, interest) {
            debug!("register {peer}: {err}");
            self.report.errors += 1;
            return;
        }
        entry.insert(Connection::new(stream));
        self.report.peak_connections = self.report.peak_connections.max(self.connections.len());
        debug!("connection {}: accepted from {peer}", token.0);
    }

    /// Graceful shutdown, step 1: refuse new clients, then start every connection's drain.
    fn begin_drain(&mut self, now: Instant) {
        if let Some(mut listener) = self.listener.take() {
            // Deregister, then drop (close): from now on connection attempts are refused.
            if let Err(err) = self.poll.registry().deregister(&mut listener) {
                debug!("deregister listener: {err}");
            }
        }
        self.drain = Some((now, now.checked_add(self.config.drain_timeout)));
        info!(
            "shutting down: listener closed, draining {} connections",
            self.connections.len()
        );
        // Readiness is edge-triggered: a connection with nothing happening would never get an
        // event to start its drain, so each is pumped once now. One allocation, once per run.
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(connection) = self.connections.get_mut(key) {
                connection.begin_drain();
                let result = connection.pump(&mut self.scratch, self.config.max_buffer, false);
                self.settle(key, result);
            }
        }
    }

    /// Closes every connection now, pending echo and unread input included.
    fn force_all(&mut self) {
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, Ending::Forced);
        }
    }

    /// Immediate shutdown: close the listener and every connection now.
    fn stop_now(mut self, now: Instant) -> Report {
        let started = self.drain.map_or(now, |(started, _)| started);
        self.listener = None;
        self.force_all();
        self.report.shutdown_duration = started.elapsed();
        self.report
    }
}

/// Accept failures that concern one client only (it reset or aborted before we accepted it, or a
/// signal interrupted the call): accept(2) lists them; the next accept may well succeed.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// `EMFILE`, `ENFILE` (descriptors), `ENOBUFS`, `ENOMEM` (memory): accept(2) says the machine or
/// process is out of something, which retrying at once cannot fix.
///
/// The numbers are Linux's; elsewhere these errors reach the "unexpected" path of
/// `pause_accepting`, which backs off the same way and only words its warning differently.
fn is_resource_exhaustion(err: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    err.kind() == io::ErrorKind::OutOfMemory
        || matches!(err.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}
