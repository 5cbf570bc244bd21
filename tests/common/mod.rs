//! Helpers shared by the integration tests.
// Not every test uses every helper.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::Duration;

use netgrace::{Config, Report, Server, ShutdownHandle};

/// The longest any single wait in a test may take before the test fails. Generous, because CI
/// machines are slow and loaded; a passing run never gets near it.
pub const TIMEOUT: Duration = Duration::from_secs(10);

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
    init_logger();
    let server = Server::bind(config).expect("bind 127.0.0.1:0");
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let (tx, done) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        // The receiver is gone only if the test already failed.
        let _ = tx.send(server.run());
    });
    TestServer {
        addr,
        handle,
        done,
        thread,
    }
}

impl TestServer {
    /// A client connected to the server, with read and write timeouts of [`TIMEOUT`].
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, TIMEOUT).expect("connect");
        stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(TIMEOUT))
            .expect("set_write_timeout");
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

/// Logs from the library go to stderr when `NETGRACE_TEST_LOG` is set (e.g. to `debug`).
pub fn init_logger() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let level = std::env::var("NETGRACE_TEST_LOG")
            .ok()
            .and_then(|level| level.parse().ok())
            .unwrap_or(log::LevelFilter::Off);
        if log::set_logger(&StderrLogger).is_ok() {
            log::set_max_level(level);
        }
    });
}

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        eprintln!("{} {}: {}", record.level(), record.target(), record.args());
    }

    fn flush(&self) {}
}
