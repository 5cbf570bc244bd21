//! The restart scenario's workload: client threads that each connect, send 64 bytes, read the
//! echo and close, over and over, as fast as the server answers; every cycle is recorded with
//! its start, its end and how it ended.
//!
//! Blocking sockets, one cycle at a time per thread: a thread is a user whose next request waits
//! for the last one, so the threads together keep that many cycles in flight.
//!
//! The close is the client's (a FIN after the echo), so the TIME_WAIT sockets (60 s) are the
//! client's too: about 14 000 a second here, so one source address's 28 232 ephemeral ports are
//! all in TIME_WAIT within two seconds. connect(2) then reuses them (`net.ipv4.tcp_tw_reuse`
//! is 2: loopback only), but its search for a reusable port grew the baseline's p99 from 2.2 to
//! 8.3 ms when a previous drive had filled the table, so a drive's figures depended on the one
//! before it. Each cycle therefore binds one of `SOURCES` loopback addresses of its thread
//! (127.0.T.1 to 127.0.T.254, all local on Linux), a few hundred TIME_WAIT sockets each.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// The message of every cycle, as in pingpong.
pub const MESSAGE_BYTES: usize = 64;
/// Longest a connect or the wait for an echo may take before the cycle counts as timed out. A
/// dropped SYN is retransmitted after 1 s and 3 s (RFC 6298 §2.1, doubling), so a cycle that
/// lost one still completes, and shows as a latency of a second or more.
pub const CYCLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of the pattern before it repeats; a prime, as in `load.rs`. Each cycle starts at another
/// offset, so an echo that belongs to another connection shows as wrong.
const PATTERN_PERIOD: usize = 251;
/// Source addresses per thread, taken in turn (see the module doc).
const SOURCES: usize = 254;

/// How one cycle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// All 64 bytes came back, each right.
    Echoed,
    /// The connect was answered with an RST: nothing listened.
    Refused,
    /// An RST after the handshake, before the echo was complete.
    Reset,
    /// A clean EOF before the first byte of echo: the server closed a connection it never read.
    EofWithoutEcho,
    /// Some of the echo, then EOF; or a byte that differs from the one sent.
    PartialOrWrong,
    /// No connection, or no complete echo, within `CYCLE_TIMEOUT`.
    TimedOut,
    /// Anything else, on this side (out of ports or descriptors, say).
    Other,
}

/// One cycle: when it started and ended (from the drive's start), and how it went.
#[derive(Debug, Clone, Copy)]
pub struct Cycle {
    pub start: Duration,
    pub end: Duration,
    pub outcome: Outcome,
}

impl Cycle {
    pub fn latency(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }
}

/// Client threads cycling against one address until stopped.
pub struct Cycles {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Thread>>,
}

/// What one thread recorded.
struct Thread {
    cycles: Vec<Cycle>,
    /// The first `Other` error, to name in the summary.
    first_other: Option<String>,
}

/// Every cycle of a drive, in no particular order, and the first unexpected error if any.
pub struct Recorded {
    pub cycles: Vec<Cycle>,
    pub first_other: Option<String>,
}

impl Cycles {
    /// Starts `threads` threads, each cycling against `addr`; times count from `epoch`.
    pub fn start(addr: SocketAddr, threads: usize, epoch: Instant) -> io::Result<Cycles> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let flag = Arc::clone(&stop);
            let handle = std::thread::Builder::new()
                .name(format!("cycles-{index}"))
                .spawn(move || cycle_until(addr, index, epoch, &flag));
            match handle {
                Ok(handle) => handles.push(handle),
                Err(err) => {
                    // The threads already started would cycle forever: stop them first.
                    stop.store(true, Ordering::Relaxed);
                    handles.into_iter().for_each(|h| drop(h.join()));
                    return Err(err);
                }
            }
        }
        Ok(Cycles {
            stop,
            threads: handles,
        })
    }

    /// Stops every thread after its current cycle and gathers what they recorded.
    pub fn finish(mut self) -> io::Result<Recorded> {
        self.stop.store(true, Ordering::Relaxed);
        let mut recorded = Recorded {
            cycles: Vec::new(),
            first_other: None,
        };
        for handle in std::mem::take(&mut self.threads) {
            let thread = handle
                .join()
                .map_err(|_| io::Error::other("a client thread panicked"))?;
            recorded.cycles.extend(thread.cycles);
            recorded.first_other = recorded.first_other.or(thread.first_other);
        }
        Ok(recorded)
    }
}

impl Drop for Cycles {
    /// On an error path: the threads end after at most one more cycle.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in std::mem::take(&mut self.threads) {
            let _ = handle.join();
        }
    }
}

/// One thread's loop.
fn cycle_until(addr: SocketAddr, index: usize, epoch: Instant, stop: &AtomicBool) -> Thread {
    let pattern: Vec<u8> = (0..PATTERN_PERIOD + MESSAGE_BYTES)
        .map(|i| (i % PATTERN_PERIOD) as u8)
        .collect();
    let mut thread = Thread {
        // About 15 000 cycles a second for a thread on loopback, for up to 11 s.
        cycles: Vec::with_capacity(1 << 17),
        first_other: None,
    };
    let mut offset = index * 37;
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        offset = (offset + 1) % PATTERN_PERIOD;
        let message = &pattern[offset..offset + MESSAGE_BYTES];
        let source = source(addr, index, n);
        let started = Instant::now();
        let outcome = match one_cycle(addr, source, message) {
            Ok(outcome) => outcome,
            Err(err) => classify(&err, &mut thread.first_other),
        };
        thread.cycles.push(Cycle {
            start: started - epoch,
            end: epoch.elapsed(),
            outcome,
        });
    }
    thread
}

/// The address cycle `n` of thread `index` binds: 127.0.T.H for a server on IPv4 loopback,
/// `None` (the kernel's choice) otherwise.
fn source(server: SocketAddr, index: usize, n: usize) -> Option<SocketAddr> {
    match server {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => {
            let thread = (1 + index % SOURCES) as u8;
            let host = (1 + n % SOURCES) as u8;
            let ip = Ipv4Addr::new(127, 0, thread, host);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, 0)))
        }
        _ => None,
    }
}

/// Connect (from `source`, if given), write `message`, read its echo, close. `Err` is a socket
/// error to classify.
fn one_cycle(addr: SocketAddr, source: Option<SocketAddr>, message: &[u8]) -> io::Result<Outcome> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if let Some(source) = source {
        socket.bind(&source.into())?;
    }
    socket.connect_timeout(&addr.into(), CYCLE_TIMEOUT)?;
    let mut stream = TcpStream::from(socket);
    // The 64 bytes leave at once, not after the handshake's delayed ACK (Nagle).
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(CYCLE_TIMEOUT))?;
    stream.write_all(message)?;
    let mut echo = [0; MESSAGE_BYTES];
    let mut got = 0;
    while got < message.len() {
        match stream.read(&mut echo[got..])? {
            0 if got == 0 => return Ok(Outcome::EofWithoutEcho),
            0 => return Ok(Outcome::PartialOrWrong),
            n => got += n,
        }
    }
    Ok(if echo[..] == *message {
        Outcome::Echoed
    } else {
        Outcome::PartialOrWrong
    })
    // `stream` drops here: a FIN, after the whole echo was read, so no RST.
}

fn classify(err: &io::Error, first_other: &mut Option<String>) -> Outcome {
    match err.kind() {
        // An RST answered the SYN: no socket listened on the port at that instant.
        io::ErrorKind::ConnectionRefused => Outcome::Refused,
        // An RST on an established connection (or a write after the server's FIN met one).
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Outcome::Reset,
        // connect_timeout's deadline, or the read timeout (EAGAIN on Linux).
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Outcome::TimedOut,
        // Our side: ephemeral ports (AddrNotAvailable), descriptors, memory.
        _ => {
            first_other.get_or_insert_with(|| err.to_string());
            Outcome::Other
        }
    }
}
