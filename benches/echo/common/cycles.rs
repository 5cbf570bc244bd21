//! Client threads that connect, send 64 bytes, read the echo and close, over and over, each a
//! user whose next request waits for the last. The close is the client's, so TIME_WAIT (60 s) is
//! too: one source address's ports would all be in it within seconds, and connect(2)'s search for
//! a free one showed in the p99 (8.3 ms, not 2.2); so each thread cycles over 127.0.T.1–254.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{atomic::AtomicBool, atomic::Ordering::Relaxed, Arc};
use std::{thread::JoinHandle, time::Duration, time::Instant};

use socket2::{Domain, Socket, Type};

use super::{pattern, PATTERN_PERIOD};

/// Longest a connect or an echo may take: a dropped SYN, retransmitted after 1 s and 3 s (RFC
/// 6298 §2.1), makes a late cycle, not a failed one.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How one cycle ended; `Short`: EOF before the whole echo, or a wrong byte; `Other`: this side
/// (out of ports or descriptors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Echoed,
    Refused,
    Reset,
    Short,
    TimedOut,
    Other,
}

/// One cycle, its times from the drive's start.
#[derive(Debug, Clone, Copy)]
pub struct Cycle {
    pub start: Duration,
    pub end: Duration,
    pub outcome: Outcome,
}

/// Client threads cycling against one address until stopped (or dropped).
pub struct Cycles {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Cycle>>>,
}

impl Cycles {
    /// Starts `clients` threads, each cycling against `addr`; times count from `epoch`.
    pub fn start(addr: SocketAddr, clients: usize, epoch: Instant) -> io::Result<Cycles> {
        let (stop, threads) = (Arc::new(AtomicBool::new(false)), Vec::new());
        let mut cycles = Cycles { stop, threads };
        for index in 0..clients {
            let stop = Arc::clone(&cycles.stop);
            // On an error `cycles` drops, which stops the threads already started.
            let thread = std::thread::Builder::new().spawn(move || run(addr, index, epoch, &stop));
            cycles.threads.push(thread?);
        }
        Ok(cycles)
    }

    /// Stops every thread after its current cycle; returns every cycle.
    pub fn finish(mut self) -> io::Result<Vec<Cycle>> {
        self.stop.store(true, Relaxed);
        let threads = std::mem::take(&mut self.threads).into_iter();
        let threads = threads.map(JoinHandle::join);
        let all: Result<Vec<Vec<Cycle>>, _> = threads.collect();
        let panicked = |_| io::Error::other("a client thread panicked");
        Ok(all.map_err(panicked)?.concat())
    }
}

impl Drop for Cycles {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        let threads = std::mem::take(&mut self.threads);
        threads.into_iter().for_each(|t| drop(t.join()));
    }
}

/// One thread's loop; each cycle starts at another offset of the pattern, so that an echo that
/// belongs to another connection is wrong.
fn run(addr: SocketAddr, index: usize, epoch: Instant, stop: &AtomicBool) -> Vec<Cycle> {
    let pattern = pattern(64);
    let mut cycles = Vec::with_capacity(1 << 17);
    for n in (0..).take_while(|_| !stop.load(Relaxed)) {
        let message = &pattern[(index * 37 + n) % PATTERN_PERIOD..][..64];
        let source = Ipv4Addr::new(127, 0, 1 + (index % 254) as u8, 1 + (n % 254) as u8);
        let loopback = addr.ip().is_loopback();
        let source = loopback.then_some(SocketAddr::from((source, 0)));
        let started = Instant::now();
        let outcome = one(addr, source, message).unwrap_or_else(|err| classify(&err));
        let (start, end) = (started - epoch, epoch.elapsed());
        cycles.push(Cycle {
            start,
            end,
            outcome,
        });
    }
    cycles
}

/// One cycle: connect (from `source`), write `message`, read its echo, close (a FIN, not an
/// RST, since all was read). `Err`: a socket error to classify.
pub fn one(addr: SocketAddr, source: Option<SocketAddr>, message: &[u8]) -> io::Result<Outcome> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if let Some(source) = source {
        socket.bind(&source.into())?;
    }
    socket.connect_timeout(&addr.into(), CYCLE_TIMEOUT)?;
    let mut stream = TcpStream::from(socket);
    // The message leaves at once, not after the handshake's delayed ACK (Nagle).
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(CYCLE_TIMEOUT))?;
    stream.write_all(message)?;
    let mut echo = vec![0; message.len()];
    Ok(match stream.read_exact(&mut echo) {
        Ok(()) if echo == message => Outcome::Echoed,
        Err(err) if err.kind() != io::ErrorKind::UnexpectedEof => return Err(err),
        _ => Outcome::Short,
    })
}

fn classify(err: &io::Error) -> Outcome {
    use io::ErrorKind::*;
    match err.kind() {
        // An RST answered the SYN: no socket listened on the port at that instant.
        ConnectionRefused => Outcome::Refused,
        // An RST on an established connection (or a write after the server's FIN met one).
        ConnectionReset | ConnectionAborted | BrokenPipe => Outcome::Reset,
        // connect_timeout's deadline, or the read timeout (EAGAIN on Linux).
        TimedOut | WouldBlock => Outcome::TimedOut,
        // Our side: ephemeral ports (AddrNotAvailable), descriptors, memory.
        _ => Outcome::Other,
    }
}
