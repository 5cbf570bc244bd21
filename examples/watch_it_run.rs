//! The loop narrating itself: the trace that `netgrace -vv` prints (here, through simple_logger
//! on stdout: log level trace for netgrace's modules, info for this example's, warn for mio's),
//! for two scenarios in a row, each on its own server:
//!
//! - (a) the ten-clients scenario of `ten_clients.rs`, shortened to 3 lines per client and 50 ms
//!   pauses so that the trace stays readable;
//! - (b) a graceful shutdown with a slow reader: one client writes without reading until its
//!   writes stall, the shutdown begins, and only then does it read, in small pieces with pauses.
//!   The drain waits on backpressure and flushes in pieces, then sends its FIN; the lingering
//!   close discards what the client still sends, until the client's own FIN.
//!
//! docs/event-loop.md, "Watch it run", annotates a captured trace. This example is longer than
//! the others because (b) needs a client that writes and reads on two threads, and the small
//! socket buffers that make backpressure show on loopback. Run it with
//! `cargo run --example watch_it_run > trace.txt`; it ends by itself within a few seconds. To
//! watch the binary instead, run `cargo run -- -vv` and poke it with `nc 127.0.0.1 5388`. It needs
//! the default `cli` feature (for socket2's `set_tcp_mss`).

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{info, LevelFilter};
use netgrace::{Config, Report, Server, ShutdownHandle};
use simple_logger::SimpleLogger;

const CLIENTS: usize = 10;
const LINES: usize = 3;
const PAUSE: Duration = Duration::from_millis(50);
/// `max_buffer` in (b): four times the default, so that flushing the pending echo takes more
/// than one writable event.
const MAX_BUFFER_BYTES: usize = 256 * 1024;
/// The slow reader's socket buffers (the kernel doubles the figure, for its bookkeeping).
const CLIENT_BUFFER_BYTES: usize = 32 * 1024;
/// The MSS the slow reader asks for in its SYN, Ethernet's. The server's send buffer grows with
/// its MSS, 64 KiB on loopback; with that it would take in megabytes before the writes stall.
const MSS_BYTES: u32 = 1460;
/// What the slow reader's client writes once its writes have stalled, before its FIN.
const AFTER_STALL_BYTES: usize = 512 * 1024;
/// The slow reader reads this much at a time, then pauses for `READ_PAUSE`.
const READ_BYTES: usize = 4 * 1024;
const READ_PAUSE: Duration = Duration::from_millis(5);
/// A write that waits this long means every buffer between the client and the server is full.
const STALL: Duration = Duration::from_millis(100);
/// Every other wait: reads, writes, the stall itself.
const TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> io::Result<()> {
    SimpleLogger::new()
        .with_level(LevelFilter::Warn)
        .with_module_level("netgrace", LevelFilter::Trace)
        .with_module_level("watch_it_run", LevelFilter::Info)
        .init()
        .map_err(io::Error::other)?;
    ten_clients()?;
    slow_reader()
}

/// (a): each client sends a line, reads it back, pauses; then a graceful shutdown.
fn ten_clients() -> io::Result<()> {
    info!("(a) ten clients, {LINES} lines each");
    let (addr, handle, serving) = start(Config::new(([127, 0, 0, 1], 0).into()))?;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| thread::spawn(move || client(addr, i)))
        .collect();
    for client in clients {
        join(client)??;
    }
    handle.shutdown();
    info!("(a) report: {}", join(serving)??);
    Ok(())
}

/// (b): shut down while a client that does not read has filled every buffer on the way.
fn slow_reader() -> io::Result<()> {
    info!("(b) a slow reader at shutdown");
    let mut config = Config::new(([127, 0, 0, 1], 0).into());
    config.max_buffer = MAX_BUFFER_BYTES;
    let (addr, handle, serving) = start(config)?;
    let stream = slow_client(addr)?;
    let (stalled, stall) = mpsc::channel();
    let writer = stream.try_clone()?;
    let writing = thread::spawn(move || write_past_the_stall(writer, stalled));
    let written = stall
        .recv_timeout(TIMEOUT)
        .map_err(|_| io::Error::other("the client's writes never stalled"))?;
    info!("(b) the client's writes stalled after {written} bytes; shutting down");
    handle.shutdown();
    let echoed = read_slowly(stream)?;
    let sent = join(writing)??;
    info!("(b) the client sent {sent} bytes and read back {echoed}, then EOF");
    info!("(b) report: {}", join(serving)??);
    Ok(())
}

fn start(
    config: Config,
) -> io::Result<(SocketAddr, ShutdownHandle, JoinHandle<io::Result<Report>>)> {
    let server = Server::bind(config)?;
    let (addr, handle) = (server.local_addr(), server.shutdown_handle());
    Ok((addr, handle, thread::spawn(move || Ok(server.run()?))))
}

fn join<T>(thread: JoinHandle<T>) -> io::Result<T> {
    thread
        .join()
        .map_err(|_| io::Error::other("a thread panicked"))
}

/// One of the ten: each line is sent, then read back, then a pause.
fn client(addr: SocketAddr, i: usize) -> io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    for j in 0..LINES {
        let line = format!("client #{i}, count {j}\n");
        writer.write_all(line.as_bytes())?;
        let mut echo = String::new();
        reader.read_line(&mut echo)?;
        if echo != line {
            return Err(io::Error::other(format!("sent {line:?}, got {echo:?}")));
        }
        thread::sleep(PAUSE);
    }
    Ok(())
}

/// The slow reader's socket: small buffers and a small MSS (see `MSS_BYTES`), so that its
/// writes stall after a megabyte or so.
fn slow_client(addr: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_tcp_mss(MSS_BYTES)?;
    socket.set_send_buffer_size(CLIENT_BUFFER_BYTES)?;
    socket.set_recv_buffer_size(CLIENT_BUFFER_BYTES)?;
    socket.connect(&addr.into())?;
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(STALL))?;
    Ok(stream)
}

/// The byte at `offset` of what the slow reader sends, so that its echo can be checked.
fn byte_at(offset: usize) -> u8 {
    (offset % 251) as u8
}

/// Writes until a write stalls, tells `stalled` how much it had written, writes
/// `AFTER_STALL_BYTES` more, then sends its FIN (which ends the server's lingering close).
/// Returns the bytes written.
fn write_past_the_stall(mut stream: TcpStream, stalled: mpsc::Sender<usize>) -> io::Result<usize> {
    let (mut written, mut end) = (0, usize::MAX);
    let mut chunk = [0; 16 * 1024];
    while written < end {
        let len = chunk.len().min(end - written);
        for (i, byte) in chunk[..len].iter_mut().enumerate() {
            *byte = byte_at(written + i);
        }
        match stream.write(&chunk[..len]) {
            Ok(n) => written += n,
            // SO_SNDTIMEO passed with nothing written. The first time, the pipe is full: say
            // so, then wait longer. After that, the server is gone.
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if end != usize::MAX {
                    return Err(err);
                }
                let _ = stalled.send(written);
                end = written + AFTER_STALL_BYTES;
                stream.set_write_timeout(Some(TIMEOUT))?;
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    stream.shutdown(Shutdown::Write)?;
    Ok(written)
}

/// Reads the echo in small pieces with pauses until EOF; checks it is a prefix of what was sent.
fn read_slowly(mut stream: TcpStream) -> io::Result<usize> {
    let mut buf = [0; READ_BYTES];
    let mut echoed = 0;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(echoed);
        }
        if (0..n).any(|i| buf[i] != byte_at(echoed + i)) {
            return Err(io::Error::other(format!("wrong echo after {echoed} bytes")));
        }
        echoed += n;
        thread::sleep(READ_PAUSE);
    }
}
