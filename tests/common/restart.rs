//! Helpers for the restart tests: a [`Master`] (the process the operator starts, which stays
//! for the life of the service) followed through its log, signalled by pid, and killed and
//! reaped with all its workers even when a test fails; and a [`TempDir`] holding a copy of the
//! binary, or a script, at the path the master restarts from.
//!
//! The master outlives its workers and reaps them itself, so a test that passes only waits for
//! its exit. For a test that fails, the master runs in a process group of its own, which its
//! workers (and scripts started in their place) inherit: [`Master`]'s drop kills the group, and
//! reaps them here, since this process is their child subreaper (prctl(2)
//! `PR_SET_CHILD_SUBREAPER`) once the master is gone.

use std::collections::HashMap;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitOptions};

use crate::common::binary::{self, counters, pids_in, Serving};
use crate::common::temp_dir::TempDir;

/// A netgrace master serving on `127.0.0.1:0`, and its log.
pub struct Master {
    serving: Serving,
    /// Where in the log the last restart began: lines before it belong to earlier events.
    restarted_at: usize,
    /// Declared after `serving`, so dropped after it: kills and reaps whatever is left.
    group: Group,
}

/// The process group the master leads, and every worker the log has named; on drop, whatever
/// is left of them is killed and reaped.
struct Group {
    leader: Pid,
    /// Workers by pid: one that left the group (setsid(2)) is not reached through it.
    workers: Vec<u32>,
}

impl Group {
    /// Makes this process the reaper of its orphaned descendants: a worker whose master was
    /// killed is then ours to reap. The attribute is process-wide; setting it again is harmless.
    #[track_caller]
    fn prepare() {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .expect("prctl(PR_SET_CHILD_SUBREAPER)");
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // ESRCH when the group is already gone: the test ended everything itself.
        let _ = rustix::process::kill_process_group(self.leader, Signal::KILL);
        // Every child of ours in the group until none is left (ECHILD); each was just killed.
        while let Ok(Some(_)) = rustix::process::waitpgid(self.leader, WaitOptions::empty()) {}
        // A master that exited reaped all its workers; one killed by a failed test left them
        // to us. Only exited ones are reaped: the pid of a worker reaped long ago may belong to
        // another test's master by now (pid_max can be as low as 32768).
        if !std::thread::panicking() {
            return;
        }
        let ours = std::process::id();
        for &worker in &self.workers {
            if parent_of(worker) == Some(ours) {
                let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
                let _ = rustix::process::waitid(WaitId::Pid(pid(worker)), options);
            }
        }
    }
}

/// Held while this process forks (spawning a master, and waiting until it serves: a few
/// milliseconds) and while it writes a program file.
///
/// A child forked while another thread has a file open for writing holds that descriptor until
/// it execs; exec(2) of the file fails with `ETXTBSY` meanwhile, for us or for a master
/// restarting from it. The test threads of this file fork only through [`Master::start`].
fn forking() -> MutexGuard<'static, ()> {
    static FORKING: Mutex<()> = Mutex::new(());
    // A test that failed while holding it left nothing half done.
    FORKING.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Master {
    /// Starts `command` ([`binary::netgrace`] or [`binary::netgrace_at`]) in a process group of its
    /// own, and waits until its first worker serves.
    ///
    /// A master that never serves is killed by [`Serving`]'s own drop; its workers then stop by
    /// themselves (their control channel closes) and are reaped when this process exits.
    #[track_caller]
    pub fn start(mut command: Command) -> Master {
        command.process_group(0);
        Group::prepare();
        let serving = {
            let _forking = forking();
            Serving::spawn(command)
        };
        let group = Group {
            leader: pid(serving.pid()),
            workers: serving.workers.clone(),
        };
        Master {
            restarted_at: serving.log.len(),
            serving,
            group,
        }
    }

    /// The master's pid: the one the operator started and signals.
    pub fn pid(&self) -> u32 {
        self.serving.pid()
    }

    /// The address the service listens on.
    pub fn addr(&self) -> SocketAddr {
        self.serving.addr
    }

    /// The first generation's workers, from the `serving:` line.
    pub fn workers(&self) -> Vec<u32> {
        self.serving.workers.clone()
    }

    /// Every log line received so far.
    pub fn log(&self) -> &[String] {
        &self.serving.log
    }

    /// A client with read and write timeouts.
    #[track_caller]
    pub fn connect(&self) -> TcpStream {
        self.serving.connect()
    }

    /// Sends `signal` to the master (not reaped yet, so the pid is still its own).
    #[track_caller]
    pub fn signal(&self, signal: Signal) {
        rustix::process::kill_process(pid(self.pid()), signal)
            .unwrap_or_else(|err| panic!("kill -{signal:?} {}: {err}", self.pid()));
    }

    /// Returns the first log line since the last [`Master::restart`] that contains `needle`,
    /// waiting (bounded) for it if it has not arrived yet.
    ///
    /// Since the last restart, not only after the line waited for before: the master and its
    /// workers write to one log, and the old worker's report may come before or after the
    /// master's `restart complete:` line, whichever process runs first.
    #[track_caller]
    pub fn wait_for(&mut self, needle: &str) -> String {
        let seen = self.serving.log[self.restarted_at..]
            .iter()
            .find(|line| line.contains(needle));
        match seen {
            Some(line) => line.clone(),
            None => self.serving.wait_for(needle),
        }
    }

    /// Sends SIGHUP and returns the new workers the master says it started.
    #[track_caller]
    pub fn restart(&mut self) -> Vec<u32> {
        self.restarted_at = self.serving.log.len();
        self.signal(Signal::HUP);
        let line = self.wait_for("SIGHUP: restarting from ");
        let new = pids_in(&line);
        self.group.workers.extend(&new);
        assert!(!new.is_empty(), "{line}");
        new
    }

    /// Waits for `restart complete:` naming `new` as the serving workers; returns the old
    /// ones it names, which hand over.
    #[track_caller]
    pub fn wait_for_restart_complete(&mut self, new: &[u32]) -> Vec<u32> {
        let line = self.wait_for("restart complete: ");
        let (serving, old) = line.split_once(';').unwrap_or((&line, ""));
        assert_eq!(pids_in(serving), new, "{line}");
        pids_in(old)
    }

    /// Waits for the outcome of the last restart, asserts that it failed, and returns the
    /// master's `restart failed:` line. Fails at once if instead the restart completed.
    #[track_caller]
    pub fn wait_for_restart_failed(&mut self) -> String {
        // Matches `restart failed: ` and `restart complete: `, not `SIGHUP: restarting`.
        let line = self.wait_for("restart ");
        assert!(
            line.contains("restart failed: "),
            "the restart did not fail: {line}"
        );
        line
    }

    /// Waits for the next worker's `worker stopped:` report, asserts that it has each
    /// `(counter, value)` in `expected`, and returns all its counters.
    #[track_caller]
    pub fn wait_for_worker_report(&mut self, expected: &[(&str, &str)]) -> HashMap<String, String> {
        let line = self.wait_for("worker stopped: ");
        let report = counters(&line);
        for (counter, value) in expected {
            assert_eq!(
                report.get(*counter).map(String::as_str),
                Some(*value),
                "{counter} in {line:?}"
            );
        }
        report
    }

    /// Waits for the master to log that worker `pid` exited, and returns how (`exit status:
    /// 0`, `signal: 15 (SIGTERM)`).
    #[track_caller]
    pub fn wait_for_worker_exit(&mut self, pid: u32) -> String {
        let line = self.wait_for(&format!("worker pid {pid} exited ("));
        let (_, how) = line.split_once(" exited (").unwrap_or_default();
        how.strip_suffix(')').unwrap_or(how).to_owned()
    }

    /// Asserts that the master has not exited: a supervisor waiting on the pid it started
    /// would see nothing.
    #[track_caller]
    pub fn assert_still_running(&self) {
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        let status = rustix::process::waitid(WaitId::Pid(pid(self.pid())), options);
        assert!(
            matches!(status, Ok(None)),
            "the master, pid {}: {status:?}",
            self.pid()
        );
    }

    /// Sends SIGTERM, waits (bounded) until every process that shares the log has exited and
    /// the master has exited 0 after its `shutdown complete: ... stop=graceful` line; returns
    /// the whole log.
    #[track_caller]
    pub fn stop(self) -> Vec<String> {
        self.signal(Signal::TERM);
        self.wait_for_exit_0()
    }

    /// Like [`Master::stop`], for a master already told to stop.
    #[track_caller]
    pub fn wait_for_exit_0(self) -> Vec<String> {
        let Master { serving, group, .. } = self;
        let log = serving.wait_for_exit_0();
        binary::assert_report(&log, &[("stop", "graceful")]);
        drop(group);
        log
    }
}

#[track_caller]
fn pid(raw: u32) -> Pid {
    i32::try_from(raw)
        .ok()
        .and_then(Pid::from_raw)
        .unwrap_or_else(|| panic!("not a pid: {raw}"))
}

/// How many lines of `log` contain `needle`.
pub fn count(log: &[String], needle: &str) -> usize {
    log.iter().filter(|line| line.contains(needle)).count()
}

/// The parent of `pid` from `/proc/PID/stat` (`None`: no such process).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": the fields after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// What `/proc/PID/exe` names.
#[track_caller]
pub fn exe(pid: u32) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap_or_else(|err| panic!("read /proc/{pid}/exe: {err}"))
}

/// Program files installed in a [`TempDir`] as an upgrade installs them; under the lock of
/// [`forking`], so that no child forked meanwhile holds one open for writing.
impl TempDir {
    /// A copy of the binary in this directory, installed under `name` the way `install` does it
    /// (written beside it, then renamed over it): a new file, never the running one rewritten.
    #[track_caller]
    pub fn install_binary(&self, name: &str) -> PathBuf {
        let staged = self.path().join(format!(".{name}.new"));
        let _forking = forking();
        fs::copy(env!("CARGO_BIN_EXE_netgrace"), &staged).expect("copy the binary");
        self.rename_into(&staged, name)
    }

    /// Installs a shell script with `body` under `name` (written beside it, then renamed over
    /// it); returns its path.
    #[track_caller]
    pub fn install_script(&self, name: &str, body: &str) -> PathBuf {
        let staged = self.path().join(format!(".{name}.new"));
        let _forking = forking();
        fs::write(&staged, format!("#!/bin/sh\n{body}\n")).expect("write the script");
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).expect("chmod the script");
        self.rename_into(&staged, name)
    }

    #[track_caller]
    fn rename_into(&self, staged: &Path, name: &str) -> PathBuf {
        let path = self.path().join(name);
        fs::rename(staged, &path).expect("rename into place");
        path
    }
}
