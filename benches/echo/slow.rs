//! Slow readers: N clients that write without pause but read their echo only a little at a time.
//! They set the pace, so every server echoes the same MB/s, and the figure is what each byte
//! costs it: server CPU per MB echoed.
//!
//! A writable event lets the server write what its clients made room for, about a third of the
//! kernel's send buffer (see `MSS_BYTES`). When `max_buffer` is larger than that (the 1 MiB
//! variant), netgrace's pending echo stays full: each flush is partial and each read is appended
//! behind what is left, the case where the old `Vec` compaction moved up to `max_buffer` bytes
//! per event. At the default 64 KiB each flush empties it, so there was little to compact.
//!
//! ```text
//! cargo bench --bench echo -- compare --only slow [--rounds 3] [--secs 3]
//! cargo bench --bench echo -- slow -c 10 -t 5 --spawn tokio-ct    # one run, alone
//! NETGRACE_BIN=/tmp/oldng/target/release/netgrace cargo bench --bench echo -- compare --only slow
//! ```
//!
//! Each client connects with a small receive buffer and Ethernet's segment size (both set before
//! connecting, so the window and the MSS it announces are small from the start). Once per `TICK`
//! it writes until its socket is full, then reads at most `READ_BYTES`. Every echoed byte is
//! checked against what was sent. The load runs for `WARMUP` first, unmeasured, so that every
//! buffer on the way is full and the timed window sees the steady state: the server reads only
//! as much as it has just written. Server CPU comes from `/proc/PID/task/*/schedstat` (ns), since
//! the server is busy only a few per cent of the time here.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::process::{self, Kind, ServerProcess};
use crate::table::{cpu_per_mb, throughput, Better, Table};

/// Clients in the `compare` scenario, as in the stream scenario.
pub const CLIENTS: usize = 10;
/// Each client's receive buffer (the kernel doubles it for its bookkeeping). Judgment call: a
/// client on a slow link or a phone, not a loopback peer whose window grows to megabytes.
const RCVBUF_BYTES: usize = 8 * 1024;
/// The segment size each client announces in its SYN (`TCP_MAXSEG`): Ethernet's, not loopback's
/// 64 KiB. The server's kernel sizes its send buffer in segments (`tcp_sndbuf_expand`) and wakes
/// a writer only once a third of it is free (`sk_stream_write_space`). With loopback's segments
/// that buffer reaches its 4 MB ceiling, so every wakeup writes all pending echo at once; with
/// these it stays at a few hundred KB (measured with `ss -tm`), as on a real network.
const MSS_BYTES: usize = 1460;
/// Most a client reads per tick.
const READ_BYTES: usize = 4 * 1024;
/// Most a client writes per call.
const WRITE_BYTES: usize = 64 * 1024;
/// The clients' pace: each reads at most `READ_BYTES` per tick, 4 MB/s at most.
const TICK: Duration = Duration::from_millis(1);
/// Load before the timed window: fills the buffers between each client and the server.
const WARMUP: Duration = Duration::from_millis(500);
/// Longest a drive may see no echo at all before it gives up.
const STALL: Duration = Duration::from_secs(5);
/// Bytes of the test pattern before it repeats; a prime, as in `load.rs`.
const PATTERN_PERIOD: usize = 251;

/// One run of the scenario in `compare`: its label and netgrace's flags (the tokio peers take
/// none, so they run the same way in both).
pub struct Variant {
    pub name: &'static str,
    pub netgrace_flags: &'static [&'static str],
}

/// The default `max_buffer`, and one larger than what a writable event frees (see the module
/// doc and docs/benchmarks.md, "Slow readers").
pub const VARIANTS: [Variant; 2] = [
    Variant {
        name: "slow readers 10 × 4 KiB/ms",
        netgrace_flags: &[],
    },
    Variant {
        name: "slow readers 10 × 4 KiB/ms, max_buffer 1 MiB",
        netgrace_flags: &["--max-buffer", "1048576"],
    },
];

/// Every variant, each server once per round, the servers taking turns as in the other
/// scenarios.
pub fn measure(table: &mut Table, rounds: usize, secs: Duration) -> io::Result<()> {
    for variant in &VARIANTS {
        for round in 1..=rounds {
            for kind in process::turn_order(Kind::ALL, round) {
                measure_one(table, kind, variant, secs, round)?;
            }
        }
    }
    Ok(())
}

fn measure_one(
    table: &mut Table,
    kind: Kind,
    variant: &Variant,
    secs: Duration,
    round: usize,
) -> io::Result<()> {
    let flags = variant.netgrace_flags;
    let server = ServerProcess::start_with_flags(kind, process::pinning(), flags)?;
    let (mb, cpu) = timed(&server, CLIENTS, secs)?;
    server.stop()?;
    let (name, per_mb) = (variant.name, cpu.as_secs_f64() * 1e6 / mb);
    let rate = mb / secs.as_secs_f64();
    table.add(&cpu_per_mb(name), Better::Lower, kind, per_mb);
    table.add(&throughput(name), Better::Higher, kind, rate);
    eprintln!(
        "{name:<44} round {round}  {:<9} {rate:>5.1} MB/s  server CPU {per_mb:>5.0} µs/MB",
        kind.name(),
    );
    Ok(())
}

/// Connects `clients`, warms up, then drives for `secs`; returns the MB echoed and the server's
/// CPU time over that window. The clients close when this returns.
fn timed(server: &ServerProcess, clients: usize, secs: Duration) -> io::Result<(f64, Duration)> {
    let mut slow = SlowClients::connect(server.addr, clients)?;
    slow.drive(WARMUP)?;
    // Not `cpu_time`: the server is busy a few per cent of the time, and ticks are 10 ms.
    let before = server.run_time()?;
    let bytes = slow.drive(secs)?;
    let cpu = server.run_time()? - before;
    Ok((bytes as f64 / 1e6, cpu))
}

/// The `slow` mode: one drive against the given address, or against a spawned server, whose CPU
/// per MB it then prints too.
pub fn standalone(
    addr: SocketAddr,
    server: Option<&ServerProcess>,
    clients: usize,
    secs: Duration,
) -> io::Result<()> {
    let line = match server {
        Some(server) => {
            let (mb, cpu) = timed(server, clients, secs)?;
            let per_mb = cpu.as_secs_f64() * 1e6 / mb;
            format!("{mb:.1} MB echoed; server CPU {per_mb:.0} µs/MB")
        }
        None => {
            let mut slow = SlowClients::connect(addr, clients)?;
            slow.drive(WARMUP)?;
            format!("{:.1} MB echoed", slow.drive(secs)? as f64 / 1e6)
        }
    };
    let secs = secs.as_secs_f64();
    println!("{addr}: {clients} slow readers, {secs:.1} s: {line}; every byte checked");
    Ok(())
}

/// The clients, paced from one thread: no poll, a sleep per tick.
pub struct SlowClients {
    clients: Vec<Client>,
    /// The pattern, long enough that any write or read is one slice of it.
    pattern: Vec<u8>,
    scratch: Vec<u8>,
}

struct Client {
    stream: TcpStream,
    /// Where in the pattern this client's stream starts.
    seed: usize,
    written: u64,
    received: u64,
}

impl SlowClients {
    /// Connects `n` clients, each with a `RCVBUF_BYTES` receive buffer, nonblocking.
    pub fn connect(addr: SocketAddr, n: usize) -> io::Result<SlowClients> {
        let mut clients = Vec::with_capacity(n);
        for index in 0..n {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            socket.set_recv_buffer_size(RCVBUF_BYTES)?;
            set_mss(&socket, MSS_BYTES)?;
            socket.set_tcp_nodelay(true)?;
            socket.connect_timeout(&addr.into(), STALL)?;
            socket.set_nonblocking(true)?;
            let seed = index * 37 % PATTERN_PERIOD;
            let (written, received) = (0, 0);
            let stream = socket.into();
            clients.push(Client {
                stream,
                seed,
                written,
                received,
            });
        }
        let pattern = (0..PATTERN_PERIOD + WRITE_BYTES)
            .map(|i| (i % PATTERN_PERIOD) as u8)
            .collect();
        let scratch = vec![0; READ_BYTES];
        Ok(SlowClients {
            clients,
            pattern,
            scratch,
        })
    }

    /// Paces the clients for `secs`; returns the bytes echoed (and checked) meanwhile.
    ///
    /// # Errors
    /// `InvalidData` for a wrong byte, `UnexpectedEof` if the server closes a connection,
    /// `TimedOut` if no echo comes back for `STALL`, or the socket's own error.
    pub fn drive(&mut self, secs: Duration) -> io::Result<u64> {
        let started = Instant::now();
        let mut echoed = 0;
        let mut last_echo = started;
        while started.elapsed() < secs {
            let before = echoed;
            for client in &mut self.clients {
                client.write(&self.pattern)?;
                echoed += client.read(&self.pattern, &mut self.scratch)? as u64;
            }
            let now = Instant::now();
            if echoed > before {
                last_echo = now;
            } else if now - last_echo > STALL {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no echo came back"));
            }
            std::thread::sleep(TICK);
        }
        Ok(echoed)
    }
}

impl Client {
    /// Writes the pattern until the socket is full.
    fn write(&mut self, pattern: &[u8]) -> io::Result<()> {
        loop {
            let start = (self.seed + self.written as usize) % PATTERN_PERIOD;
            match self.stream.write(&pattern[start..start + WRITE_BYTES]) {
                Ok(n) => self.written += n as u64,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Reads at most `READ_BYTES` once and checks them; returns how many came.
    fn read(&mut self, pattern: &[u8], scratch: &mut [u8]) -> io::Result<usize> {
        let n = match self.stream.read(scratch) {
            Ok(0) => {
                let msg = "the server closed a slow reader";
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(err) => return Err(err),
        };
        let start = (self.seed + self.received as usize) % PATTERN_PERIOD;
        let expected = &pattern[start..start + n];
        if self.received + n as u64 > self.written || scratch[..n] != *expected {
            let at = scratch.iter().zip(expected).position(|(a, b)| a != b);
            let at = self.received + at.unwrap_or(0) as u64;
            let msg = format!("wrong echo at byte {at} of a slow reader");
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        self.received += n as u64;
        Ok(n)
    }
}

/// Sets `TCP_MAXSEG` before connecting (socket2 offers it only with its `all` feature).
fn set_mss(socket: &Socket, mss: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mss = libc::c_int::try_from(mss).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid reference, on a socket
    // descriptor that `socket` owns for the whole call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            std::ptr::from_ref(&mss).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
