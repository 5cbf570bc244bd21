//! The accepting half of the reactor: the burst, the pause after exhaustion, registration.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::{debug, trace, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::{Reactor, Slot};
use crate::backoff::{BACKOFF_MAX, BACKOFF_START};
use crate::connection::{would_block, Connection};
use crate::idle::Link;

/// Most accepts per turn, so a connection storm cannot starve the connections already open;
/// the rest are accepted on the next turn, which then polls with a zero timeout.
const ACCEPT_BURST: usize = 256;

impl Reactor {
    /// Accepts until the backlog is empty, the limit is reached or the burst is spent.
    pub(super) fn accept_burst(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BURST {
            if !self.can_accept() || self.backoff.is_paused(now) {
                if self.accept_pending && self.listener.is_some() {
                    trace!(
                        "accept: {}; the backlog waits",
                        if self.backoff.is_paused(now) {
                            "paused after exhaustion"
                        } else {
                            "at max_connections"
                        }
                    );
                }
                return;
            }
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.end_backoff(now);
                    if let Err(err) = self.register(stream, peer, now) {
                        self.registration_failed(err, now);
                    }
                }
                // The backlog is empty: the next readable edge announces the next client. Accepting
                // works again too, so an exhaustion episode (if any) is over.
                Err(err) if would_block(&err) => {
                    trace!("accept: WouldBlock, the backlog is empty");
                    self.accept_pending = false;
                    self.end_backoff(now);
                }
                // That one client gave up or a signal interrupted: try the next.
                Err(err) if is_per_connection(&err) => debug!("accept: {err}"),
                // Out of descriptors or memory: pause accepting, keep serving (see backoff.rs).
                Err(err) => self.pause_accepting("accept", err, now),
            }
        }
    }

    /// Ends an exhaustion episode once an accept got past it (a client, or an empty backlog).
    fn end_backoff(&mut self, now: Instant) {
        if self.backoff.is_paused(now) {
            return;
        }
        let failures = self.backoff.succeed();
        if failures > 0 {
            debug!("accepting again after {failures} failed attempts");
        }
    }

    /// The connection just accepted could not be added to the poll. It is closed (its client
    /// reads EOF, unanswered) and counted in [`Report::errors`](crate::Report::errors). If the
    /// cause is exhaustion (`epoll_ctl(2)`: `ENOSPC` when `fs.epoll.max_user_watches` is reached,
    /// `ENOMEM`), every client behind it would meet the same fate, so accepting pauses as after
    /// `EMFILE` and they wait in the backlog instead of being accepted and closed one by one.
    fn registration_failed(&mut self, err: io::Error, now: Instant) {
        self.report.errors += 1;
        if is_resource_exhaustion(&err) {
            self.pause_accepting("register", err, now);
        } else {
            debug!("register: {err}; connection closed");
        }
    }

    /// Starts or extends an exhaustion episode after `operation` (`accept` or `register`) failed.
    fn pause_accepting(&mut self, operation: &str, err: io::Error, now: Instant) {
        let open = self.connections.len();
        // One warning per episode, not one per attempt: a full descriptor table can last minutes.
        if self.backoff.fail(now) {
            let cause = if is_resource_exhaustion(&err) {
                "out of resources"
            } else {
                "unexpected error"
            };
            warn!(
                "{operation}: {err} ({cause}); pausing accepts, {} ms doubling to {} s; serving {open} connections",
                BACKOFF_START.as_millis(),
                BACKOFF_MAX.as_secs()
            );
        } else {
            debug!("{operation}: {err}; still paused");
        }
    }

    /// Adds an accepted connection to the poll and the slab.
    ///
    /// # Errors
    ///
    /// The OS error of `epoll_ctl(2)`; the stream is then dropped, which closes it.
    fn register(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        now: Instant,
    ) -> io::Result<()> {
        self.report.accepted += 1;
        // Small echoes must not wait for the previous segment's ACK (Nagle, RFC 1122 §4.2.3.4).
        if let Err(err) = stream.set_nodelay(true) {
            debug!("set_nodelay {peer}: {err}");
        }
        let entry = self.connections.vacant_entry();
        let token = Token(entry.key());
        // Both interests, once: edge-triggered readiness never needs re-registering.
        let interest = connection_interest();
        debug_assert!(
            token != super::LISTENER && token != super::WAKER,
            "connection key {} collides with a reserved token",
            token.0
        );
        self.poll
            .registry()
            .register(&mut stream, token, interest)?;
        entry.insert(Slot {
            connection: Connection::new(stream),
            idle: Link::new(now),
            queued: false,
            timed_out: false,
            // Wrapping is harmless: a stale ready-list entry lives until the next `serve_ready`,
            // across one accept burst and at most one drain's accepts: fewer than 2^25, not 2^32.
            id: self.report.accepted as u32,
        });
        if self.tracks_idle() {
            self.idle.push_back(&mut self.connections, token.0);
        }
        self.report.peak_connections = self.report.peak_connections.max(self.connections.len());
        debug!(
            "c{}: accepted from {peer} ({} open)",
            token.0,
            self.connections.len()
        );
        Ok(())
    }

    pub(super) fn can_accept(&self) -> bool {
        self.accept_pending
            && self.listener.is_some()
            && self.connections.len() < self.config.max_connections
    }
}

/// Accept failures that concern one client only, so the next accept may well succeed: it reset
/// or aborted before we accepted it, a signal interrupted the call, or (accept(2), "Error
/// handling") a network error already pending on the new socket, which Linux reports through
/// accept and says to retry like `EAGAIN`.
fn is_per_connection(err: &io::Error) -> bool {
    // A list rather than a `matches!` pattern: clippy's `incompatible_msrv` checks expressions,
    // not patterns, and the last three kinds are what sets the crate's rust-version (1.83).
    let kinds = [
        io::ErrorKind::ConnectionAborted,
        io::ErrorKind::ConnectionReset,
        io::ErrorKind::Interrupted,
        io::ErrorKind::NetworkDown,
        io::ErrorKind::NetworkUnreachable,
        io::ErrorKind::HostUnreachable,
    ];
    kinds.contains(&err.kind()) || is_pending_network_errno(err)
}

/// The rest of accept(2)'s list, which have no `io::ErrorKind` of their own.
#[cfg(unix)]
fn is_pending_network_errno(err: &io::Error) -> bool {
    use rustix::io::Errno;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if Errno::from_io_error(err) == Some(Errno::NONET) {
        return true;
    }
    matches!(
        Errno::from_io_error(err),
        Some(Errno::PROTO | Errno::NOPROTOOPT | Errno::OPNOTSUPP | Errno::HOSTDOWN)
    )
}

#[cfg(not(unix))]
fn is_pending_network_errno(_err: &io::Error) -> bool {
    false
}

/// The machine or the process is out of something that retrying at once cannot bring back:
/// descriptors (`EMFILE`, `ENFILE`), socket buffers (`ENOBUFS`), memory (`ENOMEM`, from
/// accept(2) or epoll_ctl(2)), or epoll watches (`ENOSPC` from epoll_ctl(2), the
/// `fs.epoll.max_user_watches` limit).
///
/// Elsewhere than Unix these errors reach the "unexpected" path of `pause_accepting`, which
/// backs off the same way and only words its warning differently.
fn is_resource_exhaustion(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::OutOfMemory || is_exhaustion_errno(err)
}

#[cfg(unix)]
fn is_exhaustion_errno(err: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(err),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM | Errno::NOSPC)
    )
}

#[cfg(not(unix))]
fn is_exhaustion_errno(_err: &io::Error) -> bool {
    false
}

/// What a connection is registered for, once: readable and writable (edge-triggered, so no
/// re-registering ever), plus, on Linux, priority, so that urgent data raises `EPOLLPRI` and the
/// pump does not take the short read at the urgent mark for a drained socket.
fn connection_interest() -> Interest {
    let interest = Interest::READABLE | Interest::WRITABLE;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let interest = interest | Interest::PRIORITY;
    interest
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustix::io::Errno;

    use super::*;
    use crate::reactor::tests::reactor;
    use crate::Config;

    fn os_error(errno: Errno) -> io::Error {
        io::Error::from_raw_os_error(errno.raw_os_error())
    }

    #[test]
    fn exhaustion_and_one_clients_failure_are_told_apart() {
        let exhausted = [
            Errno::MFILE,
            Errno::NFILE,
            Errno::NOBUFS,
            Errno::NOMEM,
            Errno::NOSPC,
        ];
        for errno in exhausted {
            let err = os_error(errno);
            assert!(is_resource_exhaustion(&err), "{err}");
            assert!(!is_per_connection(&err), "{err}");
        }
        let per_connection = [
            Errno::CONNABORTED,
            Errno::CONNRESET,
            Errno::INTR,
            Errno::PROTO,
            Errno::NONET,
            Errno::NOPROTOOPT,
            Errno::OPNOTSUPP,
            Errno::HOSTDOWN,
            Errno::NETDOWN,
            Errno::NETUNREACH,
            Errno::HOSTUNREACH,
        ];
        for errno in per_connection {
            let err = os_error(errno);
            assert!(is_per_connection(&err), "{err}");
            assert!(!is_resource_exhaustion(&err), "{err}");
        }
        let neither = os_error(Errno::BADF);
        assert!(!is_per_connection(&neither) && !is_resource_exhaustion(&neither));
    }

    #[test]
    fn registration_out_of_epoll_watches_pauses_accepting() -> io::Result<()> {
        for errno in [Errno::NOSPC, Errno::NOMEM] {
            let mut reactor = reactor(Config::default())?.0;
            let now = Instant::now();
            reactor.registration_failed(os_error(errno), now);
            assert!(reactor.backoff.is_paused(now), "{errno:?} must pause");
            assert_eq!(
                reactor.report.errors, 1,
                "the unregistered client is counted"
            );
            // The pause holds: the next burst accepts nobody, whatever waits in the backlog.
            reactor.accept_burst(now);
            assert_eq!(reactor.report.accepted, 0);
            assert!(reactor
                .poll_timeout(now)
                .0
                .is_some_and(|t| t > Duration::ZERO));
        }
        Ok(())
    }

    #[test]
    fn another_registration_failure_closes_only_that_connection() -> io::Result<()> {
        let mut reactor = reactor(Config::default())?.0;
        let now = Instant::now();
        reactor.registration_failed(os_error(Errno::BADF), now);
        assert!(!reactor.backoff.is_paused(now));
        assert_eq!(reactor.report.errors, 1);
        Ok(())
    }
}
