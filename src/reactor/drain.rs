//! The reactor's ways to stop: a graceful drain (keeping or leaving the backlog), the grace for
//! clients that have sent nothing yet, and the immediate stop.
//!
//! Both drains end the same way (every connection flushed, FIN, lingering close, bounded by
//! `drain_timeout`); they differ only in what happens to the clients waiting in the listen
//! backlog. A graceful shutdown accepts them, since closing the listener would reset them. A
//! hand-over leaves them where they are: another process shares the socket and its queue, and
//! is accepting already (docs/restart.md).

use std::time::{Duration, Instant};

use log::{debug, info};

use super::{Ending, Reactor};
use crate::{Report, Stop};

/// Longest the drain waits for the first bytes of a connection that has sent nothing yet
/// before sending its FIN; never longer than half of `drain_timeout`, so that a client which
/// then reads its EOF still has the other half to close cleanly instead of being forced.
///
/// Why wait at all: a client accepted a moment before the drain began may have its request in
/// flight, and finding its socket empty would answer it with a bare EOF (at a hand-over the old
/// process keeps accepting until the successor is ready, so this race happens on every
/// restart under load). Why a second: a client sends its request as soon as its handshake
/// completes, so the bytes follow the accept within a round trip plus the client's own
/// scheduling delay; a second covers the longest round trips on the Internet several times
/// over and costs a truly silent client only a second more before its EOF. Go's
/// `Server.Shutdown` gives connections in `StateNew` 5 s (golang/go#22682: browsers' preconnects
/// held `Shutdown` up for ever); its bound is for HTTP clients that connect before they know
/// what to ask, which an echo client does not do.
pub(super) const FIRST_BYTES_GRACE: Duration = Duration::from_secs(1);

impl Reactor {
    /// Starts the drain. `hand_over`: leave the backlog to the process that shares the listening
    /// socket instead of accepting it.
    pub(super) fn begin_drain(&mut self, now: Instant, hand_over: bool) {
        if !hand_over {
            // Clients whose handshake the kernel already completed are waiting in the backlog;
            // closing the listener would reset them. Accept them first (within the limit), so
            // they are drained like everyone else: a clean EOF instead of a reset.
            self.accept_pending = true;
            while self.can_accept() && !self.backoff.is_paused(now) {
                self.accept_burst(now);
            }
        }
        if let Some(mut listener) = self.listener.take() {
            // Deregister, then drop (close). Alone, the socket closes with it and connection
            // attempts are refused; at a hand-over the successor's descriptor keeps it open.
            if let Err(err) = self.poll.registry().deregister(&mut listener) {
                debug!("deregister listener: {err}");
            }
        }
        self.accept_pending = false;
        self.drain = Some((now, now.checked_add(self.config.drain_timeout)));
        self.report.stop = if hand_over {
            Stop::HandOver
        } else {
            Stop::Graceful
        };
        // Info, unlike the library's other progress: once per run, the start of a drain is a
        // lifecycle event an operator follows (what a signal did, how many clients it waits for).
        info!(
            "{}: listener closed, draining {}",
            if hand_over {
                "handing over (the backlog stays with the successor)"
            } else {
                "shutting down"
            },
            super::trace::plural(self.connections.len(), "connection")
        );
        let grace = FIRST_BYTES_GRACE.min(self.config.drain_timeout / 2);
        // Readiness is edge-triggered: a connection with nothing happening would never get an
        // event to start its drain, so each is pumped once now. One allocation, once per run.
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        let mut awaiting = 0;
        for key in keys {
            if let Some(slot) = self.connections.get_mut(key) {
                slot.connection
                    .begin_drain(self.config.max_buffer, !grace.is_zero());
                self.pump(key, false, now);
            }
            if self
                .connections
                .get(key)
                .is_some_and(|slot| slot.connection.awaits_first_bytes())
            {
                awaiting += 1;
            }
        }
        if awaiting > 0 {
            self.first_bytes_until = now.checked_add(grace);
            // Info as well: once per drain, it says why the shutdown may take a second longer.
            info!(
                "drain: {awaiting} connections have sent nothing yet; waiting up to {} ms for their first bytes",
                grace.as_millis()
            );
        }
    }

    /// The grace for first bytes is over: the connections still waiting drain now, which finds
    /// their sockets empty and sends the FIN. O(connections), once per drain.
    pub(super) fn end_first_bytes_grace(&mut self, now: Instant) {
        self.first_bytes_until = None;
        let keys: Vec<usize> = self
            .connections
            .iter()
            .filter(|(_, slot)| slot.connection.awaits_first_bytes())
            .map(|(key, _)| key)
            .collect();
        debug!("drain: grace over for {} silent connections", keys.len());
        for key in keys {
            if let Some(slot) = self.connections.get_mut(key) {
                slot.connection.end_grace();
                self.pump(key, false, now);
            }
        }
    }

    /// Closes every connection now, pending echo and unread input included.
    pub(super) fn force_all(&mut self) {
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, Ending::Forced);
        }
    }

    /// Immediate shutdown: close the listener and every connection now.
    pub(super) fn stop_now(mut self, now: Instant) -> Report {
        let started = self.drain.map_or(now, |(started, _)| started);
        self.listener = None;
        self.force_all();
        self.report.shutdown_duration = started.elapsed();
        self.report.stop = Stop::Immediate;
        self.report
    }
}
