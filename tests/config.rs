//! Config: invalid limits and unusable addresses fail at startup, with the kind callers match on
//! and a message that names the culprit.

mod common;

use std::io;
use std::net::TcpListener;

use netgrace::{Config, Server};

/// A config with one limit set to zero, and the field the error must name.
fn zero_limits() -> [(Config, &'static str); 2] {
    let mut no_connections = common::config();
    no_connections.max_connections = 0;
    let mut no_buffer = common::config();
    no_buffer.max_buffer = 0;
    [
        (no_connections, "max_connections"),
        (no_buffer, "max_buffer"),
    ]
}

#[track_caller]
fn assert_invalid_input(result: io::Result<Server>, field: &str) {
    match result {
        Ok(server) => panic!("{field} = 0 accepted: {server:?}"),
        Err(err) => {
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            assert!(
                err.to_string().contains(field),
                "message names {field}: {err}"
            );
        }
    }
}

#[test]
fn bind_rejects_zero_limits_as_invalid_input() {
    for (config, field) in zero_limits() {
        assert_invalid_input(Server::bind(config), field);
    }
}

#[test]
fn from_std_rejects_zero_limits_as_invalid_input() {
    for (config, field) in zero_limits() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        assert_invalid_input(Server::from_std(listener, config), field);
    }
}

/// Validation comes before the socket: an invalid limit is reported even when binding would
/// fail too.
#[test]
fn invalid_limit_is_reported_before_bind_is_tried() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    for (mut config, field) in zero_limits() {
        config.listen = taken.local_addr().expect("local_addr");
        assert_invalid_input(Server::bind(config), field);
    }
}

/// The OS error as std's `TcpListener::bind` would return it: code matching `EADDRINUSE` the
/// std way works, at the top level.
#[test]
fn bind_on_an_address_in_use_fails_with_the_os_error_itself() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("local_addr");
    let mut config = common::config();
    config.listen = addr;
    match Server::bind(config) {
        Ok(server) => panic!("bound {addr} twice: {server:?}"),
        Err(err) => {
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
            assert_eq!(
                err.raw_os_error(),
                Some(rustix::io::Errno::ADDRINUSE.raw_os_error()),
                "{err}"
            );
        }
    }
}

/// `from_std` adopts the listener as it is: same address (`config.listen` is ignored), and it
/// really serves on it.
#[test]
fn from_std_keeps_the_listeners_address_and_serves_on_it() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    // Another live listener's address: one the server must not report or use.
    let other = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut config = common::config();
    config.listen = other.local_addr().expect("local_addr");
    let server = Server::from_std(listener, config).expect("from_std");
    assert_eq!(server.local_addr(), addr);

    let server = common::serve(server);
    let mut client = common::connect(addr);
    common::assert_echo(&mut client, b"adopted\n");
    drop(client);

    let report = server.shutdown();
    assert_eq!((report.accepted, report.bytes_echoed), (1, 8), "{report}");
}
