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
//! The strategies and the properties live here; the scripted stream (`Peer`), the scenario's
//! types and the driver that plays a scenario live in `props/driver.rs`.

use std::io::ErrorKind;

use proptest::prelude::*;

use super::{Status, READS_PER_PUMP};

mod driver;

use driver::{drive, Action, End, ReadStep, Scenario, WriteStep};

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

/// Where two byte strings first differ, for failure messages that stay short.
fn diverge(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Written plus pending is exactly the input read before the FIN, in order: nothing lost,
    /// duplicated or reordered (a drain answers what it finds waiting), and input read while
    /// lingering never echoed.
    #[test]
    fn echo_is_the_input_in_order_and_lingering_input_is_never_echoed(s in scenario()) {
        drive(&s, |p| {
            let (source, written) = (p.echo_source(), &p.peer().written);
            prop_assert!(
                source.starts_with(written),
                "wrote {} bytes of {} read before any FIN; they differ from byte {}",
                written.len(), source.len(), diverge(source, written)
            );
            if p.result.is_ok() {
                let pending: Vec<u8> = p.conn.pending.iter().copied().collect();
                let unsent = &source[written.len()..];
                prop_assert!(
                    pending == unsent,
                    "pending holds {} bytes, the unsent input is {}; they differ from byte {}",
                    pending.len(), unsent.len(), diverge(&pending, unsent)
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
    /// client's EOF, after all echo; no write follows it; the drain answers at most `max_buffer`
    /// bytes of input before it; such a drain ends through it, unless the client's EOF came
    /// while the drain was still answering.
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
                prop_assert_eq!(read, source);
            }
            let answered = p.read_while_draining();
            prop_assert!(
                answered <= p.max_buffer,
                "the drain answered {answered} bytes, more than max_buffer {}", p.max_buffer
            );
            if let Ok(Status::Closed) = p.result {
                // Without a FIN, a due drain must have met the client's EOF while answering.
                let eof_while_answering = p.peer().fin_at.get().is_none() && p.peer().eof_read;
                prop_assert!(
                    shutdowns == usize::from(fin_due) || (fin_due && eof_while_answering),
                    "{shutdowns} FIN for a drain that was {}due", if fin_due { "" } else { "not " }
                );
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
