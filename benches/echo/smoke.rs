//! `smoke`: the CI check that the benchmark still works, in a few seconds.
//!
//! `cargo test --bench echo -- smoke` (a debug build; `cargo bench` works too). It fails, exiting
//! non-zero, if any echoed byte is wrong, if a check moves no messages, if a server (netgrace with
//! one worker or two) does not stop cleanly, if a client of the small connection storm fails, if a slow reader's echo is wrong, if
//! a restart under load does not complete or fails a client, or if the checker misses a byte
//! flipped on purpose.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::idle::IdleSet;
use crate::load::{Load, Shape, Stats, Stop};
use crate::process::{Kind, ServerProcess};
use crate::restart::{self, Plan};
use crate::slow::SlowClients;
use crate::storm::{Storm, STORM_TIMEOUT};

/// Idle connections in the shutdown check: enough for several accept bursts and batches.
const IDLE: usize = 300;
/// Clients of the storm check: more than a listen backlog of 128 (mio's and std's) holds, yet a
/// fraction of a second even in a debug build.
const STORM_CLIENTS: usize = 200;
/// netgrace's `max_buffer` in the slow-reader check. Larger than the third of its send buffer
/// that the kernel frees before each writable event (see `slow.rs`), so flushes are partial and
/// the pending ring fills and wraps; no power of two, so it wraps at odd places. With the
/// default 64 KiB every flush empties it and the ring never wraps.
const SLOW_MAX_BUFFER: &str = "1000003";
/// The restart check: two restarts (so the second SIGHUP goes to a successor) half a second
/// apart, under two client threads; two seconds in all with its baseline.
const RESTARTS: Plan = Plan {
    threads: 2,
    restarts: 2,
    interval: Duration::from_millis(500),
};
/// Where the corrupting server flips a byte, counted after the opening echo.
const FLIP_AT: usize = 100;

/// A check: its name, and what it runs; `Ok` carries a line of figures.
type Check = (&'static str, fn() -> io::Result<String>);

pub fn run() -> io::Result<()> {
    let checks: [Check; 9] = [
        ("pingpong 64 B × 10, 1 s, netgrace", || {
            pingpong(Kind::Netgrace, Shape::pingpong(10), 1.0)
        }),
        ("stream 64 KiB × 2, 0.5 s, netgrace", || {
            pingpong(
                Kind::Netgrace,
                Shape {
                    connections: 2,
                    ..Shape::STREAM
                },
                0.5,
            )
        }),
        (
            "pingpong 64 B × 20, 0.5 s, netgrace --workers 2",
            two_workers,
        ),
        ("shutdown with 300 idle, netgrace", shutdown),
        ("storm of 200 connects, netgrace", storm),
        (
            "slow readers × 4, 0.5 s, netgrace --max-buffer 1000003",
            slow_readers,
        ),
        ("2 restarts under connect/echo/close, netgrace", || {
            restart::smoke(RESTARTS)
        }),
        ("pingpong 64 B × 10, 0.3 s, tokio-ct", || {
            pingpong(Kind::TokioCt, Shape::pingpong(10), 0.3)
        }),
        ("the checker catches a flipped byte", catches_flipped_byte),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        match check() {
            Ok(figures) => println!("ok     {name}: {figures}"),
            Err(err) => {
                println!("FAILED {name}: {err}");
                failed += 1;
            }
        }
    }
    println!("smoke: {} passed, {failed} failed", checks.len() - failed);
    if failed > 0 {
        return Err(io::Error::other(format!("{failed} smoke checks failed")));
    }
    Ok(())
}

fn pingpong(kind: Kind, shape: Shape, secs: f64) -> io::Result<String> {
    let server = ServerProcess::start(kind, None)?;
    let mut load = Load::connect(server.addr, shape)?;
    let stats = load.drive(Stop::After(Duration::from_secs_f64(secs)), false)?;
    drop(load);
    server.stop()?;
    nonzero(&stats)?;
    Ok(format!(
        "{} messages, {:.1} MB/s, every byte checked",
        stats.messages,
        stats.mb_per_sec()
    ))
}

fn nonzero(stats: &Stats) -> io::Result<()> {
    if stats.messages == 0 {
        return Err(io::Error::other("no message came back"));
    }
    Ok(())
}

/// Two workers on one listener: every byte echoed, both serving, both stopped and reported to
/// the master, which exits 0.
fn two_workers() -> io::Result<String> {
    let server = ServerProcess::start_with_flags(Kind::Netgrace, None, &["--workers", "2"])?;
    let workers = server.workers().len();
    let mut load = Load::connect(server.addr, Shape::pingpong(20))?;
    let stats = load.drive(Stop::After(Duration::from_millis(500)), false)?;
    drop(load);
    let (_, waiter) = server.terminate()?;
    let exit = waiter
        .join()
        .map_err(|_| io::Error::other("waiter panicked"))??;
    nonzero(&stats)?;
    let reported = exit.log.contains("shutdown complete: workers=2 ");
    if workers != 2 || !exit.status.success() || !reported {
        let msg = format!("{workers} workers, exit {}: {}", exit.status, exit.log);
        return Err(io::Error::other(msg));
    }
    Ok(format!(
        "{} messages from 2 workers, every byte checked, both reported",
        stats.messages
    ))
}

/// SIGTERM with idle connections: every client reads EOF (no reset) and the server exits 0.
fn shutdown() -> io::Result<String> {
    let server = ServerProcess::start(Kind::Netgrace, None)?;
    let mut idle = IdleSet::open(server.addr, IDLE)?;
    let (signalled, waiter) = server.terminate()?;
    let closing = idle.await_close(Duration::from_secs(10))?;
    let exit = waiter
        .join()
        .map_err(|_| io::Error::other("waiter panicked"))??;
    if !exit.status.success() || closing.eof != IDLE {
        let msg = format!("{closing:?}, exit {}: {}", exit.status, exit.log);
        return Err(io::Error::other(msg));
    }
    let ms = (exit.at - signalled).as_secs_f64() * 1e3;
    Ok(format!("{IDLE} EOF, no reset, exit 0 after {ms:.1} ms"))
}

/// 200 connects at once against a fresh netgrace: every client gets its echo. No timing is
/// asserted (a dropped SYN costs a second, which CI's machines may see); failures are.
fn storm() -> io::Result<String> {
    let server = ServerProcess::start(Kind::Netgrace, None)?;
    let outcome = Storm::connect(server.addr, STORM_CLIENTS)?.drive(STORM_TIMEOUT)?;
    server.stop()?;
    if outcome.failures.total() > 0 || outcome.latencies.len() != STORM_CLIENTS {
        return Err(io::Error::other(outcome.summary()));
    }
    Ok(outcome.summary())
}

/// Clients that read slowly keep netgrace's pending echo full and wrapping: every byte must come
/// back in order.
fn slow_readers() -> io::Result<String> {
    let flags = &["--max-buffer", SLOW_MAX_BUFFER];
    let server = ServerProcess::start_with_flags(Kind::Netgrace, None, flags)?;
    let echoed = SlowClients::connect(server.addr, 4)?.drive(Duration::from_millis(500))?;
    server.stop()?;
    if echoed == 0 {
        return Err(io::Error::other("no echo came back"));
    }
    Ok(format!("{echoed} bytes echoed, every byte checked"))
}

/// Against a server that flips one byte, the load must fail with `InvalidData`.
fn catches_flipped_byte() -> io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr: SocketAddr = listener.local_addr()?;
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = corrupting_echo(&mut stream);
        }
    });
    let mut load = Load::connect(addr, Shape::pingpong(1))?;
    match load.drive(Stop::Messages(10), false) {
        Err(err) if err.kind() == io::ErrorKind::InvalidData => Ok(format!("refused: {err}")),
        Err(err) => Err(err),
        Ok(_) => Err(io::Error::other("a flipped byte went unnoticed")),
    }
}

/// Echoes, but flips byte `FLIP_AT` after the opening echo (16 bytes).
fn corrupting_echo(stream: &mut std::net::TcpStream) -> io::Result<()> {
    let mut buf = [0; 4096];
    let mut offset = 0;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let flip = 16 + FLIP_AT;
        if (offset..offset + n).contains(&flip) {
            buf[flip - offset] ^= 0xff;
        }
        offset += n;
        stream.write_all(&buf[..n])?;
    }
}
