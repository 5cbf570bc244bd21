//! Idle connections: opened in batches (each proven by one echo), held, and closed the way real
//! clients close: when they read EOF.
//!
//! Run it alone: `cargo bench --bench echo -- idle -c 10000 -t 30 --spawn netgrace` holds 10 000
//! connections for 30 s and prints a line a second; stop the server meanwhile to watch them close.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

/// The opening message each connection sends and must get back, byte for byte.
const HELLO: &[u8] = b"netgrace bench\r\n";
/// Connections opened before waiting for their echoes. Below the listen backlog of std and mio
/// (128): even if the server accepts none until the batch is done, no SYN is dropped (a dropped
/// SYN costs the client a one-second retransmit, RFC 6298 §2). The echoes prove each batch was
/// accepted, so every batch starts with an empty backlog.
const BATCH_CONNECTIONS: usize = 100;
/// Longest wait for a connect or an opening echo.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens `n` connections to `addr`, `BATCH_CONNECTIONS` at a time, each with TCP_NODELAY and
/// checked by one echo of `HELLO`. The streams are left blocking.
///
/// # Errors
/// The connect or IO error with the address, or `InvalidData` if an echo differs.
pub fn open_verified(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(n);
    while streams.len() < n {
        let first = streams.len();
        for _ in first..n.min(first + BATCH_CONNECTIONS) {
            let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
                .map_err(|err| with_context(err, &format!("connect {addr}")))?;
            // Small messages must not wait for the previous segment's ACK (Nagle).
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            (&stream).write_all(HELLO)?;
            streams.push(stream);
        }
        for stream in &mut streams[first..] {
            let mut echo = [0; HELLO.len()];
            stream
                .read_exact(&mut echo)
                .map_err(|err| with_context(err, "read the opening echo"))?;
            if echo != HELLO {
                let msg = format!("wrong opening echo: {echo:?}");
                return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
            }
        }
    }
    Ok(streams)
}

/// Open connections that send nothing more, watched for the server's close.
pub struct IdleSet {
    poll: Poll,
    /// `None` once closed; the index is the poll token.
    streams: Vec<Option<mio::net::TcpStream>>,
    open: usize,
}

/// How the server's side of the connections ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct Closing {
    /// Read EOF, then closed ours: the clean end.
    pub eof: usize,
    /// Read an error (a reset, usually): echo in flight could have been lost.
    pub reset: usize,
    /// Still open when the wait ended.
    pub open: usize,
}

impl IdleSet {
    /// Opens `n` idle connections (see [`open_verified`]).
    pub fn open(addr: SocketAddr, n: usize) -> io::Result<IdleSet> {
        let poll = Poll::new()?;
        let mut streams = Vec::with_capacity(n);
        for (index, stream) in open_verified(addr, n)?.into_iter().enumerate() {
            stream.set_nonblocking(true)?;
            let mut stream = mio::net::TcpStream::from_std(stream);
            poll.registry()
                .register(&mut stream, Token(index), Interest::READABLE)?;
            streams.push(Some(stream));
        }
        Ok(IdleSet {
            poll,
            streams,
            open: n,
        })
    }

    /// Waits until every connection was closed by the server, or `timeout`; closes each one as
    /// soon as its EOF (or error) arrives, as a client would.
    pub fn await_close(&mut self, timeout: Duration) -> io::Result<Closing> {
        let deadline = Instant::now() + timeout;
        let mut closing = Closing::default();
        let mut events = Events::with_capacity(1024);
        while self.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.poll.poll(&mut events, Some(deadline - now))?;
            for event in events.iter() {
                self.on_readable(event.token().0, &mut closing);
            }
        }
        closing.open = self.open;
        Ok(closing)
    }

    fn on_readable(&mut self, index: usize, closing: &mut Closing) {
        let Some(Some(stream)) = self.streams.get_mut(index) else {
            return;
        };
        let mut buf = [0; 64];
        let ended = loop {
            match stream.read(&mut buf) {
                // The server's FIN: close ours (dropping the stream), as real clients do.
                Ok(0) => break Some(&mut closing.eof),
                // Nothing is owed to an idle client; keep reading to the EOF.
                Ok(_) => {}
                // No EOF yet: wait for the next edge.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break None,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // A reset (or any error): the end the server must avoid.
                Err(_) => break Some(&mut closing.reset),
            }
        };
        if let Some(counter) = ended {
            *counter += 1;
            self.streams[index] = None;
            self.open -= 1;
        }
    }
}

/// The `idle` mode: opens `n` connections, then holds them for `secs` with a line a second.
pub fn hold(addr: SocketAddr, n: usize, secs: Duration) -> io::Result<()> {
    let started = Instant::now();
    let mut idle = IdleSet::open(addr, n)?;
    eprintln!(
        "{addr}: {n} connections open and verified in {:.2} s; holding for {:.0} s",
        started.elapsed().as_secs_f64(),
        secs.as_secs_f64()
    );
    let held = Instant::now();
    let mut total = Closing::default();
    while held.elapsed() < secs && idle.open > 0 {
        let closing = idle.await_close(Duration::from_secs(1))?;
        total.eof += closing.eof;
        total.reset += closing.reset;
        eprintln!(
            "  {:>4.0} s: {} open, {} closed by EOF, {} by reset",
            held.elapsed().as_secs_f64(),
            closing.open,
            total.eof,
            total.reset
        );
    }
    println!(
        "{n} idle connections held; {} saw EOF, {} a reset",
        total.eof, total.reset
    );
    Ok(())
}

fn with_context(err: io::Error, what: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}
