//! Tests of the reactor's bookkeeping on real sockets, driving its steps one by one: what no
//! test through the public API can arrange on purpose, such as a key closed and reused between
//! two steps of one turn.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpListener;
use mio::{Poll, Waker};

use super::{Ending, Reactor, LISTENER, WAKER};
use crate::shutdown::Shared;
use crate::{Config, MAX_CONNECTIONS_LIMIT};

/// A reactor on a real poll and a listener on `127.0.0.1:0`, never run: its steps are called
/// one by one. Returns the listener's address too.
pub(super) fn reactor(config: Config) -> io::Result<(Reactor, SocketAddr)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(waker));
    Ok((Reactor::new(poll, listener, config, shared), addr))
}

/// Connects a client and accepts it; returns the client and the key the server gave it.
fn connect_and_accept(reactor: &mut Reactor, addr: SocketAddr) -> io::Result<(TcpStream, usize)> {
    let client = TcpStream::connect(addr)?;
    let before = reactor.report.accepted;
    // The handshake is done when connect returns; accept may still race the kernel's queueing
    // by a hair, so a few bursts are allowed.
    for _ in 0..100 {
        reactor.accept_pending = true;
        reactor.accept_burst(Instant::now());
        if reactor.report.accepted > before {
            break;
        }
        std::thread::yield_now();
    }
    let newest = reactor.connections.iter().max_by_key(|(_, slot)| slot.id);
    let key = newest.map(|(key, _)| key).ok_or(io::ErrorKind::NotFound)?;
    Ok((client, key))
}

/// A connection queued on the ready list, then closed, then its key given to a new
/// connection in the same turn, which runs out of budget too. The old entry must not be taken
/// for the new connection: served through it, the new one would lose its own place (its
/// `queued` flag cleared while its entry waits) and stall, or be served twice per turn.
#[test]
fn a_reused_key_is_not_served_for_the_closed_connections_entry() -> io::Result<()> {
    // One connection at most, so the new connection gets the closed one's key.
    let config = Config {
        max_connections: 1,
        ..Config::default()
    };
    let (mut reactor, addr) = reactor(config)?;

    let (_first, key) = connect_and_accept(&mut reactor, addr)?;
    reactor.enqueue(key); // it ran out of budget last turn
    std::mem::swap(&mut reactor.ready, &mut reactor.due); // a new turn begins
    reactor.close(key, Ending::Clean); // an event this turn closes it

    let (_second, reused) = connect_and_accept(&mut reactor, addr)?;
    assert_eq!(reused, key, "the slab reuses the freed key");
    reactor.enqueue(reused); // the new connection runs out of budget this turn
    let id = reactor.connections[reused].id;

    reactor.serve_ready(Instant::now());
    assert!(
        reactor.connections[reused].queued,
        "the new connection was served for the old one's entry"
    );
    assert_eq!(reactor.ready, [(key as u32, id)], "its own entry, once");
    Ok(())
}

/// A queued connection that closes leaves its entry behind; serving it must skip the empty key.
#[test]
fn a_stale_entry_for_an_empty_key_is_skipped() -> io::Result<()> {
    let (mut reactor, addr) = reactor(Config::default())?;
    let (_client, key) = connect_and_accept(&mut reactor, addr)?;
    reactor.enqueue(key);
    std::mem::swap(&mut reactor.ready, &mut reactor.due);
    reactor.close(key, Ending::Clean);
    reactor.serve_ready(Instant::now());
    assert!(reactor.connections.is_empty() && reactor.ready.is_empty());
    assert!(reactor.due.is_empty(), "due is emptied every turn");
    assert_eq!(reactor.report.closed, 1);
    Ok(())
}

/// Connection keys stay below `MAX_CONNECTIONS_LIMIT` (`Config::validate`); the largest is
/// below both reserved tokens. The compiler checks the same in reactor.rs, and `register`
/// debug-asserts it for every key in every debug-build test.
#[test]
fn connection_tokens_never_reach_the_listener_or_the_waker() {
    let largest_key = std::hint::black_box(MAX_CONNECTIONS_LIMIT - 1);
    assert!(
        largest_key < WAKER.0,
        "{largest_key} reaches the waker's token"
    );
    assert_ne!(std::hint::black_box(WAKER), LISTENER);
}

/// docs/architecture.md states the size of a `Slot` in its memory bound; this keeps the two
/// together. Debug builds are larger: mio adds a selector id to every stream there.
#[test]
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn a_slot_is_the_size_the_memory_bound_states() {
    let stated = if cfg!(debug_assertions) { 104 } else { 88 };
    assert_eq!(std::mem::size_of::<super::Slot>(), stated);
}

/// When the loop itself fails, the counts so far come back inside the error, the
/// connections still open are closed and counted as forced, and the invariant holds. An empty
/// event buffer makes `epoll_wait` fail with `EINVAL`, the one failure a test can cause.
#[test]
fn a_failed_poll_returns_the_counts_so_far() -> io::Result<()> {
    let (mut reactor, addr) = reactor(Config::default())?;
    let (_client, _key) = connect_and_accept(&mut reactor, addr)?;
    let err = reactor
        .run_with(mio::Events::with_capacity(0))
        .expect_err("epoll_wait with no room for events fails");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert_eq!(err.raw_os_error(), Some(22), "EINVAL: {err}");
    assert!(err.to_string().starts_with("poll: "), "{err}");
    let report = err.report();
    assert_eq!((report.accepted, report.forced), (1, 1), "{report}");
    assert_eq!(report.stop, crate::Stop::Failure, "{report}");
    Ok(())
}
