//! The descriptor table, grown once at startup so that no accept has to grow it in a storm.
//!
//! Linux keeps a process's open descriptors in a table that starts with 64 slots and doubles
//! when a new descriptor does not fit. When the process has more than one thread, growing it
//! waits for an RCU grace period (`expand_fdtable` calls `synchronize_rcu`), which took 5 ms at
//! 256 descriptors and 17 ms at 512 on the benchmark machine. The `accept(2)` that crosses a
//! power of two stalls for that long, and in a connection storm the listen queue overflows
//! meanwhile: its clients' handshakes are dropped and they retry only after a second
//! (docs/hard-edges.md, "Connection storms and the listen backlog"). The binary always has a
//! second thread (its signal thread) and so do most embedders, so the server duplicates a
//! descriptor once, at startup, to a number as high as it will ever need, and closes the copy:
//! the table is then already as large as `max_connections` needs and never grows while serving.

#[cfg(unix)]
use log::{debug, warn};

/// Descriptors besides the connections' that the server or its host may hold: the listener, the
/// poll, the waker, the standard streams, a log file. A judgment call; the table's sizes are
/// powers of two, so the margin rarely changes the size reserved.
#[cfg(unix)]
const HEADROOM_DESCRIPTORS: usize = 32;

/// Grows the descriptor table to hold `connections` more descriptors than `anchor`'s number.
///
/// Never fails the server: if the table cannot be reserved it simply grows as before, slower.
/// Warns when the descriptor limit (`ulimit -n`) is below what `connections` needs, since
/// accepting will then pause with `EMFILE` before the connection limit is reached.
#[cfg(unix)]
pub(crate) fn reserve(anchor: impl std::os::fd::AsFd, connections: usize) {
    use rustix::process::{getrlimit, Resource};
    use std::os::fd::AsRawFd;

    let anchor = anchor.as_fd();
    let lowest = usize::try_from(anchor.as_raw_fd()).unwrap_or(0);
    let needed = lowest
        .saturating_add(connections)
        .saturating_add(HEADROOM_DESCRIPTORS);
    // `None` means unlimited. F_DUPFD refuses a number at or above the limit (EINVAL), so stay
    // below it.
    let limit = getrlimit(Resource::Nofile)
        .current
        .and_then(|limit| usize::try_from(limit).ok());
    let highest = match limit {
        Some(limit) if needed > limit => {
            warn!(
                "max_connections {connections} needs about {needed} descriptors but the limit \
                 (ulimit -n) is {limit}: accepting will pause at the limit"
            );
            limit.saturating_sub(1)
        }
        _ => needed,
    };
    let highest = i32::try_from(highest).unwrap_or(i32::MAX);
    // The duplicate is closed at once; the table keeps its new size for the process's life.
    match rustix::io::fcntl_dupfd_cloexec(anchor, highest) {
        Ok(duplicate) => drop(duplicate),
        Err(err) => debug!("reserve descriptor table up to {highest}: {err}"),
    }
}

/// Elsewhere there is no such table to grow; nothing to do.
#[cfg(not(unix))]
pub(crate) fn reserve<T>(_anchor: T, _connections: usize) {}
