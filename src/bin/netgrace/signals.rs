//! What each signal means, for the master and its workers alike (nginx's meanings, on the
//! signals a supervisor sends):
//!
//! | signal | first | again |
//! |---|---|---|
//! | SIGTERM, SIGINT, SIGQUIT | stop gracefully | stop at once |
//! | SIGHUP | restart (the master) | restart again, once the last one has ended |
//! | SIGUSR1, SIGUSR2 | logged and ignored | the same |
//!
//! Not guaranteed: two signals of the same kind sent back to back, before the signal thread
//! wakes, may be delivered as one (a pending signal is a flag, signal(7)); a human pressing
//! Ctrl-C twice is always far slower than that.

use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

/// What a signal asks of the process that received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    Stop,
    StopNow,
    Restart,
    /// A child changed state: reap it.
    Reap,
    Ignore,
}

/// Every signal the binary handles; the ones a process does not act on are still caught, so
/// that their default action (terminate) cannot cut every connection.
pub(crate) const HANDLED: [i32; 7] = [SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD];

/// `stops` counts the stop signals received so far, this one included once counted.
pub(crate) fn order(signal: i32, stops: &mut u32) -> Order {
    match signal {
        SIGINT | SIGTERM | SIGQUIT => {
            *stops += 1;
            if *stops == 1 {
                Order::Stop
            } else {
                Order::StopNow
            }
        }
        SIGHUP => Order::Restart,
        SIGCHLD => Order::Reap,
        _ => Order::Ignore,
    }
}

/// The signal's name, for the log.
pub(crate) fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGQUIT => "SIGQUIT",
        SIGHUP => "SIGHUP",
        SIGUSR1 => "SIGUSR1",
        SIGUSR2 => "SIGUSR2",
        SIGCHLD => "SIGCHLD",
        _ => "a signal",
    }
}
