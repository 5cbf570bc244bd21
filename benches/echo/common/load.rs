//! The load generator's engine: C connections on one mio `Poll`, each keeping P messages of S
//! bytes in flight, every echoed byte checked. A message is one `write`, done when its last byte
//! is back. The same engine holds idle connections and drives a connection storm.

use std::io::{self, Read, Write};
use std::{collections::VecDeque, net::SocketAddr, time::Duration, time::Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::process::ServerProcess;
use super::{check_echo, context, pattern, would_block, PATTERN_PERIOD};

/// One read's most: a socket's receive queue under load.
const READ_BYTES: usize = 64 * 1024;
/// How long the last messages may take once sending has stopped: room for a storm's dropped
/// SYNs, retransmitted after 1, 3, 7 and 15 s (RFC 6298 §2.1).
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Load before each timed window: connections warm, caches and allocators settled.
pub const WARMUP: Duration = Duration::from_millis(300);
/// The opening message each connection sends and must get back.
pub const HELLO: &[u8] = b"netgrace bench\r\n";
/// Connections opened before waiting for their echoes: below the listen backlog of std and mio
/// (128), so no SYN is dropped (a dropped SYN costs a one-second retransmit).
const BATCH_CONNECTIONS: usize = 100;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub connections: usize,
    pub message_bytes: usize,
    pub in_flight: usize,
}

impl Shape {
    /// Large chunks, four in flight, so each socket always has data to move.
    pub const STREAM: Shape = Shape::new(10, 64 * 1024, 4);

    pub const fn new(connections: usize, message_bytes: usize, in_flight: usize) -> Shape {
        let (c, s, p) = (connections, message_bytes, in_flight);
        Shape {
            connections: c,
            message_bytes: s,
            in_flight: p,
        }
    }

    pub const fn pingpong(connections: usize) -> Shape {
        Shape::new(connections, 64, 1)
    }
}

/// When a [`Load::drive`] stops starting messages.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    After(Duration),
    Messages(u64),
}

/// What one drive measured, until every message it started came back; latencies in ns.
pub struct Stats {
    pub messages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

impl Stats {
    pub fn per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    pub fn latency_us(&self, percentile: f64) -> f64 {
        self.latency.value_at_percentile(percentile) as f64 / 1e3
    }
}

/// Connects `shape` to `server`, warms up, then drives for `secs`; returns the stats and the
/// serving processes' CPU time over exactly that window.
pub fn timed(server: &ServerProcess, shape: Shape, secs: Duration) -> io::Result<Timed> {
    let mut load = Load::connect(server.addr, shape)?;
    load.drive(Stop::After(WARMUP))?;
    let before = server.cpu_time()?;
    let stats = load.drive(Stop::After(secs))?;
    Ok((stats, server.cpu_time()? - before))
}

pub type Timed = (Stats, Duration);

/// Open connections (`None` once closed or failed); nothing in flight between drives.
pub struct Load {
    poll: Poll,
    conns: Vec<Option<Conn>>,
    tally: Tally,
}

/// What the connections share, and the current drive's counters.
struct Tally {
    shape: Shape,
    pattern: Vec<u8>,
    scratch: Vec<u8>,
    budget: u64,
    deadline: Instant,
    in_flight: u64,
    latency: Histogram<u64>,
    /// A storm's failed clients and the first error (elsewhere, a failure ends the drive).
    failures: Option<(usize, String)>,
}

/// One connection's progress, in bytes of its stream since the opening echo.
struct Conn {
    stream: TcpStream,
    /// Where in the pattern this connection's stream starts.
    seed: usize,
    /// Bytes to send (messages started × S), written, read.
    queued: u64,
    written: u64,
    received: u64,
    /// When each message in flight was started, oldest first.
    started: VecDeque<Instant>,
}

impl Load {
    /// Opens `shape.connections` connections, `BATCH_CONNECTIONS` at a time, each with
    /// TCP_NODELAY and proven by one echo of `HELLO` before the next batch.
    pub fn connect(addr: SocketAddr, shape: Shape) -> io::Result<Load> {
        let (poll, n) = (Poll::new()?, shape.connections);
        let mut conns = Vec::with_capacity(n);
        while conns.len() < n {
            let first = conns.len();
            let mut batch = Vec::new();
            for _ in first..n.min(first + BATCH_CONNECTIONS) {
                let stream = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT);
                let stream = stream.map_err(|err| context(err, &format!("connect {addr}")))?;
                // Small messages must not wait for the previous segment's ACK (Nagle).
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(IO_TIMEOUT))?;
                (&stream).write_all(HELLO)?;
                batch.push(stream);
            }
            for (index, mut stream) in (first..).zip(batch) {
                let mut echo = [0; HELLO.len()];
                (stream.read_exact(&mut echo)).map_err(|err| context(err, "opening echo"))?;
                if echo != HELLO {
                    return Err(super::invalid(format!("wrong opening echo: {echo:?}")));
                }
                stream.set_nonblocking(true)?;
                let stream = TcpStream::from_std(stream);
                conns.push(Some(Conn::new(&poll, stream, index, None)?));
            }
        }
        let tally = Tally::new(shape, None);
        Ok(Load { poll, conns, tally })
    }

    /// A connection storm: `n` nonblocking connects back to back, each starting a one-byte
    /// message; `drive(Stop::Messages(0))` then waits for the echoes. Registered once every
    /// connect is out, for the densest burst (a ready socket is reported at once, epoll(7)).
    pub fn burst(addr: SocketAddr, n: usize) -> io::Result<Load> {
        let poll = Poll::new()?;
        let mut tally = Tally::new(Shape::new(n, 1, 1), Some((0, String::new())));
        let connect = |_| (TcpStream::connect(addr), Instant::now());
        let connects: Vec<_> = (0..n).map(connect).collect();
        let mut conns = Vec::with_capacity(n);
        for (index, (connect, at)) in connects.into_iter().enumerate() {
            let conn = connect.and_then(|stream| Conn::new(&poll, stream, index, Some(at)));
            tally.in_flight += 1;
            conns.push(match conn {
                Ok(conn) => Some(conn),
                Err(err) => tally.fail(err, None)?,
            });
        }
        Ok(Load { poll, conns, tally })
    }

    pub fn failures(&self) -> (usize, &str) {
        let failures = self.tally.failures.as_ref();
        failures.map_or((0, ""), |(n, first)| (*n, first))
    }

    /// Keeps every connection busy until `stop`, then waits until all messages have come back,
    /// so that the next drive (or a reading of the server's CPU time) starts from quiet. Fails
    /// on a wrong byte (`InvalidData`), a close, or echo that stops coming back.
    pub fn drive(&mut self, stop: Stop) -> io::Result<Stats> {
        let (started, tally) = (Instant::now(), &mut self.tally);
        // A day stands for "no deadline", a budget beyond reach for "no count".
        (tally.deadline, tally.budget) = match stop {
            Stop::After(secs) => (started + secs, u64::MAX),
            Stop::Messages(count) => (started + Duration::from_secs(86_400), count),
        };
        tally.latency.reset();
        for index in 0..self.conns.len() {
            // The socket's state is unknown here: read until WouldBlock.
            self.pump(index, started, false)?;
        }
        let (mut events, mut stopped) = (Events::with_capacity(1024), None);
        while self.tally.in_flight > 0 {
            let now = Instant::now();
            let sending = self.tally.budget > 0 && now < self.tally.deadline;
            if !sending && now - *stopped.get_or_insert(now) > QUIESCE_TIMEOUT {
                let msg = format!("{} messages did not come back", self.tally.in_flight);
                let busy = self
                    .conns
                    .iter_mut()
                    .filter(|c| c.as_ref().is_some_and(Conn::busy));
                for conn in busy {
                    let err = io::Error::new(io::ErrorKind::TimedOut, msg.clone());
                    *conn = self.tally.fail(err, conn.take())?;
                }
            }
            let tick = Some(Duration::from_millis(100));
            self.poll.poll(&mut events, tick)?;
            for event in events.iter() {
                // An EOF behind the data raises no new edge: then read on to WouldBlock.
                let trust_short_read = !(event.is_read_closed() || event.is_error());
                self.pump(event.token().0, now, trust_short_read)?;
            }
        }
        let messages = self.tally.latency.len();
        let bytes = messages * self.tally.shape.message_bytes as u64;
        let (elapsed, latency) = (started.elapsed(), self.tally.latency.clone());
        Ok(Stats {
            messages,
            bytes,
            elapsed,
            latency,
        })
    }

    /// Pumps connection `index`, if open; a storm's client that fails is counted and closed.
    fn pump(&mut self, index: usize, now: Instant, trust_short_read: bool) -> io::Result<()> {
        let Some(conn) = self.conns[index].as_mut() else {
            return Ok(());
        };
        if let Err(err) = conn.pump(&mut self.tally, now, trust_short_read) {
            self.conns[index] = self.tally.fail(err, self.conns[index].take())?;
        }
        Ok(())
    }

    /// Waits until the server has closed every connection, or `timeout`, closing each at its
    /// EOF as a client would; returns how many saw EOF, an error (a reset, which can lose echo
    /// in flight), or nothing.
    pub fn await_close(&mut self, timeout: Duration) -> io::Result<[usize; 3]> {
        let deadline = Instant::now() + timeout;
        let (mut eof, mut reset) = (0, 0);
        let mut events = Events::with_capacity(1024);
        while self.conns.iter().any(Option::is_some) && Instant::now() < deadline {
            let left = deadline - Instant::now().min(deadline);
            self.poll.poll(&mut events, Some(left))?;
            for event in events.iter() {
                let Some(conn) = self.conns[event.token().0].as_mut() else {
                    continue;
                };
                let ended = loop {
                    match conn.stream.read(&mut self.tally.scratch) {
                        // The server's FIN: close ours (dropping the stream), as clients do.
                        Ok(0) => break Some(&mut eof),
                        // Nothing is owed to an idle client; read on to the EOF.
                        Ok(_) => {}
                        Err(err) if would_block(&err) => break None,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        // A reset (or any error): the end the server must avoid.
                        Err(_) => break Some(&mut reset),
                    }
                };
                if let Some(counter) = ended {
                    *counter += 1;
                    self.conns[event.token().0] = None;
                }
            }
        }
        Ok([eof, reset, self.conns.iter().flatten().count()])
    }
}

impl Tally {
    fn new(shape: Shape, failures: Option<(usize, String)>) -> Tally {
        // 1 ns to 60 s with three significant digits: about 200 KiB.
        #[allow(clippy::unwrap_used)] // the bounds are constants that HdrHistogram accepts
        let latency = Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        let pattern = pattern(shape.message_bytes.max(READ_BYTES));
        let (scratch, in_flight) = (vec![0; READ_BYTES], 0);
        let (budget, deadline) = (0, Instant::now());
        Tally {
            shape,
            pattern,
            scratch,
            budget,
            deadline,
            in_flight,
            latency,
            failures,
        }
    }

    /// A storm's client failed: counted and closed (`None`). Elsewhere, or a wrong byte: `Err`.
    fn fail(&mut self, err: io::Error, conn: Option<Conn>) -> io::Result<Option<Conn>> {
        match &mut self.failures {
            Some((count, first)) if err.kind() != io::ErrorKind::InvalidData => {
                self.in_flight -= conn.map_or(1, |conn| conn.started.len() as u64);
                *count += 1;
                if first.is_empty() {
                    *first = err.to_string();
                }
                Ok(None)
            }
            _ => Err(err),
        }
    }
}

impl Conn {
    /// Registers `stream` as connection `index`; a storm's starts its one message `at` its connect.
    fn new(
        poll: &Poll,
        mut stream: TcpStream,
        index: usize,
        at: Option<Instant>,
    ) -> io::Result<Conn> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registry = poll.registry();
        registry.register(&mut stream, Token(index), interest)?;
        let (seed, queued, written, received) = (index * 37 % PATTERN_PERIOD, 0, 0, 0);
        let mut conn = Conn {
            stream,
            seed,
            queued,
            written,
            received,
            started: VecDeque::new(),
        };
        if let Some(at) = at {
            (conn.queued, conn.started) = (1, VecDeque::from([at]));
        }
        Ok(conn)
    }

    fn busy(&self) -> bool {
        !self.started.is_empty()
    }

    /// Writes and reads until the socket would block (edge-triggered), starting messages as the
    /// drive allows. With `trust_short_read`, a short read drained the socket (epoll(7)) and the
    /// read that would return `WouldBlock` is skipped, as netgrace and tokio do, so that the
    /// server, not the load generator, is the bottleneck.
    fn pump(&mut self, tally: &mut Tally, now: Instant, trust_short_read: bool) -> io::Result<()> {
        let size = tally.shape.message_bytes as u64;
        let mut drained = false;
        loop {
            while self.started.len() < tally.shape.in_flight
                && tally.budget > 0
                && now < tally.deadline
            {
                (tally.budget, tally.in_flight) = (tally.budget - 1, tally.in_flight + 1);
                self.queued += size;
                self.started.push_back(Instant::now());
            }
            // Also after the last read: its echo may have started messages.
            self.flush(&tally.pattern, size)?;
            if drained {
                return Ok(());
            }
            let n = match self.stream.read(&mut tally.scratch) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                // Drained: wait for the next edge.
                Err(err) if would_block(&err) => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            if self.received + n as u64 > self.written {
                return Err(super::invalid("more echo than was sent"));
            }
            let (pattern, data) = (&tally.pattern, &tally.scratch[..n]);
            check_echo(pattern, self.seed, self.received, data)?;
            self.received += n as u64;
            // The oldest message in flight ends where the later ones' bytes begin.
            while let Some(&sent) = self.started.front() {
                if self.queued - (self.started.len() as u64 - 1) * size > self.received {
                    break;
                }
                self.started.pop_front();
                tally.in_flight -= 1;
                let latency = sent.elapsed().as_nanos() as u64;
                tally.latency.saturating_record(latency);
            }
            drained = trust_short_read && n < tally.scratch.len();
        }
    }

    /// Writes queued bytes, one message per `write`, until the socket is full.
    fn flush(&mut self, pattern: &[u8], size: u64) -> io::Result<()> {
        while self.written < self.queued {
            let len = (self.queued - self.written).min(size - self.written % size) as usize;
            let start = (self.seed + self.written as usize) % PATTERN_PERIOD;
            match self.stream.write(&pattern[start..start + len]) {
                Ok(n) => self.written += n as u64,
                // A full send buffer (backpressure from the server): the next edge resumes.
                Err(err) if would_block(&err) => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}
