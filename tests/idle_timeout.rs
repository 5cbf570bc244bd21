//! Idle timeout: a connection with no traffic either way for `Config::idle_timeout` is closed
//! cleanly (echo flushed, then EOF, not a reset); one with traffic is left alone.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

/// Short, so the test is quick; the chatty client's pauses are a fraction of it.
const IDLE: Duration = Duration::from_millis(300);

#[test]
fn silent_connection_gets_eof_after_the_idle_timeout() {
    let mut config = common::config();
    config.idle_timeout = Some(IDLE);
    let server = common::start(config);

    let mut client = server.connect();
    // Before the write: the server stamps the last traffic when it reads, which is after this,
    // so the timeout cannot have run out sooner than IDLE from here. (Taken after the echo
    // arrived, the server's clock had a head start, and the check failed by a fraction of a
    // millisecond under load.)
    let silent_since = Instant::now();
    common::assert_echo(&mut client, b"then silence\n");
    let rest = common::read_to_eof(&mut client);
    let waited = silent_since.elapsed();
    assert!(rest.is_empty(), "no stray bytes before EOF");
    assert!(
        waited >= IDLE,
        "closed after {waited:?}, before the idle timeout"
    );
    assert!(waited < IDLE * 10, "closed only after {waited:?}");
    eprintln!("idle connection closed {waited:?} after its last traffic (timeout {IDLE:?})");
    drop(client);

    let report = server.shutdown();
    assert_eq!(report.timed_out, 1, "{report}");
    assert_eq!((report.closed, report.forced, report.errors), (0, 0, 0));
    assert_eq!(report.bytes_echoed, 13);
}

#[test]
fn chatty_connection_outlives_the_idle_timeout() {
    let mut config = common::config();
    config.idle_timeout = Some(IDLE);
    let server = common::start(config);

    let mut chatty = server.connect();
    let mut silent = server.connect();
    common::assert_echo(&mut silent, b"x");
    let start = Instant::now();
    // Traffic every IDLE/4, for three idle periods: each message resets the timer.
    let mut messages = 0;
    while start.elapsed() < IDLE * 3 {
        common::assert_echo(&mut chatty, format!("still here {messages}\n").as_bytes());
        messages += 1;
        std::thread::sleep(IDLE / 4); // pacing the client, not synchronisation
    }
    // The silent one has been closed meanwhile; the chatty one still echoes.
    assert!(common::read_to_eof(&mut silent).is_empty());
    common::assert_echo(&mut chatty, b"and still here\n");
    drop(silent);

    // The chatty connection is not closed.
    common::assert_silent(&mut chatty, IDLE / 2);

    // Graceful shutdown: the chatty client reads its EOF and closes, so it counts as drained.
    server.handle.shutdown();
    assert!(common::read_to_eof(&mut chatty).is_empty());
    drop(chatty);
    let report = server.join();
    assert_eq!(
        report.timed_out, 1,
        "only the silent one timed out: {report}"
    );
    assert_eq!(
        report.drained, 1,
        "the chatty one was still open at shutdown: {report}"
    );
    eprintln!("chatty client sent {messages} messages over {:?}", IDLE * 3);
}

#[test]
fn without_an_idle_timeout_silent_connections_stay_open() {
    let mut config = common::config();
    config.idle_timeout = None;
    let server = common::start(config);
    let mut client = server.connect();
    common::assert_echo(&mut client, b"x");
    common::assert_silent(&mut client, IDLE * 2);
    server.handle.shutdown();
    assert!(common::read_to_eof(&mut client).is_empty());
    drop(client);
    let report = server.join();
    assert_eq!((report.timed_out, report.drained), (0, 1), "{report}");
}

/// A client that reads the idle close's EOF but never closes its end holds its slot
/// for the idle timeout plus a grace of at most a second, not for a second idle period. With one
/// slot, the next client is served as soon as it is freed.
#[test]
fn a_lingering_idle_close_frees_its_slot_within_the_timeout_plus_a_second() {
    /// Long enough that "plus a grace of 1 s" and "plus another idle period" are far apart.
    const LONG_IDLE: Duration = Duration::from_secs(3);
    /// The grace (1 s) plus room for a loaded machine; a second idle period would be 3 s.
    const BOUND: Duration = Duration::from_secs(5);
    let mut config = common::config();
    config.idle_timeout = Some(LONG_IDLE);
    config.max_connections = 1;
    let server = common::start(config);

    let mut first = server.connect();
    common::assert_echo(&mut first, b"then silence\n");
    let silent_since = Instant::now();
    let mut byte = [0; 1];
    assert_eq!(first.read(&mut byte).expect("the idle close's EOF"), 0);
    // `first` stays open and silent: the server lingers, waiting for a close that never comes.
    let mut second = server.connect();
    common::assert_echo(&mut second, b"served in the freed slot\n");
    let freed = silent_since.elapsed();
    eprintln!("slot freed {freed:?} after the last traffic (idle timeout {LONG_IDLE:?})");
    assert!(freed < BOUND, "the slot was held for {freed:?}");
    drop((first, second));

    let report = server.shutdown();
    assert_eq!(report.timed_out, 1, "{report}");
}
