//! Hostile clients: resets mid-stream, connections closed at once, half-close then reset, a
//! client that never reads, every byte value. None of them disturbs a well-behaved client, and
//! each is counted exactly once in the report.

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::TIMEOUT;

/// Small, so the never-reading client reaches backpressure after little data.
const MAX_BUFFER_BYTES: usize = 4096;
/// How long the drain waits for the never-reading client before forcing it; short, because the
/// test waits for all of it.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(300);
/// Clients of each short-lived hostile kind: reset, connect-and-close, garbage.
const EACH: u64 = 5;
/// What each resetting client sends before it closes with echo unread.
const RESET_BYTES: u64 = 128 * 1024;
/// What the half-closing clients send before their reset, one size each: the small ones are all
/// echoed before the reset, the largest one keeps the server's echo stuck behind backpressure.
const HALF_CLOSE_BYTES: [u64; 3] = [1024, 64 * 1024, 16 << 20];
/// What the never-reading client tries to send: more than the loopback chain holds (about
/// 8.5 MB with Linux's autotuning; see tests/backpressure.rs), so its writes stall.
const NEVER_READ_BYTES: u64 = 32 << 20;
/// How long a write may make no progress before the writer calls the chain stalled. Only a bound
/// on "nothing moves", never a wait for something to happen.
const STALL_TIMEOUT: Duration = Duration::from_millis(200);

/// Writes the test stream up to `total` bytes without reading, stopping early if a write makes
/// no progress for [`STALL_TIMEOUT`]; returns how much went out.
#[track_caller]
fn write_without_reading(client: &mut TcpStream, total: u64) -> u64 {
    common::write_until_stalled(client, total, STALL_TIMEOUT)
}

/// (a) Writes a lot, then closes without reading: a reset in the middle of the stream.
fn reset_mid_stream(addr: SocketAddr) {
    for _ in 0..EACH {
        let mut client = common::connect(addr);
        write_without_reading(&mut client, RESET_BYTES);
        common::reset_with_echo_unread(client);
    }
}

/// (b) Connects and closes at once: a FIN with no data, possibly before the server accepts.
fn connect_and_close(addr: SocketAddr) {
    for _ in 0..EACH {
        drop(common::connect(addr));
    }
}

/// (c) Sends, half-closes, then resets instead of reading its echo.
fn half_close_then_reset(addr: SocketAddr) {
    for bytes in HALF_CLOSE_BYTES {
        let mut client = common::connect(addr);
        write_without_reading(&mut client, bytes);
        client.shutdown(Shutdown::Write).expect("shutdown write");
        common::reset_with_echo_unread(client);
    }
}

/// (e) Sends every byte value, forwards and backwards, and must get exactly that back.
fn garbage(addr: SocketAddr) {
    let data: Vec<u8> = (0..=255).chain((0..=255).rev()).collect();
    for _ in 0..EACH {
        let mut client = common::connect(addr);
        client.write_all(&data).expect("write");
        client.shutdown(Shutdown::Write).expect("shutdown write");
        assert_eq!(common::read_to_eof(&mut client), data, "echo of garbage");
    }
}

/// One round trip, different each time so a stale or misrouted echo cannot pass; returns its
/// length.
#[track_caller]
fn round_trip(client: &mut TcpStream, round: u64) -> u64 {
    let len = 1 + (round * 61 % 1500) as usize;
    common::assert_echo(client, &common::pattern(round, len));
    len as u64
}

/// Every kind at once, beside a client doing round trips before, during and after; the never
/// reading one stays open into the shutdown, so the drain deadline has to force it.
#[test]
fn hostile_clients_do_not_disturb_a_steady_one_and_are_each_counted_once() {
    let mut config = common::config();
    config.max_buffer = MAX_BUFFER_BYTES;
    config.drain_timeout = DRAIN_TIMEOUT;
    let server = common::start(config);
    let addr = server.addr;

    let mut steady = server.connect();
    let mut echoed = round_trip(&mut steady, 0);
    let mut rounds = 1;

    // (d) Never reads; held open to the end, so the drain deadline has to force it.
    let never_reads = thread::spawn(move || {
        let mut client = common::connect(addr);
        let sent = write_without_reading(&mut client, NEVER_READ_BYTES);
        assert!(
            sent < NEVER_READ_BYTES,
            "no backpressure: all {sent} bytes went out"
        );
        client
    });
    let hostile = [
        thread::spawn(move || reset_mid_stream(addr)),
        thread::spawn(move || connect_and_close(addr)),
        thread::spawn(move || half_close_then_reset(addr)),
        thread::spawn(move || garbage(addr)),
    ];

    // Round trips for as long as the hostile clients run. Each is bounded by TIMEOUT, and so is
    // every step of theirs, so this loop ends; the deadline only makes a hang fail sooner.
    let deadline = Instant::now() + TIMEOUT;
    let rounds_before = rounds;
    while !(never_reads.is_finished() && hostile.iter().all(JoinHandle::is_finished)) {
        assert!(Instant::now() < deadline, "hostile clients still running");
        echoed += round_trip(&mut steady, rounds);
        rounds += 1;
    }
    let during = rounds - rounds_before;
    // The never-reading client alone takes STALL_TIMEOUT, far longer than a round trip.
    assert!(during > 0, "no round trip overlapped the hostile clients");
    let never_reads = common::join_thread(never_reads);
    hostile.into_iter().for_each(common::join_thread);

    // Connected after every hostile client, so accepted after them all (the accept queue is
    // FIFO): its echo proves each of them was accepted, hence counted, before the shutdown.
    let mut last = server.connect();
    echoed += round_trip(&mut last, rounds);
    echoed += round_trip(&mut steady, rounds + 1);
    common::half_close_and_wait_for_eof(last);
    common::half_close_and_wait_for_eof(steady);

    let report = server.shutdown();
    drop(never_reads);
    eprintln!("{during} round trips during the hostile clients; {report}");
    let resets = EACH;
    let half_closes = HALF_CLOSE_BYTES.len() as u64;
    // steady, last, never_reads, and the four kinds.
    let opened = 3 + resets + EACH + half_closes + EACH;
    assert_eq!(report.accepted, opened, "{report}");
    assert_eq!(
        report.accepted,
        report.closed + report.drained + report.forced + report.errors + report.timed_out,
        "every connection ends exactly once: {report}"
    );
    assert_eq!(report.timed_out, 0, "no idle timeout is set: {report}");
    // Exact where the test saw the end itself; bounds where the kernel's timing decides:
    // - steady, last and the garbage clients read EOF before the shutdown: `closed`;
    // - connect-and-close clients: `closed`, or `drained` if the shutdown began before the
    //   server read their FIN;
    // - a mid-stream reset arrives while the server still holds the connection (the client never
    //   sent FIN), so its next read or write fails: `errors`;
    // - a half-close then reset is `closed` if the server had echoed everything and closed before
    //   the RST arrived, `errors` if the RST found its echo still pending;
    // - the never-reading client has echo stuck behind backpressure when the drain begins, so
    //   it can only be `forced`; nothing else can outlast the drain.
    assert!(report.closed >= 2 + EACH, "{report}");
    assert!(report.closed + report.drained >= 2 + 2 * EACH, "{report}");
    assert!(
        (resets..=resets + half_closes).contains(&report.errors),
        "{report}"
    );
    assert!(report.forced >= 1, "the never-reading client: {report}");
    // The resetting clients' echo is cut short at a point the kernel decides.
    assert!(
        report.bytes_echoed >= echoed + EACH * 512,
        "at least the round trips ({echoed} bytes) and the garbage: {report}"
    );
}
