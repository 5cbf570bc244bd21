//! A server's figures from `/proc` (proc(5)), each summed over the processes that serve: the
//! workers of a netgrace master (the master serves no client, so it is not counted), or the
//! process itself for the tokio peers. A process that has exited is no longer there to read, so
//! take two readings only while every process counted lives.

use std::io;
use std::time::Duration;

/// User plus system CPU time of every thread of `pids`, from `/proc/PID/stat`, in clock ticks
/// (10 ms here).
pub fn cpu_time(pids: &[u32]) -> io::Result<Duration> {
    // SAFETY: sysconf has no preconditions; _SC_CLK_TCK is a valid name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which is in parentheses and may hold spaces; utime and
        // stime are fields 14 and 15 of proc(5), so 12 and 13 after the ')'.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let (Some(utime), Some(stime)) = (field(11), field(12)) else {
            return Err(invalid("bad /proc/PID/stat"));
        };
        ticks += utime + stime;
    }
    Ok(Duration::from_secs_f64(ticks as f64 / hz))
}

/// On-CPU time of every thread of `pids`, from `/proc/PID/task/*/schedstat` in nanoseconds:
/// finer than [`cpu_time`]'s ticks, for a scenario that keeps the server mostly idle. A thread
/// that exits is no longer counted (a server's threads live as long as it does).
pub fn run_time(pids: &[u32]) -> io::Result<Duration> {
    let mut nanos = 0;
    for pid in pids {
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let schedstat = std::fs::read_to_string(task?.path().join("schedstat"))?;
            // Three fields (schedstat in proc(5)): time on the CPU, time waiting for it, slices.
            let on_cpu = schedstat.split_whitespace().next();
            nanos += on_cpu
                .and_then(|ns| ns.parse::<u64>().ok())
                .ok_or_else(|| invalid("bad /proc/PID/task/TID/schedstat"))?;
        }
    }
    Ok(Duration::from_nanos(nanos))
}

/// Resident memory of `pids` in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pids: &[u32]) -> io::Result<u64> {
    let mut bytes = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        bytes += status_number(&status, "VmRSS:").ok_or_else(|| invalid("no VmRSS"))? * 1024;
    }
    Ok(bytes)
}

/// Context switches of every thread of `pids`: (voluntary, involuntary), from
/// `/proc/PID/task/TID/status`. A voluntary one is a thread going to sleep (in `epoll_wait`,
/// say) and later woken; `/proc/PID/status` alone would count the main thread only.
pub fn context_switches(pids: &[u32]) -> io::Result<(u64, u64)> {
    let (mut voluntary, mut involuntary) = (0, 0);
    for pid in pids {
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let status = std::fs::read_to_string(task?.path().join("status"))?;
            let count = |name: &str| status_number(&status, name).ok_or_else(|| invalid(name));
            voluntary += count("voluntary_ctxt_switches:")?;
            involuntary += count("nonvoluntary_ctxt_switches:")?;
        }
    }
    Ok((voluntary, involuntary))
}

/// The number on the line `name` of a `status` file (in kB for the memory lines).
fn status_number(status: &str, name: &str) -> Option<u64> {
    let rest = status.lines().find_map(|line| line.strip_prefix(name))?;
    rest.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Whether `pid` has a child process now (`/proc/PID/task/PID/children`).
pub fn has_children(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .is_ok_and(|children| !children.trim().is_empty())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}
