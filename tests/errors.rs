//! Errors: whatever one client does to its connection, the server and the other clients go on.

mod common;

use std::net::TcpStream;
use std::time::Duration;

/// What the resetting client sends: enough that plenty of echo sits unread in its socket.
const RESET_BYTES: u64 = 1 << 20;
/// How long a write may make no progress before the resetting client stops writing (if the
/// loopback buffers hold less than [`RESET_BYTES`]); only a bound, never a wait for an event.
const STALL_TIMEOUT: Duration = Duration::from_millis(300);
/// Connections opened and closed at once by the churn test.
const CHURN_CLIENTS: u64 = 50;

/// Sends up to [`RESET_BYTES`] without reading, then closes with echo unread: a reset.
#[track_caller]
fn reset(mut client: TcpStream) {
    common::write_until_stalled(&mut client, RESET_BYTES, STALL_TIMEOUT);
    common::reset_with_echo_unread(client);
}

/// `max_connections = 2` makes the server's cleanup visible: the third client can only be
/// accepted once the server has closed the reset connection, so the report is settled when its
/// echo arrives.
#[test]
fn reset_client_does_not_disturb_others() {
    let mut config = common::config();
    config.max_connections = 2;
    let server = common::start(config);
    let mut steady = server.connect();
    common::assert_echo(&mut steady, b"before\n");

    reset(server.connect());
    common::assert_echo(&mut steady, b"after\n");
    let mut next = server.connect();
    common::assert_echo(&mut next, b"accepted in the freed slot\n");
    common::assert_echo(&mut steady, b"still echoing\n");

    common::half_close_and_wait_for_eof(steady);
    common::half_close_and_wait_for_eof(next);
    let report = server.shutdown();
    assert_eq!(report.accepted, 3, "{report}");
    assert_eq!(
        report.accepted,
        report.closed + report.drained + report.forced + report.errors,
        "every connection ends once: {report}"
    );
    // The two finished clients are `closed`; the reset one is an error, or `closed` if the server
    // happened to read its EOF before the reset could be seen.
    assert_eq!(report.closed + report.errors, 3, "{report}");
    assert!(report.errors <= 1, "{report}");
}

#[test]
fn clients_that_connect_and_close_at_once_do_not_stop_the_server() {
    let server = common::start(common::config());
    for _ in 0..CHURN_CLIENTS {
        drop(server.connect());
    }
    // Accepted after all the others (the backlog is FIFO), so the server got through them.
    let mut client = server.connect();
    common::assert_echo(&mut client, b"still serving\n");
    common::half_close_and_wait_for_eof(client);

    let report = server.shutdown();
    assert_eq!(report.accepted, CHURN_CLIENTS + 1, "{report}");
    // Each closed with a FIN and nothing unread: clean, before or during the drain.
    assert_eq!(
        report.closed + report.drained,
        CHURN_CLIENTS + 1,
        "{report}"
    );
    assert_eq!(report.forced + report.errors, 0, "{report}");
    assert_eq!(report.bytes_echoed, 14, "{report}");
}
