//! What one drive of the load counts: messages, bytes, the latency histogram, and the progress
//! line printed once a second.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::load::Stop;

/// How long the last messages may take to come back once sending has stopped.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one [`crate::load::Load::drive`] measured: from its start until every message it started came back.
pub struct Stats {
    pub messages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Message latencies in nanoseconds.
    pub latency: Histogram<u64>,
}

impl Stats {
    pub fn per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    /// A latency percentile in microseconds.
    pub fn latency_us(&self, percentile: f64) -> f64 {
        self.latency.value_at_percentile(percentile) as f64 / 1e3
    }
}

/// The counters of one drive, shared by all its clients.
pub struct Tally {
    deadline: Option<Instant>,
    /// Messages still allowed to start, for [`Stop::Messages`].
    budget: Option<u64>,
    /// False once the deadline passed or the budget is spent: no new messages.
    pub sending: bool,
    pub in_flight: u64,
    pub completed: u64,
    /// Set when sending stops; the stall timeout counts from there.
    stopped_at: Option<Instant>,
    pub latency: Histogram<u64>,
}

impl Tally {
    pub fn new(stop: Stop, now: Instant) -> Tally {
        let (deadline, budget) = match stop {
            Stop::After(duration) => (Some(now + duration), None),
            Stop::Messages(count) => (None, Some(count)),
        };
        // 1 ns to 60 s with three significant digits: about 200 KiB, allocated once per drive.
        #[allow(clippy::unwrap_used)] // the bounds are constants that HdrHistogram accepts
        let latency = Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        Tally {
            deadline,
            budget,
            sending: true,
            in_flight: 0,
            completed: 0,
            stopped_at: None,
            latency,
        }
    }

    /// Claims the start of one message, if the drive still sends.
    pub fn take_start(&mut self) -> bool {
        match &mut self.budget {
            _ if !self.sending => return false,
            Some(0) => {
                self.sending = false;
                return false;
            }
            Some(left) => *left -= 1,
            None => {}
        }
        self.in_flight += 1;
        true
    }

    pub fn complete(&mut self, latency: Duration) {
        self.in_flight -= 1;
        self.completed += 1;
        self.latency.saturating_record(latency.as_nanos() as u64);
    }

    pub fn check_deadline(&mut self, now: Instant) {
        if self.deadline.is_some_and(|deadline| now >= deadline) || self.budget == Some(0) {
            self.sending = false;
        }
        if !self.sending && self.stopped_at.is_none() {
            self.stopped_at = Some(now);
        }
    }

    pub fn is_stalled(&self, now: Instant) -> bool {
        self.stopped_at
            .is_some_and(|stopped| now - stopped > QUIESCE_TIMEOUT)
    }
}

/// Prints a progress line once a second, like wrk.
pub struct Ticker {
    enabled: bool,
    last: Instant,
    completed_then: u64,
}

impl Ticker {
    pub fn new(now: Instant, enabled: bool) -> Ticker {
        Ticker {
            enabled,
            last: now,
            completed_then: 0,
        }
    }

    pub fn tick(&mut self, now: Instant, tally: &Tally, message_bytes: usize) {
        let secs = (now - self.last).as_secs_f64();
        if !self.enabled || secs < 1.0 {
            return;
        }
        let rate = (tally.completed - self.completed_then) as f64 / secs;
        eprintln!(
            "  {:>9.0} msg/s  {:>8.1} MB/s  p99 so far {:>7.1} µs",
            rate,
            rate * message_bytes as f64 / 1e6,
            tally.latency.value_at_percentile(99.0) as f64 / 1e3,
        );
        self.last = now;
        self.completed_then = tally.completed;
    }
}
