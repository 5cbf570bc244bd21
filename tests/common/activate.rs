//! Helpers for the tests of what the binary inherits and what it passes on to its workers
//! (tests/activation.rs, tests/notify.rs): descriptors mapped into the master as systemd maps
//! them, `LISTEN_PID` set to the master's own pid, a run that must end by itself, and what a
//! process holds as `/proc` shows it.
// Not every test uses every helper.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::sync::mpsc;

use command_fds::{CommandFdExt, FdMapping};

use crate::common::binary::netgrace_under;
use crate::common::recv;
use crate::group::Group;

/// The shell script that makes `LISTEN_PID` name netgrace itself, as systemd sets it: the
/// shell exports its own pid, then becomes its arguments (`exec` keeps the pid and every
/// descriptor).
const EXPORT_OWN_PID: &str = "export LISTEN_PID=$$; exec \"$@\"";

/// `netgrace ARGS`, run through `wrapper` (a program that executes the rest in the same
/// process, e.g. `prlimit`), with `LISTEN_PID` set to its own pid.
pub fn with_own_listen_pid(wrapper: &[&str], args: &[&str]) -> Command {
    let mut under = vec!["sh", "-c", EXPORT_OWN_PID, "sh"];
    under.extend_from_slice(wrapper);
    netgrace_under(&under, args)
}

/// Gives `command` each of `fds` at the descriptor number paired with it. The command owns them
/// from here on: once it has spawned and is dropped, the test holds no copy.
#[track_caller]
pub fn map_descriptors(command: &mut Command, fds: Vec<(i32, OwnedFd)>) {
    let mappings = fds
        .into_iter()
        .map(|(child_fd, parent_fd)| FdMapping {
            parent_fd,
            child_fd,
        })
        .collect();
    command.fd_mappings(mappings).expect("map descriptors");
}

/// Passes `fds` at descriptors 3, 4, ... with `LISTEN_FDS` and a systemd-like `LISTEN_FDNAMES`,
/// as systemd passes the sockets of a `.socket` unit. `LISTEN_PID` is the caller's to set.
#[track_caller]
pub fn pass_listen_fds(command: &mut Command, fds: Vec<OwnedFd>) {
    let names = vec!["netgrace.socket"; fds.len()].join(":");
    command
        .env("LISTEN_FDS", fds.len().to_string())
        .env("LISTEN_FDNAMES", names);
    map_descriptors(command, (3..).zip(fds).collect());
}

/// How a run that ends by itself ended: its status and every line of its output (stdout and
/// stderr together, in the order written).
pub struct Exited {
    pub status: ExitStatus,
    pub output: Vec<String>,
}

/// Runs `command` until it exits by itself; fails the test if that takes longer than
/// [`crate::common::TIMEOUT`]. The process runs in a group of its own, killed and reaped even
/// if the test fails, so a regression that serves instead of exiting leaves nothing behind.
#[track_caller]
pub fn run_to_exit(mut command: Command) -> Exited {
    let group = Group::new();
    let (reader, writer) = std::io::pipe().expect("pipe");
    command
        .stdout(writer.try_clone().expect("dup the pipe"))
        .stderr(writer)
        .process_group(0);
    let mut child = command.spawn().expect("spawn netgrace");
    group.adopt(child.id());
    // The command holds copies of the pipe and of every mapped descriptor: EOF needs them gone.
    drop(command);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(reader)
            .lines()
            .map_while(Result::ok)
            .collect();
        // The receiver is gone only if the test already failed.
        let _ = tx.send(lines);
    });
    let output = recv(&rx, "exit of netgrace (EOF on its output)");
    let status = child.wait().expect("wait for netgrace");
    Exited { status, output }
}

/// The environment `pid` was started with (`/proc/PID/environ`: what its parent passed to
/// exec(2); a process's own setenv and unsetenv do not show there).
#[track_caller]
pub fn environ(pid: u32) -> Vec<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read /proc/PID/environ");
    environ
        .split(|&byte| byte == 0)
        .filter(|var| !var.is_empty())
        .map(|var| String::from_utf8_lossy(var).into_owned())
        .collect()
}

/// The descriptors `pid` holds now, each with what it refers to (`socket:[INODE]`,
/// `pipe:[INODE]`, a path), from `/proc/PID/fd`.
#[track_caller]
pub fn descriptors(pid: u32) -> Vec<(i32, String)> {
    let dir = format!("/proc/{pid}/fd");
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(&dir)
        .expect("read /proc/PID/fd")
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            // A descriptor closed since the directory was read has no link any more.
            let target = std::fs::read_link(entry.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    fds.sort();
    fds
}

/// What `pid`'s descriptor `fd` refers to; `None` if it is not open.
pub fn target(pid: u32, fd: i32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    Some(target.to_string_lossy().into_owned())
}

/// What a descriptor of this test process refers to, to look for in another process.
#[track_caller]
pub fn own_target(fd: &impl AsRawFd) -> String {
    target(std::process::id(), fd.as_raw_fd()).expect("a descriptor of ours is open")
}
