//! The clients of a connection storm: N nonblocking connects issued back to back from one
//! thread, then one mio `Poll` that takes each client through connect, one byte out and its echo
//! back, and counts how each one ended.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Clients slower than this almost surely lost a SYN or the handshake's ACK: the retransmit
/// alone takes 1 s, and without one a client on loopback gets its echo in milliseconds.
pub const SLOW: Duration = Duration::from_millis(900);

/// How a burst went.
pub struct Outcome {
    /// From the first connect until every client had its echo or had failed (or the timeout).
    pub elapsed: Duration,
    /// How long the load generator took to issue the connects: a floor under `elapsed` that
    /// no server can go below, so a ratio near 1 between two servers may only be this floor.
    pub issued: Duration,
    /// Connect-to-echo time of each client that got its echo.
    pub latencies: Vec<Duration>,
    pub failures: Failures,
}

impl Outcome {
    pub fn slowest(&self) -> Duration {
        self.latencies.iter().max().copied().unwrap_or_default()
    }

    pub fn slow(&self) -> usize {
        self.latencies.iter().filter(|l| **l > SLOW).count()
    }

    /// One line: the figures of the table, and what the failures were.
    pub fn summary(&self) -> String {
        let f = &self.failures;
        format!(
            "all echoed in {:>6.0} ms (connects issued in {:>4.0})  slowest {:>6.0} ms  \
             {:>5} over {} ms  failed {} (refused {}, reset {}, timed out {}, other {}{})",
            self.elapsed.as_secs_f64() * 1e3,
            self.issued.as_secs_f64() * 1e3,
            self.slowest().as_secs_f64() * 1e3,
            self.slow(),
            SLOW.as_millis(),
            f.total(),
            f.refused,
            f.reset,
            f.timed_out,
            f.other,
            f.first_other
                .as_deref()
                .map_or(String::new(), |e| format!(": {e}")),
        )
    }
}

/// Clients that never got their echo, by what the kernel said.
#[derive(Debug, Default)]
pub struct Failures {
    pub refused: usize,
    /// Reset, or closed by the server before the echo.
    pub reset: usize,
    pub timed_out: usize,
    pub other: usize,
    /// The first of the `other` errors, for the summary.
    first_other: Option<String>,
}

impl Failures {
    pub fn total(&self) -> usize {
        self.refused + self.reset + self.timed_out + self.other
    }

    fn count(&mut self, err: &io::Error) {
        match err.kind() {
            // An RST answered the SYN: nothing listens, or the kernel aborts on a full queue
            // (net.ipv4.tcp_abort_on_overflow).
            io::ErrorKind::ConnectionRefused => self.refused += 1,
            // An RST or a FIN after the handshake: the server dropped a connection it had.
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => self.reset += 1,
            // On this side: out of ephemeral ports (AddrNotAvailable), descriptors or memory.
            _ => {
                self.other += 1;
                self.first_other.get_or_insert_with(|| err.to_string());
            }
        }
    }
}

/// Where a client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    AwaitingEcho,
    /// Echoed or failed; the connection stays open (if it is) until the storm is dropped.
    Over,
}

struct Client {
    /// `None` if the connect failed at once or the connection failed later.
    stream: Option<TcpStream>,
    /// When its connect was issued: its latency starts here.
    connected_at: Instant,
    phase: Phase,
}

/// A burst in progress. Dropping it closes every connection.
pub struct Storm {
    poll: Poll,
    clients: Vec<Client>,
    started: Instant,
    /// When the last connect had been issued.
    issued: Instant,
    /// Clients neither echoed nor failed yet.
    waiting: usize,
    latencies: Vec<Duration>,
    failures: Failures,
    /// When the last client echoed or failed.
    last: Instant,
}

impl Storm {
    /// Issues `n` nonblocking connects to `addr` back to back, then registers them.
    ///
    /// Ephemeral ports: each burst goes to a fresh server port, so its 4-tuples are new, and
    /// connect(2) reuses local ports still in TIME_WAIT towards earlier servers; one burst of
    /// 10 000 fits the default range (32768–60999) with room to spare. Hence neither extra
    /// source addresses nor SO_LINGER 0: a connect that still fails here (AddrNotAvailable)
    /// counts as an `other` failure, and the summary quotes it.
    ///
    /// # Errors
    /// Only from the poll itself; a failed connect is a failed client.
    pub fn connect(addr: SocketAddr, n: usize) -> io::Result<Storm> {
        let poll = Poll::new()?;
        let mut failures = Failures::default();
        let mut clients = Vec::with_capacity(n);
        let started = Instant::now();
        // Registration waits until every connect is out: the burst is as dense as it can be,
        // and registering a socket that is already ready reports it at once (epoll(7)).
        for _ in 0..n {
            let connected_at = Instant::now();
            let (stream, phase) = match TcpStream::connect(addr) {
                Ok(stream) => (Some(stream), Phase::Connecting),
                Err(err) => {
                    failures.count(&err);
                    (None, Phase::Over)
                }
            };
            clients.push(Client {
                stream,
                connected_at,
                phase,
            });
        }
        let issued = Instant::now();
        for (index, client) in clients.iter_mut().enumerate() {
            if let Some(stream) = &mut client.stream {
                let interest = Interest::READABLE | Interest::WRITABLE;
                poll.registry().register(stream, Token(index), interest)?;
            }
        }
        Ok(Storm {
            poll,
            waiting: n - failures.total(),
            latencies: Vec::with_capacity(n),
            failures,
            clients,
            started,
            issued,
            last: started,
        })
    }

    /// Drives every client until it has its echo or has failed, or until `timeout` after the
    /// first connect; then closes them all.
    ///
    /// # Errors
    /// `InvalidData` for a wrong echo, or the poll's own error.
    pub fn drive(mut self, timeout: Duration) -> io::Result<Outcome> {
        let deadline = self.started + timeout;
        let mut events = Events::with_capacity(1024);
        while self.waiting > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self.poll.poll(&mut events, Some(deadline - now)) {
                Ok(()) => {}
                // A signal arrived: poll again, against the same deadline.
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            for event in events.iter() {
                self.advance(event.token().0)?;
            }
        }
        self.failures.timed_out = self.waiting;
        let end = if self.waiting > 0 {
            Instant::now()
        } else {
            self.last
        };
        Ok(Outcome {
            elapsed: end - self.started,
            issued: self.issued - self.started,
            latencies: std::mem::take(&mut self.latencies),
            failures: std::mem::take(&mut self.failures),
        })
    }

    /// Takes client `index` as far as it can go without blocking (readiness is edge-triggered).
    fn advance(&mut self, index: usize) -> io::Result<()> {
        // The byte it sends: a different one per client, so a crossed echo would show.
        let byte = (index % 251) as u8;
        loop {
            let client = &mut self.clients[index];
            // An event for a client already over (a late FIN after its echo): nothing to do.
            let Some(stream) = client.stream.as_mut() else {
                return Ok(());
            };
            let step = match client.phase {
                Phase::Connecting => send(stream, byte),
                Phase::AwaitingEcho => receive(stream, byte),
                Phase::Over => return Ok(()),
            };
            match (step, client.phase) {
                // Sent: the echo may be back already, so read before waiting for an edge.
                (Ok(true), Phase::Connecting) => client.phase = Phase::AwaitingEcho,
                (Ok(true), _) => {
                    let now = Instant::now();
                    let latency = now - client.connected_at;
                    self.latencies.push(latency);
                    self.finish(index, now);
                    return Ok(());
                }
                // Would block: the next edge brings the client back here.
                (Ok(false), _) => return Ok(()),
                (Err(err), _) if err.kind() == io::ErrorKind::InvalidData => return Err(err),
                (Err(err), _) => {
                    // Closing it at once, as a client that gives up does.
                    client.stream = None;
                    self.failures.count(&err);
                    self.finish(index, Instant::now());
                    return Ok(());
                }
            }
        }
    }

    fn finish(&mut self, index: usize, now: Instant) {
        self.clients[index].phase = Phase::Over;
        self.waiting -= 1;
        self.last = now;
    }
}

/// Once connected, sends `byte`; `Ok(false)` while the handshake is still under way.
fn send(stream: &mut TcpStream, byte: u8) -> io::Result<bool> {
    // A nonblocking connect ends with a writable (or error) event; whether it succeeded is in
    // SO_ERROR, and a peer address proves it (mio's `TcpStream::connect` docs, connect(2)).
    if let Some(err) = stream.take_error()? {
        return Err(err);
    }
    match stream.peer_addr() {
        Ok(_) => {}
        // Still in the handshake: a wake-up before it ended; wait for the next edge.
        Err(err) if err.kind() == io::ErrorKind::NotConnected => return Ok(false),
        Err(err) => return Err(err),
    }
    loop {
        match stream.write(&[byte]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => return Ok(true),
            // An empty send buffer that is full: cannot happen on a fresh connection, but wait.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Reads the echo of `byte`; `Ok(false)` while it has not come back.
fn receive(stream: &mut TcpStream, byte: u8) -> io::Result<bool> {
    let mut echo = [0; 2];
    loop {
        match stream.read(&mut echo) {
            Ok(1) if echo[0] == byte => return Ok(true),
            // The server closed before echoing: counted with the resets.
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                let msg = format!("sent {byte}, echo was {:?}", &echo[..n]);
                return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}
