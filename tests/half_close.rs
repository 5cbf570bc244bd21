//! Half-close: a client that shuts down its write side still receives all its echo, then EOF.

mod common;

use std::fs;
use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

/// More than the socket buffers hold at their initial sizes (Linux defaults: 16 KiB to send,
/// 128 KiB to receive), so the client's writes and the server's echo overlap in both directions.
const BYTES: usize = 200 * 1024;

#[test]
fn half_close_returns_all_echo_then_eof() {
    let server = common::start(common::config());
    let mut reader = server.connect();
    let mut writer = reader.try_clone().expect("try_clone");
    // Writing on its own thread while this one reads: a writer that waited to finish before
    // reading would deadlock once both directions' buffers filled.
    let writing = thread::spawn(move || {
        writer.write_all(&common::pattern(0, BYTES)).expect("write");
        writer.shutdown(Shutdown::Write).expect("shutdown write");
    });

    // The server closes only after flushing everything it read, so EOF here also means the
    // server has finished with the connection: the report below is already settled.
    let echo = common::read_to_eof(&mut reader);
    common::join_thread(writing);
    assert_eq!(echo.len(), BYTES, "echo length");
    common::assert_pattern(0, &echo);

    let report = server.shutdown();
    assert_eq!(report.accepted, 1, "{report}");
    assert_eq!(report.closed, 1, "closed before shutdown: {report}");
    assert_eq!(
        report.drained + report.forced + report.errors,
        0,
        "{report}"
    );
    assert_eq!(report.bytes_echoed, BYTES as u64, "{report}");
}

/// What the client sends before reading anything in the pending-echo test: several times what the
/// return path (server send buffer, at most 4 MiB by Linux's `tcp_wmem`, plus the client's receive
/// buffer, which does not grow while the client does not read) can hold.
const UNREAD_BYTES: usize = 16 << 20;

/// The server reads the client's EOF while most of the echo is still in its own buffer (the
/// client has not read anything yet); it must write all of it before closing.
#[test]
fn half_close_with_echo_still_pending_delivers_it_all() {
    let mut config = common::config();
    // Room for everything, so the server reads through to EOF before the client reads a byte.
    config.max_buffer = 2 * UNREAD_BYTES;
    let server = common::start(config);
    let mut client = server.connect();
    client
        .write_all(&common::pattern(0, UNREAD_BYTES))
        .expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown write");
    // Reading before the server has seen the EOF would let it flush the echo first, and a server
    // that drops what is pending at EOF would then pass.
    wait_until_server_has_read_eof(server.addr, client.local_addr().expect("local_addr"));

    let echo = common::read_to_eof(&mut client);
    assert_eq!(echo.len(), UNREAD_BYTES, "echo length");
    common::assert_pattern(0, &echo);

    let report = server.shutdown();
    assert_eq!((report.accepted, report.closed), (1, 1), "{report}");
    assert_eq!(report.bytes_echoed, UNREAD_BYTES as u64, "{report}");
}

#[test]
fn half_close_after_small_messages_returns_their_echo_then_eof() {
    let server = common::start(common::config());
    let mut client = server.connect();
    common::assert_echo(&mut client, b"first\n");
    // Not waiting for this one's echo before the FIN: it must still come back, before EOF.
    client.write_all(b"second\n").expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown write");
    assert_eq!(common::read_to_eof(&mut client), b"second\n");

    let report = server.shutdown();
    assert_eq!((report.accepted, report.closed), (1, 1), "{report}");
    assert_eq!(report.bytes_echoed, 13, "{report}");
}

#[test]
fn half_close_without_data_gets_eof_at_once() {
    let server = common::start(common::config());
    let mut client = server.connect();
    client.shutdown(Shutdown::Write).expect("shutdown write");
    assert!(common::read_to_eof(&mut client).is_empty());

    let report = server.shutdown();
    assert_eq!((report.accepted, report.closed), (1, 1), "{report}");
    assert_eq!(report.bytes_echoed, 0, "{report}");
}

/// Waits until the server's end of the connection from `client` has read everything the client
/// sent, FIN included. No event tells the client that, but the kernel does: `/proc/net/tcp` shows
/// the socket in CLOSE_WAIT (FIN received; LAST_ACK once closed) with an empty receive queue.
/// The queue is `rcv_nxt - copied_seq`, and Linux's `tcp_recvmsg` moves `copied_seq` past the FIN
/// only when a `read` returns 0 for it, so until then the FIN counts as one byte (proc(5) for the
/// table's layout).
fn wait_until_server_has_read_eof(server: SocketAddr, client: SocketAddr) {
    const CLOSE_WAIT: &str = "08";
    const LAST_ACK: &str = "09";
    // The kernel prints an IPv4 address as the u32 it stores, in host byte order, then the port.
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("the tests listen on 127.0.0.1"),
    };
    let (local, remote) = (hex(server), hex(client));
    let deadline = Instant::now() + common::TIMEOUT;
    loop {
        let table = fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
        // Fields: sl, local, remote, state, tx_queue:rx_queue, ...
        let line = table.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
                .then(|| (fields[3].to_owned(), fields[4].to_owned()))
        });
        if let Some((state, queues)) = &line {
            let rx_queue = queues.split(':').nth(1).unwrap_or_default();
            if [CLOSE_WAIT, LAST_ACK].contains(&state.as_str())
                && u64::from_str_radix(rx_queue, 16) == Ok(0)
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server did not read the EOF within {:?}: {line:?}",
            common::TIMEOUT
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// How long the client of the next test waits for its EOF. A passing run needs a millisecond;
/// a server that missed the FIN never sends it.
const EOF_WAIT: Duration = Duration::from_secs(2);

/// The short-read rule's exception: data and FIN that are both waiting when the server first
/// looks (here they arrive before `run` starts, so its one event reports both) make a short
/// read that does not mean "drained": the FIN is behind the data, and no later event will
/// announce it. The server must read on, find the EOF, and close after the echo.
#[test]
fn data_and_fin_that_arrive_together_get_their_echo_then_eof() {
    let server = common::bind(common::config());
    let mut client = common::connect(server.local_addr());
    client.write_all(b"last words\n").expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown write");
    let server = common::serve(server);

    client
        .set_read_timeout(Some(EOF_WAIT))
        .expect("read timeout");
    assert_eq!(common::read_to_eof(&mut client), b"last words\n");

    let report = server.shutdown();
    assert_eq!((report.accepted, report.closed), (1, 1), "{report}");
}
