//! System calls of a server process, counted over a fixed number of echoed messages.
//!
//! The preferred counter is `perf stat` on the syscall tracepoints: the kernel counts each entry
//! and the server runs at full speed. The fallback, `strace -c -f`, stops the server at every
//! call; slowed down, it finds more events ready per `epoll_wait`, so `strace` under-counts the
//! `epoll_wait` share. Both attach to a running process (`-p`), which the load leaves quiet
//! while the counter attaches and detaches, so only the measured messages are counted.
//! Install one with `apt-get install -y linux-perf` (Debian) or `apt-get install -y strace`.

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Time for the counter to attach to every thread before the load starts.
const ATTACH_WAIT: Duration = Duration::from_millis(300);
/// The accept, read, write and poll calls an echo server makes, each counted on its own by
/// `perf`.
const PERF_CALLS: [&str; 13] = [
    "accept",
    "accept4",
    "read",
    "recvfrom",
    "readv",
    "recvmsg",
    "write",
    "sendto",
    "writev",
    "sendmsg",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Perf,
    Strace,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Perf => "perf stat",
            Tool::Strace => "strace -c",
        }
    }
}

/// Calls counted between attach and finish.
pub struct Count {
    pub tool: Tool,
    pub total: u64,
    /// Calls by name, most frequent first; with `perf`, only the calls in `PERF_CALLS`.
    pub by_name: Vec<(String, u64)>,
}

/// A counter attached to a process.
pub struct Tracer {
    tool: Tool,
    child: Child,
    output: PathBuf,
}

/// Which counter works here, if any.
pub fn available() -> Option<Tool> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if works("perf", &["stat", "-e", "raw_syscalls:sys_enter", "true"]) {
        Some(Tool::Perf)
    } else if works("strace", &["-c", "-o", "/dev/null", "true"]) {
        Some(Tool::Strace)
    } else {
        None
    }
}

impl Tracer {
    /// Attaches `tool` to every thread of the processes `pids` (a netgrace's workers, say) and
    /// waits until it is counting; the counts are their sums.
    pub fn attach(tool: Tool, pids: &[u32]) -> io::Result<Tracer> {
        let first = pids.first().ok_or(io::ErrorKind::InvalidInput)?;
        let output = std::env::temp_dir().join(format!("echo-bench-syscalls-{first}.txt"));
        let mut command = match tool {
            Tool::Perf => {
                let mut perf = Command::new("perf");
                perf.args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter"]);
                for call in PERF_CALLS {
                    perf.arg("-e").arg(format!("syscalls:sys_enter_{call}"));
                }
                perf
            }
            Tool::Strace => {
                let mut strace = Command::new("strace");
                strace.args(["-c", "-f"]);
                strace
            }
        };
        command.arg("-o").arg(&output);
        match tool {
            // perf takes one comma-separated list.
            Tool::Perf => {
                let list: Vec<String> = pids.iter().map(u32::to_string).collect();
                command.arg("-p").arg(list.join(","));
            }
            Tool::Strace => {
                for pid in pids {
                    command.arg("-p").arg(pid.to_string());
                }
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(ATTACH_WAIT);
        Ok(Tracer {
            tool,
            child,
            output,
        })
    }

    /// Detaches (SIGINT makes either tool print its summary) and reads the counts.
    pub fn finish(mut self) -> io::Result<Count> {
        crate::process::signal(self.child.id(), libc::SIGINT)?;
        self.child.wait()?;
        let text = std::fs::read_to_string(&self.output)?;
        let _ = std::fs::remove_file(&self.output);
        let (total, mut by_name) = match self.tool {
            Tool::Perf => parse_perf(&text),
            Tool::Strace => parse_strace(&text),
        };
        by_name.retain(|(_, calls)| *calls > 0);
        by_name.sort_by_key(|(_, calls)| std::cmp::Reverse(*calls));
        Ok(Count {
            tool: self.tool,
            total,
            by_name,
        })
    }
}

/// `perf stat -x,` lines: `COUNT,UNIT,EVENT,...`.
fn parse_perf(text: &str) -> (u64, Vec<(String, u64)>) {
    let mut total = 0;
    let mut by_name = Vec::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(count), Some(event)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        if *event == "raw_syscalls:sys_enter" {
            total = count;
        } else if let Some(call) = event.strip_prefix("syscalls:sys_enter_") {
            by_name.push((call.to_string(), count));
        }
    }
    (total, by_name)
}

/// `strace -c` rows: `% time, seconds, usecs/call, calls, [errors,] syscall`.
fn parse_strace(text: &str) -> (u64, Vec<(String, u64)>) {
    let mut total = 0;
    let mut by_name = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(calls), Some(name)) = (fields.get(3), fields.last()) else {
            continue;
        };
        let Ok(calls) = calls.parse::<u64>() else {
            continue;
        };
        if *name == "total" {
            total = calls;
        } else {
            by_name.push((name.to_string(), calls));
        }
    }
    (total, by_name)
}
