//! The netgrace of one drive: its master, which this benchmark starts and signals (its pid never
//! changes), and the workers that serve, which the master starts, replaces on SIGHUP and reaps.
//!
//! The workers are the master's children, not ours, so everything about them comes from the
//! master's log (every process writes to the one pipe the master inherited from us): which pids
//! serve (`serving: ... pids W`), when a restart's new workers were started (`SIGHUP:
//! restarting`), when they all serve and which old ones hand over (`restart complete: ...; old
//! workers hand over and drain: pids A`), and when and how each old one exited (`worker pid A
//! exited (exit status: 0)`).

use std::io;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::timing::{logged_ms, ms_of_day, run_delay, since_ms, thread_delays};
use crate::log::{self, Log};
use crate::process;

/// The master's line once every new worker serves; the new pids follow it, the old ones
/// follow `HANDING_OVER`.
const COMPLETE: &str = "restart complete: ";
const HANDING_OVER: &str = "drain: ";
/// The master's line once it has started the new workers.
const SPAWNED: &str = "SIGHUP: restarting";
/// The master's lines when a restart does not happen: it failed, or the SIGHUP was ignored.
const FAILED: [&str; 2] = ["restart failed", "SIGHUP ignored"];
/// The master's line when a worker has exited and been reaped: "worker pid A exited (STATUS)".
const EXITED: &str = " exited (";
/// Longest wait for `listening on` and `serving:`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the old workers to exit once they hand over, or for the master after
/// SIGTERM: a drain of a few connections, each answered within its first-bytes grace of 1 s.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failure, how long the master has to stop at once (it kills its workers after 1 s).
const KILL_TIMEOUT: Duration = Duration::from_secs(3);

/// The phases of one completed restart, each from the SIGHUP, as this process read the lines
/// that mark them (the pipe adds microseconds).
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// The master's `SIGHUP: restarting`: it has started every new worker (each has exec'd).
    pub spawned: Option<Duration>,
    /// The master's `restart complete`: every new worker said `ready`; the old ones hand over.
    pub serving: Duration,
    /// The master's `worker pid A exited` for the last old worker: every drain is over.
    pub exited: Duration,
    /// The longest any new worker's main thread (the one that says `ready`) had waited for a
    /// CPU (runnable, not running) by the time `serving` was read.
    pub waited: Duration,
    /// The longest any thread of the master waited for a CPU from the SIGHUP until `serving`.
    pub master_waited: Duration,
    /// The longest any thread of an old worker waited for a CPU over the same span: they serve
    /// every client until the hand-over.
    pub old_waited: Duration,
    /// `spawned`, `serving` and `exited` by netgrace's own clock: the lines' timestamps (whole
    /// ms, UTC) against our wall clock at the SIGHUP. Far below ours, they say that this
    /// benchmark, not the server, was late.
    pub logged: [Option<i64>; 3],
}

/// How one SIGHUP went.
pub enum Restart {
    /// The new workers serve and the old ones exited, each with its status (`exit status: 0`).
    Done {
        phases: Phases,
        statuses: Vec<String>,
    },
    /// The master said the restart failed (or ignored the SIGHUP); the old workers serve on.
    Failed { after: Duration, line: String },
}

/// A netgrace master and the workers it says serve; see the module doc.
pub struct Master {
    pub addr: SocketAddr,
    child: Child,
    /// The workers that serve now, from the master's last `serving:` or `restart complete`.
    workers: Vec<u32>,
    log: Log,
    /// Lines that say a drain waited for a connection's first bytes (the first-bytes grace).
    pub grace_waits: usize,
    /// Whether `stop` ran: otherwise `Drop` stops the master at once.
    stopped: bool,
}

impl Master {
    /// Starts netgrace (pinned to `cpu`; its workers inherit the affinity) with `flags` after
    /// `-l 127.0.0.1:0`, and waits until its workers serve.
    pub fn start(cpu: Option<usize>, flags: &[&str]) -> io::Result<Master> {
        let program =
            process::netgrace_override().unwrap_or_else(|| env!("CARGO_BIN_EXE_netgrace").into());
        let mut command = match cpu {
            Some(cpu) => {
                let mut taskset = Command::new("taskset");
                taskset.arg("-c").arg(cpu.to_string()).arg(&program);
                taskset
            }
            None => Command::new(&program),
        };
        // taskset execs netgrace, so its pid is the master's, and the master's argv[0] is
        // `program`: the file each restart starts workers from. RUST_LOG would hide the info
        // lines read here.
        command
            .args(["-l", "127.0.0.1:0"])
            .args(flags)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        let pipe = log::capture(&mut command)?;
        let child = command.spawn().map_err(|err| {
            let msg = format!("start {}: {err}", program.display());
            io::Error::new(err.kind(), msg)
        })?;
        // It holds our copy of the pipe's writing end: the log must end when netgrace does.
        drop(command);
        // From here on `Drop` stops the master, whatever fails next.
        let mut master = Master {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            workers: Vec::new(),
            log: Log::follow(pipe),
            grace_waits: 0,
            stopped: false,
        };
        let listening = |line: &str| log::listening_addr(line).is_some();
        let (_, line) = master.await_line(listening, START_TIMEOUT)?;
        master.addr = log::listening_addr(&line).ok_or(io::ErrorKind::InvalidData)?;
        let serving = |line: &str| !log::pids_after(line, "serving: ").is_empty();
        let (_, line) = master.await_line(serving, START_TIMEOUT)?;
        master.workers = log::pids_after(&line, "serving: ");
        Ok(master)
    }

    /// SIGHUP to the master; waits until it says the new workers serve (or that the restart
    /// failed), then until it has reaped every old worker.
    pub fn restart(&mut self, timeout: Duration) -> io::Result<Restart> {
        let master = self.child.id();
        let old_before = self.old_threads();
        let master_before = thread_delays(master);
        let wall = ms_of_day(SystemTime::now());
        let signalled = Instant::now();
        process::signal(master, libc::SIGHUP)?;
        let mut spawned: Option<(Instant, Option<i64>)> = None;
        let said = |line: &str| line.contains(COMPLETE) || FAILED.iter().any(|f| line.contains(f));
        let (at, line) = self.await_line_noting(said, timeout, |at, line| {
            if line.contains(SPAWNED) {
                spawned = Some((at, logged_ms(line)));
            }
        })?;
        let serving = at - signalled;
        // At once: the old workers exit a moment after this line, once their drains are over.
        let old_waited = longest_wait(&old_before, &self.old_threads());
        let master_waited = longest_wait(&master_before, &thread_delays(master));
        if !line.contains(COMPLETE) {
            return Ok(Restart::Failed {
                after: serving,
                line,
            });
        }
        let new = log::pids_after(&line, COMPLETE);
        let old = log::pids_after(&line, HANDING_OVER);
        let waited = (new.iter())
            .filter_map(|&pid| run_delay(pid).ok())
            .max()
            .unwrap_or_default();
        let (statuses, exited_logged) = self.await_exits(&old)?;
        self.workers = new;
        let since = |at: Instant| at.saturating_duration_since(signalled);
        let phases = Phases {
            spawned: spawned.map(|(at, _)| since(at)),
            serving,
            exited: signalled.elapsed(),
            waited,
            master_waited,
            old_waited,
            logged: [
                spawned.and_then(|(_, ms)| ms),
                logged_ms(&line),
                exited_logged,
            ]
            .map(|ms| ms.map(|ms| since_ms(wall, ms))),
        };
        Ok(Restart::Done { phases, statuses })
    }

    /// Waits for the master's `worker pid A exited (STATUS)` for every pid of `old`; returns
    /// the statuses, and the last line's timestamp.
    fn await_exits(&mut self, old: &[u32]) -> io::Result<(Vec<String>, Option<i64>)> {
        let mut statuses = Vec::with_capacity(old.len());
        let mut logged = None;
        while statuses.len() < old.len() {
            let exited = |line: &str| {
                let pid = log::pids_after(line, "worker ").first().copied();
                line.contains(EXITED) && pid.is_some_and(|pid| old.contains(&pid))
            };
            let (_, line) = self.await_line(exited, EXIT_TIMEOUT)?;
            let status = line.rsplit_once(EXITED).map_or("", |(_, s)| s);
            statuses.push(status.trim_end_matches(')').to_string());
            logged = logged_ms(&line);
        }
        Ok((statuses, logged))
    }

    /// SIGTERM to the master; it must exit 0 once its workers have.
    pub fn stop(mut self) -> io::Result<()> {
        process::signal(self.child.id(), libc::SIGTERM)?;
        let done = |line: &str| line.contains("shutdown complete") || line.contains("stopped by");
        self.await_line(done, EXIT_TIMEOUT)?;
        let status = self.child.wait()?;
        self.stopped = true;
        if !status.success() {
            let msg = format!("netgrace exited with {status}: {}", self.log.transcript());
            return Err(io::Error::other(msg));
        }
        Ok(())
    }

    /// Reads lines until one satisfies `wanted`, for at most `timeout`.
    fn await_line(
        &mut self,
        wanted: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> io::Result<(Instant, String)> {
        self.await_line_noting(wanted, timeout, |_, _| {})
    }

    /// [`Master::await_line`], with `note` shown every line read on the way.
    fn await_line_noting(
        &mut self,
        wanted: impl Fn(&str) -> bool,
        timeout: Duration,
        mut note: impl FnMut(Instant, &str),
    ) -> io::Result<(Instant, String)> {
        let grace_waits = &mut self.grace_waits;
        self.log.await_line(wanted, timeout, |at, line| {
            if line.contains("have sent nothing yet") {
                *grace_waits += 1;
            }
            note(at, line);
        })
    }

    /// Counts the grace waits among the lines logged so far.
    pub fn read_pending(&mut self) {
        while let Ok(Some((_, line))) = self.log.next(Duration::ZERO) {
            if line.contains("have sent nothing yet") {
                self.grace_waits += 1;
            }
        }
    }

    /// Each thread of each serving worker, with the time it has waited for a CPU so far.
    fn old_threads(&self) -> Vec<(String, Duration)> {
        (self.workers.iter())
            .flat_map(|&pid| thread_delays(pid))
            .collect()
    }
}

impl Drop for Master {
    /// After a failure: a second SIGINT is the master's "stop at once" (it SIGKILLs a worker
    /// still alive after 1 s, and exits last); SIGKILL if even that does not end it. Its
    /// workers, if it is killed, stop by themselves once they see it gone.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let pid = self.child.id();
        let _ = process::signal(pid, libc::SIGINT);
        // Apart, or the two may merge into one pending signal.
        std::thread::sleep(Duration::from_millis(50));
        let _ = process::signal(pid, libc::SIGINT);
        let deadline = Instant::now() + KILL_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The longest a thread waited for a CPU between two readings of the same threads.
fn longest_wait(before: &[(String, Duration)], after: &[(String, Duration)]) -> Duration {
    (after.iter())
        .filter_map(|(tid, after)| {
            let before = before.iter().find(|(t, _)| t == tid)?.1;
            Some(after.saturating_sub(before))
        })
        .max()
        .unwrap_or_default()
}
