//! The driver for the property tests in `connection/props.rs`: a scripted client stream, the
//! scenario it plays, and `drive`, which plays a scenario against a `Connection` the way the
//! reactor would and hands the state after every pump to a check.
//!
//! The scripted stream is separate from the one in `connection/tests.rs`, so the two files stay
//! independent: this one records what the properties need (every byte read and written, the
//! errors of each pump, when FIN went out).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};

use proptest::test_runner::TestCaseError;

use crate::connection::{Connection, Status, Stream};

/// One answer to a `read` call.
#[derive(Clone)]
pub(super) enum ReadStep {
    /// Bytes arrive; reads take them in pieces of at most the buffer's length.
    Data(Vec<u8>),
    /// The read fails with this kind (`WouldBlock` and `Interrupted` included).
    Err(ErrorKind),
    /// The client shut down its write side; every later read returns 0, as on a socket.
    Eof,
}

/// Data on one line, even in a failing case's `{:#?}`.
impl fmt::Debug for ReadStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadStep::Data(data) => write!(f, "Data({data:?})"),
            ReadStep::Err(kind) => write!(f, "Err({kind:?})"),
            ReadStep::Eof => write!(f, "Eof"),
        }
    }
}

impl ReadStep {
    fn len(&self) -> usize {
        match self {
            ReadStep::Data(data) => data.len(),
            ReadStep::Err(_) | ReadStep::Eof => 0,
        }
    }
}

/// One answer to a `write` call.
#[derive(Debug, Clone, Copy)]
pub(super) enum WriteStep {
    /// The socket takes at most this many bytes; `Take(0)` is the kernel taking nothing.
    Take(usize),
    Err(ErrorKind),
}

/// The client, as the connection's stream sees it.
#[derive(Debug, Default)]
pub(super) struct Peer {
    /// What the next reads answer, pushed by `sends` and `closes`; empty means `WouldBlock`.
    reads: VecDeque<ReadStep>,
    /// How much of the front data step has been read already.
    read_pos: usize,
    /// The client shut down its write side: no more sends are scripted.
    closed: bool,
    /// The connection read the client's EOF.
    pub(super) eof_read: bool,
    /// What the next writes answer, replaced by `reads_echo`.
    writes: VecDeque<WriteStep>,
    /// What a write gets once `writes` runs out: `WouldBlock` (the client is not reading) if
    /// set, else everything.
    blocked: bool,
    /// What `shutdown_write` answers, if it fails.
    shutdown_err: Option<ErrorKind>,
    /// Every byte handed to the connection by `read`, in order.
    pub(super) input: Vec<u8>,
    /// Reads that returned data, which the read budget counts.
    data_reads: usize,
    /// Every byte the connection wrote, in order.
    pub(super) written: Vec<u8>,
    /// Errors other than `WouldBlock` and `Interrupted` given out during the current pump.
    pub(super) errors: RefCell<Vec<ErrorKind>>,
    /// Calls made after such an error, in the same pump.
    pub(super) calls_after_error: Cell<usize>,
    /// Calls to `shutdown_write`.
    pub(super) shutdowns: Cell<usize>,
    /// `(input.len(), written.len())` when `shutdown_write` was first called.
    pub(super) fin_at: Cell<Option<(usize, usize)>>,
    /// Write calls after `shutdown_write`, which a real socket would fail with `EPIPE`.
    pub(super) writes_after_fin: usize,
}

impl Peer {
    fn new(blocked: bool, shutdown_err: Option<ErrorKind>) -> Peer {
        Peer {
            blocked,
            shutdown_err,
            ..Peer::default()
        }
    }

    fn sends(&mut self, steps: &[ReadStep]) {
        if !self.closed {
            self.reads.extend(steps.iter().cloned());
        }
    }

    fn closes(&mut self) {
        if !self.closed {
            self.closed = true;
            self.reads.push_back(ReadStep::Eof);
        }
    }

    /// The client reads what was sent: these write answers come first, then `blocked` decides.
    fn reads_echo(&mut self, steps: &[WriteStep], blocked: bool) {
        self.writes = steps.iter().copied().collect();
        self.blocked = blocked;
    }

    /// Steps plus unread bytes: a bound on the pumps needed to read everything, since each
    /// pump that does not return `Closed` consumes at least one of either.
    fn backlog(&self) -> usize {
        self.reads.len() + self.reads.iter().map(ReadStep::len).sum::<usize>()
    }

    /// Records a call; a call after an error in the same pump means the error was not acted on.
    fn call(&self) {
        if !self.errors.borrow().is_empty() {
            self.calls_after_error.set(self.calls_after_error.get() + 1);
        }
    }

    fn fail(&self, kind: ErrorKind) -> io::Error {
        if kind != ErrorKind::WouldBlock && kind != ErrorKind::Interrupted {
            self.errors.borrow_mut().push(kind);
        }
        kind.into()
    }
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.call();
        if self.eof_read {
            return Ok(0);
        }
        let n = match self.reads.front() {
            None => return Err(ErrorKind::WouldBlock.into()),
            Some(ReadStep::Eof) => {
                self.reads.pop_front();
                self.eof_read = true;
                return Ok(0);
            }
            Some(&ReadStep::Err(kind)) => {
                self.reads.pop_front();
                return Err(self.fail(kind));
            }
            Some(ReadStep::Data(data)) => {
                let unread = &data[self.read_pos..];
                let n = unread.len().min(buf.len());
                buf[..n].copy_from_slice(&unread[..n]);
                self.input.extend_from_slice(&unread[..n]);
                self.read_pos += n;
                if self.read_pos == data.len() {
                    self.reads.pop_front();
                    self.read_pos = 0;
                }
                n
            }
        };
        if n > 0 {
            self.data_reads += 1;
        }
        Ok(n)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.call();
        if self.shutdowns.get() > 0 {
            self.writes_after_fin += 1;
        }
        let n = match self.writes.pop_front() {
            None if self.blocked => return Err(ErrorKind::WouldBlock.into()),
            None => buf.len(),
            Some(WriteStep::Take(n)) => n.min(buf.len()),
            Some(WriteStep::Err(kind)) => return Err(self.fail(kind)),
        };
        if n == 0 && !buf.is_empty() {
            // Nothing taken and no reason given: the connection must give up with WriteZero.
            self.fail(ErrorKind::WriteZero);
        }
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Peer {
    fn shutdown_write(&self) -> io::Result<()> {
        self.call();
        self.shutdowns.set(self.shutdowns.get() + 1);
        if self.fin_at.get().is_none() {
            self.fin_at
                .set(Some((self.input.len(), self.written.len())));
        }
        match self.shutdown_err {
            Some(kind) => Err(self.fail(kind)),
            None => Ok(()),
        }
    }
}

/// One step of a scenario.
#[derive(Debug, Clone)]
pub(super) enum Action {
    /// A readiness event (or the turn after `Busy`): the reactor pumps the connection.
    Pump { trust_short_read: bool },
    /// The client's input (or a failure) arrives, after what was sent before.
    Send(Vec<ReadStep>),
    /// The client reads: the socket turns writable, answering these writes first, then
    /// blocking again or taking everything.
    Read {
        writes: Vec<WriteStep>,
        blocked: bool,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Scenario {
    pub(super) max_buffer: usize,
    pub(super) scratch_len: usize,
    /// Whether the socket starts with a full send buffer.
    pub(super) blocked: bool,
    pub(super) shutdown_err: Option<ErrorKind>,
    pub(super) actions: Vec<Action>,
    /// Before which action the client shuts down its write side (`actions.len()`: after them).
    pub(super) close_at: Option<usize>,
    /// Pumps after the actions and the client's close, while the client still does not read:
    /// the client that sends everything, shuts down its write side, then reads.
    pub(super) half_closed_pumps: usize,
    /// Before which action `begin_drain` is called (`actions.len()`: after the half-closed pumps).
    pub(super) drain_at: Option<usize>,
    /// `trust_short_read` for the pumps after the actions.
    pub(super) final_trust: bool,
}

/// When `begin_drain` was called.
#[derive(Debug, Clone, Copy)]
pub(super) struct Drain {
    /// Bytes read before it; the drain may read and echo at most `max_buffer` more.
    pub(super) input_len: usize,
    /// Whether the connection had already read the client's EOF (then no FIN is due).
    pub(super) eof_read: bool,
}

/// What the properties see after each pump.
pub(super) struct Pumped<'a> {
    pub(super) conn: &'a Connection<Peer>,
    pub(super) result: &'a io::Result<Status>,
    /// Reads that returned data in this pump.
    pub(super) data_reads: usize,
    pub(super) max_buffer: usize,
    pub(super) drain: Option<Drain>,
}

impl Pumped<'_> {
    pub(super) fn peer(&self) -> &Peer {
        &self.conn.stream
    }

    /// What the connection may echo: everything it read before its FIN. A drain still answers
    /// the input it finds waiting; only what it reads while lingering, after the FIN, is
    /// discarded.
    pub(super) fn echo_source(&self) -> &[u8] {
        let input = &self.peer().input;
        &input[..self
            .peer()
            .fin_at
            .get()
            .map_or(input.len(), |(read, _)| read)]
    }

    /// Bytes read since the drain began (0 without a drain).
    pub(super) fn read_while_draining(&self) -> usize {
        let read = self
            .peer()
            .fin_at
            .get()
            .map_or(self.peer().input.len(), |(read, _)| read);
        self.drain.map_or(0, |drain| read - drain.input_len)
    }
}

/// How a scenario ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum End {
    Closed,
    Failed(ErrorKind),
    /// Still open after the client closed, read everything and enough pumps were made.
    Stuck,
}

type Check<'c> = dyn FnMut(&Pumped<'_>) -> Result<(), TestCaseError> + 'c;

/// Plays the scenario, calling `check` after every pump; stops at `Closed` or the first `Err`,
/// as the reactor does.
pub(super) fn drive(
    s: &Scenario,
    mut check: impl FnMut(&Pumped<'_>) -> Result<(), TestCaseError>,
) -> Result<End, TestCaseError> {
    let mut run = Run {
        conn: Connection::new(Peer::new(s.blocked, s.shutdown_err)),
        scratch: vec![0; s.scratch_len],
        max_buffer: s.max_buffer,
        drain: None,
    };
    for (i, action) in s.actions.iter().enumerate() {
        if s.close_at == Some(i) {
            run.conn.stream.closes();
        }
        if s.drain_at == Some(i) {
            run.begin_drain();
        }
        match action {
            Action::Pump { trust_short_read } => {
                if let Some(end) = run.pump(*trust_short_read, &mut check)? {
                    return Ok(end);
                }
            }
            Action::Send(steps) => run.conn.stream.sends(steps),
            Action::Read { writes, blocked } => run.conn.stream.reads_echo(writes, *blocked),
        }
    }
    // The client closes, may still not read for a few pumps, then reads everything: the
    // connection must finish.
    run.conn.stream.closes();
    for _ in 0..s.half_closed_pumps {
        if let Some(end) = run.pump(s.final_trust, &mut check)? {
            return Ok(end);
        }
    }
    if s.drain_at == Some(s.actions.len()) {
        run.begin_drain();
    }
    run.conn.stream.reads_echo(&[], false);
    for _ in 0..run.conn.stream.backlog() + 3 {
        if let Some(end) = run.pump(s.final_trust, &mut check)? {
            return Ok(end);
        }
    }
    Ok(End::Stuck)
}

struct Run {
    conn: Connection<Peer>,
    scratch: Vec<u8>,
    max_buffer: usize,
    drain: Option<Drain>,
}

impl Run {
    fn begin_drain(&mut self) {
        self.drain = Some(Drain {
            input_len: self.conn.stream.input.len(),
            eof_read: self.conn.stream.eof_read,
        });
        self.conn.begin_drain(self.max_buffer, false);
    }

    fn pump(&mut self, trust: bool, check: &mut Check<'_>) -> Result<Option<End>, TestCaseError> {
        self.conn.stream.errors.borrow_mut().clear();
        let before = self.conn.stream.data_reads;
        let result = self.conn.pump(&mut self.scratch, self.max_buffer, trust);
        check(&Pumped {
            conn: &self.conn,
            result: &result,
            data_reads: self.conn.stream.data_reads - before,
            max_buffer: self.max_buffer,
            drain: self.drain,
        })?;
        Ok(match result {
            Ok(Status::Closed) => Some(End::Closed),
            Ok(Status::Open | Status::Busy) => None,
            Err(err) => Some(End::Failed(err.kind())),
        })
    }
}
