//! Limits: at `max_connections` the server stops accepting, and resumes by itself when a
//! connection closes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long "nothing arrives" is watched for: only a bound on silence, never a wait for
/// something to happen.
const SILENCE: Duration = Duration::from_millis(300);

/// The third client waits in the kernel's backlog, then is accepted with no new listener event:
/// the one for its arrival came while the server was full.
#[test]
fn client_over_the_limit_waits_until_a_connection_closes() {
    let mut config = common::config();
    config.max_connections = 2;
    let server = common::start(config);
    let mut first = server.connect();
    let mut second = server.connect();
    common::assert_echo(&mut first, b"first\n");
    common::assert_echo(&mut second, b"second\n");

    // The kernel completes the handshake from the backlog, so connecting and writing succeed.
    let mut third = server.connect();
    third.write_all(b"third\n").expect("write");
    common::assert_silent(&mut third, SILENCE);

    drop(first);
    let mut echo = [0; 6];
    third
        .read_exact(&mut echo)
        .expect("echo after a slot frees");
    assert_eq!(&echo, b"third\n");
    common::assert_echo(&mut second, b"still here\n");

    common::half_close_and_wait_for_eof(second);
    common::half_close_and_wait_for_eof(third);
    let report = server.shutdown();
    assert_eq!(report.accepted, 3, "{report}");
    assert_eq!(report.peak_connections, 2, "{report}");
    assert_eq!(report.closed, 3, "{report}");
    assert_eq!(
        report.drained + report.forced + report.errors,
        0,
        "{report}"
    );
}

/// Clients queued behind a limit of one.
const CLIENTS: usize = 5;

#[test]
fn limit_of_one_serves_clients_one_after_another() {
    let mut config = common::config();
    config.max_connections = 1;
    let server = common::start(config);
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .write_all(format!("client {i}\n").as_bytes())
            .expect("write");
    }
    // All five are in the backlog with their line sent; finishing each one lets the next in.
    for (i, mut client) in clients.into_iter().enumerate() {
        let expected = format!("client {i}\n");
        let mut echo = vec![0; expected.len()];
        client.read_exact(&mut echo).expect("echo");
        assert_eq!(echo, expected.as_bytes());
        common::half_close_and_wait_for_eof(client);
    }

    let report = server.shutdown();
    assert_eq!(report.accepted, CLIENTS as u64, "{report}");
    assert_eq!(report.peak_connections, 1, "{report}");
    assert_eq!(report.closed, CLIENTS as u64, "{report}");
}
