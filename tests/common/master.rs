//! Helpers for the tests of the master process (tests/master.rs, master_workers.rs,
//! master_signals.rs): a netgrace in a process group of its own, or as PID 1 of a new PID
//! namespace; what `/proc` says about a process and its children; and the pids and counters of
//! the master's log lines.
//!
//! Every netgrace runs in its own process group, which a [`Group`] kills and reaps at the end:
//! a master killed by a failing test leaves its workers behind, and a binary without a master
//! (a regression to the old restart) leaves successors that outlive the pid the test started.
//!
//! Logs are read only through [`Serving`], which knows where the binary writes them.
// Not every test uses every helper.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::common::binary::{netgrace, netgrace_under, pids_in, Serving};
use crate::common::{assert_echo, connect, TIMEOUT};
use crate::group::{spawn_in, Group};

/// How often a condition on `/proc` is checked while a test waits for it: no log line tells
/// when a pid file is written or a zombie is reaped.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A netgrace started with `args` in a process group of its own, which `group` kills and reaps
/// at the end; see [`spawn_in`].
#[track_caller]
pub fn start_in(group: &Group, args: &[&str]) -> Serving {
    spawn_in(group, netgrace(args))
}

/// Sends `signal` to the process `raw`.
#[track_caller]
pub fn send(raw: u32, signal: Signal) {
    rustix::process::kill_process(pid(raw), signal)
        .unwrap_or_else(|err| panic!("signal {signal:?} to pid {raw}: {err}"));
}

/// `raw` as a pid for rustix's calls.
#[track_caller]
pub fn pid(raw: u32) -> Pid {
    i32::try_from(raw)
        .ok()
        .and_then(Pid::from_raw)
        .unwrap_or_else(|| panic!("pid {raw}"))
}

/// The children of `parent` (every thread's `/proc/PID/task/TID/children`), empty once it has
/// exited.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) else {
        return Vec::new();
    };
    let mut children: Vec<u32> = tasks
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    children.sort_unstable();
    children
}

/// The state letter (`S`, `R`, `Z`, ...) and the parent's pid of `raw`, from `/proc/PID/stat`;
/// `None` once it has been reaped.
pub fn state_and_parent(raw: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{raw}/stat")).ok()?;
    // After the command name, which is in parentheses and may itself hold spaces.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// Whether `raw` is still running: it exists and is not a zombie (what `try_wait` on its
/// `Child` would call `None`).
pub fn is_running(raw: u32) -> bool {
    state_and_parent(raw).is_some_and(|(state, _)| state != 'Z')
}

/// The zombies whose parent is `parent`: children that have exited and not been reaped.
pub fn zombies_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&raw| state_and_parent(raw) == Some(('Z', parent)))
        .collect()
}

/// The command name of `raw` (`/proc/PID/comm`), empty once it has been reaped.
pub fn command_of(raw: u32) -> String {
    fs::read_to_string(format!("/proc/{raw}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The pids of `raw` in each PID namespace it belongs to, outermost first (`NSpid:` in
/// `/proc/PID/status`): the last is its pid as it sees itself.
#[track_caller]
pub fn namespace_pids(raw: u32) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{raw}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .unwrap_or_else(|| panic!("no NSpid in /proc/{raw}/status"))
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect()
}

/// The soft and hard `Max open files` of `raw`, from `/proc/PID/limits`.
#[track_caller]
pub fn max_open_files(raw: u32) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{raw}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no Max open files in /proc/{raw}/limits:\n{limits}"));
    let mut numbers = line["Max open files".len()..].split_whitespace();
    let mut next = || numbers.next().unwrap_or_default().to_owned();
    (next(), next())
}

/// Waits, bounded by [`TIMEOUT`], until `condition` holds, checking every [`POLL_INTERVAL`].
#[track_caller]
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {TIMEOUT:?}");
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Asserts that a new client of `serving` gets its echo.
#[track_caller]
pub fn assert_serves(serving: &Serving) {
    let mut client = connect(serving.addr);
    assert_echo(&mut client, b"still serving?\n");
}

/// The pids of the generation a `restart complete:` line names first (the new one), not the
/// old ones that follow its `;`.
pub fn new_generation(line: &str) -> Vec<u32> {
    pids_in(line.split(';').next().unwrap_or_default())
}

/// The counter `name` of a `counters` map, as a number.
#[track_caller]
pub fn count(counters: &HashMap<String, String>, name: &str) -> u64 {
    counters
        .get(name)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no number {name} in {counters:?}"))
}

/// Waits (each bounded by [`TIMEOUT`]) until `serving`'s log has a line with each of
/// `needles`, in whatever order they come: the processes they are about run side by side.
#[track_caller]
pub fn wait_for_each(serving: &mut Serving, needles: &[String]) {
    for needle in needles {
        if serving.count_in_log(needle) == 0 {
            serving.wait_for(needle);
        }
    }
}

/// Waits (each bounded by [`TIMEOUT`]) until the master has logged that each of `workers`
/// exited 0, in whatever order.
#[track_caller]
pub fn wait_for_clean_exits(serving: &mut Serving, workers: &[u32]) {
    let exits: Vec<String> = workers
        .iter()
        .map(|worker| format!("worker pid {worker} exited (exit status: 0)"))
        .collect();
    wait_for_each(serving, &exits);
}

/// Asserts that `child`'s parent is `parent` (the master, for a worker).
#[track_caller]
pub fn assert_child_of(child: u32, parent: u32) {
    let up = state_and_parent(child).map(|(_, up)| up);
    assert_eq!(up, Some(parent), "the parent of pid {child}");
}

/// The lines of `log` that contain `needle`.
pub fn lines_with<'a>(log: &'a [String], needle: &str) -> Vec<&'a String> {
    log.iter().filter(|line| line.contains(needle)).collect()
}

/// A netgrace started as PID 1 of a new PID namespace, as a container runtime starts it:
/// `unshare --pid --fork --kill-child netgrace ...`. unshare is our child and waits for the
/// master, whose exit status it exits with.
///
/// Dropped before the test has seen it exit, it SIGKILLs the master (the namespace's init, so
/// the kernel kills every process in the namespace with it), and then [`Serving`]'s drop kills
/// and reaps unshare. unshare is not reaped before that, so its pid, and the children it
/// lists, are still its own. Both are in a process group that a [`Group`] adopts, which reaps
/// the master should unshare die before it.
pub struct Namespaced {
    serving: Option<Serving>,
    /// The master's pid as we see it (it is 1 in its own namespace).
    pub master: u32,
}

impl Namespaced {
    /// Starts netgrace with `args` in a new PID namespace and waits until it serves. `None`
    /// (after a line saying the test is skipped) only if the kernel refuses to create the
    /// namespace (EPERM, as in a container without CAP_SYS_ADMIN); the tests must run as root.
    #[track_caller]
    pub fn start(group: &Group, args: &[&str]) -> Option<Namespaced> {
        assert!(
            rustix::process::geteuid().is_root(),
            "a new PID namespace takes root (CAP_SYS_ADMIN); CI runs the tests as root"
        );
        let probe = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "true"])
            .output()
            .expect("run unshare (util-linux)");
        if !probe.status.success() {
            let stderr = String::from_utf8_lossy(&probe.stderr);
            if stderr.contains("Operation not permitted") {
                crate::common::skipped(&format!(
                    "this kernel refuses a new PID namespace: {stderr}"
                ));
                return None;
            }
            panic!("unshare --pid --fork true: {}: {stderr}", probe.status);
        }
        let unshare = ["unshare", "--pid", "--fork", "--kill-child"];
        let serving = spawn_in(group, netgrace_under(&unshare, args));
        let children = children_of(serving.pid());
        let [master] = children[..] else {
            panic!("unshare should have one child, the master: {children:?}");
        };
        Some(Namespaced {
            serving: Some(serving),
            master,
        })
    }

    /// unshare as a [`Serving`]: its log is the master's and the workers', and its exit status
    /// the master's.
    pub fn serving(&mut self) -> &mut Serving {
        self.serving.as_mut().expect("not exited yet")
    }

    /// Waits for unshare, so the master, to exit 0, and returns the log.
    #[track_caller]
    pub fn wait_for_exit_0(mut self) -> Vec<String> {
        self.serving
            .take()
            .expect("not exited yet")
            .wait_for_exit_0()
    }
}

impl Drop for Namespaced {
    fn drop(&mut self) {
        let Some(serving) = &self.serving else {
            return;
        };
        for master in children_of(serving.pid()) {
            // ESRCH if it has just exited: nothing left to kill.
            let _ = rustix::process::kill_process(pid(master), Signal::KILL);
        }
    }
}
