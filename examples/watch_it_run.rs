//! The loop narrating itself: the trace that `netgrace -vv` prints (here, through simple_logger
//! on stdout: log level trace for netgrace's modules, info for this example's, warn for mio's),
//! for three scenarios in a row, each on its own server:
//!
//! - (a) the ten-clients scenario of `ten_clients.rs`, shortened to 3 lines per client and 50 ms
//!   pauses so that the trace stays readable;
//! - (b) backpressure on an open connection: with a small `max_buffer`, a client writes without
//!   reading until its writes stall, so the server stops reading it; then the client reads all
//!   its echo, slowly, the server resumes reading, and the client closes;
//! - (c) a graceful shutdown with a slow reader: the same stall, then the shutdown, and only then
//!   does the client read, slowly, while it sends more and then its FIN. The drain flushes in
//!   pieces, then sends its FIN; the lingering close discards what the client still sends.
//!
//! docs/event-loop.md, "Watch it run", annotates a captured trace. Longer than the other examples:
//! backpressure shows on loopback only with small socket buffers (socket2: the `cli` feature).
//! Run it with `cargo run --example watch_it_run > trace.txt`; it ends by itself within seconds.
//! To watch the binary instead, run `cargo run -- -vv` and poke it with `nc 127.0.0.1 5388`.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{info, LevelFilter};
use netgrace::{Config, Report, Server, ShutdownHandle};
use simple_logger::SimpleLogger;

const CLIENTS: usize = 10;
const LINES: usize = 3;
const PAUSE: Duration = Duration::from_millis(50);
/// `max_buffer` in (b), a quarter of the default: backpressure soon after the socket buffers fill.
const SMALL_BUFFER_BYTES: usize = 16 * 1024;
/// `max_buffer` in (c), four times the default: flushing it takes more than one writable event.
const LARGE_BUFFER_BYTES: usize = 256 * 1024;
/// The slow reader's socket buffers (the kernel doubles the figure, for its bookkeeping).
const CLIENT_BUFFER_BYTES: usize = 32 * 1024;
/// The MSS the slow reader asks for in its SYN, Ethernet's. The server's send buffer grows with
/// its MSS, 64 KiB on loopback; with that it would take in megabytes before the writes stall.
const MSS_BYTES: u32 = 1460;
/// What the slow reader writes at a time.
const WRITE_BYTES: usize = 16 * 1024;
/// What the slow reader of (c) writes once stalled, before its FIN.
const AFTER_STALL_BYTES: usize = 512 * 1024;
/// The slow reader reads this much at a time, then pauses for `READ_PAUSE`.
const READ_BYTES: usize = 8 * 1024;
const READ_PAUSE: Duration = Duration::from_millis(5);
/// A write that waits this long means every buffer between the client and the server is full;
/// `TIMEOUT` bounds every other wait.
const STALL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> io::Result<()> {
    SimpleLogger::new()
        .with_level(LevelFilter::Warn)
        .with_module_level("netgrace", LevelFilter::Trace)
        .with_module_level("watch_it_run", LevelFilter::Info)
        .init()
        .map_err(io::Error::other)?;
    ten_clients()?;
    backpressure_while_open()?;
    slow_reader_at_shutdown()
}

/// (a): each client sends a line, reads it back, pauses; then a graceful shutdown.
fn ten_clients() -> io::Result<()> {
    info!("(a) ten clients, {LINES} lines each");
    let (addr, handle, serving) = start(Config::default())?;
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

/// (b): a client fills every buffer on the way, then reads it all back, then closes.
fn backpressure_while_open() -> io::Result<()> {
    info!("(b) backpressure while open, max_buffer {SMALL_BUFFER_BYTES}");
    let (addr, handle, serving) = start(Config::default().max_buffer(SMALL_BUFFER_BYTES))?;
    let (mut stream, written) = stalled_client(addr)?;
    info!("(b) the client's writes stalled after {written} bytes; now it reads");
    let echoed = read_echo(&mut stream, written)?;
    info!("(b) the client read back {echoed} bytes; now it closes");
    stream.shutdown(Shutdown::Write)?;
    if stream.read(&mut [0])? != 0 {
        return Err(io::Error::other("more echo than was sent"));
    }
    handle.shutdown();
    info!("(b) report: {}", join(serving)??);
    Ok(())
}

/// (c): shut down while a client that does not read has filled every buffer on the way.
fn slow_reader_at_shutdown() -> io::Result<()> {
    info!("(c) a slow reader at shutdown, max_buffer {LARGE_BUFFER_BYTES}");
    let (addr, handle, serving) = start(Config::default().max_buffer(LARGE_BUFFER_BYTES))?;
    let (mut stream, written) = stalled_client(addr)?;
    info!("(c) the client's writes stalled after {written} bytes; shutting down");
    let mut writer = stream.try_clone()?;
    let writing = thread::spawn(move || -> io::Result<()> {
        // Its FIN, after the last byte, ends the server's lingering close.
        write_pattern(&mut writer, written, written + AFTER_STALL_BYTES)?;
        writer.shutdown(Shutdown::Write)
    });
    handle.shutdown();
    let echoed = read_echo(&mut stream, usize::MAX)?;
    join(writing)??;
    let sent = written + AFTER_STALL_BYTES;
    info!("(c) the client sent {sent} bytes and read back {echoed}, then EOF");
    info!("(c) report: {}", join(serving)??);
    Ok(())
}

type Serving = JoinHandle<io::Result<Report>>;

fn start(config: Config) -> io::Result<(SocketAddr, ShutdownHandle, Serving)> {
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
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    for j in 0..LINES {
        let line = format!("client #{i}, count {j}\n");
        stream.write_all(line.as_bytes())?;
        let mut echo = vec![0; line.len()];
        stream.read_exact(&mut echo)?;
        if echo != line.as_bytes() {
            let echo = String::from_utf8_lossy(&echo);
            return Err(io::Error::other(format!("sent {line:?}, got {echo:?}")));
        }
        thread::sleep(PAUSE);
    }
    Ok(())
}

/// The slow reader of (b) and (c): its socket, with small buffers and a small MSS (see
/// `MSS_BYTES`), and the bytes it wrote without reading until its writes stalled.
fn stalled_client(addr: SocketAddr) -> io::Result<(TcpStream, usize)> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_tcp_mss(MSS_BYTES)?;
    socket.set_send_buffer_size(CLIENT_BUFFER_BYTES)?;
    socket.set_recv_buffer_size(CLIENT_BUFFER_BYTES)?;
    socket.connect(&addr.into())?;
    let mut stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(TIMEOUT))?;
    let written = write_until_stalled(&mut stream)?;
    Ok((stream, written))
}

/// Writes the pattern until a write stalls (every buffer on the way is full); returns its length.
fn write_until_stalled(stream: &mut TcpStream) -> io::Result<usize> {
    stream.set_write_timeout(Some(STALL))?;
    let mut chunk = [0; WRITE_BYTES];
    let mut written = 0;
    loop {
        fill(&mut chunk, written);
        match stream.write(&chunk) {
            // Possibly partial: the next chunk starts where this one stopped.
            Ok(n) => written += n,
            // SO_SNDTIMEO passed with nothing written: the pipe is full.
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                stream.set_write_timeout(Some(TIMEOUT))?;
                return Ok(written);
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Writes the pattern's bytes from offset `from` to `to`.
fn write_pattern(stream: &mut TcpStream, from: usize, to: usize) -> io::Result<()> {
    let mut chunk = [0; WRITE_BYTES];
    for start in (from..to).step_by(WRITE_BYTES) {
        let len = WRITE_BYTES.min(to - start);
        fill(&mut chunk[..len], start);
        stream.write_all(&chunk[..len])?;
    }
    Ok(())
}

/// The slow reader's bytes from `offset` on: a pattern, so that the echo can be checked.
fn fill(chunk: &mut [u8], offset: usize) {
    for (i, byte) in chunk.iter_mut().enumerate() {
        *byte = ((offset + i) % 251) as u8;
    }
}

/// Reads the echo slowly until EOF or `limit` bytes, checks it, and returns its length.
fn read_echo(stream: &mut TcpStream, limit: usize) -> io::Result<usize> {
    let (mut buf, mut expected) = ([0; READ_BYTES], [0; READ_BYTES]);
    let mut echoed = 0;
    while echoed < limit {
        let n = stream.read(&mut buf[..READ_BYTES.min(limit - echoed)])?;
        if n == 0 {
            break;
        }
        fill(&mut expected[..n], echoed);
        if buf[..n] != expected[..n] {
            return Err(io::Error::other(format!("wrong echo after {echoed} bytes")));
        }
        echoed += n;
        thread::sleep(READ_PAUSE);
    }
    Ok(echoed)
}
