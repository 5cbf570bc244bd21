//! [`Connection`]: one client's echo state machine, generic over the stream so unit tests can
//! drive it with a scripted one.
//!
//! ```text
//!   Open ──client EOF──▶ PeerClosed ──pending flushed──▶ closed (clean)
//!    │
//!    ├──shutdown──▶ Draining ──queued input answered, pending flushed, shutdown(Write)──▶ Lingering ──client EOF──▶ closed (drained)
//!    │                 ▲
//!    └──shutdown, ──▶ Awaiting ──first bytes, or the grace ends──┘
//!       nothing read yet
//! ```
//!
//! Any IO error in any phase closes the connection (`Err` from [`Connection::pump`]).

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// A byte stream the connection can also half-close. Implemented for mio's `TcpStream` and, in
/// the tests below, for a scripted stream.
pub(crate) trait Stream: Read + Write {
    /// Shuts down the write side (sends FIN): the client reads EOF after the echo already sent.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Stream for mio::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// Where a connection is in its life; see the diagram in the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Echoing: read, write back.
    Open,
    /// The client shut down its write side; write back what is pending, then close.
    PeerClosed,
    /// Graceful shutdown: answer the input already waiting in the socket (read until it is empty,
    /// at most `max_buffer` bytes), write back everything pending, then shut our write side.
    Draining,
    /// Graceful shutdown of a connection that has sent nothing yet: its first bytes may be in
    /// flight (it was accepted a moment ago), so an empty socket does not end it. The first read
    /// that returns data turns it into `Draining`; so does the end of the grace
    /// ([`Connection::end_grace`]), and the drain then finds the socket empty and sends its FIN.
    Awaiting,
    /// Our write side is shut. Read and discard until the client closes: closing a socket that
    /// still has unread input makes Linux send RST (RFC 9293 §3.6.1, RFC 1122 §4.2.2.13), and a
    /// RST can destroy echo the client has not read yet.
    Lingering,
}

/// Most reads one connection may do in one pump, so a client that floods cannot monopolise the
/// loop (fairness). Counted in reads, not bytes, because each read is a system call whatever its
/// size: with the default 64 KiB scratch buffer this is up to 256 KiB per pump, and with a tiny
/// `max_buffer` it still bounds the pump to a few system calls. Judgment call: large enough that a
/// lone stream rarely needs a second turn, small enough that a turn stays in the microseconds.
pub(crate) const READS_PER_PUMP: usize = 4;

/// The name of the lingering phase in the trace, which marks the pump that sent the FIN.
pub(crate) const LINGERING: &str = "lingering";

/// Why the last [`Connection::pump`] stopped doing IO: only for the trace (`netgrace -vv`), which
/// narrates each pump. Recording it is one byte stored per pump, in space the struct already
/// pads, so it costs nothing measurable when the trace is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// A read returned `WouldBlock`: the socket is empty, the next edge brings more.
    WouldBlock,
    /// A read returned less than asked, and the event allowed trusting that as "empty".
    ShortRead,
    /// `READS_PER_PUMP` reads returned data: the rest waits for the ready list.
    Budget,
    /// `pending` is full: reading pauses until the client reads (the writable edge).
    Backpressure,
    /// The socket's send buffer is full: the writable edge resumes the writes.
    WriteBlocked,
    /// The client's EOF.
    Eof,
    /// A drain read all it may (`max_buffer`) and went on to its FIN.
    Allowance,
}

impl End {
    /// The words the trace prints.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            End::WouldBlock => "read WouldBlock",
            End::ShortRead => "short read trusted",
            End::Budget => "read budget spent",
            End::Backpressure => "backpressure: reading paused",
            End::WriteBlocked => "write blocked",
            End::Eof => "client EOF",
            End::Allowance => "drain allowance spent",
        }
    }
}

/// What [`Connection::pump`] left the connection in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Still open: wait for the next readiness event.
    Open,
    /// Still open, with input possibly waiting: the read budget ran out. No new edge will come
    /// for that input, so the reactor must pump this connection again next turn by itself.
    Busy,
    /// Finished cleanly: remove it; dropping the stream closes the socket.
    Closed,
}

/// One client: its stream, its pending echo and its phase.
#[derive(Debug)]
pub(crate) struct Connection<S> {
    stream: S,
    /// Bytes read but not yet written back, oldest first. Filled only when a write falls short
    /// (`stash`); written from the front by `flush`, which releases the allocation as soon as
    /// everything is written, so an idle connection holds no buffer.
    ///
    /// A ring, so that writing from the front and appending at the back never move the bytes in
    /// between: a slow reader costs O(1) per byte, not a shift of the whole backlog per writable
    /// event. Why not a `Vec` compacted only when it pays: against a slow reader `pending` stays
    /// full, so each read needs the room just freed at the front, and compaction would be due on
    /// every event unless reading waited for half the buffer to drain, which would change
    /// backpressure. See "Pending echo is a ring" in docs/design.md.
    pending: VecDeque<u8>,
    /// Set by `pump` on EOF and by `begin_drain`; never goes back to `Open`.
    phase: Phase,
    /// While draining: how many more bytes the drain may read and echo before its FIN. Set to
    /// `max_buffer` (at most `u32::MAX`) by `begin_drain`, lowered by each read, zeroed when the
    /// socket is found empty. Zero in every other phase.
    drain_allowance: u32,
    /// Bytes written back so far; read by the reactor when the connection is removed.
    echoed: u64,
    /// Bytes read so far, echoed or (while lingering) discarded, modulo 2^32; with `echoed`, tells
    /// the reactor whether a pump moved any traffic (the idle timer). Only its change matters, and
    /// one pump reads far less than 4 GiB, so 32 bits suffice: with `drain_allowance` it fits in
    /// the space the stream's descriptor leaves, keeping a connection at 56 bytes.
    read: u32,
    /// Why the last pump stopped, for the trace.
    end: End,
}

impl<S: Stream> Connection<S> {
    pub(crate) fn new(stream: S) -> Connection<S> {
        Connection {
            stream,
            pending: VecDeque::new(),
            phase: Phase::Open,
            drain_allowance: 0,
            echoed: 0,
            read: 0,
            end: End::WouldBlock,
        }
    }

    pub(crate) fn echoed(&self) -> u64 {
        self.echoed
    }

    /// A count of the bytes moved either way (reads modulo 2^32): unchanged across a pump means
    /// the pump saw no traffic.
    pub(crate) fn traffic(&self) -> u64 {
        u64::from(self.read).wrapping_add(self.echoed)
    }

    /// Bytes read (modulo 2^32) and written so far; the trace reports their change per pump.
    pub(crate) fn counters(&self) -> (u32, u64) {
        (self.read, self.echoed)
    }

    /// Why the last pump stopped (for the trace).
    pub(crate) fn end(&self) -> End {
        self.end
    }

    /// The phase's name, for the trace.
    pub(crate) fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Open => "open",
            Phase::PeerClosed => "peer closed",
            Phase::Draining => "draining",
            Phase::Awaiting => "awaiting first bytes",
            Phase::Lingering => LINGERING,
        }
    }

    /// Bytes read but not yet written back.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Does the IO the connection can do now: until the kernel says `WouldBlock`, or until
    /// [`READS_PER_PUMP`] reads have returned data (then it returns [`Status::Busy`]).
    ///
    /// Called for every readiness event of this connection, whether readable or writable, and
    /// again on the next turn after `Busy`: readiness is edge-triggered (epoll(7) `EPOLLET`), so
    /// each event must be used to the full, and the writable event that follows backpressure is
    /// what resumes reading.
    ///
    /// `trust_short_read`: a read that returns fewer bytes than asked means the socket is drained
    /// (epoll(7), "for stream-oriented files"), which saves the read that would return
    /// `WouldBlock`. It is only safe when the event did not also report the read side closed or an
    /// error: an EOF queued behind the data raises no new edge, so then we read to the end.
    ///
    /// `scratch` is the reactor's shared read buffer: data goes from it straight back to the
    /// socket and is only copied into `pending` when a write falls short, so echoing does not
    /// allocate per message.
    pub(crate) fn pump(
        &mut self,
        scratch: &mut [u8],
        max_buffer: usize,
        trust_short_read: bool,
    ) -> io::Result<Status> {
        // One budget for the whole pump, even when a drain answers input and then lingers.
        let mut budget = READS_PER_PUMP;
        match self.phase {
            Phase::Open => self.echo(scratch, max_buffer, trust_short_read, &mut budget),
            Phase::PeerClosed => self.finish_after_eof(),
            Phase::Draining | Phase::Awaiting => {
                self.drain(scratch, max_buffer, trust_short_read, &mut budget)
            }
            Phase::Lingering => self.linger(scratch, trust_short_read, &mut budget),
        }
    }

    fn echo(
        &mut self,
        scratch: &mut [u8],
        max_buffer: usize,
        trust_short_read: bool,
        budget: &mut usize,
    ) -> io::Result<Status> {
        // Pending bytes go first, or the echo would come back out of order.
        let mut can_write = self.flush()?;
        loop {
            let room = max_buffer.saturating_sub(self.pending_len());
            if room == 0 {
                // Backpressure: the client is not reading. Data left in the socket raises no new
                // readable edge, but the writable edge that comes when the client reads brings us
                // back here, and `flush` then makes room.
                self.end = End::Backpressure;
                return Ok(Status::Open);
            }
            let want = room.min(scratch.len()).min(self.read_allowance());
            let n = match self.stream.read(&mut scratch[..want]) {
                // The client shut down its write side (FIN): echo what is left, then close.
                Ok(0) => {
                    self.phase = Phase::PeerClosed;
                    self.end = End::Eof;
                    return self.finish_after_eof();
                }
                Ok(n) => n,
                // Drained: the next edge will tell us when more arrives. A drain has now answered
                // everything that was waiting, so it reads no more; one still awaiting the
                // client's first bytes keeps waiting for them.
                Err(err) if would_block(&err) => {
                    if self.phase != Phase::Awaiting {
                        self.drain_allowance = 0;
                    }
                    self.end = End::WouldBlock;
                    return Ok(Status::Open);
                }
                // A signal interrupted the call before any data moved: just retry.
                Err(err) if interrupted(&err) => continue,
                // Reset, timeout, ...: the reactor closes this connection only.
                Err(err) => return Err(err),
            };
            if can_write {
                can_write = self.write_through(&scratch[..n], max_buffer)?;
            } else {
                self.stash(&scratch[..n], max_buffer);
            }
            self.read = self.read.wrapping_add(n as u32);
            *budget -= 1;
            if self.phase == Phase::Awaiting {
                // The first bytes came: from now on this is an ordinary drain.
                self.phase = Phase::Draining;
            }
            if self.phase == Phase::Draining {
                // n <= want <= the allowance, which fits in u32.
                self.drain_allowance -= n as u32;
                if self.drain_allowance == 0 {
                    // Answered all it may: `drain` goes on to the FIN with what is left of the
                    // budget.
                    self.end = End::Allowance;
                    return Ok(Status::Open);
                }
            }
            if trust_short_read && n < want {
                self.end = End::ShortRead;
                return Ok(Status::Open);
            }
            if *budget == 0 {
                self.end = End::Budget;
                return Ok(Status::Busy);
            }
        }
    }

    /// Writes `data` (read just now, with nothing pending before it); keeps what the socket did
    /// not take. Returns whether everything was written.
    fn write_through(&mut self, data: &[u8], max_buffer: usize) -> io::Result<bool> {
        let written = write_until_blocked(&mut self.stream, data, &mut self.echoed)?;
        if written < data.len() {
            // A partial write: the socket's send buffer is full. Keep the rest, in order.
            self.stash(&data[written..], max_buffer);
            return Ok(false);
        }
        Ok(true)
    }

    /// Writes as much pending echo as the socket takes. Returns whether nothing is left pending.
    fn flush(&mut self) -> io::Result<bool> {
        while !self.pending.is_empty() {
            // The oldest bytes run to the end of the ring's allocation and the rest wrap round to
            // its start: write the first part, then loop for the second. Judgment call: one more
            // `write` per lap of the ring (once per `capacity` bytes echoed at most) is simpler
            // than `write_vectored`, which the scripted test streams would also have to model.
            let (oldest, _) = self.pending.as_slices();
            let offered = oldest.len();
            let written = write_until_blocked(&mut self.stream, oldest, &mut self.echoed)?;
            // The ring's head steps past what was written: no byte moves, and u8 has nothing to
            // drop (a_slow_reader_does_not_move_the_pending_bytes watches the addresses).
            self.pending.drain(..written);
            if written < offered {
                // A partial write: the send buffer is full; the writable edge brings us back.
                return Ok(false);
            }
        }
        // Release the allocation: an idle connection holds no buffer (the memory bound counts on it).
        self.pending = VecDeque::new();
        Ok(true)
    }

    /// Appends to `pending`, never letting its capacity pass `max_buffer`. Appending to a ring
    /// moves nothing already pending; only growing copies it, once per doubling.
    fn stash(&mut self, data: &[u8], max_buffer: usize) {
        let needed = self.pending.len() + data.len();
        if needed > self.pending.capacity() {
            // Double like Vec would (amortised O(1) appends) but stop at the configured bound.
            let target = (self.pending.capacity() * 2).clamp(needed, max_buffer.max(needed));
            self.pending.reserve_exact(target - self.pending.len());
        }
        self.pending.extend(data);
    }

    fn finish_after_eof(&mut self) -> io::Result<Status> {
        if self.flush()? {
            // Everything echoed and the client's input fully read: closing sends a clean FIN.
            self.end = End::Eof;
            return Ok(Status::Closed);
        }
        self.end = End::WriteBlocked;
        Ok(Status::Open)
    }

    /// How many bytes a read may take in this phase: the drain's allowance while draining.
    fn read_allowance(&self) -> usize {
        match self.phase {
            Phase::Draining | Phase::Awaiting => self.drain_allowance as usize,
            _ => usize::MAX,
        }
    }
}

/// Writes until all of `data` is written or the socket would block; returns the bytes written.
/// Adds them to `echoed` as they go, so bytes written before a failing write are counted too.
fn write_until_blocked<W: Write>(
    stream: &mut W,
    data: &[u8],
    echoed: &mut u64,
) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match stream.write(&data[written..]) {
            // The kernel accepted nothing without saying why: treat it as a dead connection.
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            // Possibly partial: loop to offer the rest.
            Ok(n) => {
                written += n;
                *echoed += n as u64;
            }
            // Send buffer full: the writable edge will bring us back.
            Err(err) if would_block(&err) => break,
            // A signal arrived before any data moved: retry.
            Err(err) if interrupted(&err) => {}
            // Broken pipe, reset, ...: the caller closes this connection.
            Err(err) => return Err(err),
        }
    }
    Ok(written)
}

pub(crate) fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

pub(crate) fn interrupted(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Interrupted
}

mod drain;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
