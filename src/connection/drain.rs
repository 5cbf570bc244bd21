//! The graceful end of one connection: the drain (answer what waits, flush, FIN), the wait for
//! a silent client's first bytes, and the lingering close. The reactor decides when a drain
//! begins (`reactor/drain.rs`); this file is what the connection then does.

use std::io;

use super::{interrupted, would_block, Connection, End, Phase, Status, Stream};

impl<S: Stream> Connection<S> {
    /// Starts the graceful end; the next [`Connection::pump`] carries it out.
    ///
    /// Input that reached the socket before shutdown is still answered: the drain reads until
    /// the socket is empty (`WouldBlock`), at most `max_buffer` more bytes, and echoes all of it
    /// before the FIN. A client whose request was already on its way gets its answer, not an EOF
    /// in its place (Go's `Server.Shutdown` waits for in-flight requests for the same reason).
    /// Only what is read after that, while lingering, is discarded.
    ///
    /// `await_first_bytes`: if the client has sent nothing yet, an empty socket does not end the
    /// drain until [`Connection::end_grace`]: a client accepted just before the shutdown may
    /// have its request in flight, and an EOF in place of its answer is exactly what a graceful
    /// shutdown promises not to give (docs/restart.md, "The race at the hand-over").
    pub(crate) fn begin_drain(&mut self, max_buffer: usize, await_first_bytes: bool) {
        // A connection whose client already sent EOF has no unread input, so it finishes as it
        // was going to: flush, then close.
        if self.phase == Phase::Open {
            // `read` wraps, but a connection that read a multiple of 4 GiB has echoed something.
            let silent = self.read == 0 && self.echoed == 0;
            self.phase = if await_first_bytes && silent {
                Phase::Awaiting
            } else {
                Phase::Draining
            };
            self.drain_allowance = u32::try_from(max_buffer).unwrap_or(u32::MAX);
        }
    }

    /// Whether the drain is still waiting for this client's first bytes (see `begin_drain`).
    pub(crate) fn awaits_first_bytes(&self) -> bool {
        self.phase == Phase::Awaiting
    }

    /// Ends the wait for the first bytes: the next pump drains as usual, and finding the socket
    /// empty sends the FIN. Does nothing in any other phase.
    pub(crate) fn end_grace(&mut self) {
        if self.phase == Phase::Awaiting {
            self.phase = Phase::Draining;
        }
    }

    pub(super) fn drain(
        &mut self,
        scratch: &mut [u8],
        max_buffer: usize,
        trust_short_read: bool,
        budget: &mut usize,
    ) -> io::Result<Status> {
        if self.drain_allowance > 0 {
            // Answer what was waiting. A short read proves nothing here: only `WouldBlock` (or
            // the allowance) ends this part, or a short read at the wrong moment would leave
            // input unanswered with no edge to come back for it.
            let status = self.echo(scratch, max_buffer, false, budget)?;
            if self.phase != Phase::Draining || self.drain_allowance > 0 {
                // The client's EOF came first (PeerClosed finishes it), or its first bytes have
                // not come yet (Awaiting), or backpressure or the read budget paused the answer:
                // the readable or writable edge, the ready list or the grace's end resumes it.
                return Ok(status);
            }
        }
        if !self.flush()? {
            // Wait for the client to read; the drain deadline bounds how long.
            self.end = End::WriteBlocked;
            return Ok(Status::Open);
        }
        // All echo is in the kernel's hands; FIN goes after it, so the client reads it all first.
        self.stream.shutdown_write()?;
        self.phase = Phase::Lingering;
        self.linger(scratch, trust_short_read, budget)
    }

    pub(super) fn linger(
        &mut self,
        scratch: &mut [u8],
        trust_short_read: bool,
        budget: &mut usize,
    ) -> io::Result<Status> {
        loop {
            // Spent already, by the drain's answer in this same pump: the ready list brings it back.
            if *budget == 0 {
                self.end = End::Budget;
                return Ok(Status::Busy);
            }
            match self.stream.read(scratch) {
                // The client closed too: nothing unread remains, so our close cannot cause a RST.
                Ok(0) => {
                    self.end = End::Eof;
                    return Ok(Status::Closed);
                }
                // Input read after the drain's FIN is discarded, not echoed.
                Ok(n) => {
                    self.read = self.read.wrapping_add(n as u32);
                    if trust_short_read && n < scratch.len() {
                        self.end = End::ShortRead;
                        return Ok(Status::Open);
                    }
                    *budget -= 1;
                }
                Err(err) if would_block(&err) => {
                    self.end = End::WouldBlock;
                    return Ok(Status::Open);
                }
                Err(err) if interrupted(&err) => {}
                Err(err) => return Err(err),
            }
        }
    }
}
