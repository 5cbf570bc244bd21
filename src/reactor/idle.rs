//! The reactor's idle timer: silent connections are closed cleanly, and a clean close that does
//! not finish within a short grace is cut.
//!
//! Two lists, each in deadline order so that finding the next expiry is O(1) (see `idle.rs`):
//! `idle`, every connection by last traffic (they share one timeout), and `closing`, the
//! connections whose idle close has begun, by when it began (they share one grace). A slot is
//! on one list or the other, never both, so one `Link` serves either.

use std::time::{Duration, Instant};

use log::debug;

use super::{Ending, Reactor};
use crate::idle::Link;

/// Longest a connection closed for idleness may linger before it is cut. The client has been
/// silent for a whole idle period, so nothing of its echo is in flight: a live client reads our
/// FIN and closes within a round trip, and one that has not within a second is gone or
/// hostile. Without this bound the slot stayed held for a second idle period (300 s by
/// default). Judgment call; shorter idle timeouts use their own length if it is smaller.
const IDLE_CLOSE_GRACE_MAX: Duration = Duration::from_secs(1);

impl Reactor {
    /// Whether connections are kept in the idle lists: only with an idle timeout, so a
    /// configuration without one does not relink a list on every pump. Fixed for the whole run.
    pub(super) fn tracks_idle(&self) -> bool {
        self.config.idle_timeout.is_some()
    }

    /// How long an idle close may linger before it is cut.
    fn close_grace(timeout: Duration) -> Duration {
        timeout.min(IDLE_CLOSE_GRACE_MAX)
    }

    /// The nearer of: the silent-longest connection reaching the idle timeout, and the oldest
    /// idle close reaching its grace. `None` without an idle timeout, or during a drain (the
    /// drain deadline governs then).
    pub(super) fn next_idle_expiry(&self) -> Option<Instant> {
        let timeout = self.config.idle_timeout?;
        if self.drain.is_some() {
            return None;
        }
        let since = |key: Option<usize>| {
            key.and_then(|key| self.connections.get(key))
                .map(|slot| slot.idle.since())
        };
        let silent = since(self.idle.oldest()).and_then(|since| since.checked_add(timeout));
        let cut = since(self.closing.oldest())
            .and_then(|since| since.checked_add(Self::close_grace(timeout)));
        match (silent, cut) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Cuts the idle closes past their grace, then starts closing the connections silent for
    /// `idle_timeout`: oldest first in each list, stopping at the first that has not expired, so
    /// the cost is O(1) per expiry, not O(connections).
    pub(super) fn expire_idle(&mut self, now: Instant) {
        let Some(timeout) = self.config.idle_timeout else {
            return;
        };
        if self.drain.is_some() {
            return;
        }
        while let Some(key) = self.closing.oldest() {
            let Some(slot) = self.connections.get(key) else {
                return;
            };
            if now < slot.idle.since() + Self::close_grace(timeout) {
                break;
            }
            debug!("c{key}: idle close did not finish, cutting it");
            self.close(key, Ending::Forced);
        }
        while let Some(key) = self.idle.oldest() {
            let Some(slot) = self.connections.get_mut(key) else {
                return;
            };
            // No expiry at all if the timeout is too large to add to an Instant.
            let expiry = slot.idle.since().checked_add(timeout);
            if expiry.is_none_or(|expiry| now < expiry) {
                break;
            }
            debug!("c{key}: idle timeout, closing");
            slot.timed_out = true;
            slot.connection.begin_drain(self.config.max_buffer, false);
            // From the idle list to the closing list, timed from now. Traffic no longer moves
            // it (`pump` touches only connections not timed out): the close gets one grace,
            // not one per trickle of input discarded while lingering.
            self.idle.unlink(&mut self.connections, key);
            if let Some(slot) = self.connections.get_mut(key) {
                slot.idle = Link::new(now);
            }
            self.closing.push_back(&mut self.connections, key);
            self.pump(key, false, now);
        }
    }

    /// Takes a closing connection off whichever idle list holds it.
    pub(super) fn forget_idle(&mut self, key: usize) {
        if !self.tracks_idle() {
            return;
        }
        match self.connections.get(key) {
            Some(slot) if slot.timed_out => self.closing.unlink(&mut self.connections, key),
            Some(_) => self.idle.unlink(&mut self.connections, key),
            None => {}
        }
    }
}
