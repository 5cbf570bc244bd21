//! Soak: mixed, partly hostile clients against one server for a while, then a check of what is
//! left: descriptors, memory, and whether every connection is accounted for.
//!
//! `cargo run --release --example soak -- 300` soaks for 300 s (default 3 s, which CI runs).
//! Linux only (it reads `/proc/self`). It exits with an error if a descriptor leaked, a
//! well-behaved client saw a wrong echo, or the report's counters do not add up. It serves only its
//! own clients on a free port, so there is nothing to poke with `nc`; for that, run the binary.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use netgrace::{Config, Server};

const CLIENT_THREADS: usize = 4;

fn main() -> io::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // Before the server exists, so its own listener, poll and waker count as leaks if left open.
    let (fds_before, rss_before) = (descriptors()?, rss_kib()?);
    let config = Config::new("127.0.0.1:0".parse().map_err(io::Error::other)?)
        .max_buffer(16 * 1024)
        .idle_timeout(Duration::from_secs(2));
    let server = Server::bind(config)?;
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let serving = std::thread::spawn(move || server.run());

    let deadline = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..CLIENT_THREADS)
        .map(|id| std::thread::spawn(move || clients(addr, id, deadline)))
        .collect();
    let mut cycles = 0;
    for worker in workers {
        cycles += worker
            .join()
            .map_err(|_| io::Error::other("client panicked"))??;
    }
    handle.shutdown();
    let report = serving
        .join()
        .map_err(|_| io::Error::other("server panicked"))??;
    drop(handle); // the last handle holds the waker's eventfd
    let (fds_after, rss_after) = (descriptors()?, rss_kib()?);

    println!("{cycles} client cycles in {secs} s");
    println!("descriptors: {fds_before} before, {fds_after} after");
    println!("resident memory: {rss_before} KiB before, {rss_after} KiB after");
    println!("report: {report}");
    let ended = report.closed + report.drained + report.forced + report.errors + report.timed_out;
    if fds_after != fds_before || ended != report.accepted || report.accepted != cycles {
        return Err(io::Error::other(
            "descriptors leaked or connections unaccounted for",
        ));
    }
    Ok(())
}

/// One client thread: cycles through four behaviours (a rotation of five cycles, two of them
/// well-behaved) until the deadline; returns the cycle count.
fn clients(addr: SocketAddr, id: usize, deadline: Instant) -> io::Result<u64> {
    let mut cycles = 0;
    while Instant::now() < deadline {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let message = format!("client {id} cycle {cycles}\n").repeat(64);
        match cycles % 5 {
            // Well-behaved: echo, half-close, read to EOF; any difference is an error.
            0 | 1 => {
                stream.write_all(message.as_bytes())?;
                stream.shutdown(Shutdown::Write)?;
                let mut echo = String::new();
                stream.read_to_string(&mut echo)?;
                if echo != message {
                    return Err(io::Error::other("echo differs from what was sent"));
                }
            }
            // Connects and closes at once.
            2 => {}
            // Writes and closes without reading: Linux resets the connection.
            3 => stream.write_all(&vec![0xa5; 64 * 1024])?,
            // Half-closes, then resets before reading its echo.
            _ => {
                stream.write_all(message.as_bytes())?;
                stream.shutdown(Shutdown::Write)?;
            }
        }
        cycles += 1;
    }
    Ok(cycles)
}

fn descriptors() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count())
}

fn rss_kib() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"));
    let kib = line.and_then(|line| line.split_whitespace().nth(1)?.parse().ok());
    kib.ok_or_else(|| io::Error::other("no VmRSS in /proc/self/status"))
}
