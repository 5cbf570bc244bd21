//! Helpers for the restart tests: a netgrace and its successors, followed through their shared
//! stderr, signalled and reaped by pid; and a temporary directory holding a copy of the binary
//! that a test can replace.
//!
//! A successor is started by its predecessor, so it is not our child: once the predecessor
//! exits it would be reparented to init, out of reach. The test process therefore makes itself
//! a child subreaper (prctl(2) `PR_SET_CHILD_SUBREAPER`): orphaned successors become our
//! children, and [`Lineage`]'s drop kills and reaps every one the log has named, even when the
//! test fails.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Once;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitOptions};

use crate::common::{self, binary, TIMEOUT};

/// The original netgrace (our child) and every successor its log names.
pub struct Lineage {
    original: Child,
    /// The address from the original's `listening on` line; successors serve the same socket.
    pub addr: SocketAddr,
    /// Every process of the lineage writes to the one stderr pipe, so this closes only when the
    /// last of them has exited.
    lines: Receiver<String>,
    /// Every stderr line received so far: for assertions and for failure messages.
    pub log: Vec<String>,
    /// Successors in the order they were started: each is the child of the one before (the
    /// first, of the original) until that one exits, and then ours.
    successors: Vec<u32>,
}

/// Makes this process the reaper of its orphaned descendants. Once per process: the attribute
/// is process-wide and every test of this file wants it.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .expect("prctl(PR_SET_CHILD_SUBREAPER)");
    });
}

/// Like [`binary::netgrace`], but runs `program` (a copy of the binary, or what replaced it).
pub fn netgrace_at(program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(["-l", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    command
}

impl Lineage {
    /// Starts the binary with `args` and waits until it logs the address it listens on.
    #[track_caller]
    pub fn start(args: &[&str]) -> Lineage {
        Lineage::spawn(binary::netgrace(args))
    }

    /// Spawns `command` and waits until it logs the address it listens on.
    #[track_caller]
    pub fn spawn(mut command: Command) -> Lineage {
        become_subreaper();
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut original = spawn_retrying(&mut command);
        let lines = binary::follow_stdout(&mut original);
        let mut lineage = Lineage {
            original,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
            log: Vec::new(),
            successors: Vec::new(),
        };
        // The binary installs its signal handlers before this line, so signals are safe after it.
        let line = lineage.wait_for("listening on ");
        lineage.addr = binary::listening_addr(&line);
        lineage
    }

    /// The original process's pid.
    pub fn original(&self) -> u32 {
        self.original.id()
    }

    /// Sends `signal` to `pid`, a process of this lineage.
    #[track_caller]
    pub fn signal(&self, pid: u32, signal: Signal) {
        rustix::process::kill_process(pid_of(pid), signal)
            .unwrap_or_else(|err| panic!("kill -{signal:?} {pid}: {err}"));
    }

    /// Sends SIGHUP to `pid` and returns the pid of the successor it starts.
    #[track_caller]
    pub fn restart(&mut self, pid: u32) -> u32 {
        self.signal(pid, Signal::HUP);
        let line = self.wait_for("SIGHUP: restarting; successor pid ");
        pid_after(&line, "successor pid ")
    }

    /// Waits (bounded by [`TIMEOUT`]) for a stderr line containing `needle`, and returns it.
    #[track_caller]
    pub fn wait_for(&mut self, needle: &str) -> String {
        match self.wait_for_within(needle, TIMEOUT) {
            Ok(line) => line,
            Err(err) => panic!(
                "no log line with {needle:?}: {err:?}; stderr:\n{}",
                self.log.join("\n")
            ),
        }
    }

    /// Waits at most `within` for a stderr line containing `needle`, and returns it.
    pub fn wait_for_within(
        &mut self,
        needle: &str,
        within: Duration,
    ) -> Result<String, RecvTimeoutError> {
        let deadline = Instant::now() + within;
        loop {
            match self.next_line(deadline) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Waits for the next `shutdown complete:` line (some process of the lineage logs it last),
    /// asserts that its report has each `(counter, value)` in `expected`, and returns all its
    /// counters.
    #[track_caller]
    pub fn assert_next_report(&mut self, expected: &[(&str, &str)]) -> HashMap<String, String> {
        let line = self.wait_for("shutdown complete: ");
        let report = binary::report(std::slice::from_ref(&line));
        for (counter, value) in expected {
            assert_eq!(
                report.get(*counter).map(String::as_str),
                Some(*value),
                "{counter} in {line:?}; stderr:\n{}",
                self.log.join("\n")
            );
        }
        report
    }

    /// Waits (bounded by [`TIMEOUT`]) until every process of the lineage has exited, which
    /// closes their shared stderr; returns the whole log.
    #[track_caller]
    pub fn wait_for_all_gone(&mut self) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.next_line(deadline) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return self.log.clone(),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "some process still holds the stderr of the lineage after {TIMEOUT:?}; \
                     stderr:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The next stderr line, also kept in `log`, and any successor it names remembered.
    ///
    /// Fails the test if the line holds two log records: the processes of a lineage share one
    /// stderr, and a logger that wrote a record in more than one write(2) would let another
    /// process's record land inside it (`src/bin/netgrace/logger.rs`).
    #[track_caller]
    fn next_line(&mut self, deadline: Instant) -> Result<String, RecvTimeoutError> {
        let line = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        // Remembered first: a successor named in a spliced line must still be killed on drop.
        self.remember(&line);
        let records = (0..line.len())
            .filter(|&i| line.is_char_boundary(i) && is_timestamp(&line[i..]))
            .count();
        assert!(
            records <= 1,
            "two log records spliced into one line: {line}"
        );
        Ok(line)
    }

    fn remember(&mut self, line: &str) {
        if line.contains("SIGHUP: restarting; successor pid ") {
            self.successors.push(pid_after(line, "successor pid "));
        }
        self.log.push(line.to_owned());
    }

    /// Waits (bounded by [`TIMEOUT`]) for the original to exit and returns its exit code
    /// (`None`: killed by a signal).
    #[track_caller]
    pub fn wait_for_original_exit(&mut self) -> Option<i32> {
        wait_until_exited(self.original());
        self.original.wait().expect("reap the original").code()
    }

    /// Waits (bounded by [`TIMEOUT`]) for `successor` to exit, reaps it and returns its exit code
    /// (`None`: killed by a signal). Its predecessor must have exited: only then is it ours.
    #[track_caller]
    pub fn wait_for_successor_exit(&mut self, successor: u32) -> Option<i32> {
        wait_until_exited(successor);
        let (_, status) = rustix::process::waitpid(Some(pid_of(successor)), WaitOptions::empty())
            .unwrap_or_else(|err| panic!("reap successor {successor}: {err}"))
            .expect("waitpid without NOHANG returns a status");
        status.exit_status()
    }

    /// A client with read and write timeouts of [`TIMEOUT`].
    #[track_caller]
    pub fn connect(&self) -> TcpStream {
        common::connect(self.addr)
    }
}

impl Drop for Lineage {
    fn drop(&mut self) {
        // Lines not read yet may name successors the test never looked at.
        while let Ok(line) = self.lines.try_recv() {
            self.remember(&line);
        }
        // Both are no-ops once the test has reaped the original itself. Reaping it first makes
        // its unreaped children ours, and so on down the line.
        let _ = self.original.kill();
        let _ = self.original.wait();
        let ours = std::process::id();
        for &pid in &self.successors {
            // A successor its predecessor reaped (a failed one) is gone, and its pid may belong
            // to another process by now: only a child of ours is certainly the one we named.
            if parent_of(pid) != Some(ours) {
                continue;
            }
            let _ = rustix::process::kill_process(pid_of(pid), Signal::KILL);
            let _ = rustix::process::waitpid(Some(pid_of(pid)), WaitOptions::empty());
        }
    }
}

/// Spawns `command`, retrying while the program file is busy: a test thread that forks while
/// another has just written a copy of the binary holds that file open for writing until its
/// child execs, and exec(2) then fails with `ETXTBSY` for a moment.
#[track_caller]
fn spawn_retrying(command: &mut Command) -> Child {
    const ATTEMPTS: u32 = 100;
    for _ in 1..ATTEMPTS {
        match command.spawn() {
            Err(err) if err.kind() == io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(10));
            }
            spawned => return spawned.expect("spawn netgrace"),
        }
    }
    command.spawn().expect("spawn netgrace")
}

/// Waits (bounded by [`TIMEOUT`]) until `pid`, a child of ours, has exited, without reaping it
/// (`WNOWAIT`), so its pid stays ours until the caller reaps it. The wait runs on a thread,
/// which a timeout leaves blocked until the lineage's drop kills the process.
#[track_caller]
fn wait_until_exited(pid: u32) {
    let (tx, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let result = loop {
            match rustix::process::waitid(
                WaitId::Pid(pid_of(pid)),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {
                Err(rustix::io::Errno::INTR) => {}
                other => break other.map(|_| ()),
            }
        };
        let _ = tx.send(result);
    });
    match exited.recv_timeout(TIMEOUT) {
        Ok(Ok(())) => {}
        Ok(Err(err)) => panic!("wait for pid {pid}: {err}"),
        Err(_) => panic!("pid {pid} did not exit within {TIMEOUT:?}"),
    }
}

/// Whether `text` starts with a timestamp such as `2024-01-31T12:00:00.000Z`.
fn is_timestamp(text: &str) -> bool {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    let text = text.as_bytes();
    text.len() >= SHAPE.len()
        && SHAPE.iter().zip(text).all(|(&shape, &byte)| match shape {
            b'd' => byte.is_ascii_digit(),
            _ => byte == shape,
        })
}

/// The parent of `pid` from `/proc/PID/stat` (`None`: no such process).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": the fields after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The number that follows `prefix` in `line`.
#[track_caller]
fn pid_after(line: &str, prefix: &str) -> u32 {
    line.split_once(prefix)
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no pid after {prefix:?} in {line:?}"))
}

fn pid_of(pid: u32) -> Pid {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .unwrap_or_else(|| panic!("not a pid: {pid}"))
}

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory whose name holds `name`, this process's pid and a counter.
    #[track_caller]
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("netgrace-{name}-{}-{unique}", std::process::id()));
        fs::create_dir(&path).unwrap_or_else(|err| panic!("create {}: {err}", path.display()));
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A copy of the binary in this directory, installed under `name` the way `install` does it
    /// (written beside it, then renamed over it); returns its path.
    #[track_caller]
    pub fn install_binary(&self, name: &str) -> PathBuf {
        let staged = self.0.join(format!(".{name}.new"));
        fs::copy(env!("CARGO_BIN_EXE_netgrace"), &staged).expect("copy the binary");
        self.rename_into(&staged, name)
    }

    /// Installs a shell script with `body` under `name` (written beside it, then renamed over
    /// it); returns its path.
    #[track_caller]
    pub fn install_script(&self, name: &str, body: &str) -> PathBuf {
        let staged = self.0.join(format!(".{name}.new"));
        fs::write(&staged, format!("#!/bin/sh\n{body}\n")).expect("write the script");
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).expect("chmod the script");
        self.rename_into(&staged, name)
    }

    fn rename_into(&self, staged: &Path, name: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::rename(staged, &path).expect("rename into place");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A leftover directory in the temporary directory is harmless; failing the test for it is not.
        let _ = fs::remove_dir_all(&self.0);
    }
}
