#![cfg(feature = "cli")]
//! Churn: thousands of connect / echo / close cycles leave the server with exactly the
//! descriptors it started with, no more than allocator noise of extra memory, and a report that
//! counts every cycle as `closed`.
//!
//! Runs the binary rather than the library on a thread, so `/proc/PID` shows the server alone:
//! the test's own sockets, threads and allocations are not in its descriptor table or resident
//! set.

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::binary::{self, Serving};
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

/// One cycle: connect, send a payload, half-close, read the echo to EOF, close.
///
/// The server closes its socket only after writing back everything it read, and it is that
/// close which sends the FIN (it never shuts down its write side first, outside a drain). So
/// EOF here means the server has already called close(2) on this connection's descriptor.
#[track_caller]
fn cycle(addr: SocketAddr, index: u64) {
    let mut client = common::connect(addr);
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
    // Info level (no RUST_LOG): lifecycle lines only, not one debug line per connection.
    let server = Serving::start(&[]);
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

    server.signal("TERM");
    let log = server.wait_for_exit_0();
    let report = binary::report(&log);
    let log = log.join("\n");
    let cycles = WARMUP_CYCLES + ran;
    for (counter, expected) in [
        ("accepted", cycles),
        ("closed", cycles),
        ("drained", 0),
        ("forced", 0),
        ("errors", 0),
        ("timed_out", 0),
    ] {
        // The report is text; these counters are whole numbers.
        let value = report
            .get(counter)
            .and_then(|value| value.parse::<u64>().ok());
        assert_eq!(value, Some(expected), "{counter}; stderr:\n{log}");
    }
}
