//! What the scenarios share (nothing here imports one): clients (`load`, `readers`, `cycles`),
//! servers (`process`, `log`, `procfs`, `syscalls`), results (`table`, `chart`).

pub mod chart;
pub mod cycles;
pub mod load;
pub mod log;
pub mod process;
pub mod procfs;
pub mod readers;
pub mod syscalls;
pub mod table;

use std::io;

/// Bytes of the test pattern before it repeats. A prime, so that no message or read size lines
/// up with it: a lost, doubled or reordered chunk shows up as a wrong byte.
pub const PATTERN_PERIOD: usize = 251;

/// The pattern, long enough that any write or read of up to `longest` bytes is one slice of it.
pub fn pattern(longest: usize) -> Vec<u8> {
    let bytes = 0..PATTERN_PERIOD + longest;
    bytes.map(|i| (i % PATTERN_PERIOD) as u8).collect()
}

/// Checks `data`, read at byte `received` of a stream that started at `seed` in the pattern;
/// `InvalidData` names the first wrong byte.
pub fn check_echo(pattern: &[u8], seed: usize, received: u64, data: &[u8]) -> io::Result<()> {
    let start = (seed + received as usize) % PATTERN_PERIOD;
    let expected = &pattern[start..start + data.len()];
    match data.iter().zip(expected).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(at) => Err(invalid(format!(
            "wrong echo at byte {}",
            received + at as u64
        ))),
    }
}

/// The socket has nothing more for now: wait for the next readiness edge.
pub fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

pub fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The error with what was being done in front: `connect 127.0.0.1:5388: connection refused`.
pub fn context(err: io::Error, what: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}
