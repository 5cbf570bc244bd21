//! Graceful shutdown: the listener closes at once, every client receives the echo of all the
//! server had read from it and then a clean EOF (never a reset), and `run` returns when every
//! client has closed or the drain deadline has passed, whichever comes first.

mod common;
#[path = "common/stop.rs"]
mod stop;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use common::{Counts, TIMEOUT};
use netgrace::Report;
use stop::{listener_with_buffers, spawn_streamer, wait_until_blocked_in_poll, PROMPT};

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

    let server = common::bind(common::config());
    let handle = server.shutdown_handle();
    let (thread, done) = common::spawn_run(server, THREAD_NAME);
    // Without this, the request could land before `run` first blocks, and a missing wake-up
    // would go unnoticed: `run` reads the request at the top of every turn anyway.
    wait_until_blocked_in_poll(THREAD_NAME);

    let asked = Instant::now();
    handle.shutdown();
    let result = common::recv(&done, "report from run");
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
    common::assert_empty(&report);
}

#[test]
fn shutdown_before_run_makes_run_return_at_once_with_an_empty_report() {
    let server = common::bind(common::config());
    let handle = server.shutdown_handle();
    handle.shutdown();
    handle.shutdown();
    stop::assert_run_returns_at_once(server);
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
    common::assert_counts(&report, 1, Counts::Closed);

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
    common::assert_counts(&report, 1, Counts::Drained);
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
    common::assert_refused(server.addr);

    drop(client);
    let report = server.join();
    common::assert_counts(&report, 1, Counts::Drained);
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
        common::recv(&first_echo, "first echo of every client");
    }

    server.handle.shutdown();
    let received: Vec<u64> = streams
        .iter()
        .map(|done| common::recv(done, "a streaming client's EOF"))
        .collect();
    let report = server.join();
    eprintln!("mid-stream shutdown: received {received:?}; {report}");

    common::assert_counts(&report, CLIENTS as u64, Counts::Drained);
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
    let written = common::recv(&common::spawn_flooder(&client), "the flooder to stop");
    eprintln!("never-reading client wrote {written} bytes before blocking or finishing");

    let asked = Instant::now();
    let report = server.shutdown();
    let took = asked.elapsed();

    common::assert_counts(&report, 1, Counts::Forced);
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
    let written = common::recv(&common::spawn_flooder(&client), "the flooder to stop");

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
    common::assert_counts(&report, 1, Counts::Drained);
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

    common::assert_counts(&report, 1, Counts::Forced);
    assert_eq!(report.bytes_echoed, 21);
    assert_waited_for_deadline(&report, took);
    drop(client);
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

/// A request that had already reached the server when shutdown began is answered, not
/// cut off by the FIN. The client writes without reading until everything stalls: the server
/// holds `max_buffer` of unsent echo (backpressure) and stops reading, so the client's last
/// requests sit unread in the server's socket. After `shutdown`, the client reads: every byte
/// that was in the server's socket comes back before EOF. Only what was still in the client's
/// own send buffer (at most its size, kept small here) may arrive too late and be discarded.
#[test]
fn input_waiting_in_the_socket_at_shutdown_is_answered() {
    /// The server's receive buffer: it holds about a MiB of the client's requests at the stall,
    /// far more than the slack below, so losing them cannot pass for it.
    const SERVER_RECEIVE_BUFFER: usize = 1024 * 1024;
    const CLIENT_SEND_BUFFER: usize = 4 * 1024;
    /// Above what the server's receive buffer and the client's send buffer can hold, so the
    /// drain's allowance (`max_buffer`) covers all of it.
    const MAX_BUFFER: usize = 8 * 1024 * 1024;

    let listener = listener_with_buffers(SERVER_RECEIVE_BUFFER, None);
    let mut config = common::config();
    config.max_buffer = MAX_BUFFER;
    let server = netgrace::Server::from_std(listener, config).expect("from_std");
    let server = common::serve(server);

    let mut client = server.connect();
    let client_socket = socket2::SockRef::from(&client);
    client_socket
        .set_send_buffer_size(CLIENT_SEND_BUFFER)
        .expect("SO_SNDBUF");
    // What the client's kernel may hold unsent: the send buffer (the kernel doubles the value
    // asked for), which one write may overshoot by a segment of up to 64 KiB (tcp_sendmsg checks
    // for room before each segment, not each byte).
    let slack = (client_socket.send_buffer_size().expect("SO_SNDBUF") + 64 * 1024) as u64;
    let sent = common::write_until_stalled(&mut client, 256 << 20, SHORT_DRAIN);
    assert!(
        sent > MAX_BUFFER as u64,
        "the client stalled after {sent} bytes, before the server's backpressure"
    );

    server.handle.shutdown();
    let echo = common::read_to_eof(&mut client);
    common::assert_pattern(0, &echo);
    let lost = sent - echo.len() as u64;
    eprintln!(
        "sent {sent}, echoed {}, lost {lost} (slack {slack})",
        echo.len()
    );
    assert!(
        lost <= slack,
        "{lost} bytes were not answered, more than the client's own send buffer ({slack}) holds"
    );
    drop(client);
    common::assert_counts(&server.join(), 1, Counts::Drained);
}

/// The lingering close on its own: the drain's FIN leaves with the client's input still unread
/// and most of the echo still queued in the server behind it, because the client's receive
/// window is small. Closing then would make Linux reset the connection and destroy that echo;
/// lingering lets it arrive, then EOF. Everything is sent before the server runs, and the client
/// reads only after a while, so the order is fixed: the drain reads its answer, writes it, sends
/// its FIN and lingers (or closes) in one pump, before the client takes any echo.
#[test]
fn echo_queued_behind_the_fin_arrives_although_input_is_left_unread() {
    /// The drain's answer (`max_buffer`): the server's send buffer takes it in one write.
    const ANSWER_BYTES: usize = 32 * 1024;
    /// What the client sends: twice the answer, so that half is still unread at the FIN. Within
    /// the server's first receive window (two loopback segments, about 128 KiB), so all of it
    /// has arrived when the write returns.
    const SENT_BYTES: usize = 2 * ANSWER_BYTES;
    /// The server's socket buffers, inherited from the listener: room for all of it.
    const SERVER_BUFFER_BYTES: usize = 256 * 1024;
    /// The client's receive buffer: far below the answer, so most of it waits in the server.
    const CLIENT_RECEIVE_BUFFER: usize = 4 * 1024;
    /// How long the client watches for a reset before it reads. The server sends its FIN within
    /// a millisecond of starting; this only bounds the wait for a reset that must not come.
    const RESET_WATCH: Duration = Duration::from_millis(500);

    let listener = listener_with_buffers(SERVER_BUFFER_BYTES, Some(SERVER_BUFFER_BYTES));
    let mut config = common::config();
    config.max_buffer = ANSWER_BYTES;
    let server = netgrace::Server::from_std(listener, config).expect("from_std");

    let client =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    client
        .set_recv_buffer_size(CLIENT_RECEIVE_BUFFER)
        .expect("SO_RCVBUF");
    client
        .connect(&server.local_addr().into())
        .expect("connect");
    let mut client = TcpStream::from(client);
    client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    client.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    client
        .write_all(&common::pattern(0, SENT_BYTES))
        .expect("write before the server runs");

    server.shutdown_handle().shutdown();
    let server = common::serve(server);
    // Not reading yet keeps the echo queued in the server, behind its FIN. A server that closed
    // now, with input unread, would reset the connection: watch for that first. (Reading at
    // once would race the close, and the echo might all get through before the reset.)
    let watching = Instant::now();
    while watching.elapsed() < RESET_WATCH {
        if let Some(err) = client.take_error().expect("SO_ERROR") {
            panic!("the server reset the connection, echo still queued: {err}");
        }
        thread::yield_now();
    }
    let echo = common::read_to_eof(&mut client);
    assert_eq!(
        echo.len(),
        ANSWER_BYTES,
        "the drain answers max_buffer bytes"
    );
    common::assert_pattern(0, &echo);
    drop(client);
    let report = server.join();
    common::assert_counts(&report, 1, Counts::Drained);
    assert_eq!(report.bytes_echoed, ANSWER_BYTES as u64, "{report}");
}
