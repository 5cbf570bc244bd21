//! Clients for the restart tests: a workload that connects in a tight loop and tallies how each
//! connection went, clients that hold echo unread across a restart, and one that floods until
//! the echo path is full.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::common::{self, assert_echo, read_to_eof, TIMEOUT};

/// How many clients connect before the first restart and stay (besides the flooded one).
pub const LONG_LIVED: usize = 3;

/// What each long-lived client wrote last and has not read yet.
pub const UNREAD_ECHO: &[u8] = b"echo still unread at the restart";

/// What each long-lived client wrote first, and read back.
pub const FIRST_ECHO: &[u8] = b"long-lived";

/// Clients connected before the restart, served once, and holding echo they have not read.
pub fn open_long_lived(addr: SocketAddr) -> Vec<TcpStream> {
    (0..LONG_LIVED)
        .map(|_| {
            let mut client = common::connect(addr);
            assert_echo(&mut client, FIRST_ECHO);
            client.write_all(UNREAD_ECHO).expect("write");
            client
        })
        .collect()
}

/// A client that wrote without reading until everything stalled: the old worker holds echo it
/// cannot send (backpressure) when the restart comes.
pub struct Flooded {
    stream: TcpStream,
    sent: u64,
}

impl Flooded {
    /// How long a blocked write means the echo path is full.
    const STALL: Duration = Duration::from_millis(250);
    /// Far more than the buffers of the echo path hold.
    const MOST_BYTES: u64 = 256 << 20;

    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Flooded {
        let mut stream = common::connect(addr);
        let sent = common::write_until_stalled(&mut stream, Self::MOST_BYTES, Self::STALL);
        assert!(sent < Self::MOST_BYTES, "the flood never stalled");
        Flooded { stream, sent }
    }

    /// Reads the echo to EOF (the test stream from its start, then a clean EOF), closes, and
    /// returns how much there was.
    ///
    /// Not all of what was sent: the drain answers at most `max_buffer` bytes of the input
    /// waiting in the server's socket, and discards the rest while lingering (docs/shutdown.md).
    #[track_caller]
    pub fn read_all_then_eof(mut self) -> u64 {
        let echo = read_to_eof(&mut self.stream);
        common::assert_pattern(0, &echo);
        eprintln!("flooded client: sent {}, echoed {}", self.sent, echo.len());
        // The old worker held max_buffer (64 KiB) of echo when it stopped reading.
        assert!(
            echo.len() > 64 * 1024,
            "only {} bytes of echo for the {} sent",
            echo.len(),
            self.sent
        );
        echo.len() as u64
    }
}

/// Clients in a loop on several threads: connect, 64 bytes, read their echo, close.
pub struct Workload {
    stop: Arc<AtomicBool>,
    /// One message per `PROGRESS_CYCLES` cycles of any thread.
    progress: Receiver<()>,
    threads: Vec<JoinHandle<Tally>>,
}

/// What the workload's clients saw, summed over its threads.
#[derive(Debug, Default)]
pub struct Tally {
    pub cycles: u64,
    pub refused: u64,
    pub resets: u64,
    pub eof_without_echo: u64,
    pub partial: u64,
    pub wrong: u64,
    /// Any other failure, described.
    pub other: Vec<String>,
}

impl Workload {
    const THREADS: u64 = 4;
    const PROGRESS_CYCLES: u64 = 10;
    /// A bound on each thread's cycles (each leaves a port in TIME_WAIT), far above what a run
    /// needs.
    const MOST_CYCLES: u64 = 25_000;
    /// What each cycle writes, and must read back.
    pub const ECHO_BYTES: usize = 64;

    pub fn start(addr: SocketAddr) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, progress) = mpsc::channel();
        let threads = (0..Self::THREADS)
            .map(|thread| {
                let stop = Arc::clone(&stop);
                let tx = tx.clone();
                thread::spawn(move || {
                    let mut tally = Tally::default();
                    // Each thread's bytes differ from every other's, so a crossed echo is wrong.
                    let mut offset = thread << 40;
                    while !stop.load(Ordering::Relaxed) && tally.cycles < Self::MOST_CYCLES {
                        let payload = common::pattern(offset, Self::ECHO_BYTES);
                        tally.cycle(addr, &payload);
                        offset += Self::ECHO_BYTES as u64;
                        if tally.cycles % Self::PROGRESS_CYCLES == 0 {
                            let _ = tx.send(());
                        }
                    }
                    tally
                })
            })
            .collect();
        Workload {
            stop,
            progress,
            threads,
        }
    }

    /// Lets the workload run for at least `cycles` more cycles (each step bounded by
    /// `TIMEOUT`).
    #[track_caller]
    pub fn run_for(&self, cycles: u64) {
        while self.progress.try_recv().is_ok() {}
        for _ in 0..cycles.div_ceil(Self::PROGRESS_CYCLES) {
            common::recv(&self.progress, "progress of the workload");
        }
    }

    #[track_caller]
    pub fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut sum = Tally::default();
        for thread in std::mem::take(&mut self.threads) {
            let tally = common::join_thread(thread);
            sum.cycles += tally.cycles;
            sum.refused += tally.refused;
            sum.resets += tally.resets;
            sum.eof_without_echo += tally.eof_without_echo;
            sum.partial += tally.partial;
            sum.wrong += tally.wrong;
            sum.other.extend(tally.other);
        }
        sum
    }
}

impl Drop for Workload {
    /// A failed test does not leave its threads connecting.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Tally {
    /// Asserts that no client was refused, reset, or answered short, wrong or not at all.
    #[track_caller]
    pub fn assert_clean(&self) {
        assert_eq!(
            (self.refused, self.resets, self.eof_without_echo),
            (0, 0, 0),
            "refused, reset, EOF without echo: {self:?}"
        );
        assert_eq!((self.partial, self.wrong), (0, 0), "{self:?}");
        assert!(self.other.is_empty(), "{self:?}");
    }

    /// One connect, write, read, close; counts how it went.
    fn cycle(&mut self, addr: SocketAddr, payload: &[u8]) {
        self.cycles += 1;
        let mut stream = match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(stream) => stream,
            Err(err) => return self.failed("connect", &err),
        };
        let timeouts = stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .and_then(|()| stream.set_nodelay(true));
        if let Err(err) = timeouts.and_then(|()| stream.write_all(payload)) {
            return self.failed("write", &err);
        }
        let mut echo = vec![0; payload.len()];
        let mut received = 0;
        while received < echo.len() {
            match stream.read(&mut echo[received..]) {
                Ok(0) => break,
                Ok(n) => received += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return self.failed("read", &err),
            }
        }
        match received {
            0 => self.eof_without_echo += 1,
            n if n < payload.len() => self.partial += 1,
            _ if echo != payload => self.wrong += 1,
            _ => {}
        }
    }

    fn failed(&mut self, operation: &str, err: &io::Error) {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => self.refused += 1,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => self.resets += 1,
            _ => self.other.push(format!("{operation}: {err}")),
        }
    }
}
