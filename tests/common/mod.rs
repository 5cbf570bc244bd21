//! Helpers shared by the integration tests.
// Not every test uses every helper.
#![allow(dead_code)]

#[cfg(feature = "cli")]
pub mod binary;
pub mod temp_dir;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Once;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use netgrace::{Config, Report, Server, ShutdownHandle};

/// The longest any single wait in a test may take before the test fails. Generous, because CI
/// machines are slow and loaded; a passing run never gets near it.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The size of each write of the test stream: enough that the writer keeps the socket busy.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// A server running on its own thread.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ShutdownHandle,
    /// Receives what `run` returned, so waiting for it can have a timeout.
    done: Receiver<io::Result<Report>>,
    thread: JoinHandle<()>,
}

/// A config on `127.0.0.1:0` with the given limits' defaults.
pub fn config() -> Config {
    Config::new(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Binds `config` (which should listen on port 0) and runs the server on a new thread.
pub fn start(config: Config) -> TestServer {
    serve(bind(config))
}

/// Binds `config` (which should listen on port 0) without running it, for tests that act before
/// `run`.
#[track_caller]
pub fn bind(config: Config) -> Server {
    init_logger();
    Server::bind(config).expect("bind 127.0.0.1:0")
}

/// Runs an already bound `server` on a new thread.
pub fn serve(server: Server) -> TestServer {
    init_logger();
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let (thread, done) = spawn_run(server, "netgrace-run");
    TestServer {
        addr,
        handle,
        done,
        thread,
    }
}

/// Runs `server` on a new thread named `name`; the receiver gets what `run` returned.
pub fn spawn_run(server: Server, name: &str) -> (JoinHandle<()>, Receiver<io::Result<Report>>) {
    let (tx, done) = mpsc::channel();
    let thread = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            // The receiver is gone only if the test already failed.
            let _ = tx.send(server.run().map_err(io::Error::from));
        })
        .expect("spawn server thread");
    (thread, done)
}

/// Runs `server` on its own thread and waits, bounded by [`TIMEOUT`], for its report.
#[track_caller]
pub fn run_on_thread(server: Server) -> Report {
    serve(server).join()
}

impl TestServer {
    /// A client connected to the server, with read and write timeouts of [`TIMEOUT`].
    pub fn connect(&self) -> TcpStream {
        let stream = connect(self.addr);
        stream.set_nodelay(true).expect("set_nodelay");
        stream
    }

    /// Asks for a graceful shutdown and returns the report.
    pub fn shutdown(self) -> Report {
        self.handle.shutdown();
        self.join()
    }

    /// Asks for an immediate shutdown and returns the report.
    pub fn shutdown_now(self) -> Report {
        self.handle.shutdown_now();
        self.join()
    }

    /// Waits (bounded by [`TIMEOUT`]) for `run` to return, and returns its report.
    #[track_caller]
    pub fn join(self) -> Report {
        let result = match self.done.recv_timeout(TIMEOUT) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => panic!("server did not stop within {TIMEOUT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("server thread panicked"),
        };
        self.thread.join().expect("server thread panicked");
        result.expect("run returned an error")
    }
}

/// A client of `addr` with read and write timeouts of [`TIMEOUT`]; unlike
/// [`TestServer::connect`] it needs no `TestServer` (which is not `Sync`), so any thread can call it.
#[track_caller]
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("set_read_timeout");
    stream
        .set_write_timeout(Some(TIMEOUT))
        .expect("set_write_timeout");
    stream
}

/// Writes `data` and reads back exactly as many bytes, asserting they are equal.
#[track_caller]
pub fn assert_echo(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).expect("write");
    let mut echo = vec![0; data.len()];
    stream.read_exact(&mut echo).expect("read echo");
    assert_eq!(echo, data, "echo differs from what was sent");
}

/// Reads until EOF; fails the test on a reset or timeout. Returns everything read.
#[track_caller]
pub fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    match stream.read_to_end(&mut all) {
        Ok(_) => all,
        Err(err) => panic!("expected a clean EOF after {} bytes, got {err}", all.len()),
    }
}

/// Half-closes `client` and waits for the server's EOF, after which the server has closed it.
#[track_caller]
pub fn half_close_and_wait_for_eof(mut client: TcpStream) {
    client.shutdown(Shutdown::Write).expect("shutdown write");
    let rest = read_to_eof(&mut client);
    assert!(
        rest.is_empty(),
        "{} unexpected bytes before EOF",
        rest.len()
    );
}

/// Closes `client` with echo unread, which makes Linux send RST instead of FIN (RFC 1122
/// §4.2.2.13). Peeking first waits (bounded by the read timeout) until echo has arrived, so the
/// close is certainly a reset.
#[track_caller]
pub fn reset_with_echo_unread(client: TcpStream) {
    let mut byte = [0; 1];
    assert_eq!(client.peek(&mut byte).expect("peek at echo"), 1);
    drop(client);
}

/// A read or write timed out with nothing done (SO_RCVTIMEO/SO_SNDTIMEO: `EAGAIN`, which std
/// reports as `WouldBlock`; `TimedOut` on other platforms).
pub fn timed_out(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Asserts that nothing (no data, no EOF, no reset) arrives on `stream` for `silence`; then
/// restores its read timeout to [`TIMEOUT`].
#[track_caller]
pub fn assert_silent(stream: &mut TcpStream, silence: Duration) {
    stream.set_read_timeout(Some(silence)).expect("SO_RCVTIMEO");
    let mut byte = [0; 1];
    match stream.read(&mut byte) {
        // SO_RCVTIMEO expired: nothing arrived.
        Err(err) if timed_out(&err) => {}
        other => panic!("expected nothing within {silence:?}, got {other:?}"),
    }
    stream.set_read_timeout(Some(TIMEOUT)).expect("SO_RCVTIMEO");
}

/// Byte `i` of a deterministic, non-repeating-looking test stream: lets a reader check any prefix
/// without keeping a copy of what was sent.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8)) as u8
}

/// `len` bytes of the test stream starting at offset `start`.
pub fn pattern(start: u64, len: usize) -> Vec<u8> {
    (start..start + len as u64).map(pattern_byte).collect()
}

/// Asserts that `bytes` is the test stream from offset `start`.
#[track_caller]
pub fn assert_pattern(start: u64, bytes: &[u8]) {
    if let Some(i) = (0..bytes.len()).find(|&i| bytes[i] != pattern_byte(start + i as u64)) {
        panic!("byte {} differs from what was sent", start + i as u64);
    }
}

/// Writes the test stream from `offset` towards `end`; returns the offset reached, which is short
/// of `end` only if a write made no progress for the socket's write timeout.
#[track_caller]
pub fn write_pattern(stream: &mut TcpStream, mut offset: u64, end: u64) -> u64 {
    while offset < end {
        let len = CHUNK_BYTES.min((end - offset) as usize);
        match stream.write(&pattern(offset, len)) {
            Ok(0) => panic!("write returned 0 at byte {offset}"),
            // Possibly partial: the rest goes in the next chunk.
            Ok(n) => offset += n as u64,
            // The chain is full: the server is holding back (backpressure).
            Err(err) if timed_out(&err) => return offset,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => panic!("write at byte {offset}: {err}"),
        }
    }
    offset
}

/// Writes the test stream up to `total` bytes without reading, stopping early if a write makes
/// no progress for `stall`; returns how much went out. The write timeout is [`TIMEOUT`] again
/// afterwards.
#[track_caller]
pub fn write_until_stalled(stream: &mut TcpStream, total: u64, stall: Duration) -> u64 {
    stream
        .set_write_timeout(Some(stall))
        .expect("set_write_timeout");
    let sent = write_pattern(stream, 0, total);
    stream
        .set_write_timeout(Some(TIMEOUT))
        .expect("set_write_timeout");
    sent
}

/// Reads the test stream until EOF on a new thread, `buf_bytes` at a time, checking every byte;
/// the thread returns the count.
pub fn spawn_pattern_reader(mut stream: TcpStream, buf_bytes: usize) -> JoinHandle<u64> {
    thread::spawn(move || {
        let mut buf = vec![0; buf_bytes];
        let mut offset = 0;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return offset,
                Ok(n) => {
                    assert_pattern(offset, &buf[..n]);
                    offset += n as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // A read timeout (TIMEOUT) lands here too: the echo stalled.
                Err(err) => panic!("echo stopped after {offset} bytes: {err}"),
            }
        }
    })
}

/// Writes the test stream into `stream` from a thread, never reading, until the kernel buffers
/// of the echo path are full (a write blocks for `FLOOD_STALL`) or `FLOOD_BYTES` are written.
/// Sends the number of bytes written when it stops.
pub fn spawn_flooder(stream: &TcpStream) -> Receiver<u64> {
    /// Far more than the buffers hold: on Linux the receive buffer of a socket the server reads
    /// promptly grows to `tcp_rmem[2]` (32 MiB on some systems), plus both send buffers.
    const FLOOD_BYTES: u64 = 256 * 1024 * 1024;
    /// How long a blocked write means "full": the echo path moves gigabytes a second, so a stall
    /// this long is backpressure. Only which drain phase a test exercises, or how much is in
    /// flight at an immediate stop, depends on it.
    const FLOOD_STALL: Duration = Duration::from_millis(250);

    let mut stream = stream.try_clone().expect("clone stream");
    stream
        .set_write_timeout(Some(FLOOD_STALL))
        .expect("set_write_timeout");
    let (tx, done) = mpsc::channel();
    thread::spawn(move || {
        let mut written = 0;
        while written < FLOOD_BYTES {
            match stream.write(&pattern(written, CHUNK_BYTES)) {
                Ok(n) => written += n as u64,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // Timed out (the buffers are full) or failed: either way, flooding is over.
                Err(_) => break,
            }
        }
        let _ = tx.send(written);
    });
    done
}

/// Says that the calling test cannot run on this machine, and why; the test then returns
/// without asserting. The line, `skipped: WHY` at the start of the test's output, is what
/// `.ci/labs` counts as a skip (`cargo test -- --show-output` shows it), so that a test that
/// did not run never passes in silence.
pub fn skipped(why: &str) {
    println!("skipped: {why}");
}

/// Receives one message, bounded by [`TIMEOUT`]; a sender that is gone means its thread panicked.
#[track_caller]
pub fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(TIMEOUT) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("no {what} within {TIMEOUT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("the thread for {what} panicked"),
    }
}

/// Joins a helper thread, re-raising its panic so the test fails with its message.
#[track_caller]
pub fn join_thread<T>(thread: JoinHandle<T>) -> T {
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Asserts that connecting to `addr` is refused: nothing listens there any more.
#[track_caller]
pub fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Ok(_) => panic!("connect to {addr} succeeded; expected it refused"),
        Err(err) => assert_eq!(
            err.kind(),
            io::ErrorKind::ConnectionRefused,
            "connect to {addr}: {err}"
        ),
    }
}

/// Asserts that nothing was accepted, echoed or closed (however the run stopped).
#[track_caller]
pub fn assert_empty(report: &Report) {
    let counts = [
        report.accepted,
        report.peak_connections as u64,
        report.bytes_echoed,
        report.closed,
        report.drained,
        report.forced,
        report.errors,
        report.timed_out,
    ];
    assert_eq!(counts, [0; 8], "{report}");
}

/// Which counter every connection of a test must end in.
#[derive(Debug, Clone, Copy)]
pub enum Counts {
    Closed,
    Drained,
    Forced,
}

/// Asserts that all `accepted` connections ended in the counter `all_in`, and none elsewhere.
#[track_caller]
pub fn assert_counts(report: &Report, accepted: u64, all_in: Counts) {
    let (closed, drained, forced) = match all_in {
        Counts::Closed => (accepted, 0, 0),
        Counts::Drained => (0, accepted, 0),
        Counts::Forced => (0, 0, accepted),
    };
    let actual = (
        report.accepted,
        report.closed,
        report.drained,
        report.forced,
        report.errors,
    );
    assert_eq!(
        actual,
        (accepted, closed, drained, forced, 0),
        "(accepted, closed, drained, forced, errors) in {report}"
    );
}

/// Logs from the library go to stdout, through simple_logger, when `NETGRACE_TEST_LOG` is set
/// (e.g. to `debug`); the test harness captures them per test.
pub fn init_logger() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let level = std::env::var("NETGRACE_TEST_LOG")
            .ok()
            .and_then(|level| level.parse().ok())
            .unwrap_or(log::LevelFilter::Off);
        // Fails only if a logger is already set, which then keeps logging.
        let _ = simple_logger::SimpleLogger::new().with_level(level).init();
    });
}
