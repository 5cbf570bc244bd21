//! Graceful shutdown: the listener closes at once, every client receives the echo of all the
//! server had read from it and then a clean EOF (never a reset), and `run` returns when every
//! client has closed or the drain deadline has passed, whichever comes first.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::TIMEOUT;
use netgrace::{Report, Server};

/// A bound on "promptly": far above what a stop takes (about a millisecond), far below any
/// drain deadline or `TIMEOUT`, so a stop that waited for one of those fails.
const PROMPT: Duration = Duration::from_secs(1);

/// The drain deadline of the tests that wait for it: long enough to tell "waited for the deadline"
/// from "returned at once", short enough to keep the suite fast.
const SHORT_DRAIN: Duration = Duration::from_millis(300);

/// Upper bound on a drain that ends at `SHORT_DRAIN`: generous for a loaded machine, but well
/// below `TIMEOUT`, so a deadline that is ignored fails here rather than in `join`.
const DRAIN_BOUND: Duration = Duration::from_secs(5);

/// Graceful shutdown of a server with no connections is one wake-up of a `poll` that has no
/// timeout, not a wait for one.
#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "reads Linux procfs")]
fn shutdown_while_idle_returns_promptly() {
    const THREAD_NAME: &str = "netgrace-idle";

    common::init_logger();
    let server = Server::bind(common::config()).expect("bind");
    let handle = server.shutdown_handle();
    let (thread, done) = spawn_run(server, THREAD_NAME);
    // Without this, the request could land before `run` first blocks, and a missing wake-up
    // would go unnoticed: `run` reads the request at the top of every turn anyway.
    wait_until_blocked_in_poll(THREAD_NAME);

    let asked = Instant::now();
    handle.shutdown();
    let result = recv(&done, "report from run");
    let took = asked.elapsed();
    thread.join().expect("server thread panicked");
    let report = result.expect("run returned an error");
    eprintln!(
        "idle shutdown: {took:?} from the call to the report; shutdown_duration {:?}",
        report.shutdown_duration
    );

    assert!(took < PROMPT, "idle shutdown took {took:?}");
    assert!(
        report.shutdown_duration < Duration::from_millis(100),
        "shutdown_duration {:?}",
        report.shutdown_duration
    );
    assert_empty(&report);
}

#[test]
fn shutdown_before_run_makes_run_return_at_once_with_an_empty_report() {
    common::init_logger();
    let server = Server::bind(common::config()).expect("bind");
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    handle.shutdown();
    handle.shutdown();

    let started = Instant::now();
    let report = run_on_thread(server);
    let took = started.elapsed();

    assert!(
        took < PROMPT,
        "run took {took:?} after a request made before it"
    );
    assert_empty(&report);
    assert_refused(addr);
}

#[test]
fn shutdown_and_shutdown_now_after_run_returned_are_harmless() {
    let server = common::start(common::config());
    let handle = server.handle.clone();
    let mut client = server.connect();
    common::assert_echo(&mut client, b"served");
    client.shutdown(Shutdown::Write).expect("half-close");
    assert!(common::read_to_eof(&mut client).is_empty());
    let report = server.shutdown();
    assert_counts(&report, 1, Counts::Closed);

    // The reactor and its poll are gone; the handle's waker must still not panic or block.
    handle.shutdown();
    handle.shutdown_now();
    let other = handle.clone();
    thread::spawn(move || {
        other.shutdown_now();
        other.shutdown();
    })
    .join()
    .expect("a late shutdown call panicked");
    handle.shutdown();
}

/// Requests race from many threads while `run` is serving; they collapse into one graceful
/// shutdown that drains the open connection normally.
#[test]
fn many_shutdown_calls_from_many_threads_stop_the_server_once() {
    const THREADS: usize = 8;
    const CALLS_PER_THREAD: usize = 100;

    let server = common::start(common::config());
    let mut client = server.connect();
    // The echo proves `run` is serving when the calls start.
    common::assert_echo(&mut client, b"serving");

    let barrier = Barrier::new(THREADS);
    thread::scope(|scope| {
        for _ in 0..THREADS {
            let handle = server.handle.clone();
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                for _ in 0..CALLS_PER_THREAD {
                    handle.shutdown();
                }
            });
        }
    });

    assert!(common::read_to_eof(&mut client).is_empty());
    drop(client);
    let report = server.join();
    assert_counts(&report, 1, Counts::Drained);
    assert_eq!(report.bytes_echoed, 7);
}

#[test]
fn listener_refuses_new_connections_once_shutdown_begins() {
    let server = common::start(common::config());
    let mut client = server.connect();
    common::assert_echo(&mut client, b"before shutdown");

    server.handle.shutdown();
    // The reactor closes the listener before it starts any connection's drain, so this EOF
    // proves the listener is closed; and the drain still waits for this client, so `run` has not
    // returned (which would close the listener too).
    assert!(common::read_to_eof(&mut client).is_empty());
    assert_refused(server.addr);

    drop(client);
    let report = server.join();
    assert_counts(&report, 1, Counts::Drained);
    assert!(
        report.shutdown_duration < PROMPT,
        "the drain waited {:?} after the last client closed",
        report.shutdown_duration
    );
}

/// Shutdown lands while every client is writing and reading at full speed: each receives an exact
/// prefix of its own stream (nothing lost in the middle, nothing reordered), then EOF; every byte
/// the server wrote reached a client; and all are drained, none forced.
#[test]
fn mid_stream_shutdown_delivers_an_exact_prefix_then_a_clean_eof() {
    const CLIENTS: usize = 4;

    let server = common::start(common::config());
    let (first_echo_tx, first_echo) = mpsc::channel();
    let streams: Vec<_> = (0..CLIENTS)
        .map(|_| spawn_streamer(server.connect(), first_echo_tx.clone()))
        .collect();
    for _ in 0..CLIENTS {
        recv(&first_echo, "first echo of every client");
    }

    server.handle.shutdown();
    let received: Vec<u64> = streams
        .iter()
        .map(|done| recv(done, "a streaming client's EOF"))
        .collect();
    let report = server.join();
    eprintln!("mid-stream shutdown: received {received:?}; {report}");

    assert_counts(&report, CLIENTS as u64, Counts::Drained);
    assert!(received.iter().all(|&n| n > 0), "{received:?}");
    // Gap: how much the server had read when the drain began is not visible from outside, so
    // this cannot tell "all of it echoed" from "what it still held dropped"; only that nothing
    // it wrote was lost on the way.
    assert_eq!(
        report.bytes_echoed,
        received.iter().sum::<u64>(),
        "echo the server wrote did not reach its client"
    );
}

/// A client that never reads leaves echo the server cannot deliver (or, if the kernel buffers
/// took it all, never closes after EOF); either way it cannot hold `run` past the deadline.
#[test]
fn client_that_never_reads_is_forced_at_the_drain_deadline() {
    let mut config = common::config();
    config.drain_timeout = SHORT_DRAIN;
    config.max_buffer = 4096;
    let server = common::start(config);
    let mut client = server.connect();
    common::assert_echo(&mut client, b"accepted");
    let written = recv(&spawn_flooder(&client), "the flooder to stop");
    eprintln!("never-reading client wrote {written} bytes before blocking or finishing");

    let asked = Instant::now();
    let report = server.shutdown();
    let took = asked.elapsed();

    assert_counts(&report, 1, Counts::Forced);
    assert_waited_for_deadline(&report, took);
    drop(client);
}

/// A client that is slow to read holds the drain up until it has read: the server stops taking
/// new input but keeps writing back what it had, shuts its write side only after the last byte,
/// and then lingers, so that closing with unread input (the flood) cannot reset the connection
/// under echo still queued in the server's send buffer.
#[test]
fn slow_reader_receives_all_echo_then_a_clean_eof_during_the_drain() {
    let mut config = common::config();
    config.max_buffer = 4096;
    let server = common::start(config);
    let mut client = server.connect();
    let written = recv(&spawn_flooder(&client), "the flooder to stop");

    // The echo path is full (or the flood was smaller than its buffers): only now does the client
    // start reading, with the drain already under way.
    server.handle.shutdown();
    let echo = common::read_to_eof(&mut client);
    drop(client);
    let report = server.join();
    eprintln!(
        "slow reader: wrote {written}, received {} then EOF; {report}",
        echo.len()
    );

    common::assert_pattern(0, &echo);
    assert!(
        !echo.is_empty() && echo.len() as u64 <= written,
        "received {} of {written}",
        echo.len()
    );
    assert_counts(&report, 1, Counts::Drained);
    assert_eq!(report.bytes_echoed, echo.len() as u64);
}

/// The lingering close after EOF waits for the client only until the drain deadline.
#[test]
fn client_that_never_closes_after_eof_is_forced_at_the_drain_deadline() {
    let mut config = common::config();
    config.drain_timeout = SHORT_DRAIN;
    let server = common::start(config);
    let mut client = server.connect();
    common::assert_echo(&mut client, b"read but never closed");

    let asked = Instant::now();
    server.handle.shutdown();
    // All echo was read already: the clean EOF comes at once, and the client keeps its socket.
    assert!(common::read_to_eof(&mut client).is_empty());
    let report = server.join();
    let took = asked.elapsed();

    assert_counts(&report, 1, Counts::Forced);
    assert_eq!(report.bytes_echoed, 21);
    assert_waited_for_deadline(&report, took);
    drop(client);
}

/// Which counter every connection of a test must end in.
#[derive(Debug, Clone, Copy)]
enum Counts {
    Closed,
    Drained,
    Forced,
}

/// Asserts that all `accepted` connections ended in the counter `all_in`, and none elsewhere.
#[track_caller]
fn assert_counts(report: &Report, accepted: u64, all_in: Counts) {
    let (closed, drained, forced) = match all_in {
        Counts::Closed => (accepted, 0, 0),
        Counts::Drained => (0, accepted, 0),
        Counts::Forced => (0, 0, accepted),
    };
    let actual = (
        report.accepted,
        report.closed,
        report.drained,
        report.forced,
        report.errors,
    );
    assert_eq!(
        actual,
        (accepted, closed, drained, forced, 0),
        "(accepted, closed, drained, forced, errors) in {report}"
    );
}

/// Asserts that nothing was accepted, echoed or closed.
#[track_caller]
fn assert_empty(report: &Report) {
    let mut empty = Report::default();
    empty.shutdown_duration = report.shutdown_duration;
    assert_eq!(report, &empty);
}

/// Asserts that the drain lasted until `SHORT_DRAIN`, and not much longer.
#[track_caller]
fn assert_waited_for_deadline(report: &Report, took: Duration) {
    let waited = report.shutdown_duration;
    assert!(
        waited >= SHORT_DRAIN,
        "forced after {waited:?}, before the deadline"
    );
    assert!(waited < DRAIN_BOUND, "the drain lasted {waited:?}");
    assert!(
        took >= SHORT_DRAIN && took < DRAIN_BOUND,
        "run took {took:?}"
    );
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
    let (thread, done) = spawn_run(server, "netgrace-run");
    let result = recv(&done, "report from run");
    thread.join().expect("server thread panicked");
    result.expect("run returned an error")
}

/// Runs `server` on a new thread named `name`; the receiver gets what `run` returned.
fn spawn_run(server: Server, name: &str) -> (JoinHandle<()>, Receiver<io::Result<Report>>) {
    let (tx, done) = mpsc::channel();
    let thread = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            // The receiver is gone only if the test already failed.
            let _ = tx.send(server.run());
        })
        .expect("spawn server thread");
    (thread, done)
}

/// Waits (bounded by `TIMEOUT`) until this process's thread named `name` sleeps in
/// `epoll_wait`, as Linux's procfs shows it (proc(5): `/proc/[pid]/task/[tid]/stat` state `S`,
/// `wchan` `do_epoll_wait`). Retries without sleeping: each probe is a few file reads.
#[track_caller]
fn wait_until_blocked_in_poll(name: &str) {
    let deadline = Instant::now() + TIMEOUT;
    let mut probes = 0u64;
    while Instant::now() < deadline {
        probes += 1;
        if thread_blocked_in_poll(name) {
            return;
        }
        thread::yield_now();
    }
    panic!("thread {name} not seen blocked in epoll_wait within {TIMEOUT:?} ({probes} probes)");
}

fn thread_blocked_in_poll(name: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    tasks.flatten().any(|task| {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        // stat is "tid (comm) state ...": the state follows the last ')'.
        let sleeping = read("stat")
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'));
        // Kernels name the wait differently (do_epoll_wait, ep_poll); where wchan is hidden
        // ("0" or empty), sleeping is the best evidence there is.
        let wchan = read("wchan");
        let in_poll = wchan.contains("ep") || wchan == "0" || wchan.is_empty();
        read("comm").trim_end() == name && sleeping && in_poll
    })
}

/// Streams the test pattern into `stream` from one thread and checks its echo on another, until
/// the server's EOF; then stops writing and closes. Sends `()` on `first_echo` at the first echo,
/// and on the returned channel the number of bytes of echo received. Panics (dropping the
/// sender) if the echo differs from the pattern or ends in anything but a clean EOF.
fn spawn_streamer(stream: TcpStream, first_echo: Sender<()>) -> Receiver<u64> {
    const CHUNK_BYTES: usize = 16 * 1024;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer_stream = stream.try_clone().expect("clone stream");
    let writer_stop = Arc::clone(&stop);
    let writer = thread::spawn(move || {
        let mut offset = 0;
        while !writer_stop.load(Ordering::Relaxed) {
            // An error (broken pipe once the server is gone) only ends the writing: the reader
            // is the one that judges how the connection ended.
            if writer_stream
                .write_all(&common::pattern(offset, CHUNK_BYTES))
                .is_err()
            {
                break;
            }
            offset += CHUNK_BYTES as u64;
        }
    });

    let (done_tx, done) = mpsc::channel();
    thread::spawn(move || {
        let mut stream = stream;
        let mut first_echo = Some(first_echo);
        let mut buf = vec![0; 64 * 1024];
        let mut received = 0;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    common::assert_pattern(received, &buf[..n]);
                    received += n as u64;
                    if let Some(tx) = first_echo.take() {
                        let _ = tx.send(());
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => panic!("expected a clean EOF after {received} bytes, got {err}"),
            }
        }
        // The server is lingering (reading and discarding), so the writer is not stuck; once it
        // has stopped, dropping the last handle closes the client.
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer panicked");
        drop(stream);
        let _ = done_tx.send(received);
    });
    done
}

/// Writes the test pattern into `stream` from a thread, never reading, until the kernel buffers
/// of the echo path are full (a write blocks for `FLOOD_STALL`) or `FLOOD_BYTES` are written.
/// Sends the number of bytes written when it stops.
fn spawn_flooder(stream: &TcpStream) -> Receiver<u64> {
    /// Far more than the buffers hold: on Linux the receive buffer of a socket the server reads
    /// promptly grows to `tcp_rmem[2]` (32 MiB on some systems), plus both send buffers.
    const FLOOD_BYTES: u64 = 256 * 1024 * 1024;
    const CHUNK_BYTES: usize = 64 * 1024;
    /// How long a blocked write means "full": the echo path moves gigabytes a second, so a stall
    /// this long is backpressure. Only which drain phase a test exercises depends on it.
    const FLOOD_STALL: Duration = Duration::from_millis(250);

    let mut stream = stream.try_clone().expect("clone stream");
    stream
        .set_write_timeout(Some(FLOOD_STALL))
        .expect("set_write_timeout");
    let (tx, done) = mpsc::channel();
    thread::spawn(move || {
        let mut written = 0;
        while written < FLOOD_BYTES {
            match stream.write(&common::pattern(written, CHUNK_BYTES)) {
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
