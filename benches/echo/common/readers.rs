//! Slow readers: clients that write without pause and read a little per tick, every byte checked.

use std::io::{self, Read, Write};
use std::{net::SocketAddr, net::TcpStream, time::Duration, time::Instant};

use socket2::{Domain, Socket, Type};

use super::{check_echo, pattern, would_block, PATTERN_PERIOD};

/// Judgment call: a client on a slow link, not a loopback peer whose window grows to megabytes.
const RCVBUF_BYTES: usize = 8 * 1024;
/// Ethernet's segment size, not loopback's 64 KiB: the server's kernel sizes its send buffer
/// in segments (`tcp_sndbuf_expand`), which then stays at a few hundred KB (`ss -tm`) as on a
/// real network, instead of 4 MB that every wake-up empties (`sk_stream_write_space`).
const MSS_BYTES: u32 = 1460;
const READ_BYTES: usize = 4 * 1024;
const WRITE_BYTES: usize = 64 * 1024;
/// The pace: at most `READ_BYTES` per tick, 4 MB/s.
const TICK: Duration = Duration::from_millis(1);
const STALL: Duration = Duration::from_secs(5);

/// The clients: each a stream, where its stream starts in the pattern, bytes written and read.
pub struct SlowReaders {
    clients: Vec<(TcpStream, usize, u64, u64)>,
    pattern: Vec<u8>,
}

impl SlowReaders {
    /// Connects `n` clients, the buffer and segment size set before connecting, so that the
    /// window and MSS they announce are small from the start.
    pub fn connect(addr: SocketAddr, n: usize) -> io::Result<SlowReaders> {
        let mut clients = Vec::with_capacity(n);
        for index in 0..n {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            socket.set_recv_buffer_size(RCVBUF_BYTES)?;
            socket.set_tcp_mss(MSS_BYTES)?;
            socket.set_tcp_nodelay(true)?;
            socket.connect_timeout(&addr.into(), STALL)?;
            socket.set_nonblocking(true)?;
            clients.push((socket.into(), index * 37 % PATTERN_PERIOD, 0, 0));
        }
        Ok(SlowReaders {
            clients,
            pattern: pattern(WRITE_BYTES),
        })
    }

    /// Paces the clients for `secs`: once per tick each writes until its socket is full, then
    /// reads at most `READ_BYTES`. Returns the bytes echoed (and checked) meanwhile.
    pub fn drive(&mut self, secs: Duration) -> io::Result<u64> {
        let (started, mut echoed, mut last_echo) = (Instant::now(), 0, Instant::now());
        let mut scratch = [0; READ_BYTES];
        while started.elapsed() < secs {
            for (stream, seed, written, received) in &mut self.clients {
                let offset = |bytes: u64| (*seed + bytes as usize) % PATTERN_PERIOD;
                loop {
                    let start = offset(*written);
                    match stream.write(&self.pattern[start..start + WRITE_BYTES]) {
                        Ok(n) => *written += n as u64,
                        // Full: the server has not read it, since we read its echo so slowly.
                        Err(err) if would_block(&err) => break,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => return Err(err),
                    }
                }
                let n = match stream.read(&mut scratch) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => n,
                    // No echo this tick: the next tick tries again.
                    Err(err) if would_block(&err) => 0,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => 0,
                    Err(err) => return Err(err),
                };
                check_echo(&self.pattern, *seed, *received, &scratch[..n])?;
                (*received, echoed) = (*received + n as u64, echoed + n as u64);
                if n > 0 {
                    last_echo = Instant::now();
                }
            }
            if last_echo.elapsed() > STALL {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no echo came back"));
            }
            std::thread::sleep(TICK);
        }
        Ok(echoed)
    }
}
