//! Unit tests for `Connection`, driven by a scripted stream: each test lists what the kernel
//! would answer to each read and write, and checks what the connection did with it.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};

use super::{Connection, Status, Stream};

/// One answer to a `read` call.
#[derive(Debug)]
enum ReadStep {
    /// Data arrived: the read returns up to the buffer's length, the rest stays for the next read.
    Data(Vec<u8>),
    /// The client shut down its write side.
    Eof,
    Err(ErrorKind),
}

/// One answer to a `write` call.
#[derive(Debug)]
enum WriteStep {
    /// The socket takes at most this many bytes.
    Take(usize),
    Err(ErrorKind),
}

/// A stream whose answers are scripted. An empty read script answers `WouldBlock`; an empty
/// write script takes everything.
#[derive(Debug, Default)]
struct Script {
    reads: VecDeque<ReadStep>,
    writes: VecDeque<WriteStep>,
    /// Everything the connection wrote, in order.
    written: Vec<u8>,
    read_calls: usize,
    shutdown_writes: Cell<usize>,
}

impl Script {
    fn new() -> Script {
        Script::default()
    }
    fn data(mut self, bytes: &[u8]) -> Script {
        self.reads.push_back(ReadStep::Data(bytes.to_vec()));
        self
    }
    fn eof(mut self) -> Script {
        self.reads.push_back(ReadStep::Eof);
        self
    }
    fn read_err(mut self, kind: ErrorKind) -> Script {
        self.reads.push_back(ReadStep::Err(kind));
        self
    }
    fn take(mut self, n: usize) -> Script {
        self.writes.push_back(WriteStep::Take(n));
        self
    }
    fn write_err(mut self, kind: ErrorKind) -> Script {
        self.writes.push_back(WriteStep::Err(kind));
        self
    }
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_calls += 1;
        match self.reads.pop_front() {
            None => Err(ErrorKind::WouldBlock.into()),
            Some(ReadStep::Eof) => Ok(0),
            Some(ReadStep::Err(kind)) => Err(kind.into()),
            Some(ReadStep::Data(mut data)) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                if n < data.len() {
                    self.reads.push_front(ReadStep::Data(data.split_off(n)));
                }
                Ok(n)
            }
        }
    }
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match self.writes.pop_front() {
            None => buf.len(),
            Some(WriteStep::Take(n)) => n.min(buf.len()),
            Some(WriteStep::Err(kind)) => return Err(kind.into()),
        };
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Script {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown_writes.set(self.shutdown_writes.get() + 1);
        Ok(())
    }
}

/// A write that takes nothing and says so, as a full socket does.
fn blocked() -> WriteStep {
    WriteStep::Err(ErrorKind::WouldBlock)
}

/// Pumps once with a 16-byte scratch buffer, trusting short reads.
fn pump(conn: &mut Connection<Script>, max_buffer: usize) -> io::Result<Status> {
    conn.pump(&mut [0; 16], max_buffer, true)
}

#[test]
fn echoes_what_it_reads_in_order() -> io::Result<()> {
    let mut conn = Connection::new(Script::new().data(b"hello ").eof());
    conn.stream
        .reads
        .insert(1, ReadStep::Data(b"world".to_vec()));
    // Reads of 16 bytes that return 6 are short: a real socket would be drained, so the script's
    // next answers are only read on the next pump.
    assert_eq!(pump(&mut conn, 64)?, Status::Open);
    assert_eq!(pump(&mut conn, 64)?, Status::Open);
    assert_eq!(pump(&mut conn, 64)?, Status::Closed);
    assert_eq!(conn.stream.written, b"hello world");
    assert_eq!(conn.echoed(), 11);
    Ok(())
}

#[test]
fn a_short_read_ends_the_pump_unless_the_read_side_closed() -> io::Result<()> {
    let script = || Script::new().data(b"abc").data(b"def");
    let mut trusting = Connection::new(script());
    trusting.pump(&mut [0; 16], 64, true)?;
    assert_eq!(
        (trusting.stream.read_calls, &trusting.stream.written[..]),
        (1, &b"abc"[..])
    );

    // With the read side reported closed, an EOF may sit behind the data with no new edge to
    // announce it: read until WouldBlock.
    let mut wary = Connection::new(script());
    wary.pump(&mut [0; 16], 64, false)?;
    assert_eq!(
        (wary.stream.read_calls, &wary.stream.written[..]),
        (3, &b"abcdef"[..])
    );
    Ok(())
}

#[test]
fn partial_write_keeps_the_rest_pending_in_order() -> io::Result<()> {
    let mut conn = Connection::new(Script::new().data(b"abcdef").take(2));
    conn.stream.writes.push_back(blocked());
    assert_eq!(pump(&mut conn, 64)?, Status::Open);
    assert_eq!(conn.stream.written, b"ab");
    assert_eq!(conn.pending_len(), 4);

    // The writable edge: pending goes out before anything read later.
    conn.stream.reads.push_back(ReadStep::Data(b"gh".to_vec()));
    assert_eq!(pump(&mut conn, 64)?, Status::Open);
    assert_eq!(conn.stream.written, b"abcdefgh");
    assert_eq!(conn.pending_len(), 0);
    Ok(())
}

#[test]
fn backpressure_stops_reading_at_max_buffer_and_resumes_on_writable() -> io::Result<()> {
    let data: Vec<u8> = (0..100).collect();
    let mut conn = Connection::new(Script::new().data(&data));
    for _ in 0..10 {
        conn.stream.writes.push_back(blocked());
    }
    assert_eq!(conn.pump(&mut [0; 16], 10, false)?, Status::Open);
    assert_eq!(
        conn.pending_len(),
        10,
        "reads stop once max_buffer bytes are pending"
    );
    assert!(
        conn.pending.capacity() <= 10,
        "capacity stays within max_buffer"
    );
    assert_eq!(conn.stream.written, b"");

    // The client reads, the socket turns writable: the connection resumes reading by itself,
    // although no new readable event will come for the data already waiting.
    // It reads 10 bytes at a time, so the read budget makes it Busy (call again) until the end.
    conn.stream.writes.clear();
    let mut pumps = 1;
    while conn.pump(&mut [0; 16], 10, false)? == Status::Busy {
        pumps += 1;
        assert!(pumps < 100, "the pump makes progress");
    }
    assert_eq!(conn.stream.written, data);
    Ok(())
}

/// A client that stops reading while its input keeps coming: `pending` grows by doubling, as a
/// `Vec` does, so stashing n bytes one at a time copies O(n) bytes in all, not O(n²).
#[test]
fn pending_grows_by_doubling_while_the_client_does_not_read() -> io::Result<()> {
    let mut script = Script::new();
    for byte in 0..=255u8 {
        script = script.data(&[byte]);
    }
    let mut conn = Connection::new(script);
    for _ in 0..1000 {
        conn.stream.writes.push_back(blocked());
    }
    let mut capacities = Vec::new();
    for _ in 0..1000 {
        let status = conn.pump(&mut [0; 16], 4096, false)?;
        let capacity = conn.pending.capacity();
        if capacities.last() != Some(&capacity) {
            capacities.push(capacity);
        }
        if status != Status::Busy {
            break;
        }
    }
    assert_eq!(conn.pending_len(), 256, "every byte stashed");
    // 1, 2, 4, ... 256, less what one pump's four reads skip: log2(256) + 1 sizes at most.
    assert!(capacities.len() <= 9, "capacities: {capacities:?}");
    Ok(())
}

#[test]
fn an_idle_connection_holds_no_buffer() -> io::Result<()> {
    let mut conn = Connection::new(Script::new().data(b"0123456789").take(3));
    conn.stream.writes.push_back(blocked());
    pump(&mut conn, 64)?;
    assert!(conn.pending.capacity() > 0);
    pump(&mut conn, 64)?;
    assert_eq!(conn.stream.written, b"0123456789");
    assert_eq!(conn.pending.capacity(), 0);
    Ok(())
}

#[test]
fn eof_flushes_pending_then_closes() -> io::Result<()> {
    let mut conn = Connection::new(Script::new().data(b"abc").eof().take(1));
    // Blocked twice: once after the partial write, once for the flush after EOF.
    conn.stream.writes.push_back(blocked());
    conn.stream.writes.push_back(blocked());
    assert_eq!(conn.pump(&mut [0; 16], 64, false)?, Status::Open);
    assert_eq!(conn.stream.written, b"a");
    assert_eq!(pump(&mut conn, 64)?, Status::Closed);
    assert_eq!(conn.stream.written, b"abc");
    assert_eq!(
        conn.stream.shutdown_writes.get(),
        0,
        "closing is enough after the client's EOF"
    );
    Ok(())
}

#[test]
fn interrupted_calls_are_retried() -> io::Result<()> {
    let script = Script::new()
        .read_err(ErrorKind::Interrupted)
        .data(b"xy")
        .write_err(ErrorKind::Interrupted);
    let mut conn = Connection::new(script);
    assert_eq!(pump(&mut conn, 64)?, Status::Open);
    assert_eq!(conn.stream.written, b"xy");
    Ok(())
}

#[test]
fn read_and_write_errors_are_returned() {
    let mut reset = Connection::new(Script::new().read_err(ErrorKind::ConnectionReset));
    let err = pump(&mut reset, 64).expect_err("reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);

    let mut broken = Connection::new(Script::new().data(b"a").write_err(ErrorKind::BrokenPipe));
    let err = pump(&mut broken, 64).expect_err("broken pipe");
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);

    let mut zero = Connection::new(Script::new().data(b"a").take(0));
    let err = pump(&mut zero, 64).expect_err("write zero");
    assert_eq!(err.kind(), ErrorKind::WriteZero);
}

#[test]
fn drain_answers_waiting_input_then_shuts_write_then_lingers() -> io::Result<()> {
    let mut conn = Connection::new(Script::new().data(b"abcd").take(2));
    conn.stream.writes.push_back(blocked());
    pump(&mut conn, 64)?;
    assert_eq!(conn.stream.written, b"ab");

    // Shutdown begins with a request already waiting in the socket: it is answered before FIN.
    conn.begin_drain(64, false);
    conn.stream
        .reads
        .push_back(ReadStep::Data(b"late".to_vec()));
    assert_eq!(
        pump(&mut conn, 64)?,
        Status::Open,
        "waits for the client's EOF"
    );
    assert_eq!(conn.stream.written, b"abcdlate");
    assert_eq!(conn.stream.shutdown_writes.get(), 1);

    // After the FIN, input is read (lingering) but never echoed.
    conn.stream
        .reads
        .push_back(ReadStep::Data(b"after".to_vec()));
    conn.stream.reads.push_back(ReadStep::Eof);
    assert_eq!(conn.pump(&mut [0; 16], 64, false)?, Status::Closed);
    assert_eq!(conn.stream.written, b"abcdlate");
    assert_eq!(conn.stream.shutdown_writes.get(), 1);
    Ok(())
}

#[test]
fn drain_waits_while_the_client_does_not_read() -> io::Result<()> {
    let mut conn = Connection::new(Script::new().data(b"abcd").take(1));
    conn.stream.writes.push_back(blocked());
    pump(&mut conn, 64)?;
    conn.begin_drain(64, false);
    // The first drain pump flushes twice (before and after answering), the others once.
    for _ in 0..4 {
        conn.stream.writes.push_back(blocked());
    }
    for _ in 0..3 {
        assert_eq!(pump(&mut conn, 64)?, Status::Open);
        assert_eq!(
            conn.stream.shutdown_writes.get(),
            0,
            "no FIN before the echo is out"
        );
    }
    assert_eq!(pump(&mut conn, 64)?, Status::Open);
    assert_eq!(conn.stream.written, b"abcd");
    assert_eq!(conn.stream.shutdown_writes.get(), 1);
    Ok(())
}

/// The request that waited in the socket because echo was backpressured (pending
/// full) is answered once the client reads, before the FIN, not thrown away by the drain.
#[test]
fn a_drain_answers_input_held_back_by_backpressure() -> io::Result<()> {
    let mut conn = Connection::new(Script::new().data(b"01234567").data(b"request"));
    for _ in 0..4 {
        conn.stream.writes.push_back(blocked());
    }
    // max_buffer 8: the first 8 bytes fill pending, so "request" stays in the socket.
    assert_eq!(pump(&mut conn, 8)?, Status::Open);
    assert_eq!(conn.pending_len(), 8);
    conn.begin_drain(8, false);
    assert_eq!(pump(&mut conn, 8)?, Status::Open, "still backpressured");
    assert_eq!(conn.stream.shutdown_writes.get(), 0);
    // The client reads: writes go through again (the blocked answers ran out).
    for _ in 0..4 {
        if conn.stream.shutdown_writes.get() == 1 {
            break;
        }
        pump(&mut conn, 8)?;
    }
    assert_eq!(conn.stream.written, b"01234567request");
    assert_eq!(conn.stream.shutdown_writes.get(), 1);
    Ok(())
}

/// The answer is bounded: at most `max_buffer` bytes read after the drain began are echoed; the
/// rest is read while lingering and discarded.
#[test]
fn a_drain_answers_at_most_max_buffer_bytes() -> io::Result<()> {
    let mut conn = Connection::new(Script::new());
    conn.begin_drain(10, false);
    conn.stream.reads.push_back(ReadStep::Data(vec![7; 30]));
    conn.stream.reads.push_back(ReadStep::Eof);
    let mut status = Status::Busy;
    for _ in 0..10 {
        status = pump(&mut conn, 10)?;
        if status == Status::Closed {
            break;
        }
    }
    assert_eq!(status, Status::Closed);
    assert_eq!(conn.stream.written, vec![7; 10]);
    assert_eq!(conn.stream.shutdown_writes.get(), 1);
    Ok(())
}

#[test]
fn a_client_that_already_sent_eof_just_finishes_during_drain() -> io::Result<()> {
    let mut conn = Connection::new(Script::new().data(b"ab").eof().take(1));
    conn.stream.writes.push_back(blocked());
    conn.stream.writes.push_back(blocked());
    assert_eq!(conn.pump(&mut [0; 16], 64, false)?, Status::Open);
    assert_eq!(conn.stream.written, b"a");
    conn.begin_drain(64, false);
    assert_eq!(pump(&mut conn, 64)?, Status::Closed);
    assert_eq!(conn.stream.written, b"ab");
    assert_eq!(conn.stream.shutdown_writes.get(), 0);
    Ok(())
}

#[test]
fn a_flood_is_served_one_budget_per_pump() -> io::Result<()> {
    use super::READS_PER_PUMP;
    let flood = vec![7u8; 3 * READS_PER_PUMP * 16];
    let mut conn = Connection::new(Script::new().data(&flood));
    // Full 16-byte reads are not short, so only the budget stops the pump; the reactor calls it
    // again next turn, after the other connections had theirs.
    for round in 1..=3 {
        assert_eq!(pump(&mut conn, usize::MAX)?, Status::Busy);
        assert_eq!(conn.stream.written.len(), round * READS_PER_PUMP * 16);
        assert_eq!(conn.stream.read_calls, round * READS_PER_PUMP);
    }
    assert_eq!(pump(&mut conn, usize::MAX)?, Status::Open);
    assert_eq!(conn.stream.written, flood);
    Ok(())
}

#[test]
fn lingering_discards_within_the_budget_too() -> io::Result<()> {
    use super::READS_PER_PUMP;
    let mut conn = Connection::new(Script::new());
    conn.begin_drain(64, false);
    // Nothing waiting: the drain answers nothing, sends FIN and lingers.
    assert_eq!(pump(&mut conn, 64)?, Status::Open);
    assert_eq!(conn.stream.shutdown_writes.get(), 1);
    conn.stream
        .reads
        .push_back(ReadStep::Data(vec![1; 2 * READS_PER_PUMP * 16]));
    conn.stream.reads.push_back(ReadStep::Eof);
    assert_eq!(pump(&mut conn, 64)?, Status::Busy);
    assert_eq!(pump(&mut conn, 64)?, Status::Busy);
    assert_eq!(pump(&mut conn, 64)?, Status::Closed);
    assert_eq!(
        conn.stream.written, b"",
        "input after the FIN is never echoed"
    );
    Ok(())
}

#[test]
fn traffic_counts_bytes_both_ways() -> io::Result<()> {
    let mut conn = Connection::new(Script::new().data(b"abc"));
    assert_eq!(conn.traffic(), 0);
    pump(&mut conn, 64)?;
    assert_eq!(conn.traffic(), 6);
    pump(&mut conn, 64)?; // WouldBlock: nothing moved
    assert_eq!(conn.traffic(), 6);
    Ok(())
}

/// Where each pending byte sits in memory, oldest first.
fn addresses(conn: &Connection<Script>) -> Vec<usize> {
    let (oldest, newest) = conn.pending.as_slices();
    (oldest.iter().chain(newest))
        .map(|byte| std::ptr::from_ref(byte).addr())
        .collect()
}

/// A client reads 64 bytes per writable event while `pending` stays full. The
/// bytes that stay pending across a pump may move at most as often as bytes are echoed (O(1) per
/// byte); the old `Vec::drain(..sent)` moved 960 of them per 64 echoed, the ring moves none.
#[test]
fn a_slow_reader_does_not_move_the_pending_bytes() -> io::Result<()> {
    let (max_buffer, scratch) = (1024, &mut [0; 256]);
    let mut conn = Connection::new(Script::new().data(&[7; 64 * 1024]));
    conn.stream.writes.push_back(blocked());
    while conn.pending_len() < max_buffer {
        conn.pump(scratch, max_buffer, true)?;
    }
    let (mut moved, start) = (0, conn.echoed());
    for _ in 0..200 {
        // The client reads a little: the writable edge, then the send buffer is full again.
        conn.stream.writes = VecDeque::from([WriteStep::Take(64), blocked()]);
        let before = addresses(&conn);
        let written = conn.echoed();
        conn.pump(scratch, max_buffer, true)?;
        let kept = &before[(conn.echoed() - written) as usize..];
        let after = addresses(&conn);
        moved += kept.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(conn.pending_len(), max_buffer, "refilled what was sent");
    }
    let echoed = conn.echoed() - start;
    assert_eq!(echoed, 200 * 64);
    assert!(moved as u64 <= echoed, "moved {moved} B to echo {echoed} B");
    Ok(())
}

#[test]
fn a_drain_awaiting_first_bytes_does_not_end_on_an_empty_socket() -> io::Result<()> {
    let mut conn = Connection::new(Script::new());
    conn.begin_drain(64, true);
    assert!(conn.awaits_first_bytes());
    // Empty socket, twice: still waiting, no FIN.
    assert_eq!(pump(&mut conn, 64)?, Status::Open);
    assert_eq!(pump(&mut conn, 64)?, Status::Open);
    assert_eq!(conn.stream.shutdown_writes.get(), 0);

    // The first bytes arrive: answered, then the FIN, as any drain.
    conn.stream
        .reads
        .push_back(ReadStep::Data(b"first".to_vec()));
    assert_eq!(pump(&mut conn, 64)?, Status::Open);
    assert!(!conn.awaits_first_bytes());
    assert_eq!(conn.stream.written, b"first");
    assert_eq!(conn.stream.shutdown_writes.get(), 1);
    Ok(())
}

#[test]
fn the_end_of_the_grace_sends_the_fin_to_a_silent_client() -> io::Result<()> {
    let mut conn = Connection::new(Script::new());
    conn.begin_drain(64, true);
    assert_eq!(pump(&mut conn, 64)?, Status::Open);
    conn.end_grace();
    assert!(!conn.awaits_first_bytes());
    assert_eq!(pump(&mut conn, 64)?, Status::Open, "lingers for the EOF");
    assert_eq!(conn.stream.shutdown_writes.get(), 1);
    assert!(conn.stream.written.is_empty());
    Ok(())
}

#[test]
fn only_a_client_that_sent_nothing_gets_the_grace() -> io::Result<()> {
    let mut conn = Connection::new(Script::new().data(b"x"));
    pump(&mut conn, 64)?;
    conn.begin_drain(64, true);
    assert!(!conn.awaits_first_bytes(), "it has sent a byte");
    pump(&mut conn, 64)?;
    assert_eq!(conn.stream.shutdown_writes.get(), 1, "FIN at once");

    // Sent bytes that are all still pending (nothing echoed yet): not silent either.
    let mut unread = Connection::new(Script::new().data(b"abc"));
    unread.stream.writes.push_back(blocked());
    pump(&mut unread, 64)?;
    assert_eq!((unread.echoed(), unread.pending_len()), (0, 3));
    unread.begin_drain(64, true);
    assert!(
        !unread.awaits_first_bytes(),
        "it has sent bytes, none echoed yet"
    );

    // The idle timer's close passes false: no grace even for a silent one.
    let mut silent = Connection::new(Script::new());
    silent.begin_drain(64, false);
    assert!(!silent.awaits_first_bytes());
    Ok(())
}

#[test]
fn lingering_trusts_a_short_read_as_the_socket_drained() -> io::Result<()> {
    let mut conn = Connection::new(Script::new());
    conn.begin_drain(64, false);
    assert_eq!(pump(&mut conn, 64)?, Status::Open);
    assert_eq!(conn.stream.shutdown_writes.get(), 1, "lingering now");
    let calls = conn.stream.read_calls;
    // A short read (3 of 16 bytes) with a trusting event: no second read for `WouldBlock`.
    conn.stream.reads.push_back(ReadStep::Data(b"bye".to_vec()));
    assert_eq!(pump(&mut conn, 64)?, Status::Open);
    assert_eq!(conn.stream.read_calls, calls + 1);
    Ok(())
}
