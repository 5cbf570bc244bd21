//! How a restart's phases are timed beside our own clock: the time a thread spent runnable
//! but waiting for a CPU (`/proc/PID/task/TID/schedstat`, proc(5)), and netgrace's own log
//! timestamps against our wall clock. Both tell a starved machine, or a late benchmark, from a
//! slow restart.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds in a day, for the log lines' time of day.
const DAY_MS: i64 = 86_400_000;

/// Time the main thread of `pid` has spent runnable but waiting for a CPU, from
/// `/proc/PID/schedstat` (its second field, in ns; proc(5)). The main thread is the one that
/// starts the server and says "ready".
pub(super) fn run_delay(pid: u32) -> io::Result<Duration> {
    run_delay_of(&format!("/proc/{pid}/schedstat"))
}

/// The same for each thread of `pid`: (thread id, time waiting for a CPU).
pub(super) fn thread_delays(pid: u32) -> Vec<(String, Duration)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let delay = run_delay_of(&task.path().join("schedstat").to_string_lossy()).ok()?;
            Some((task.file_name().to_string_lossy().into_owned(), delay))
        })
        .collect()
}

/// The second field of a `schedstat` file, in ns.
fn run_delay_of(path: &str) -> io::Result<Duration> {
    let schedstat = std::fs::read_to_string(path)?;
    let waiting = schedstat.split_whitespace().nth(1);
    let nanos = waiting.and_then(|ns| ns.parse::<u64>().ok());
    nanos
        .map(Duration::from_nanos)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc/PID/schedstat"))
}

/// The time of day in ms (UTC) at the start of a netgrace log line: `2026-11-29T13:05:28.385Z`.
pub(super) fn logged_ms(line: &str) -> Option<i64> {
    let clock = line.get(11..23)?;
    let (hms, ms) = clock.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(((h * 60 + m) * 60 + s) * 1000 + ms.parse::<i64>().ok()?)
}

/// `time`'s ms of the day, UTC, as in the log lines.
pub(super) fn ms_of_day(time: SystemTime) -> i64 {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    (since_epoch.as_millis() % DAY_MS as u128) as i64
}

/// From `then` to `logged`, both ms of the day, across midnight if need be.
pub(super) fn since_ms(then: i64, logged: i64) -> i64 {
    let d = (logged - then).rem_euclid(DAY_MS);
    if d > DAY_MS / 2 {
        d - DAY_MS
    } else {
        d
    }
}
