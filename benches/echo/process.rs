//! Servers as child processes: start one pinned to a core, read its address and its workers
//! from its log, read their CPU time and memory from `/proc` (`procfs.rs`), signal it, time its
//! exit.
//!
//! netgrace runs as a master, which holds the listening socket and serves no client, and its
//! worker processes, which serve; the figures are the workers', the signals go to the master.
//!
//! Pinning: the server runs under `taskset -c 0` (netgrace's workers inherit it from the master)
//! and the load generator pins itself to core 1 with `sched_setaffinity`, so the two never share
//! a core (the machine has two).

use std::io;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::log::{self, Log};
use crate::procfs;

/// Longest wait for a server to listen, and for netgrace's workers to serve.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a netgrace that listens but has no child may stay silent before it counts as a
/// build from before the master, which serves in its own process. Judgment call: a master
/// starts its first worker right after its `listening on` line, in well under this.
const SINGLE_PROCESS_GRACE: Duration = Duration::from_secs(1);
/// Longest wait, after the server exited, for the rest of its log.
const LOG_EOF_TIMEOUT: Duration = Duration::from_secs(1);
/// The core servers run on.
pub const SERVER_CPU: usize = 0;
/// The core the load generator runs on.
pub const LOAD_CPU: usize = 1;
/// netgrace's flags in every scenario but the storm, which sets its own per burst: room for the
/// 10 000 idle connections and the active ones beside them.
const NETGRACE_FLAGS: &[&str] = &["--max-connections", "12000"];

/// The servers under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Netgrace,
    TokioCt,
    TokioMt,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Netgrace, Kind::TokioCt, Kind::TokioMt];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Netgrace => "netgrace",
            Kind::TokioCt => "tokio-ct",
            Kind::TokioMt => "tokio-mt",
        }
    }

    /// The program and its arguments; every server listens on a fresh port, so no run meets
    /// the TIME_WAIT sockets of the one before. `netgrace_flags` follow netgrace's `-l`; the
    /// tokio peers take none, since they run as users write them.
    fn command(self, netgrace_flags: &[&'static str]) -> io::Result<(String, Vec<&'static str>)> {
        let me = || -> io::Result<String> {
            Ok(std::env::current_exe()?.to_string_lossy().into_owned())
        };
        Ok(match self {
            // Built by Cargo beside this benchmark, in the same profile, unless overridden.
            Kind::Netgrace => (
                netgrace_override().map_or(env!("CARGO_BIN_EXE_netgrace").to_string(), |path| {
                    path.to_string_lossy().into_owned()
                }),
                [&["-l", "127.0.0.1:0"], netgrace_flags].concat(),
            ),
            Kind::TokioCt => (me()?, vec!["serve-tokio-ct", "127.0.0.1:0"]),
            Kind::TokioMt => (me()?, vec!["serve-tokio-mt", "127.0.0.1:0"]),
        })
    }
}

/// Another netgrace binary to run, from `NETGRACE_BIN`: an older build, for a before/after figure.
pub fn netgrace_override() -> Option<std::path::PathBuf> {
    std::env::var_os("NETGRACE_BIN")
        .filter(|path| !path.is_empty())
        .map(Into::into)
}

/// The core to pin servers to, if the machine has a second one for the load.
pub fn pinning() -> Option<usize> {
    (cores() > LOAD_CPU).then_some(SERVER_CPU)
}

/// Cores online. Not `available_parallelism`, which shrinks to 1 once this thread is pinned.
pub fn cores() -> usize {
    // SAFETY: sysconf has no preconditions; _SC_NPROCESSORS_ONLN is a valid name.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).unwrap_or(1).max(1)
}

/// A running server; dropping it kills the process if it is still running.
pub struct ServerProcess {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Option<Child>,
    /// The process we started: netgrace's master, or the tokio peer. Signals go here.
    pid: u32,
    /// The processes that serve, whose `/proc` figures are the server's: netgrace's workers
    /// (from the master's `serving:` line; they inherit its CPU affinity), or `pid` itself.
    workers: Vec<u32>,
    /// The server's log, read by a thread so that its logging never blocks on a full pipe.
    log: Option<Log>,
}

impl ServerProcess {
    /// Starts `kind`, pinned to `cpu` with `taskset`, and waits until it serves.
    pub fn start(kind: Kind, cpu: Option<usize>) -> io::Result<ServerProcess> {
        ServerProcess::start_with_flags(kind, cpu, NETGRACE_FLAGS)
    }

    /// [`ServerProcess::start`] with netgrace given `netgrace_flags` (after `-l 127.0.0.1:0`)
    /// instead of the usual ones; the tokio peers ignore them.
    ///
    /// # Errors
    /// The spawn error, or `UnexpectedEof` with the server's own words if it exits before
    /// serving (a flag it does not know, say).
    pub fn start_with_flags(
        kind: Kind,
        cpu: Option<usize>,
        netgrace_flags: &[&'static str],
    ) -> io::Result<ServerProcess> {
        ServerProcess::spawn(kind, cpu.map(|cpu| cpu.to_string()), netgrace_flags)
    }

    /// [`ServerProcess::start_with_flags`] on every core (`taskset -c 0-N`): for a server of
    /// several workers or threads, which a single core would serialise. Explicit, since a
    /// child inherits the affinity of the thread that starts it, and ours may be pinned.
    pub fn start_on_every_core(
        kind: Kind,
        netgrace_flags: &[&'static str],
    ) -> io::Result<ServerProcess> {
        let every = format!("0-{}", cores() - 1);
        ServerProcess::spawn(kind, Some(every), netgrace_flags)
    }

    fn spawn(
        kind: Kind,
        cpus: Option<String>,
        netgrace_flags: &[&'static str],
    ) -> io::Result<ServerProcess> {
        let (program, args) = kind.command(netgrace_flags)?;
        let mut command = match &cpus {
            Some(cpus) => {
                let mut taskset = Command::new("taskset");
                taskset.arg("-c").arg(cpus).arg(&program);
                taskset
            }
            None => Command::new(&program),
        };
        command.args(args).stdin(Stdio::null());
        let pipe = log::capture(&mut command)?;
        let child = command
            .spawn()
            .map_err(|err| io::Error::new(err.kind(), format!("start {program}: {err}")))?;
        // It holds our copy of the pipe's writing end: the log must end when the server does.
        drop(command);
        let pid = child.id();
        // From here on `Drop` kills the server, whatever fails next.
        let mut server = ServerProcess {
            kind,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: Some(child),
            pid,
            workers: vec![pid],
            log: Some(Log::follow(pipe)),
        };
        server.await_serving()?;
        Ok(server)
    }

    /// Reads the log up to `listening on ADDR`, and for netgrace on to the master's `serving:`
    /// line, which names the workers. A netgrace from before the master (through
    /// `NETGRACE_BIN`) has no such line and no child: then the process itself serves.
    fn await_serving(&mut self) -> io::Result<()> {
        let name = self.kind.name();
        let log = self.log.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        let listening = |line: &str| log::listening_addr(line).is_some();
        let (_, line) = log
            .await_line(listening, START_TIMEOUT, |_, _| {})
            .map_err(|err| io::Error::new(err.kind(), format!("{name} did not listen: {err}")))?;
        self.addr = log::listening_addr(&line).ok_or(io::ErrorKind::InvalidData)?;
        if self.kind != Kind::Netgrace {
            return Ok(());
        }
        let listened = Instant::now();
        while listened.elapsed() < START_TIMEOUT {
            if let Some((_, line)) = log.next(Duration::from_millis(10))? {
                let workers = log::pids_after(&line, "serving: ");
                if !workers.is_empty() {
                    self.workers = workers;
                    return Ok(());
                }
            } else if listened.elapsed() > SINGLE_PROCESS_GRACE && !procfs::has_children(self.pid) {
                return Ok(());
            }
        }
        let msg = format!("netgrace did not serve: {}", log.transcript());
        Err(io::Error::new(io::ErrorKind::TimedOut, msg))
    }

    /// The processes that serve: netgrace's workers, or the tokio peer itself.
    pub fn workers(&self) -> &[u32] {
        &self.workers
    }

    /// User plus system CPU time of the serving processes (all threads), from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> io::Result<Duration> {
        procfs::cpu_time(&self.workers)
    }

    /// On-CPU time of the serving processes' threads in ns: see [`procfs::run_time`].
    pub fn run_time(&self) -> io::Result<Duration> {
        procfs::run_time(&self.workers)
    }

    /// Resident memory of the serving processes in bytes.
    pub fn rss_bytes(&self) -> io::Result<u64> {
        procfs::rss_bytes(&self.workers)
    }

    /// Sends SIGTERM and returns when it was sent, with a thread that returns when the process
    /// exited (its status and the instant it was reaped).
    pub fn terminate(mut self) -> io::Result<(Instant, JoinHandle<io::Result<Exit>>)> {
        let mut child = self.child.take().ok_or(io::ErrorKind::NotFound)?;
        let log = self.log.take();
        // The waiter sleeps in waitpid on the server's core: when the server exits that core is
        // free, so the waiter wakes at once even while the load generator's core is busy.
        let server_cpu = pinning();
        let waiter = std::thread::spawn(move || {
            if let Some(cpu) = server_cpu {
                pin_current_thread(cpu)?;
            }
            let status = child.wait()?;
            let at = Instant::now();
            // The master exits last, so the pipe has no writer left: the rest comes at once.
            let log = log.map(|log| log.rest(LOG_EOF_TIMEOUT)).unwrap_or_default();
            Ok(Exit { status, at, log })
        });
        let sent = Instant::now();
        signal(self.pid, libc::SIGTERM)?;
        Ok((sent, waiter))
    }

    /// Stops the server gracefully and checks that it exited 0.
    pub fn stop(self) -> io::Result<()> {
        let kind = self.kind;
        let (_, waiter) = self.terminate()?;
        let exit = waiter
            .join()
            .map_err(|_| io::Error::other("waiter panicked"))??;
        if !exit.status.success() {
            let msg = format!("{} exited with {}: {}", kind.name(), exit.status, exit.log);
            return Err(io::Error::other(msg));
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Only after an error: a normal run ends with `stop` or `terminate`. The master first,
        // so that it starts no replacement; then its workers, which would otherwise stop by
        // themselves once they see the master gone.
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
            for &worker in self.workers.iter().filter(|&&w| w != self.pid) {
                let _ = signal(worker, libc::SIGKILL);
            }
        }
    }
}

/// How a server process ended.
pub struct Exit {
    pub status: ExitStatus,
    /// When it was reaped.
    pub at: Instant,
    /// What it logged after its `serving:` line (netgrace) or `listening on` line (tokio).
    pub log: String,
}

/// The servers in round `round`'s order: each round starts with the next one, so that no server
/// always runs first (right after the previous scenario) or last.
pub fn turn_order<T, const N: usize>(mut servers: [T; N], round: usize) -> [T; N] {
    servers.rotate_left((round - 1) % N);
    servers
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers; a wrong pid is an error return, not UB.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pins the calling thread (and the threads it starts later) to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data, zeroed is the empty set; CPU_SET bounds-checks `cpu`;
    // sched_setaffinity reads `size_of::<cpu_set_t>()` bytes from a valid reference.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises the soft descriptor limit to the hard one (10 000 idle connections need 10 000 on each
/// side); servers started afterwards inherit it.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(limit.rlim_cur)
    }
}

/// Grows this process's descriptor table to hold `fds` descriptors, so that a burst of
/// connects later does not grow it on the way. The table only grows, and each time it doubles
/// in a process with more than one thread (this one has a thread per server's log), the kernel
/// waits for an RCU grace period (`expand_fdtable` in fs/file.c): several milliseconds each,
/// which without this fell on the first burst of a run only, 1 000 connects taking ~45 ms
/// instead of ~15.
pub fn grow_descriptor_table(fds: usize) -> io::Result<()> {
    let lowest = libc::c_int::try_from(fds).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: F_DUPFD_CLOEXEC duplicates stderr onto the lowest free descriptor >= `lowest`,
    // never closing one in use; the copy is ours, and closed at once.
    unsafe {
        let copy = libc::fcntl(libc::STDERR_FILENO, libc::F_DUPFD_CLOEXEC, lowest);
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::close(copy);
    }
    Ok(())
}
