//! Backpressure: a client that does not read is throttled, not buffered, and throttling it
//! neither loses its bytes nor slows anyone else.

mod common;

use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::TIMEOUT;

/// The server's per-connection limit in these tests: far below what the socket buffers hold.
const MAX_BUFFER_BYTES: usize = 4096;
/// What the non-reading client tries to send. The loopback chain (client send buffer, server
/// receive buffer, `max_buffer`, server send buffer, client receive buffer) held about 8.5 MB
/// with Linux's default autotuning when this was written; 32 MiB is well past that, so the
/// writes can only stall if the server stopped reading.
const TOTAL_BYTES: u64 = 32 << 20;
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

/// Writes without reading until the chain stalls, and returns how much went out. Fails the test
/// if everything went out: then the server kept reading past `max_buffer`.
#[track_caller]
fn fill_until_stalled(client: &mut TcpStream) -> u64 {
    let sent = common::write_until_stalled(client, TOTAL_BYTES, STALL_TIMEOUT);
    assert!(
        sent < TOTAL_BYTES,
        "all {TOTAL_BYTES} bytes went out without the client reading: no backpressure"
    );
    sent
}

/// The stall proves the server stopped reading; once the client reads, every byte comes back.
#[test]
fn non_reading_client_stalls_then_gets_every_byte_once_it_reads() {
    let server = common::start(config());
    let mut client = server.connect();
    let sent = fill_until_stalled(&mut client);

    let reader = client.try_clone().expect("try_clone");
    let reading = common::spawn_pattern_reader(reader, common::CHUNK_BYTES);
    // Reading resumes the chain: the server's writable edge is what restarts its reads, so a
    // missed edge would stall this write for TIMEOUT and fail it.
    assert_eq!(
        common::write_pattern(&mut client, sent, TOTAL_BYTES),
        TOTAL_BYTES,
        "writes stalled for {TIMEOUT:?} although the client was reading"
    );
    client.shutdown(Shutdown::Write).expect("shutdown write");
    assert_eq!(common::join_thread(reading), TOTAL_BYTES, "echo length");

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
    common::half_close_and_wait_for_eof(other);

    // The stuck client gets everything back too, then EOF.
    stuck.shutdown(Shutdown::Write).expect("shutdown write");
    let reading = common::spawn_pattern_reader(stuck, common::CHUNK_BYTES);
    assert_eq!(common::join_thread(reading), sent, "echo length");

    let report = server.shutdown();
    assert_eq!(
        report.bytes_echoed,
        sent + ROUNDS * message.len() as u64,
        "{report}"
    );
    assert_eq!((report.accepted, report.closed), (2, 2), "{report}");
    assert_eq!(report.peak_connections, 2, "{report}");
}
