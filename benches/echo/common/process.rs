//! Servers as child processes. netgrace runs as a master, which holds the listening socket and
//! serves no client, and workers, which serve: `/proc` figures are the workers' (named by the
//! master's `serving: 1 worker: pid W` line), signals go to the master. The server runs under
//! `taskset -c 0` (its workers inherit it), the load generator on core 1.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::{io, net::SocketAddr, thread::JoinHandle, time::Duration, time::Instant};

use rustix::io::fcntl_dupfd_cloexec;
use rustix::process::{getrlimit, kill_process, setrlimit, Pid, Resource, Rlimit, Signal};
use rustix::thread::{sched_setaffinity, CpuSet};

use super::log::{self, Log};
use super::procfs;

/// Longest wait for a server to serve, or for a step of a restart.
const START_TIMEOUT: Duration = Duration::from_secs(15);
pub const SERVER_CPU: usize = 0;
const LOAD_CPU: usize = 1;
/// netgrace's flags where a scenario sets none: room for 10 000 idle connections and more.
pub const NETGRACE_FLAGS: &[&str] = &["--max-connections", "12000"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Netgrace,
    TokioCt,
    TokioMt,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Netgrace, Kind::TokioCt, Kind::TokioMt];

    pub fn name(self) -> &'static str {
        ["netgrace", "tokio-ct", "tokio-mt"][self as usize]
    }
}

/// The cores to pin servers to (`taskset -c`): core 0, if there is another for the load.
pub fn pinned() -> Option<String> {
    (procfs::cores() > LOAD_CPU).then(|| SERVER_CPU.to_string())
}

/// A running server; dropping it kills the process and its workers.
pub struct ServerProcess {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// The processes that serve: netgrace's workers, or the tokio process itself.
    pub workers: Vec<u32>,
    /// netgrace's master, or the tokio peer; `None` once terminated.
    child: Option<Child>,
    log: Option<Log>,
}

/// How a server ended: its status, when it was reaped (the master last), its last log lines.
pub struct Exit {
    pub status: ExitStatus,
    pub at: Instant,
    pub log: String,
}

/// One restart: from the SIGHUP until the new workers serve, until the master reaped the last
/// old worker; the line that says what failed, if anything.
pub struct Restart {
    pub serving: Duration,
    pub exited: Duration,
    pub failure: Option<String>,
}

impl ServerProcess {
    /// Starts `kind` on `cpus` (`taskset -c`; `None`: every core, explicitly, since a child
    /// inherits our thread's affinity), with `netgrace_flags` after netgrace's `-l 127.0.0.1:0`,
    /// and waits until it serves. A fresh port each time: no run meets another's TIME_WAIT.
    pub fn start(kind: Kind, cpus: Option<String>, netgrace_flags: &[&str]) -> io::Result<Self> {
        let cpus = cpus.unwrap_or(format!("0-{}", procfs::cores() - 1));
        let mut command = Command::new("taskset");
        // netgrace is Cargo's build beside this benchmark (or NETGRACE_BIN); tokio is ours.
        let me = std::env::current_exe()?.display().to_string();
        let serve = format!("serve-{}", kind.name());
        let (program, first): (_, &[&str]) = match kind {
            Kind::Netgrace => (netgrace_bin(), &["-l", "127.0.0.1:0"]),
            _ => (me, &[&serve, "127.0.0.1:0"]),
        };
        command.args(["-c", &cpus, &program]).args(first);
        if kind == Kind::Netgrace {
            command.args(netgrace_flags);
        }
        // RUST_LOG would hide the info lines read here.
        command.env_remove("RUST_LOG").stdin(Stdio::null());
        let pipe = Log::capture(&mut command)?;
        let started = command.spawn();
        let child = started.map_err(|err| super::context(err, &format!("start {kind:?}")))?;
        // Our copy of the pipe's writing end goes: the log must end when the server does.
        drop(command);
        // From here on `Drop` kills the server, whatever fails next.
        let (addr, workers) = (SocketAddr::from(([127, 0, 0, 1], 0)), vec![child.id()]);
        let (child, log) = (Some(child), Some(Log::follow(pipe)));
        let mut server = ServerProcess {
            kind,
            addr,
            workers,
            child,
            log,
        };
        let log = server.log.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        let (_, line) = log.wait_for(|l| log::listening_addr(l).is_some(), START_TIMEOUT)?;
        server.addr = log::listening_addr(&line).ok_or(io::ErrorKind::InvalidData)?;
        if kind == Kind::Netgrace {
            let serving = |l: &str| !log::pids_after(l, "serving: ").is_empty();
            let (_, line) = log.wait_for(serving, START_TIMEOUT)?;
            server.workers = log::pids_after(&line, "serving: ");
        }
        Ok(server)
    }

    pub fn cpu_time(&self) -> io::Result<Duration> {
        procfs::cpu_time(&self.workers)
    }

    pub fn rss_bytes(&self) -> io::Result<u64> {
        procfs::rss_bytes(&self.workers)
    }

    /// SIGHUP to netgrace's master; waits until it says the new workers serve, then until it
    /// has reaped every old one.
    pub fn restart(&mut self) -> io::Result<Restart> {
        let master = [self.child.as_ref().ok_or(io::ErrorKind::NotFound)?.id()];
        let log = self.log.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        let signalled = Instant::now();
        signal(master[0], Signal::HUP)?;
        let said = ["restart complete: ", "restart failed", "SIGHUP ignored"];
        let (at, line) = log.wait_for(|l| said.iter().any(|s| l.contains(s)), START_TIMEOUT)?;
        let (serving, mut failure) = (at - signalled, None);
        if line.contains(said[0]) {
            // "restart complete: ...: pid N; ... drain: pids A", then "worker pid A exited (...)".
            let old = log::pids_after(&line, "drain: ");
            self.workers = log::pids_after(&line, said[0]);
            for _ in &old {
                let exited = |l: &str| {
                    let pid = log::pids_after(l, "worker ").first().copied();
                    l.contains(" exited (") && pid.is_some_and(|pid| old.contains(&pid))
                };
                let (_, line) = log.wait_for(exited, START_TIMEOUT)?;
                failure = failure.or((!line.contains("(exit status: 0)")).then_some(line));
            }
        } else {
            failure = Some(line);
        }
        let exited = signalled.elapsed();
        Ok(Restart {
            serving,
            exited,
            failure,
        })
    }

    /// Sends SIGTERM; returns when, and a thread that waits for the exit on the server's core (free
    /// once the server exits, so it wakes at once).
    pub fn terminate(mut self) -> io::Result<(Instant, JoinHandle<io::Result<Exit>>)> {
        let mut child = self.child.take().ok_or(io::ErrorKind::NotFound)?;
        let (pid, log) = (child.id(), self.log.take());
        let waiter = std::thread::spawn(move || {
            if pinned().is_some() {
                pin_current_thread(SERVER_CPU)?;
            }
            let (status, at) = (child.wait()?, Instant::now());
            let rest = log.map(|log| log.rest(Duration::from_secs(1)));
            let log = rest.unwrap_or_default();
            Ok(Exit { status, at, log })
        });
        let sent = Instant::now();
        signal(pid, Signal::TERM)?;
        Ok((sent, waiter))
    }

    /// Stops the server; it must exit 0.
    pub fn stop(self) -> io::Result<Exit> {
        let name = self.kind.name();
        Exit::checked(name, self.terminate()?.1)
    }
}

impl Exit {
    /// Joins a [`ServerProcess::terminate`] waiter; `Err` unless the server exited 0.
    pub fn checked(name: &str, waiter: JoinHandle<io::Result<Exit>>) -> io::Result<Exit> {
        let panicked = |_| io::Error::other("waiter panicked");
        let exit = waiter.join().map_err(panicked)??;
        if !exit.status.success() {
            let msg = format!("{name} exited with {}: {}", exit.status, exit.log);
            return Err(io::Error::other(msg));
        }
        Ok(exit)
    }
}

/// `NETGRACE_BIN` (another build, for a before/after figure), or Cargo's netgrace.
pub fn netgrace_bin() -> String {
    std::env::var("NETGRACE_BIN").unwrap_or(env!("CARGO_BIN_EXE_netgrace").into())
}

impl Drop for ServerProcess {
    /// After an error: the master first, so that it starts no replacement, then its workers.
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
            for &worker in self.workers.iter().filter(|&&w| w != child.id()) {
                let _ = signal(worker, Signal::KILL);
            }
        }
    }
}

/// How a comparison runs: rounds, and the timed window of each measurement.
pub struct Plan {
    pub rounds: usize,
    pub secs: Duration,
}

impl Plan {
    /// Every round, every server in turn, each round starting with the next one: no server
    /// always runs first (right after the previous part) or last.
    pub fn turns(&self) -> impl Iterator<Item = (usize, Kind)> {
        let turn = |(round, i)| (round, Kind::ALL[(round - 1 + i) % 3]);
        (1..=self.rounds).flat_map(move |round| (0..3).map(move |i| turn((round, i))))
    }
}

pub fn signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw);
    let pid = pid.ok_or(io::ErrorKind::InvalidInput)?;
    Ok(kill_process(pid, signal)?)
}

/// Pins this thread (and those it starts later) to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu);
    Ok(sched_setaffinity(None, &set)?)
}

/// Raises the descriptor limit to the hard one (10 000 idle connections need 10 000 on each
/// side; servers inherit it) and, with `pin`, pins this thread to the load's core.
pub fn prepare_load(pin: bool) -> io::Result<()> {
    let maximum = getrlimit(Resource::Nofile).maximum;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: maximum,
            maximum,
        },
    )?;
    match pinned() {
        Some(_) if pin => pin_current_thread(LOAD_CPU),
        _ => Ok(()),
    }
}

/// Grows our descriptor table to `fds` before a storm: each doubling in a process of several
/// threads waits for an RCU grace period (`expand_fdtable`), which would slow the first burst.
pub fn grow_descriptor_table(fds: usize) -> io::Result<()> {
    let lowest = i32::try_from(fds).map_err(|_| io::ErrorKind::InvalidInput)?;
    // A copy of stderr on the lowest free descriptor >= `lowest`, closed again at once.
    drop(fcntl_dupfd_cloexec(io::stderr(), lowest)?);
    Ok(())
}
