//! The library's half of a restart without downtime: `ShutdownHandle::hand_over` leaves the
//! clients in the accept backlog to another server sharing the listening socket
//! (`Server::try_clone_listener`), drains its own connections like a graceful shutdown, and says
//! so in `Report::stop`. And the first-bytes grace every drain gives a client that has sent
//! nothing yet.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::TIMEOUT;
use netgrace::{Server, Stop};

/// Clients the tests queue in the backlog before anyone accepts them.
const QUEUED: usize = 3;

/// Connects until the listener refuses, proving it is closed (the drain has begun), within
/// `TIMEOUT`. Each connect that succeeds is closed at once. A reset proves it too: that client
/// reached the backlog after the drain accepted it and before the listener closed.
#[track_caller]
fn wait_until_refused(addr: SocketAddr) {
    let started = Instant::now();
    for _ in 0..10_000 {
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
                ) =>
            {
                return
            }
            Ok(_) => {}
            Err(err) => panic!("connect: {err}"),
        }
        assert!(started.elapsed() < TIMEOUT, "listener still open");
        std::thread::yield_now();
    }
    panic!("listener still open after 10 000 connects");
}

/// Reads until EOF and returns what came.
#[track_caller]
fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("read to EOF");
    got
}

#[test]
fn hand_over_leaves_the_backlog_to_the_successor() {
    let old = common::bind(common::config());
    let addr = old.local_addr();
    let copy = old.try_clone_listener().expect("clone listener");
    // The kernel completes these handshakes by itself: the clients wait in the shared backlog
    // with their bytes already sent.
    let mut queued: Vec<TcpStream> = (0..QUEUED)
        .map(|i| {
            let mut client = common::connect(addr);
            client.write_all(&[b'0' + i as u8; 8]).expect("write");
            client
        })
        .collect();

    old.shutdown_handle().hand_over();
    let report = common::run_on_thread(old);
    assert_eq!(report.stop, Stop::HandOver, "{report}");
    // A graceful shutdown would have accepted all three and sent each an EOF; a hand-over
    // accepts none.
    assert_eq!(report.accepted, 0, "{report}");

    // The successor adopts the socket and serves the clients that waited, and new ones.
    let successor = common::serve(Server::from_std(copy, common::config()).expect("adopt"));
    queued.push(common::connect(addr));
    queued
        .last_mut()
        .unwrap()
        .write_all(&[b'n'; 8])
        .expect("write");
    for (i, client) in queued.iter_mut().enumerate() {
        let mut echo = [0; 8];
        client
            .read_exact(&mut echo)
            .expect("echo from the successor");
        let expected = if i < QUEUED { b'0' + i as u8 } else { b'n' };
        assert_eq!(echo, [expected; 8], "client {i}");
    }
    drop(queued);
    let report = successor.shutdown();
    assert_eq!(report.accepted, QUEUED as u64 + 1, "{report}");
    assert_eq!(report.stop, Stop::Graceful);
}

#[test]
fn hand_over_drains_the_connections_it_has() {
    let old = common::bind(common::config());
    let copy = old.try_clone_listener().expect("clone listener");
    let old = common::serve(old);
    let mut client = old.connect();
    common::assert_echo(&mut client, b"before");
    // Read by the server before the hand-over, and not yet written back: the drain owes it.
    client.write_all(b"owed").expect("write");

    let successor = common::serve(Server::from_std(copy, common::config()).expect("adopt"));
    old.handle.hand_over();
    assert_eq!(
        read_all(&mut client),
        b"owed",
        "echo, then EOF from the old server"
    );
    drop(client);
    let report = old.join();
    assert_eq!(report.stop, Stop::HandOver, "{report}");
    common::assert_counts(&report, 1, common::Counts::Drained);

    // The address is still served: by the successor, whose descriptor keeps the socket open.
    let mut late = successor.connect();
    common::assert_echo(&mut late, b"after");
    drop(late);
    assert_eq!(successor.shutdown().accepted, 1);
}

/// The race at the hand-over (docs/restart.md): a client accepted just before the drain whose
/// request arrives just after it still gets its answer, not a bare EOF.
#[test]
fn a_drain_answers_a_client_whose_first_bytes_arrive_after_it_began() {
    let server = common::start(common::config());
    let mut silent = server.connect();
    // Accepted: a later client got its echo, and the backlog is served in order.
    let mut probe = server.connect();
    common::assert_echo(&mut probe, b"probe");
    drop(probe);

    server.handle.shutdown();
    wait_until_refused(server.addr);
    silent.write_all(b"late request").expect("write");
    assert_eq!(read_all(&mut silent), b"late request");
    drop(silent);
    // Besides these two, the connects that probed for the closed listener were accepted
    // from the backlog and drained.
    let report = server.join();
    assert_eq!((report.forced, report.errors), (0, 0), "{report}");
}

/// The grace is bounded by the drain deadline: a client that never sends gets its EOF after
/// half of `drain_timeout`, not before and not after the deadline, and counts as drained when it
/// then closes.
#[test]
fn the_first_bytes_grace_ends_at_half_the_drain_deadline() {
    const DRAIN: Duration = Duration::from_millis(300);
    let mut config = common::config();
    config.drain_timeout = DRAIN;
    let server = common::start(config);
    let mut silent = server.connect();
    let mut probe = server.connect();
    common::assert_echo(&mut probe, b"probe");
    drop(probe);

    let asked = Instant::now();
    server.handle.shutdown();
    assert_eq!(read_all(&mut silent), b"", "EOF, no data");
    let took = asked.elapsed();
    // Not before the grace: an EOF at once is what the grace exists to prevent; not long after
    // the deadline: the grace must not outlast it.
    assert!(
        took >= DRAIN / 2,
        "EOF after {took:?}, before the grace ended"
    );
    assert!(took < DRAIN, "EOF after {took:?}, not before the deadline");
    drop(silent);
    let report = server.join();
    // The silent client closed after its EOF; the probe before or during the drain.
    assert_eq!(report.closed + report.drained, 2, "{report}");
    assert_eq!((report.forced, report.errors), (0, 0), "{report}");
}

#[test]
fn the_report_says_how_the_run_stopped() {
    let cases: [(&str, Stop); 4] = [
        ("shutdown", Stop::Graceful),
        ("shutdown_now", Stop::Immediate),
        ("hand_over then shutdown", Stop::HandOver),
        ("hand_over then shutdown_now", Stop::Immediate),
    ];
    for (requests, expected) in cases {
        let server = common::bind(common::config());
        let handle = server.shutdown_handle();
        for request in requests.split(" then ") {
            match request {
                "shutdown" => handle.shutdown(),
                "shutdown_now" => handle.shutdown_now(),
                _ => handle.hand_over(),
            }
        }
        let report = common::run_on_thread(server);
        assert_eq!(report.stop, expected, "{requests}: {report}");
        assert!(report.to_string().ends_with(&format!(" stop={expected}")));
    }
}
