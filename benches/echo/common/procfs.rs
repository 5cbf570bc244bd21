//! `/proc` figures (proc(5)): a server's, summed over the threads of its serving processes
//! (which live as long as it does), and the machine's.

use std::fs::read_to_string;
use std::io;
use std::time::Duration;

use super::invalid;

/// The number after `name` in `text` (`VmRSS:   1234 kB`).
fn number_after(text: &str, name: &str) -> io::Result<u64> {
    let rest = text
        .split_once(name)
        .map(|(_, rest)| rest.trim_start_matches([':', ' ']));
    let word = rest.and_then(|rest| rest.split_whitespace().next());
    let number = word.and_then(|n| n.parse().ok());
    number.ok_or_else(|| invalid(format!("no {name}")))
}

/// The sum of `read` over `/proc/PID/task/TID/{file}` of every thread of `pids`.
fn threads(pids: &[u32], file: &str, read: impl Fn(&str) -> io::Result<u64>) -> io::Result<u64> {
    let mut sum = 0;
    for pid in pids {
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            sum += read(&read_to_string(task?.path().join(file))?)?;
        }
    }
    Ok(sum)
}

/// CPU time of `pids` from `schedstat` (its first field, ns on the CPU): finer than the 10 ms
/// ticks of `/proc/PID/stat`, for scenarios that keep a server mostly idle.
pub fn cpu_time(pids: &[u32]) -> io::Result<Duration> {
    let on_cpu = |stat: &str| number_after(stat, "");
    Ok(Duration::from_nanos(threads(pids, "schedstat", on_cpu)?))
}

/// Voluntary context switches: a thread went to sleep (in `epoll_wait`, say) and was woken.
pub fn voluntary_switches(pids: &[u32]) -> io::Result<u64> {
    threads(pids, "status", |status| {
        number_after(status, "\nvoluntary_ctxt_switches")
    })
}

/// Resident memory of `pids` in bytes.
pub fn rss_bytes(pids: &[u32]) -> io::Result<u64> {
    let mut kib = 0;
    for pid in pids {
        kib += number_after(&read_to_string(format!("/proc/{pid}/status"))?, "VmRSS")?;
    }
    Ok(kib * 1024)
}

/// The kernel's `TcpExt` counter `name` of `/proc/net/netstat` (`ListenOverflows`: connections
/// dropped because an accept queue was full). System-wide: every listener counts.
pub fn tcp_counter(name: &str) -> io::Result<u64> {
    let netstat = read_to_string("/proc/net/netstat")?;
    // Lines come in pairs: `TcpExt: Name1 Name2 …`, then `TcpExt: value1 value2 …`.
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next().unwrap_or(""), tcp_ext.next().unwrap_or(""));
    let at = names.split_whitespace().position(|n| n == name);
    let value = at.and_then(|i| values.split_whitespace().nth(i)?.parse().ok());
    value.ok_or_else(|| invalid(format!("no {name} in /proc/net/netstat")))
}

/// Cores online ("0-1": the last number is the highest). Not `available_parallelism`, which
/// shrinks to 1 once this thread is pinned.
pub fn cores() -> usize {
    let online = read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let last = online.trim().rsplit(['-', ',']).next();
    let last = last.and_then(|n| n.parse().ok());
    last.map_or(1, |n: usize| n + 1)
}

/// One line about the machine: CPU, cores, kernel, and the load average now.
pub fn machine() -> String {
    let read = |path| read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"));
    let model = model
        .unwrap_or("unknown CPU")
        .trim_start_matches([' ', '\t', ':']);
    let (kernel, load) = (read("/proc/sys/kernel/osrelease"), read("/proc/loadavg"));
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let (cores, kernel, load) = (cores(), kernel.trim(), load.join(" "));
    format!("{model}, {cores} cores, Linux {kernel}; load average {load}")
}
