//! The processes of one restart run: the netgrace this benchmark starts, then each successor
//! that a SIGHUP makes the serving process start, found by the log line of its predecessor.
//!
//! A successor is the child of the process it replaces, and outlives it. So this process makes
//! itself a child subreaper (`PR_SET_CHILD_SUBREAPER`, prctl(2)) for as long as a [`Lineage`]
//! lives: when a predecessor exits, its successor becomes our child, which we can wait for and
//! kill. At the end, and on any error (in `Drop`), every child of this process is killed and
//! reaped, round after round until none is left, so no server outlives the benchmark. While a
//! lineage lives, the benchmark runs nothing else: its children are the lineage's processes.
//!
//! All processes share the first one's stdout, their log (a successor inherits it), so one thread reads
//! every line of every generation, in the order they were written.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rustix::process::{self as rp, Pid, WaitOptions};

use super::timing::{logged_ms, ms_of_day, run_delay, since_ms, thread_delays};
use crate::process;

/// The old process's line once its successor serves; the pid follows "successor pid ".
const SERVING: &str = "is serving; handing over";
/// The old process's warning when its successor exited or stayed silent.
const FAILED: &str = "restart failed";
/// Longest wait for the first `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a process to exit once it has handed over or been sent SIGTERM: a drain
/// of a few connections, each answered within its first-bytes grace of 1 s.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rounds of kill-and-reap at the end: each round may orphan the next generation to us.
const SWEEP_ROUNDS: usize = 20;
/// Longest wait, at the end, for the log reader to see EOF once every server is gone.
const LOG_EOF_TIMEOUT: Duration = Duration::from_secs(1);
/// Lines of the servers' log kept for error messages.
const TRANSCRIPT_LINES: usize = 200;

/// The phases of one completed restart, each from the SIGHUP, as this process read the lines
/// that mark them (the pipe adds microseconds).
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// The old process's "SIGHUP: restarting; successor pid N": it has forked, and the successor
    /// has exec'd (std's spawn returns once the exec succeeded).
    pub spawned: Option<Duration>,
    /// The successor's "listening on ... (inherited": its server exists; "ready" comes next.
    pub listening: Option<Duration>,
    /// The old process's "is serving; handing over": it read "ready" and hands over.
    pub serving: Duration,
    /// The old process exited (reaped by us): its drain is over.
    pub exited: Duration,
    /// How long the successor had waited for a CPU (runnable, not running) by the time
    /// `serving` was read: the share of its start that the machine's load cost.
    pub waited: Duration,
    /// The longest any thread of the old process waited for a CPU from the SIGHUP until
    /// `serving` was read (the old threads that existed at the SIGHUP).
    pub old_waited: Duration,
    /// `spawned` and `serving` by netgrace's own clock: the lines' timestamps (whole ms, UTC)
    /// against our wall clock at the SIGHUP. Far below ours, they say that this benchmark, not
    /// the server, was late.
    pub logged: (Option<i64>, Option<i64>),
}

/// How one SIGHUP went.
pub enum Restart {
    /// The old process logged that its successor serves, then exited 0 (or `status`).
    Done { phases: Phases, status: String },
    /// The old process logged `restart failed`, and still serves.
    Failed { after: Duration, line: String },
}

/// The serving process and its predecessors' log; see the module doc.
pub struct Lineage {
    pub addr: SocketAddr,
    /// The pid that serves now: the first process, then each successor once adopted.
    current: u32,
    /// Each line of the servers' log and when our reader had it.
    lines: Receiver<(Instant, String)>,
    /// When the lines that mark a restart's phases were read, since the last SIGHUP.
    spawned_at: Option<Instant>,
    listening_at: Option<Instant>,
    /// The timestamp (ms of the day, UTC) of the last "SIGHUP: restarting" line.
    spawned_logged: Option<i64>,
    /// The last lines read, for error messages.
    transcript: Vec<String>,
    /// Lines that say a drain waited for a connection's first bytes (the first-bytes grace).
    pub grace_waits: usize,
    log: Option<JoinHandle<()>>,
}

impl Lineage {
    /// Makes this process a subreaper, then starts netgrace (pinned to `cpu`) with `flags`
    /// after `-l 127.0.0.1:0`, and waits for its address.
    pub fn start(cpu: Option<usize>, flags: &[&str]) -> io::Result<Lineage> {
        rp::set_child_subreaper(Some(rp::getpid()))?;
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
        // taskset execs netgrace, so its pid is netgrace's, and netgrace's argv[0] is `program`:
        // the path each successor is started from. RUST_LOG would hide the info lines read here.
        command
            .args(["-l", "127.0.0.1:0"])
            .args(flags)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().map_err(|err| {
            // Nothing was started: no lineage, so stop being a subreaper here.
            let _ = rp::set_child_subreaper(None);
            let msg = format!("start {}: {err}", program.display());
            io::Error::new(err.kind(), msg)
        })?;
        let log = child.stdout.take().ok_or(io::ErrorKind::BrokenPipe)?;
        let (send, lines) = mpsc::channel();
        let log = std::thread::spawn(move || {
            for line in BufReader::new(log).lines() {
                let Ok(line) = line else { break };
                if send.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        // From here on `Drop` kills and reaps whatever was started, whatever fails next.
        let mut lineage = Lineage {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            current: child.id(),
            lines,
            spawned_at: None,
            listening_at: None,
            spawned_logged: None,
            transcript: Vec::new(),
            grace_waits: 0,
            log: Some(log),
        };
        let (_, line) = lineage.await_line(|line| line.contains("listening on "), START_TIMEOUT)?;
        let addr = line.rsplit_once("listening on ").map_or("", |(_, a)| a);
        lineage.addr = addr
            .trim()
            .parse()
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, format!("{addr}: {err}")))?;
        Ok(lineage)
    }

    /// SIGHUP to the serving process; waits until it says its successor serves (or that the
    /// restart failed), then until it has exited, and adopts the successor as the current one.
    pub fn restart(&mut self, timeout: Duration) -> io::Result<Restart> {
        let old = self.current;
        (self.spawned_at, self.listening_at, self.spawned_logged) = (None, None, None);
        let old_before = thread_delays(old);
        let wall = ms_of_day(SystemTime::now());
        let signalled = Instant::now();
        process::signal(old, libc::SIGHUP)?;
        let said = |line: &str| line.contains(SERVING) || line.contains(FAILED);
        let (at, line) = self.await_line(said, timeout)?;
        let serving = at - signalled;
        // At once: the old process exits a moment after this line, once its drain is over.
        // Should it be gone already, only its main thread is left to read (a zombie until
        // reaped), and the figure covers that thread alone.
        let old_after = thread_delays(old);
        if line.contains(FAILED) {
            return Ok(Restart::Failed {
                after: serving,
                line,
            });
        }
        let pid = line
            .split("successor pid ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|pid| pid.parse().ok());
        self.current = pid.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("no pid in: {line}"))
        })?;
        let waited = run_delay(self.current).unwrap_or_default();
        let old_waited = (old_after.into_iter())
            .filter_map(|(tid, after)| {
                let before = old_before.iter().find(|(t, _)| *t == tid)?.1;
                Some(after.saturating_sub(before))
            })
            .max()
            .unwrap_or_default();
        let status = wait_exit(old, EXIT_TIMEOUT)?;
        let since = |at: Option<Instant>| at.map(|at| at.saturating_duration_since(signalled));
        let phases = Phases {
            spawned: since(self.spawned_at),
            listening: since(self.listening_at),
            serving,
            exited: signalled.elapsed(),
            waited,
            old_waited,
            logged: (
                self.spawned_logged.map(|ms| since_ms(wall, ms)),
                logged_ms(&line).map(|ms| since_ms(wall, ms)),
            ),
        };
        Ok(Restart::Done { phases, status })
    }

    /// SIGTERM to the serving process; it must exit 0. Then kills and reaps anything left.
    pub fn stop(mut self) -> io::Result<()> {
        let pid = self.current;
        process::signal(pid, libc::SIGTERM)?;
        let status = wait_exit(pid, EXIT_TIMEOUT)?;
        self.keep_lines();
        if status != "exit status: 0" {
            let msg = format!("netgrace pid {pid}: {status}: {}", self.transcript());
            return Err(io::Error::other(msg));
        }
        Ok(())
    }

    /// Reads lines until one satisfies `wanted`, for at most `timeout`; keeps them all in the
    /// transcript.
    fn await_line(
        &mut self,
        wanted: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> io::Result<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, line) = match self.lines.recv_timeout(left) {
                Ok(read) => read,
                Err(RecvTimeoutError::Timeout) => {
                    let msg = format!("no such line within {timeout:?}: {}", self.transcript());
                    return Err(io::Error::new(io::ErrorKind::TimedOut, msg));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let msg = format!("every netgrace exited: {}", self.transcript());
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
                }
            };
            self.keep(at, line.clone());
            if wanted(&line) {
                return Ok((at, line));
            }
        }
    }

    /// Moves the lines read so far into the transcript.
    pub fn keep_lines(&mut self) {
        while let Ok((at, line)) = self.lines.try_recv() {
            self.keep(at, line);
        }
    }

    fn keep(&mut self, at: Instant, line: String) {
        if line.contains("have sent nothing yet") {
            self.grace_waits += 1;
        }
        if line.contains("SIGHUP: restarting") {
            self.spawned_at = Some(at);
            self.spawned_logged = logged_ms(&line);
        }
        if line.contains("(inherited at descriptor 3") {
            self.listening_at = Some(at);
        }
        if self.transcript.len() == TRANSCRIPT_LINES {
            self.transcript.remove(0);
        }
        self.transcript.push(line);
    }

    /// The last lines of the servers' log, the newest last.
    pub fn transcript(&self) -> String {
        let last = self.transcript.len().saturating_sub(12);
        self.transcript[last..].join(" | ")
    }
}

impl Drop for Lineage {
    /// Kills and reaps every child of this process, then stops being a subreaper.
    fn drop(&mut self) {
        for _ in 0..SWEEP_ROUNDS {
            let children = children();
            if children.is_empty() {
                break;
            }
            for pid in &children {
                // Our unreaped child: its pid cannot have been reused.
                let _ = rp::kill_process(*pid, rp::Signal::KILL);
            }
            for pid in &children {
                let _ = rp::waitpid(Some(*pid), WaitOptions::empty());
            }
        }
        let _ = rp::set_child_subreaper(None);
        // Every writer of the log pipe is gone, so the reader is at EOF or about to be.
        if let Some(log) = self.log.take() {
            let deadline = Instant::now() + LOG_EOF_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.lines.recv_timeout(left) {
                    Ok((at, line)) => self.keep(at, line),
                    // The reader met EOF and dropped its end of the channel.
                    Err(RecvTimeoutError::Disconnected) => {
                        let _ = log.join();
                        break;
                    }
                    // Something still holds the pipe: leave the reader, which ends at EOF.
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
        }
    }
}

/// Waits until `pid` (our child) exits, at most `timeout`, reaps it, and returns its status.
fn wait_exit(number: u32, timeout: Duration) -> io::Result<String> {
    let pid = raw_pid(number)?;
    // A pidfd turns readable when the process exits (pidfd_open(2)); poll gives the timeout
    // that waitpid lacks.
    let pidfd = rp::pidfd_open(pid, rp::PidfdFlags::empty())?;
    let mut fds = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll reads and writes one pollfd of a valid array we own; the pidfd stays open
    // for the whole call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, millis) };
    match ready {
        // The timeout: the process still runs; `Drop` of the lineage kills it.
        0 => {
            let msg = format!("netgrace pid {number} still runs after {timeout:?}");
            return Err(io::Error::new(io::ErrorKind::TimedOut, msg));
        }
        n if n < 0 => return Err(io::Error::last_os_error()),
        _ => {}
    }
    match rp::waitpid(Some(pid), WaitOptions::NOHANG)? {
        Some((_, status)) => Ok(match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => format!("exit status: {code}"),
            (_, Some(signal)) => format!("signal: {signal}"),
            _ => format!("{status:?}"),
        }),
        // Readable pidfd, yet not reapable: it is not our child (its parent still lives).
        None => Ok("exited; reaped by its parent".to_string()),
    }
}

fn raw_pid(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("pid {pid}")))
}

/// Every process whose parent is this one, from `/proc/PID/stat`.
fn children() -> Vec<Pid> {
    let me = rp::getpid().as_raw_nonzero().get();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let ppid = |pid: &str| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command name (in parentheses, may hold spaces): state, then ppid.
        let after = stat.rsplit_once(')')?.1;
        after.split_whitespace().nth(1)?.parse().ok()
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|name| ppid(name) == Some(me))
        .filter_map(|name| name.parse().ok().and_then(Pid::from_raw))
        .collect()
}
