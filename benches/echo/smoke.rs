//! `smoke`: the CI check that every scenario still works, in seconds of a debug build (`cargo
//! test --bench echo -- smoke`). A check fails on a wrong byte, on moving nothing, on a server
//! that does not stop cleanly (each of netgrace's workers must report), a storm client or a
//! restart cycle that fails, a restart that does not complete, or a flipped byte let through.
//! No timing is asserted (a shared CI machine).

use std::io::{self, Read, Write};
use std::{net::TcpListener, time::Duration, time::Instant};

use crate::common::cycles::{Cycles, Outcome::Echoed};
use crate::common::load::{Load, Shape, Stop, HELLO};
use crate::common::{process::Exit, process::Kind, process::ServerProcess, readers::SlowReaders};

/// A check: its name, and what it runs: whether it passed, and a line of figures.
type Check = (&'static str, fn() -> io::Result<(bool, String)>);

#[rustfmt::skip]
const CHECKS: [Check; 9] = [
    ("pingpong 64 B × 10, 1 s, netgrace", || load(Kind::Netgrace, &[], Shape::pingpong(10), 1.0)),
    ("stream 64 KiB × 2, 0.5 s, netgrace", || load(Kind::Netgrace, &[], Shape::new(2, 65536, 4), 0.5)),
    ("pingpong 64 B × 20, 0.5 s, netgrace --workers 2", || {
        load(Kind::Netgrace, &["--workers", "2"], Shape::pingpong(20), 0.5)
    }),
    ("pingpong 64 B × 10, 0.3 s, tokio-ct", || load(Kind::TokioCt, &[], Shape::pingpong(10), 0.3)),
    ("shutdown with 300 idle, netgrace", shutdown),
    ("storm of 200 connects, netgrace", storm),
    ("slow readers × 4, 0.5 s, netgrace --max-buffer 1000003", slow_readers),
    ("2 restarts under connect/echo/close, netgrace", restarts),
    ("the checker catches a flipped byte", catches_flipped_byte),
];

pub fn run() -> io::Result<()> {
    let mut failed = 0;
    for (name, check) in CHECKS {
        let (passed, line) = check().unwrap_or_else(|err| (false, err.to_string()));
        println!(
            "{} {name}: {line}",
            if passed { "ok    " } else { "FAILED" }
        );
        failed += usize::from(!passed);
    }
    println!("smoke: {} passed, {failed} failed", CHECKS.len() - failed);
    match failed {
        0 => Ok(()),
        _ => Err(io::Error::other(format!("{failed} smoke checks failed"))),
    }
}

/// A load for `secs` against a fresh server.
fn load(kind: Kind, flags: &[&str], shape: Shape, secs: f64) -> io::Result<(bool, String)> {
    let server = ServerProcess::start(kind, None, flags)?;
    let workers = server.workers.len();
    let mut load = Load::connect(server.addr, shape)?;
    let stats = load.drive(Stop::After(Duration::from_secs_f64(secs)))?;
    let reported = server.stop()?.log.matches("worker stopped").count();
    let (n, mb) = (stats.messages, stats.mb_per_sec());
    let line = format!("{n} messages, {mb:.1} MB/s; {reported} of {workers} worker(s) reported");
    Ok((
        n > 0 && (kind != Kind::Netgrace || reported == workers),
        line,
    ))
}

/// SIGTERM with idle connections: every client reads EOF (no reset) and the server exits 0.
fn shutdown() -> io::Result<(bool, String)> {
    let server = ServerProcess::start(Kind::Netgrace, None, &[])?;
    let mut idle = Load::connect(server.addr, Shape::pingpong(300))?;
    let (signalled, waiter) = server.terminate()?;
    let [eof, reset, open] = idle.await_close(Duration::from_secs(10))?;
    let took = Exit::checked("netgrace", waiter)?.at - signalled;
    Ok((
        eof == 300,
        format!("{eof} EOF, {reset} reset, {open} open; exit 0 after {took:.1?}"),
    ))
}

/// More connects at once than a listen backlog of 128 holds: every client gets its echo.
fn storm() -> io::Result<(bool, String)> {
    let server = ServerProcess::start(Kind::Netgrace, None, &[])?;
    let mut load = Load::burst(server.addr, 200)?;
    let echoed = load.drive(Stop::Messages(0))?.messages;
    let (failed, first) = load.failures();
    let line = format!("{echoed} echoed, {failed} failed {first}")
        .trim_end()
        .to_string();
    drop(load);
    server.stop()?;
    Ok((failed == 0 && echoed == 200, line))
}

/// A max_buffer above what a writable event frees, and no power of two: the pending echo wraps
/// at odd places.
fn slow_readers() -> io::Result<(bool, String)> {
    let server = ServerProcess::start(Kind::Netgrace, None, &["--max-buffer", "1000003"])?;
    let echoed = SlowReaders::connect(server.addr, 4)?.drive(Duration::from_millis(500))?;
    server.stop()?;
    Ok((
        echoed > 0,
        format!("{echoed} bytes echoed, every byte checked"),
    ))
}

/// Two SIGHUPs (the second to a master that has restarted once) under two client threads.
fn restarts() -> io::Result<(bool, String)> {
    let mut server = ServerProcess::start(Kind::Netgrace, None, &[])?;
    let cycles = Cycles::start(server.addr, 2, Instant::now())?;
    let (mut took, mut completed) = (Vec::new(), 0);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(250));
        let restart = server.restart()?;
        completed += usize::from(restart.failure.is_none());
        took.push(restart.failure.unwrap_or(format!("{:.1?}", restart.exited)));
    }
    std::thread::sleep(Duration::from_millis(250));
    let cycles = cycles.finish()?;
    server.stop()?;
    let failed = cycles.iter().filter(|c| c.outcome != Echoed).count();
    let (n, took) = (cycles.len(), took.join(", "));
    Ok((
        failed == 0 && n > 0 && completed == 2,
        format!("{n} cycles, {failed} failed; restarts took {took}"),
    ))
}

/// A server that flips the hundredth byte after the opening echo must fail the load.
fn catches_flipped_byte() -> io::Result<(bool, String)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || -> io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        let (mut buf, mut offset, flip) = ([0; 4096], 0, HELLO.len() + 100);
        loop {
            let n = match stream.read(&mut buf)? {
                0 => return Ok(()),
                n => n,
            };
            if (offset..offset + n).contains(&flip) {
                buf[flip - offset] ^= 0xff;
            }
            offset += n;
            stream.write_all(&buf[..n])?;
        }
    });
    match Load::connect(addr, Shape::pingpong(1))?.drive(Stop::Messages(10)) {
        Err(err) => Ok((
            err.kind() == io::ErrorKind::InvalidData,
            format!("refused: {err}"),
        )),
        Ok(_) => Ok((false, "a flipped byte went unnoticed".into())),
    }
}
