//! Backpressure: a client that does not read is throttled, not buffered, and throttling it
//! neither loses its bytes nor slows anyone else.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::TIMEOUT;

/// The server's per-connection limit in these tests: far below what the socket buffers hold.
const MAX_BUFFER_BYTES: usize = 4096;
/// What the non-reading client tries to send. The loopback chain (client send buffer, server
/// receive buffer, `max_buffer`, server send buffer, client receive buffer) held about 8.5 MB
/// with Linux's default autotuning when this was written; 32 MiB is well past that, so the
/// writes can only stall if the server stopped reading.
const TOTAL_BYTES: u64 = 32 << 20;
const CHUNK_BYTES: usize = 64 * 1024;
/// How long a write may make no progress before the writer calls the chain stalled. Only a
/// bound on "nothing moves", never a wait for something to happen.
const STALL_TIMEOUT: Duration = Duration::from_millis(300);

/// Round trips the other client makes while one is stuck; each is bounded by TIMEOUT.
const ROUNDS: u64 = 20;

fn config() -> netgrace::Config {
    let mut config = common::config();
    config.max_buffer = MAX_BUFFER_BYTES;
    config
}

/// The client's write timed out with nothing written (SO_SNDTIMEO: `EAGAIN`, which std reports
/// as `WouldBlock`; `TimedOut` on other platforms).
fn stalled(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes the test stream from `offset` towards `end`; returns the offset reached, which is short
/// of `end` only if a write made no progress for the socket's write timeout.
#[track_caller]
fn write_pattern(stream: &mut TcpStream, mut offset: u64, end: u64) -> u64 {
    while offset < end {
        let len = CHUNK_BYTES.min((end - offset) as usize);
        match stream.write(&common::pattern(offset, len)) {
            Ok(0) => panic!("write returned 0 at byte {offset}"),
            // Possibly partial: the rest goes in the next chunk.
            Ok(n) => offset += n as u64,
            Err(err) if stalled(&err) => return offset,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => panic!("write at byte {offset}: {err}"),
        }
    }
    offset
}

/// Writes without reading until the chain stalls, and returns how much went out. Fails the test
/// if everything went out: then the server kept reading past `max_buffer`.
#[track_caller]
fn fill_until_stalled(client: &mut TcpStream) -> u64 {
    client
        .set_write_timeout(Some(STALL_TIMEOUT))
        .expect("set_write_timeout");
    let sent = write_pattern(client, 0, TOTAL_BYTES);
    client
        .set_write_timeout(Some(TIMEOUT))
        .expect("set_write_timeout");
    assert!(
        sent < TOTAL_BYTES,
        "all {TOTAL_BYTES} bytes went out without the client reading: no backpressure"
    );
    sent
}

/// Reads the test stream until EOF on a new thread, checking every byte; returns the count.
fn spawn_reader(mut stream: TcpStream) -> JoinHandle<u64> {
    thread::spawn(move || {
        let mut buf = vec![0; CHUNK_BYTES];
        let mut offset = 0;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return offset,
                Ok(n) => {
                    common::assert_pattern(offset, &buf[..n]);
                    offset += n as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // A read timeout (TIMEOUT) lands here too: the echo stalled.
                Err(err) => panic!("echo stopped after {offset} bytes: {err}"),
            }
        }
    })
}

/// The stall proves the server stopped reading; once the client reads, every byte comes back.
#[test]
fn non_reading_client_stalls_then_gets_every_byte_once_it_reads() {
    let server = common::start(config());
    let mut client = server.connect();
    let sent = fill_until_stalled(&mut client);

    let reading = spawn_reader(client.try_clone().expect("try_clone"));
    // Reading resumes the chain: the server's writable edge is what restarts its reads, so a
    // missed edge would stall this write for TIMEOUT and fail it.
    assert_eq!(
        write_pattern(&mut client, sent, TOTAL_BYTES),
        TOTAL_BYTES,
        "writes stalled for {TIMEOUT:?} although the client was reading"
    );
    client.shutdown(Shutdown::Write).expect("shutdown write");
    assert_eq!(join(reading), TOTAL_BYTES, "echo length");

    let report = server.shutdown();
    assert_eq!(report.bytes_echoed, TOTAL_BYTES, "{report}");
    assert_eq!((report.accepted, report.closed), (1, 1), "{report}");
}

#[test]
fn other_clients_echo_while_one_is_backpressured() {
    let server = common::start(config());
    let mut stuck = server.connect();
    let sent = fill_until_stalled(&mut stuck);

    let mut other = server.connect();
    let message = common::pattern(0, 1000);
    for _ in 0..ROUNDS {
        common::assert_echo(&mut other, &message);
    }
    finish(other);

    // The stuck client gets everything back too, then EOF.
    stuck.shutdown(Shutdown::Write).expect("shutdown write");
    assert_eq!(join(spawn_reader(stuck)), sent, "echo length");

    let report = server.shutdown();
    assert_eq!(
        report.bytes_echoed,
        sent + ROUNDS * message.len() as u64,
        "{report}"
    );
    assert_eq!((report.accepted, report.closed), (2, 2), "{report}");
    assert_eq!(report.peak_connections, 2, "{report}");
}

/// Half-closes `client` and waits for the server's EOF, after which the server has closed it.
#[track_caller]
fn finish(mut client: TcpStream) {
    client.shutdown(Shutdown::Write).expect("shutdown write");
    let rest = common::read_to_eof(&mut client);
    assert!(
        rest.is_empty(),
        "{} unexpected bytes before EOF",
        rest.len()
    );
}

/// Joins a helper thread, re-raising its panic so the test fails with its message.
#[track_caller]
fn join<T>(thread: JoinHandle<T>) -> T {
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
