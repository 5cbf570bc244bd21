//! The master's view of its worker processes: starting one on the listening socket, its end of
//! the control channel, reaping, signalling, and the sum of their reports.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use command_fds::{CommandFdExt, FdMapping};
use log::{debug, warn};
use rustix::process::{Pid, Signal, WaitOptions};

use crate::activation::{MASTER_VAR, WORKER_FDNAMES};

/// Where a worker is in its life, as the master sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    /// Started; has not said `ready` yet. Killed if it has not by `deadline`.
    Starting { deadline: Instant },
    /// Serving since this instant.
    Serving { since: Instant },
    /// Told to hand over or stop, or given up on: on its way out. `kill_at`: when a SIGKILL
    /// follows the SIGTERM it was sent.
    Leaving { kill_at: Option<Instant> },
}

/// One worker process.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) pid: u32,
    /// Workers started together by one SIGHUP (or at startup) share a generation.
    pub(crate) generation: u64,
    pub(crate) phase: Phase,
    /// The master's end of the control channel, nonblocking, registered with the master's poll.
    control: mio::net::UnixStream,
    /// Bytes of a line not yet complete.
    partial: Vec<u8>,
    /// Its `report` line, once it has finished.
    pub(crate) report: Option<String>,
    /// It said a stop signal of its own reached it: its exit is no crash.
    pub(crate) signalled: bool,
}

/// A line a worker sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    Ready,
    /// A stop signal reached the worker itself.
    Stopping,
    Other(String),
}

impl Worker {
    /// Starts `program` with `args` as a worker: the listening socket at descriptor 3, its end
    /// of a new control channel at descriptor 4, and our pid in [`MASTER_VAR`].
    pub(crate) fn start(
        program: &Path,
        args: &[OsString],
        listener: &TcpListener,
        generation: u64,
        deadline: Instant,
    ) -> io::Result<Worker> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env(MASTER_VAR, std::process::id().to_string())
            .env("LISTEN_FDS", "2")
            .env("LISTEN_FDNAMES", WORKER_FDNAMES)
            // The master alone speaks to systemd (notify.rs).
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        command
            .fd_mappings(vec![
                FdMapping {
                    parent_fd: listener.try_clone()?.into(),
                    child_fd: 3,
                },
                FdMapping {
                    parent_fd: theirs.into(),
                    child_fd: 4,
                },
            ])
            .map_err(|err| io::Error::other(format!("descriptor mapping: {err}")))?;
        // Not waited for through `Child`: the master reaps every child with waitpid(-1), the
        // orphans a PID 1 inherits included (`reap`).
        let pid = command.spawn()?.id();
        // `command` holds our copies of the listener and of the worker's end: drop them, so
        // that the worker's exit closes the channel.
        drop(command);
        ours.set_nonblocking(true)?;
        Ok(Worker {
            pid,
            generation,
            phase: Phase::Starting { deadline },
            control: mio::net::UnixStream::from_std(ours),
            partial: Vec::new(),
            report: None,
            signalled: false,
        })
    }

    pub(crate) fn control(&mut self) -> &mut mio::net::UnixStream {
        &mut self.control
    }

    /// Sends an order; a worker that cannot take it is on its way out already.
    pub(crate) fn order(&mut self, order: &str) {
        let line = format!("{order}\n");
        if let Err(err) = self.control.write_all(line.as_bytes()) {
            debug!("order {order:?} to worker pid {}: {err}", self.pid);
        }
    }

    /// Reads every complete line the worker has sent; a `report` line is kept, not returned.
    pub(crate) fn read(&mut self) -> Vec<Message> {
        let mut buf = [0; 512];
        loop {
            match self.control.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.partial.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: all read. Anything else: the process's exit tells the rest.
                Err(_) => break,
            }
        }
        let mut messages = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            if line == crate::worker::READY {
                messages.push(Message::Ready);
            } else if line == crate::worker::STOPPING {
                messages.push(Message::Stopping);
            } else if let Some(report) = line.strip_prefix(crate::worker::REPORT) {
                self.report = Some(report.to_string());
            } else {
                messages.push(Message::Other(line));
            }
        }
        messages
    }

    /// SIGTERM now, SIGKILL at `kill_at` if it is still there.
    pub(crate) fn dismiss(&mut self, kill_at: Instant) {
        self.signal(Signal::TERM);
        self.phase = Phase::Leaving {
            kill_at: Some(kill_at),
        };
    }

    /// A worker not reaped yet cannot have had its pid reused, so signalling it is safe.
    pub(crate) fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.pid).ok().and_then(Pid::from_raw);
        if let Some(pid) = pid {
            if let Err(err) = rustix::process::kill_process(pid, signal) {
                debug!("signal worker pid {}: {err}", self.pid);
            }
        }
    }
}

/// The next child of ours that has exited, reaped; `None` when none has (or we have none).
///
/// Any child: wait(2), not waitpid with no pid, which rustix passes as 0, "any child in our
/// process group", and would leave the orphans a PID 1 inherits from other groups as zombies.
pub(crate) fn reap() -> Option<(u32, ExitStatus)> {
    match rustix::process::wait(WaitOptions::NOHANG) {
        Ok(Some((pid, status))) => {
            let pid = u32::try_from(pid.as_raw_pid()).unwrap_or_default();
            Some((pid, ExitStatus::from_raw(status.as_raw())))
        }
        Ok(None) => None,
        Err(err) => {
            // ECHILD: no children at all, the usual case between restarts.
            if err != rustix::io::Errno::CHILD {
                warn!("wait(2): {err}");
            }
            None
        }
    }
}

/// The sum of the workers' reports: the master's last line.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    /// Counter names in the order the first report gave them, with their sums.
    counters: Vec<(String, u64)>,
    /// Workers that ended, and how many of them never reported (a crash, a kill).
    pub(crate) workers: u64,
    pub(crate) unreported: u64,
}

impl Totals {
    /// Adds one worker's report (`None`: it ended without one).
    pub(crate) fn add(&mut self, report: Option<&str>) {
        self.workers += 1;
        let Some(report) = report else {
            self.unreported += 1;
            return;
        };
        // The master's own stop and timing replace the workers'.
        let counters = report
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .filter(|(key, _)| !matches!(*key, "stop" | "shutdown_ms"));
        for (key, value) in counters {
            let value = value.parse::<u64>().unwrap_or_default();
            match self.counters.iter_mut().find(|(name, _)| name == key) {
                // peak: connections open at once, so the highest of any one worker.
                Some((name, total)) if name == "peak" => *total = (*total).max(value),
                Some((_, total)) => *total += value,
                None => self.counters.push((key.to_string(), value)),
            }
        }
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "workers={}", self.workers)?;
        if self.unreported > 0 {
            write!(f, " unreported={}", self.unreported)?;
        }
        for (name, total) in &self.counters {
            write!(f, " {name}={total}")?;
        }
        Ok(())
    }
}
