//! The accepting half of the reactor: the burst, the pause after exhaustion, registration.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::{Reactor, Slot};
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
                return;
            }
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.end_backoff(now);
                    self.register(stream, peer, now);
                }
                // The backlog is empty: the next readable edge announces the next client. Accepting
                // works again too, so an exhaustion episode (if any) is over.
                Err(err) if would_block(&err) => {
                    self.accept_pending = false;
                    self.end_backoff(now);
                }
                // That one client gave up or a signal interrupted: try the next.
                Err(err) if is_per_connection(&err) => debug!("accept: {err}"),
                // Out of descriptors or memory: pause accepting, keep serving (see backoff.rs).
                Err(err) => self.pause_accepting(err, now),
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
            info!("accepting again after {failures} failed attempts");
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

    fn register(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        self.report.accepted += 1;
        // Small echoes must not wait for the previous segment's ACK (Nagle, RFC 1122 §4.2.3.4).
        if let Err(err) = stream.set_nodelay(true) {
            debug!("set_nodelay {peer}: {err}");
        }
        let entry = self.connections.vacant_entry();
        let token = Token(entry.key());
        // Both interests, once: edge-triggered readiness never needs re-registering.
        let interest = connection_interest();
        if let Err(err) = self.poll.registry().register(&mut stream, token, interest) {
            debug!("register {peer}: {err}");
            self.report.errors += 1;
            return;
        }
        entry.insert(Slot {
            connection: Connection::new(stream),
            idle: Link::new(now),
            queued: false,
            timed_out: false,
        });
        if self.tracks_idle() {
            self.idle.push_back(&mut self.connections, token.0);
        }
        self.report.peak_connections = self.report.peak_connections.max(self.connections.len());
        debug!("connection {}: accepted from {peer}", token.0);
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
    // Linux numbers for EPROTO, ENONET, ENOPROTOOPT, EOPNOTSUPP, EHOSTDOWN; the rest have kinds.
    const NETWORK_ERRNOS: [i32; 5] = [71, 64, 92, 95, 112];
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::NetworkDown
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::HostUnreachable
    ) || (cfg!(any(target_os = "linux", target_os = "android"))
        && err
            .raw_os_error()
            .is_some_and(|errno| NETWORK_ERRNOS.contains(&errno)))
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

/// What a connection is registered for, once: readable and writable (edge-triggered, so no
/// re-registering ever), plus, on Linux, priority, so that urgent data raises `EPOLLPRI` and the
/// pump does not take the short read at the urgent mark for a drained socket.
fn connection_interest() -> Interest {
    let interest = Interest::READABLE | Interest::WRITABLE;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let interest = interest | Interest::PRIORITY;
    interest
}
