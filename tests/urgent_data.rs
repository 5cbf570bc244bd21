//! TCP urgent data cannot stall a connection.
//!
//! Linux stops a read at the urgent mark, so a read can come back short with data still queued
//! behind the mark, and no new edge will announce that data. The server must not take that short
//! read for a drained socket. The urgent byte itself is not echoed: without `SO_OOBINLINE` it is
//! kept out of band (tcp(7)), which the docs list as a non-goal.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// Enough connections that, without the fix, some would certainly have all their bytes queued
/// before the server reads (about 4 in 10 stalled in the review's experiment).
const CLIENTS: usize = 50;

/// Sends one byte as TCP urgent data; std has no API for `MSG_OOB`.
fn send_urgent(stream: &TcpStream, byte: u8) {
    // SAFETY: the descriptor is open for the whole call (borrowed from `stream`) and the buffer is
    // one valid byte on the stack.
    let sent = unsafe {
        libc::send(
            stream.as_raw_fd(),
            (&byte as *const u8).cast(),
            1,
            libc::MSG_OOB,
        )
    };
    assert_eq!(sent, 1, "send MSG_OOB: {}", std::io::Error::last_os_error());
}

#[test]
fn urgent_data_does_not_stall_the_echo() {
    let server = common::start(common::config());
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| server.connect()).collect();
    for client in &mut clients {
        client.write_all(b"abc").expect("write");
        send_urgent(client, b'!');
        client.write_all(b"def").expect("write");
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let mut echo = [0; 6];
        client
            .read_exact(&mut echo)
            .unwrap_or_else(|err| panic!("client {i}: echo stalled: {err}"));
        assert_eq!(&echo, b"abcdef", "client {i}");
    }
    drop(clients);
    let report = server.shutdown();
    assert_eq!(report.accepted, CLIENTS as u64);
    assert_eq!(report.errors, 0, "{report}");
}
