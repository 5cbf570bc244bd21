#![cfg(feature = "cli")]
//! Churn: thousands of connect / echo / close cycles leave the server with exactly the
//! descriptors it started with, no more than allocator noise of extra memory, and a report that
//! counts every cycle as `closed`.
//!
//! Runs the binary rather than the library on a thread, so `/proc/PID` shows the server alone:
//! the test's own sockets, threads and allocations are not in its descriptor table or resident
//! set.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use common::TIMEOUT;

/// Cycles before the baseline is taken, so the allocator's and the slab's first growth (and the
/// lazily touched pages of the read buffer) are not counted as growth.
const WARMUP_CYCLES: u64 = 300;
/// Cycles measured against the baseline.
const CHURN_CYCLES: u64 = 3000;
/// No cycle starts after this, so a slow machine shortens the churn instead of failing it.
const CHURN_TIME_LIMIT: Duration = Duration::from_secs(4);
/// Fewest churn cycles for the figures to mean anything; a loopback cycle takes well under a
/// millisecond, so even a loaded machine runs this many within [`CHURN_TIME_LIMIT`].
const MIN_CHURN_CYCLES: u64 = 1000;
/// Client threads: enough that the server has several connections at once and accepts them in
/// bursts, few enough for two cores.
const CLIENT_THREADS: usize = 4;
/// Largest payload of one cycle; sizes vary from 1 byte up to this.
const MAX_PAYLOAD_BYTES: u64 = 2048;
/// Allowed growth of the server's resident set over the churn. A leak of 1 KiB per connection
/// would add about 3 MiB over [`CHURN_CYCLES`]; allocator noise is a few pages.
const RSS_GROWTH_LIMIT_KIB: u64 = 1024;

/// The netgrace binary on `127.0.0.1:0`, its stderr forwarded line by line; killed on drop, so a
/// failing test leaves no server behind.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Closed by the forwarding thread at EOF, that is when the process exits.
    lines: Receiver<String>,
    /// Every stderr line received so far, for assertions and failure messages.
    log: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Both are no-ops once the test has reaped the process itself.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary and waits for its `listening on` line.
    #[track_caller]
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_netgrace"))
            .args(["-l", "127.0.0.1:0"])
            // Info level: lifecycle lines only, not one debug line per connection.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netgrace");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                // A read error ends the log early; a failed send means the test has gone.
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
            log: Vec::new(),
        };
        let line = server.wait_for("listening on ");
        let addr = line.rsplit("listening on ").next().unwrap_or_default();
        server.addr = addr
            .trim()
            .parse()
            .unwrap_or_else(|err| panic!("address in {line:?}: {err}"));
        server
    }

    /// The next stderr line, also kept in `log`; `Disconnected` once the process has exited.
    fn next_line(&mut self, deadline: Instant) -> Result<String, RecvTimeoutError> {
        let line = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        self.log.push(line.clone());
        Ok(line)
    }

    /// Waits (bounded by [`TIMEOUT`]) for a stderr line containing `needle`, and returns it.
    #[track_caller]
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.next_line(deadline) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(err) => panic!(
                    "no log line with {needle:?}: {err:?}; stderr:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Sends SIGTERM with kill(1), as an operator would: a graceful shutdown.
    #[track_caller]
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits (bounded by [`TIMEOUT`]) until stderr closes, that is until the process exits, then
    /// reaps it; `wait` does not block by then.
    #[track_caller]
    fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.next_line(deadline) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "netgrace did not exit within {TIMEOUT:?}; stderr:\n{}",
                    self.log.join("\n")
                ),
            }
        }
        self.child.wait().expect("wait for netgrace")
    }

    /// Descriptors the server holds now.
    fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// The server's resident set now, in KiB (`VmRSS` in `/proc/PID/status`).
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .unwrap_or_else(|| panic!("no VmRSS in /proc/PID/status:\n{status}"));
        // "VmRSS:	    1234 kB"
        line.split_whitespace()
            .nth(1)
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("VmRSS line: {line:?}"))
    }

    /// The counters of the `shutdown complete:` line, which must be the last line of the log.
    #[track_caller]
    fn report(&self) -> HashMap<String, u64> {
        let last = self.log.last().map(String::as_str).unwrap_or_default();
        let Some((_, counters)) = last.split_once("shutdown complete: ") else {
            panic!(
                "the last log line should be the report; stderr:\n{}",
                self.log.join("\n")
            );
        };
        counters
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            // shutdown_ms is a fraction; the counters are whole numbers.
            .filter_map(|(key, value)| Some((key.to_owned(), value.parse().ok()?)))
            .collect()
    }
}

/// One cycle: connect, send a payload, half-close, read the echo to EOF, close.
///
/// The server closes its socket only after writing back everything it read, and it is that
/// close which sends the FIN (it never shuts down its write side first, outside a drain). So
/// EOF here means the server has already called close(2) on this connection's descriptor.
#[track_caller]
fn cycle(addr: SocketAddr, index: u64) {
    let mut client = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    client.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    // Sizes and contents differ from cycle to cycle, so one cycle's echo cannot pass for another's.
    let len = 1 + (index * 97 % MAX_PAYLOAD_BYTES) as usize;
    client
        .write_all(&common::pattern(index, len))
        .expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown write");
    let echo = common::read_to_eof(&mut client);
    assert_eq!(echo.len(), len, "echo length of cycle {index}");
    common::assert_pattern(index, &echo);
}

/// Runs cycles `first..first + cycles` from [`CLIENT_THREADS`] threads, starting none after
/// `limit`; returns how many ran. Every one that ran has finished: its client saw EOF.
fn churn(addr: SocketAddr, first: u64, cycles: u64, limit: Duration) -> u64 {
    let next = AtomicU64::new(0);
    let deadline = Instant::now() + limit;
    thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENT_THREADS)
            .map(|_| {
                scope.spawn(|| {
                    let mut ran = 0;
                    while Instant::now() < deadline {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= cycles {
                            break;
                        }
                        cycle(addr, first + index);
                        ran += 1;
                    }
                    ran
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|client| match client.join() {
                Ok(ran) => ran,
                // Re-raise, so the test fails with the client's message.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .sum()
    })
}

/// Thousands of cycles leave no descriptor behind and grow memory by less than
/// [`RSS_GROWTH_LIMIT_KIB`]; SIGTERM then exits 0 with every cycle counted `closed`.
#[test]
fn thousands_of_connections_leak_no_descriptors_or_memory() {
    let mut server = Server::start();
    let warmup = churn(server.addr, 0, WARMUP_CYCLES, TIMEOUT);
    assert_eq!(warmup, WARMUP_CYCLES, "warm-up cut short by {TIMEOUT:?}");
    let (fds_before, rss_before) = (server.descriptors(), server.rss_kib());

    let started = Instant::now();
    let ran = churn(server.addr, WARMUP_CYCLES, CHURN_CYCLES, CHURN_TIME_LIMIT);
    let elapsed = started.elapsed();
    // No retry and no sleep: every client has seen EOF, so the server has closed every one of
    // these descriptors already (see `cycle`), and close(2) removes it from /proc/PID/fd at once.
    let (fds_after, rss_after) = (server.descriptors(), server.rss_kib());
    eprintln!(
        "churn: {ran} cycles in {elapsed:.2?} ({:.0} cycles/s); descriptors {fds_before} -> \
         {fds_after}; VmRSS {rss_before} KiB -> {rss_after} KiB",
        ran as f64 / elapsed.as_secs_f64()
    );
    assert!(
        ran >= MIN_CHURN_CYCLES,
        "only {ran} cycles in {CHURN_TIME_LIMIT:?}"
    );
    assert_eq!(fds_after, fds_before, "descriptors after {ran} cycles");
    assert!(
        rss_after <= rss_before + RSS_GROWTH_LIMIT_KIB,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB over {ran} cycles"
    );

    server.terminate();
    let status = server.wait_for_exit();
    let log = server.log.join("\n");
    assert!(status.success(), "{status}; stderr:\n{log}");
    let report = server.report();
    let cycles = WARMUP_CYCLES + ran;
    for (counter, expected) in [
        ("accepted", cycles),
        ("closed", cycles),
        ("drained", 0),
        ("forced", 0),
        ("errors", 0),
        ("timed_out", 0),
    ] {
        assert_eq!(
            report.get(counter),
            Some(&expected),
            "{counter}; stderr:\n{log}"
        );
    }
}
