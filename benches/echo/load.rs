//! The load generator's engine: C connections on one mio `Poll` (no async runtime), each keeping
//! P messages of S bytes in flight, and every echoed byte compared with the byte sent.
//!
//! `pingpong` (64 B, one in flight) and `stream` (64 KiB, four in flight) are the same engine
//! with other sizes: a message is one `write` of S bytes, and it is done when its last byte has
//! come back. Its latency is the time from starting that write to reading that byte.
//!
//! Run it alone against any echo server:
//! `cargo bench --bench echo -- pingpong -a 127.0.0.1:5388 -c 50 -t 10`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

pub use crate::stats::Stats;
use crate::stats::{Tally, Ticker};

/// Bytes of the test pattern before it repeats. A prime, so that no message or read size lines
/// up with it: a lost, doubled or reordered chunk shows up as a wrong byte.
const PATTERN_PERIOD: usize = 251;
/// One read takes at most this much: the size of a socket's receive queue under load.
const READ_BYTES: usize = 64 * 1024;

/// What the load looks like.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub connections: usize,
    pub message_bytes: usize,
    /// Messages in flight per connection.
    pub in_flight: usize,
}

impl Shape {
    /// Stream: large chunks, four in flight, so each socket always has data to move.
    pub const STREAM: Shape = Shape {
        connections: 10,
        message_bytes: 64 * 1024,
        in_flight: 4,
    };

    /// Pingpong: 64-byte messages, one in flight, on `connections` connections.
    pub const fn pingpong(connections: usize) -> Shape {
        Shape {
            connections,
            message_bytes: 64,
            in_flight: 1,
        }
    }
}

/// When a [`Load::drive`] stops starting new messages.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    After(Duration),
    Messages(u64),
}

/// Open connections under load, between drives quiet: nothing in flight.
pub struct Load {
    poll: Poll,
    events: Events,
    clients: Vec<Client>,
    shape: Shape,
    /// The pattern, long enough that any write or read can be checked against one slice of it.
    pattern: Vec<u8>,
    scratch: Vec<u8>,
}

impl Load {
    /// Opens `shape.connections` connections (see [`crate::idle::open_verified`]).
    pub fn connect(addr: SocketAddr, shape: Shape) -> io::Result<Load> {
        let poll = Poll::new()?;
        let mut clients = Vec::with_capacity(shape.connections);
        for (index, stream) in crate::idle::open_verified(addr, shape.connections)?
            .into_iter()
            .enumerate()
        {
            stream.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(stream);
            let interest = Interest::READABLE | Interest::WRITABLE;
            poll.registry()
                .register(&mut stream, Token(index), interest)?;
            clients.push(Client::new(stream, index * 37 % PATTERN_PERIOD));
        }
        let longest = shape.message_bytes.max(READ_BYTES);
        let pattern = (0..PATTERN_PERIOD + longest)
            .map(|i| (i % PATTERN_PERIOD) as u8)
            .collect();
        Ok(Load {
            poll,
            events: Events::with_capacity(1024),
            clients,
            shape,
            pattern,
            scratch: vec![0; READ_BYTES],
        })
    }

    /// Keeps every connection busy until `stop`, then waits until all messages have come back,
    /// so that the next drive (or a reading of the server's CPU time) starts from quiet.
    /// With `progress`, prints a line per second to stderr.
    ///
    /// # Errors
    /// `InvalidData` for a wrong byte, `UnexpectedEof` if the server closes a connection,
    /// `TimedOut` if echo stops coming back, or the socket's own error.
    pub fn drive(&mut self, stop: Stop, progress: bool) -> io::Result<Stats> {
        let started = Instant::now();
        let mut tally = Tally::new(stop, started);
        let mut ticker = Ticker::new(started, progress);
        let Load {
            poll,
            events,
            clients,
            shape,
            pattern,
            scratch,
        } = self;
        for client in clients.iter_mut() {
            client.top_up(shape, &mut tally, started);
            // The socket's state is unknown here: read until WouldBlock.
            client.pump(pattern, scratch, shape, &mut tally, false)?;
        }
        loop {
            let now = Instant::now();
            tally.check_deadline(now);
            if tally.in_flight == 0 && !tally.sending {
                break;
            }
            if tally.is_stalled(now) {
                let msg = format!("{} messages did not come back", tally.in_flight);
                return Err(io::Error::new(io::ErrorKind::TimedOut, msg));
            }
            ticker.tick(now, &tally, shape.message_bytes);
            poll.poll(events, Some(Duration::from_millis(100)))?;
            for event in events.iter() {
                let client = &mut clients[event.token().0];
                let trust_short_read = !(event.is_read_closed() || event.is_error());
                client.pump(pattern, scratch, shape, &mut tally, trust_short_read)?;
            }
        }
        Ok(Stats {
            messages: tally.completed,
            bytes: tally.completed * shape.message_bytes as u64,
            elapsed: started.elapsed(),
            latency: tally.latency,
        })
    }
}

/// One connection's progress, in bytes of its stream since the opening echo.
struct Client {
    stream: TcpStream,
    /// Where in the pattern this connection's stream starts.
    seed: usize,
    /// Bytes this client means to send: messages started × S.
    queued: u64,
    written: u64,
    received: u64,
    /// Messages whose every byte came back.
    done: u64,
    /// When each message in flight was started, oldest first.
    started: VecDeque<Instant>,
}

impl Client {
    fn new(stream: TcpStream, seed: usize) -> Client {
        Client {
            stream,
            seed,
            queued: 0,
            written: 0,
            received: 0,
            done: 0,
            started: VecDeque::new(),
        }
    }

    /// Starts messages until `in_flight` are outstanding, if the tally allows.
    fn top_up(&mut self, shape: &Shape, tally: &mut Tally, now: Instant) {
        while self.started.len() < shape.in_flight && tally.take_start() {
            self.queued += shape.message_bytes as u64;
            self.started.push_back(now);
        }
    }

    /// Writes and reads until the socket would block (readiness is edge-triggered).
    ///
    /// `trust_short_read`: a read shorter than asked drained the socket (epoll(7)), so the read
    /// that would return `WouldBlock` is skipped, as netgrace and tokio do; it keeps the load
    /// generator's cost per message low, so that the server, not the load, is the bottleneck.
    /// Not when the event also says the peer closed: an EOF behind the data raises no new edge.
    fn pump(
        &mut self,
        pattern: &[u8],
        scratch: &mut [u8],
        shape: &Shape,
        tally: &mut Tally,
        trust_short_read: bool,
    ) -> io::Result<()> {
        let mut drained = false;
        loop {
            // Also after the last read: it may have started the next messages.
            self.flush(pattern, shape.message_bytes)?;
            if drained {
                return Ok(());
            }
            match self.stream.read(scratch) {
                Ok(0) => {
                    let msg = "the server closed a connection under load";
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
                }
                Ok(n) => {
                    self.check(&scratch[..n], pattern, shape, tally)?;
                    drained = trust_short_read && n < scratch.len();
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Writes queued bytes, one message per `write`, until done or the socket is full.
    fn flush(&mut self, pattern: &[u8], message_bytes: usize) -> io::Result<()> {
        while self.written < self.queued {
            let offset = self.written as usize % message_bytes;
            let len = (self.queued - self.written).min((message_bytes - offset) as u64) as usize;
            let start = (self.seed + self.written as usize) % PATTERN_PERIOD;
            match self.stream.write(&pattern[start..start + len]) {
                Ok(n) => self.written += n as u64,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Compares echoed bytes with what was sent; completes messages and starts the next ones.
    fn check(
        &mut self,
        data: &[u8],
        pattern: &[u8],
        shape: &Shape,
        tally: &mut Tally,
    ) -> io::Result<()> {
        let start = (self.seed + self.received as usize) % PATTERN_PERIOD;
        let expected = &pattern[start..start + data.len()];
        if self.received + data.len() as u64 > self.written || data != expected {
            let at = data.iter().zip(expected).position(|(a, b)| a != b);
            let msg = format!(
                "wrong echo at byte {} of a connection: {} bytes read, {} were outstanding",
                self.received + at.unwrap_or(0) as u64,
                data.len(),
                self.written - self.received,
            );
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        self.received += data.len() as u64;
        let now = Instant::now();
        let size = shape.message_bytes as u64;
        while (self.done + 1) * size <= self.received {
            self.done += 1;
            if let Some(sent) = self.started.pop_front() {
                tally.complete(now - sent);
            }
        }
        self.top_up(shape, tally, now);
        Ok(())
    }
}

/// The `pingpong` and `stream` modes: one drive of `secs` with progress, then a summary.
pub fn standalone(addr: SocketAddr, shape: Shape, secs: Duration) -> io::Result<()> {
    eprintln!(
        "{addr}: {} connections, {} B messages, {} in flight, {:.1} s",
        shape.connections,
        shape.message_bytes,
        shape.in_flight,
        secs.as_secs_f64()
    );
    let mut load = Load::connect(addr, shape)?;
    let stats = load.drive(Stop::After(secs), true)?;
    println!(
        "{} messages in {:.2} s: {:.0} msg/s, {:.1} MB/s, latency p50 {:.1} µs, p99 {:.1} µs, \
         p99.9 {:.1} µs; every byte checked",
        stats.messages,
        stats.elapsed.as_secs_f64(),
        stats.per_sec(),
        stats.mb_per_sec(),
        stats.latency_us(50.0),
        stats.latency_us(99.0),
        stats.latency_us(99.9),
    );
    Ok(())
}
