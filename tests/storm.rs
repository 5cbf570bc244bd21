#![cfg(feature = "cli")]
//! Connection storms: a thousand clients connecting at once, as after a restart, are all taken
//! in promptly, none of them losing its handshake to a full listen queue.
//!
//! Through the binary with its default flags, as an operator runs it. The signature of a lost
//! handshake is a client that waits a second or more: Linux drops the SYN (or the final ACK) of
//! a client that finds the accept queue full, and the client retransmits after its initial RTO of
//! one second (RFC 6298 §2.1; `TCP_TIMEOUT_INIT`). That is a kernel constant, not a speed target,
//! so the bound of [`DROPPED_HANDSHAKE`] holds on a slow machine too.

mod common;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use common::binary::{self, Serving};

/// Clients in the storm: fewer than the default `max_connections` (1024), more than mio's
/// old fixed backlog of 128 could ever hold.
const CLIENTS: usize = 1000;
/// A client this slow has had a handshake dropped and retransmitted (see the module doc).
const DROPPED_HANDSHAKE: Duration = Duration::from_millis(900);
/// The whole storm must end by then, or the test fails instead of hanging.
const STORM_LIMIT: Duration = Duration::from_secs(30);

/// One client of the storm: when it started connecting and when its echo came back.
struct Client {
    stream: TcpStream,
    started: Instant,
    sent: bool,
    echoed: Option<Duration>,
}

/// Connects `count` clients at once (nonblocking, so all handshakes are in flight together);
/// each sends one byte as soon as it is connected and waits for its echo. Returns each client's
/// connect-to-echo time, in the order they finished.
fn storm(addr: SocketAddr, count: usize) -> io::Result<Vec<Duration>> {
    let mut poll = Poll::new()?;
    let mut clients = HashMap::with_capacity(count);
    for key in 0..count {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr)?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut stream, Token(key), interest)?;
        let client = Client {
            stream,
            started,
            sent: false,
            echoed: None,
        };
        clients.insert(key, client);
    }
    let deadline = Instant::now() + STORM_LIMIT;
    let mut times = Vec::with_capacity(count);
    let mut events = Events::with_capacity(1024);
    while times.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("only {} of {count} clients echoed", times.len()),
            ));
        }
        poll.poll(&mut events, Some(left))?;
        for event in events.iter() {
            let client = clients.get_mut(&event.token().0).expect("a client's token");
            if let Some(time) = advance(client)? {
                times.push(time);
            }
        }
    }
    Ok(times)
}

/// Moves one client on after an event: send its byte once connected, then wait for the echo.
/// Spurious events (mio allows them) are harmless: every step tolerates `WouldBlock`.
fn advance(client: &mut Client) -> io::Result<Option<Duration>> {
    if client.echoed.is_some() {
        return Ok(None);
    }
    if !client.sent {
        if let Some(err) = client.stream.take_error()? {
            return Err(err);
        }
        // Not yet connected: the writable event of the finished handshake will come.
        if client.stream.peer_addr().is_err() {
            return Ok(None);
        }
        match client.stream.write(b"!") {
            Ok(1) => client.sent = true,
            Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(err) => return Err(err),
        }
    }
    let mut echo = [0; 1];
    match client.stream.read(&mut echo) {
        Ok(1) if echo == *b"!" => {
            let time = client.started.elapsed();
            client.echoed = Some(time);
            Ok(Some(time))
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "EOF or a wrong byte instead of the echo",
        )),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(err) => Err(err),
    }
}

/// Raises this process's descriptor limit to at least `needed`, and to the hard limit if that
/// is higher: the storm needs a descriptor per client, and the server, a child, inherits the
/// limit. Many systems start at 1024. Returns the soft limit now in force (`None`: unlimited).
fn raise_descriptor_limit(needed: u64) -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // The limit is the process's: the two tests that raise it must not lower it for each other.
    static RAISING: Mutex<()> = Mutex::new(());
    let _raising = RAISING.lock().unwrap_or_else(PoisonError::into_inner);
    let mut limit = getrlimit(Resource::Nofile);
    if limit.maximum.is_some_and(|maximum| maximum < needed) {
        // Raising the hard limit takes CAP_SYS_RESOURCE (setrlimit(2)), which root usually has;
        // a container may withhold it. EPERM leaves the limit as it was.
        let raised = Rlimit {
            current: Some(needed),
            maximum: Some(needed),
        };
        let _ = setrlimit(Resource::Nofile, raised);
        limit = getrlimit(Resource::Nofile);
    }
    limit.current = limit.maximum;
    // Soft up to hard never fails; if it did, the check below or EMFILE would name the cause.
    let _ = setrlimit(Resource::Nofile, limit);
    getrlimit(Resource::Nofile).current
}

#[test]
fn a_storm_of_1000_connects_loses_no_handshake() {
    // If it stays below, the storm fails with EMFILE, which names the cause itself.
    raise_descriptor_limit(2 * CLIENTS as u64 + 64);
    let server = Serving::start(&[]);
    let mut times = storm(server.addr, CLIENTS).expect("every client of the storm is echoed");
    times.sort();
    let slow = times.iter().filter(|&&t| t >= DROPPED_HANDSHAKE).count();
    let worst = times.last().copied().unwrap_or_default();
    let median = times[times.len() / 2];
    eprintln!("{CLIENTS} connects at once: median {median:?}, worst {worst:?}, {slow} slow");
    assert_eq!(
        slow, 0,
        "{slow} of {CLIENTS} clients took at least {DROPPED_HANDSHAKE:?} (a dropped handshake): \
         median {median:?}, worst {worst:?}"
    );
    server.signal("TERM");
    let log = server.wait_for_exit_0();
    let accepted = CLIENTS.to_string();
    binary::assert_report(&log, &[("accepted", &accepted), ("errors", "0")]);
}

/// The mechanism behind the test above: the descriptor table is grown once, at startup, so
/// that no accept in a storm stalls while the kernel grows it (docs/hard-edges.md, "Connection
/// storms and the listen backlog"). Without it the table starts at 64 slots and doubles.
#[test]
fn the_descriptor_table_is_reserved_for_max_connections_at_startup() {
    const CONNECTIONS: u64 = 4000;
    let needed = 2 * CONNECTIONS;
    if let Some(limit) = raise_descriptor_limit(needed).filter(|&limit| limit < needed) {
        let why = format!(
            "the descriptor limit ({limit}) is below {needed}, and raising it takes \
             CAP_SYS_RESOURCE"
        );
        return common::skipped(&why);
    }
    let server = Serving::start(&["--max-connections", &CONNECTIONS.to_string()]);
    let table = server.descriptor_table_size();
    assert!(
        table >= CONNECTIONS,
        "the descriptor table holds {table} descriptors, not the {CONNECTIONS} that \
         --max-connections needs"
    );
    server.signal("TERM");
    server.wait_for_exit_0();
}

/// `--backlog` reaches `listen(2)`: with one connection served and the backlog at 4, only the
/// first few clients complete their handshake; the next ones' SYNs are dropped (not refused), so
/// their connects time out. With mio's old fixed backlog of 128 all of them would connect.
#[test]
fn backlog_sets_how_many_clients_the_kernel_queues() {
    const BACKLOG: usize = 4;
    const CLIENTS: usize = 12;
    // Shorter than the 1 s SYN retransmission: a dropped SYN cannot complete within it.
    const CONNECT_LIMIT: Duration = Duration::from_millis(300);
    let server = Serving::start(&["--backlog", &BACKLOG.to_string(), "--max-connections", "1"]);
    let mut connected = Vec::new();
    let mut dropped = 0;
    for _ in 0..CLIENTS {
        match std::net::TcpStream::connect_timeout(&server.addr, CONNECT_LIMIT) {
            Ok(client) => connected.push(client),
            Err(err) if err.kind() == io::ErrorKind::TimedOut => dropped += 1,
            Err(err) => panic!("connect: {err} (a full backlog drops, it does not refuse)"),
        }
    }
    eprintln!(
        "--backlog {BACKLOG}: {} connected, {dropped} dropped",
        connected.len()
    );
    // One served, and Linux queues backlog + 1 (it checks "more than backlog" waiting).
    assert!(
        (BACKLOG + 1..=BACKLOG + 2).contains(&connected.len()),
        "{} of {CLIENTS} clients connected with --backlog {BACKLOG}, {dropped} timed out",
        connected.len()
    );
    drop(connected);
    server.signal("TERM");
    server.wait_for_exit_0();
}
