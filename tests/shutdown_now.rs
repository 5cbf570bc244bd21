//! Immediate shutdown: the listener and every connection close at once, pending echo and unread
//! input are discarded, each open connection counts as forced, and `run` returns without waiting
//! for any client or deadline.

mod common;
#[path = "common/stop.rs"]
mod stop;

use std::io::{self, Read};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::Counts;
use stop::PROMPT;

/// A drain deadline no test may wait for: a graceful drain stuck behind a client that never
/// reads would take this long, so returning well before it shows the immediate stop cut it.
const LONG_DRAIN: Duration = Duration::from_secs(60);

/// Idle clients and one whose echo is stuck behind its own unread data: none of them holds `run`.
#[test]
fn shutdown_now_with_open_connections_returns_promptly_and_forces_them_all() {
    const IDLE_CLIENTS: usize = 3;

    let mut config = common::config();
    config.drain_timeout = LONG_DRAIN;
    config.max_buffer = 4096;
    let server = common::start(config);
    let mut idle: Vec<TcpStream> = (0..IDLE_CLIENTS).map(|_| server.connect()).collect();
    for client in &mut idle {
        common::assert_echo(client, b"idle");
    }
    let mut busy = server.connect();
    common::assert_echo(&mut busy, b"busy");
    let written = common::recv(&common::spawn_flooder(&busy), "the flooder to stop");
    eprintln!("never-reading client wrote {written} bytes before blocking or finishing");

    let asked = Instant::now();
    let report = server.shutdown_now();
    let took = asked.elapsed();
    eprintln!(
        "shutdown_now with {} clients: {took:?}; {report}",
        IDLE_CLIENTS + 1
    );

    assert!(took < PROMPT, "run took {took:?} after shutdown_now");
    assert!(
        report.shutdown_duration < PROMPT,
        "shutdown_duration {:?}",
        report.shutdown_duration
    );
    common::assert_counts(&report, IDLE_CLIENTS as u64 + 1, Counts::Forced);
    for client in &mut idle {
        assert_read_ends(client);
    }
    assert_read_ends(&mut busy);
}

/// The second stage of a two-stage stop: a graceful drain that would wait a minute for a client
/// that never reads is cut short by `shutdown_now` from another thread.
#[test]
fn shutdown_now_cuts_short_a_stuck_graceful_drain() {
    let mut config = common::config();
    config.drain_timeout = LONG_DRAIN;
    config.max_buffer = 4096;
    let server = common::start(config);
    let mut stuck = server.connect();
    common::assert_echo(&mut stuck, b"stuck");
    common::recv(&common::spawn_flooder(&stuck), "the flooder to stop");
    // A second client, which reads: its EOF is the event that proves the drain has begun. It then
    // keeps its socket open, so the drain waits for it too.
    let mut watcher = server.connect();
    common::assert_echo(&mut watcher, b"watcher");

    server.handle.shutdown();
    assert!(common::read_to_eof(&mut watcher).is_empty());

    let asked = Instant::now();
    let handle = server.handle.clone();
    thread::spawn(move || handle.shutdown_now())
        .join()
        .expect("shutdown_now panicked");
    let report = server.join();
    let took = asked.elapsed();
    eprintln!("shutdown_now during a stuck drain: {took:?}; {report}");

    assert!(took < PROMPT, "run took {took:?} after shutdown_now");
    // Counted from the start of the graceful drain, which began just before.
    assert!(
        report.shutdown_duration < Duration::from_secs(5),
        "shutdown_duration {:?}",
        report.shutdown_duration
    );
    common::assert_counts(&report, 2, Counts::Forced);
    assert_read_ends(&mut stuck);
}

/// A request made before `run` is acted on at its first turn: nothing is accepted, and the
/// client waiting in the listen backlog is turned away with the listener.
#[test]
fn shutdown_now_before_run_makes_run_return_at_once() {
    let server = common::bind(common::config());
    // The kernel completes this handshake on its own; the client waits in the backlog.
    let mut queued = common::connect(server.local_addr());
    let handle = server.shutdown_handle();
    handle.shutdown_now();
    // A graceful request after the immediate one must not hold `run` up.
    handle.shutdown();
    stop::assert_run_returns_at_once(server);
    assert_read_ends(&mut queued);
}

/// Reads and discards until the server's close shows: a clean EOF or a reset (an immediate stop
/// may discard unread input, which makes the kernel send RST). A timeout fails: the socket was
/// left open.
#[track_caller]
fn assert_read_ends(stream: &mut TcpStream) {
    let mut buf = vec![0; 64 * 1024];
    let mut received = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => received += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return
            }
            Err(err) => panic!("expected EOF or reset after {received} bytes, got {err}"),
        }
    }
}
