//! Property tests for `Connection`: random scenarios drive it the way the reactor and a client
//! would, and each property checks one invariant after every pump.
//!
//! A scenario is a `max_buffer`, a scratch size and a list of actions: the reactor pumps (with a
//! random `trust_short_read`); the client sends (chunks of random length and content,
//! `WouldBlock`, `Interrupted`, a reset); the client reads, so the socket turns writable (partial
//! writes, `WouldBlock`, `Interrupted`, `Take(0)`, errors to come). The client may shut down its
//! write side midway, and the server may begin its drain once. At the end the client closes and
//! reads everything, and the connection is pumped until it returns `Closed` (a bounded number of
//! times). A panic anywhere fails the property too.
//!
//! The scripted stream is separate from the one in `connection_tests.rs`, so the two files stay
//! independent: this one records what the properties need (every byte read and written, the
//! errors of each pump, when FIN went out).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};

use proptest::prelude::*;

use super::{Connection, Status, Stream, READS_PER_PUMP};

/// One answer to a `read` call.
#[derive(Clone)]
enum ReadStep {
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
enum WriteStep {
    /// The socket takes at most this many bytes; `Take(0)` is the kernel taking nothing.
    Take(usize),
    Err(ErrorKind),
}

/// The client, as the connection's stream sees it.
#[derive(Debug, Default)]
struct Peer {
    /// What the next reads answer, pushed by `sends` and `closes`; empty means `WouldBlock`.
    reads: VecDeque<ReadStep>,
    /// How much of the front data step has been read already.
    read_pos: usize,
    /// The client shut down its write side: no more sends are scripted.
    closed: bool,
    /// The connection read the client's EOF.
    eof_read: bool,
    /// What the next writes answer, replaced by `reads_echo`.
    writes: VecDeque<WriteStep>,
    /// What a write gets once `writes` runs out: `WouldBlock` (the client is not reading) if
    /// set, else everything.
    blocked: bool,
    /// What `shutdown_write` answers, if it fails.
    shutdown_err: Option<ErrorKind>,
    /// Every byte handed to the connection by `read`, in order.
    input: Vec<u8>,
    /// Reads that returned data, which the read budget counts.
    data_reads: usize,
    /// Every byte the connection wrote, in order.
    written: Vec<u8>,
    /// Errors other than `WouldBlock` and `Interrupted` given out during the current pump.
    errors: RefCell<Vec<ErrorKind>>,
    /// Calls made after such an error, in the same pump.
    calls_after_error: Cell<usize>,
    /// Calls to `shutdown_write`.
    shutdowns: Cell<usize>,
    /// `(input.len(), written.len())` when `shutdown_write` was first called.
    fin_at: Cell<Option<(usize, usize)>>,
    /// Write calls after `shutdown_write`, which a real socket would fail with `EPIPE`.
    writes_after_fin: usize,
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
enum Action {
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
struct Scenario {
    max_buffer: usize,
    scratch_len: usize,
    /// Whether the socket starts with a full send buffer.
    blocked: bool,
    shutdown_err: Option<ErrorKind>,
    actions: Vec<Action>,
    /// Before which action the client shuts down its write side (`actions.len()`: after them).
    close_at: Option<usize>,
    /// Pumps after the actions and the client's close, while the client still does not read:
    /// the client that sends everything, shuts down its write side, then reads.
    half_closed_pumps: usize,
    /// Before which action `begin_drain` is called (`actions.len()`: after the half-closed pumps).
    drain_at: Option<usize>,
    /// `trust_short_read` for the pumps after the actions.
    final_trust: bool,
}

fn read_step() -> impl Strategy<Value = ReadStep> {
    prop_oneof![
        40 => prop::collection::vec(any::<u8>(), 1..=48).prop_map(ReadStep::Data),
        4 => prop::collection::vec(any::<u8>(), 49..=400).prop_map(ReadStep::Data),
        4 => Just(ReadStep::Err(ErrorKind::WouldBlock)),
        4 => Just(ReadStep::Err(ErrorKind::Interrupted)),
        1 => Just(ReadStep::Err(ErrorKind::ConnectionReset)),
    ]
}

fn write_step() -> impl Strategy<Value = WriteStep> {
    prop_oneof![
        40 => (1..=64usize).prop_map(WriteStep::Take),
        8 => Just(WriteStep::Err(ErrorKind::WouldBlock)),
        6 => Just(WriteStep::Err(ErrorKind::Interrupted)),
        1 => Just(WriteStep::Take(0)),
        1 => Just(WriteStep::Err(ErrorKind::BrokenPipe)),
        1 => Just(WriteStep::Err(ErrorKind::ConnectionReset)),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => any::<bool>().prop_map(|trust_short_read| Action::Pump { trust_short_read }),
        3 => prop::collection::vec(read_step(), 1..=3).prop_map(Action::Send),
        2 => (prop::collection::vec(write_step(), 0..=4), prop::bool::weighted(0.75))
            .prop_map(|(writes, blocked)| Action::Read { writes, blocked }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        // Mostly small, so backpressure is common; sometimes large enough to hold all input.
        prop_oneof![1..=256usize, 257..=1024usize],
        1..=64usize,
        // Mostly a client that does not read yet, so echo is pending when its EOF arrives.
        prop::bool::weighted(0.75),
        prop::option::weighted(0.1, Just(ErrorKind::NotConnected)),
        prop::collection::vec(action(), 0..40),
        prop::option::of(any::<prop::sample::Index>()),
        0..=4usize,
        prop::option::of((any::<prop::sample::Index>(), any::<bool>())),
        any::<bool>(),
    )
        .prop_map(
            |(
                max_buffer,
                scratch_len,
                blocked,
                shutdown_err,
                actions,
                close_at,
                half_closed_pumps,
                drain_at,
                final_trust,
            )| {
                let close_at = close_at.map(|at| at.index(actions.len() + 1));
                // Half the drains come after the client's close, to drain a half-closed connection.
                let drain_at = drain_at.map(|(at, after_close)| {
                    let from = close_at.filter(|_| after_close).unwrap_or(0);
                    from + at.index(actions.len() + 1 - from)
                });
                Scenario {
                    max_buffer,
                    scratch_len,
                    blocked,
                    shutdown_err,
                    actions,
                    close_at,
                    half_closed_pumps,
                    drain_at,
                    final_trust,
                }
            },
        )
}

/// When `begin_drain` was called.
#[derive(Debug, Clone, Copy)]
struct Drain {
    /// Bytes read before it: the only ones the connection may ever echo.
    input_len: usize,
    /// Whether the connection had already read the client's EOF (then no FIN is due).
    eof_read: bool,
}

/// What the properties see after each pump.
struct Pumped<'a> {
    conn: &'a Connection<Peer>,
    result: &'a io::Result<Status>,
    /// Reads that returned data in this pump.
    data_reads: usize,
    max_buffer: usize,
    drain: Option<Drain>,
}

impl Pumped<'_> {
    fn peer(&self) -> &Peer {
        &self.conn.stream
    }

    /// What the connection may echo: everything read before the drain began.
    fn echo_source(&self) -> &[u8] {
        let input = &self.peer().input;
        &input[..self.drain.map_or(input.len(), |drain| drain.input_len)]
    }
}

/// How a scenario ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Closed,
    Failed(ErrorKind),
    /// Still open after the client closed, read everything and enough pumps were made.
    Stuck,
}

type Check<'c> = dyn FnMut(&Pumped<'_>) -> Result<(), TestCaseError> + 'c;

/// Plays the scenario, calling `check` after every pump; stops at `Closed` or the first `Err`,
/// as the reactor does.
fn drive(
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
        self.conn.begin_drain();
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

/// Where two byte strings first differ, for failure messages that stay short.
fn diverge(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Written plus pending is exactly the input read before the drain, in order: nothing lost,
    /// duplicated or reordered, and input read while lingering never echoed.
    #[test]
    fn echo_is_the_input_in_order_and_lingering_input_is_never_echoed(s in scenario()) {
        drive(&s, |p| {
            let (source, written) = (p.echo_source(), &p.peer().written);
            prop_assert!(
                source.starts_with(written),
                "wrote {} bytes of {} read before any drain; they differ from byte {}",
                written.len(), source.len(), diverge(source, written)
            );
            if p.result.is_ok() {
                let pending = &p.conn.pending[p.conn.sent..];
                let unsent = &source[written.len()..];
                prop_assert!(
                    pending == unsent,
                    "pending holds {} bytes, the unsent input is {}; they differ from byte {}",
                    pending.len(), unsent.len(), diverge(pending, unsent)
                );
            }
            Ok(())
        })?;
    }

    /// The memory bound: pending never passes `max_buffer`, in length or in capacity, and an
    /// empty pending holds no allocation.
    #[test]
    fn pending_stays_within_max_buffer_and_is_released_when_empty(s in scenario()) {
        drive(&s, |p| {
            let (len, capacity) = (p.conn.pending_len(), p.conn.pending.capacity());
            prop_assert!(len <= p.max_buffer, "pending {len} > max_buffer {}", p.max_buffer);
            prop_assert!(
                capacity <= p.max_buffer,
                "capacity {capacity} > max_buffer {}", p.max_buffer
            );
            if p.result.is_ok() && len == 0 {
                prop_assert_eq!(capacity, 0, "an idle connection holds no buffer");
            }
            Ok(())
        })?;
    }

    /// Once the client has sent EOF and reads everything, pumping ends in `Closed` (unless the
    /// stream fails), only after the client's EOF was read and all echo written.
    #[test]
    fn after_the_clients_eof_every_byte_is_echoed_before_closed(s in scenario()) {
        let end = drive(&s, |p| {
            if let Ok(Status::Closed) = p.result {
                prop_assert!(p.peer().eof_read, "closed before reading the client's EOF");
                prop_assert_eq!(p.conn.pending_len(), 0);
                prop_assert_eq!(p.peer().written.len(), p.echo_source().len());
            }
            Ok(())
        })?;
        prop_assert_ne!(end, End::Stuck);
    }

    /// An error from the stream ends the pump with `Err` of the same kind, with no further
    /// call; `WouldBlock` and `Interrupted` never surface, and no error is made up.
    #[test]
    fn stream_errors_surface_with_their_kind_and_interrupted_is_retried(s in scenario()) {
        drive(&s, |p| {
            let errors = p.peer().errors.borrow();
            match p.result {
                Err(err) => prop_assert_eq!(
                    errors.last().copied(), Some(err.kind()),
                    "pump failed with {:?}, the stream gave {:?}", err.kind(), &*errors
                ),
                Ok(status) => prop_assert!(
                    errors.is_empty(),
                    "pump returned {:?} after the stream failed with {:?}", status, &*errors
                ),
            }
            prop_assert_eq!(p.peer().calls_after_error.get(), 0, "IO after {:?}", &*errors);
            Ok(())
        })?;
    }

    /// FIN (`shutdown_write`) goes out at most once, only during a drain that began before the
    /// client's EOF, after all echo and before anything lingering is read; no write follows it;
    /// such a drain ends only through it.
    #[test]
    fn fin_goes_out_once_after_all_echo_and_only_when_draining(s in scenario()) {
        drive(&s, |p| {
            let peer = p.peer();
            let shutdowns = peer.shutdowns.get();
            prop_assert!(shutdowns <= 1, "shutdown_write called {shutdowns} times");
            prop_assert_eq!(peer.writes_after_fin, 0, "write after FIN");
            let fin_due = p.drain.is_some_and(|drain| !drain.eof_read);
            if let Some((read, written)) = peer.fin_at.get() {
                prop_assert!(fin_due, "FIN without a drain (or after the client's EOF)");
                let source = p.echo_source().len();
                prop_assert_eq!(written, source, "FIN before all echo was written");
                prop_assert_eq!(read, source, "read while draining, before FIN");
            }
            if let Ok(Status::Closed) = p.result {
                prop_assert_eq!(shutdowns, usize::from(fin_due));
            }
            Ok(())
        })?;
    }

    /// Fairness: a pump makes at most `READS_PER_PUMP` reads that return data, and returns
    /// `Busy` only when it made that many.
    #[test]
    fn a_pump_reads_one_budget_at_most_and_busy_means_it_ran_out(s in scenario()) {
        drive(&s, |p| {
            prop_assert!(
                p.data_reads <= READS_PER_PUMP,
                "one pump made {} reads with data", p.data_reads
            );
            if let Ok(Status::Busy) = p.result {
                prop_assert_eq!(p.data_reads, READS_PER_PUMP, "busy before the budget ran out");
            }
            Ok(())
        })?;
    }

    /// `echoed` and `traffic` count the bytes that moved (the report and the idle timer read them).
    #[test]
    fn echoed_and_traffic_count_the_bytes_moved(s in scenario()) {
        drive(&s, |p| {
            let peer = p.peer();
            if p.result.is_ok() {
                prop_assert_eq!(p.conn.echoed(), peer.written.len() as u64);
                prop_assert_eq!(p.conn.traffic(), (peer.input.len() + peer.written.len()) as u64);
            }
            Ok(())
        })?;
    }

    /// The reactor adds `echoed` to the report also when the connection fails, so it must
    /// count the bytes written before a failed write too.
    #[test]
    fn echoed_counts_the_bytes_written_before_an_error(s in scenario()) {
        drive(&s, |p| {
            prop_assert_eq!(p.conn.echoed(), p.peer().written.len() as u64);
            Ok(())
        })?;
    }
}
