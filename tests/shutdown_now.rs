//! Immediate shutdown: the listener and every connection close at once, pending echo and unread
//! input are discarded, each open connection counts as forced, and `run` returns without waiting
//! for any client or deadline.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use common::TIMEOUT;
use netgrace::{Report, Server};

/// A bound on "promptly": far above what a stop takes (about a millisecond), far below the drain
/// deadlines used here and `TIMEOUT`, so a stop that waited for either fails.
const PROMPT: Duration = Duration::from_secs(1);

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
    let written = recv(&spawn_flooder(&busy), "the flooder to stop");
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
    assert_all_forced(&report, IDLE_CLIENTS as u64 + 1);
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
    recv(&spawn_flooder(&stuck), "the flooder to stop");
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
    assert_all_forced(&report, 2);
    assert_read_ends(&mut stuck);
}

/// A request made before `run` is acted on at its first turn: nothing is accepted, and the
/// client waiting in the listen backlog is turned away with the listener.
#[test]
fn shutdown_now_before_run_makes_run_return_at_once() {
    common::init_logger();
    let server = Server::bind(common::config()).expect("bind");
    let addr = server.local_addr();
    // The kernel completes this handshake on its own; the client waits in the backlog.
    let mut queued = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    queued
        .set_read_timeout(Some(TIMEOUT))
        .expect("set_read_timeout");
    let handle = server.shutdown_handle();
    handle.shutdown_now();
    // A graceful request after the immediate one must not hold `run` up.
    handle.shutdown();

    let started = Instant::now();
    let report = run_on_thread(server);
    let took = started.elapsed();

    assert!(
        took < PROMPT,
        "run took {took:?} after a request made before it"
    );
    assert_empty(&report);
    assert_read_ends(&mut queued);
    assert_refused(addr);
}

/// Asserts that nothing was accepted, echoed or closed.
#[track_caller]
fn assert_empty(report: &Report) {
    let mut empty = Report::default();
    empty.shutdown_duration = report.shutdown_duration;
    assert_eq!(report, &empty);
}

#[track_caller]
fn assert_all_forced(report: &Report, open: u64) {
    let actual = (
        report.accepted,
        report.closed,
        report.drained,
        report.forced,
        report.errors,
    );
    assert_eq!(
        actual,
        (open, 0, 0, open, 0),
        "(accepted, closed, drained, forced, errors) in {report}"
    );
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

#[track_caller]
fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Ok(_) => panic!("connect to {addr} succeeded; expected it refused"),
        Err(err) => assert_eq!(
            err.kind(),
            io::ErrorKind::ConnectionRefused,
            "connect to {addr}: {err}"
        ),
    }
}

/// Receives one message, bounded by `TIMEOUT`; a sender that is gone means its thread panicked.
#[track_caller]
fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(TIMEOUT) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("no {what} within {TIMEOUT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("the thread for {what} panicked"),
    }
}

/// Runs `server` on its own thread and waits, bounded by `TIMEOUT`, for its report.
#[track_caller]
fn run_on_thread(server: Server) -> Report {
    let (tx, done) = mpsc::channel();
    let thread = thread::spawn(move || {
        let _ = tx.send(server.run());
    });
    let result = recv(&done, "report from run");
    thread.join().expect("server thread panicked");
    result.expect("run returned an error")
}

/// Writes into `stream` from a thread, never reading, until the kernel buffers of the echo path are
/// full (a write blocks for `FLOOD_STALL`) or `FLOOD_BYTES` are written. Sends the number of bytes
/// written when it stops.
fn spawn_flooder(stream: &TcpStream) -> Receiver<u64> {
    /// Far more than the buffers hold: on Linux the receive buffer of a socket the server reads
    /// promptly grows to `tcp_rmem[2]` (32 MiB on some systems), plus both send buffers.
    const FLOOD_BYTES: u64 = 256 * 1024 * 1024;
    /// How long a blocked write means "full": the echo path moves gigabytes a second, so a stall
    /// this long is backpressure. Only how much is in flight at the stop depends on it.
    const FLOOD_STALL: Duration = Duration::from_millis(250);

    let mut stream = stream.try_clone().expect("clone stream");
    stream
        .set_write_timeout(Some(FLOOD_STALL))
        .expect("set_write_timeout");
    let (tx, done) = mpsc::channel();
    thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0;
        while written < FLOOD_BYTES {
            match stream.write(&chunk) {
                Ok(n) => written += n as u64,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // Timed out (the buffers are full) or failed: either way, flooding is over.
                Err(_) => break,
            }
        }
        let _ = tx.send(written);
    });
    done
}
