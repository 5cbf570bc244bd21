//! Servers as child processes: start one pinned to a core, read its address from its log, read
//! its CPU time and memory from `/proc`, signal it, time its exit.
//!
//! Pinning: the server runs under `taskset -c 0` and the load generator pins itself to core 1
//! with `sched_setaffinity`, so the two never share a core (the machine has two).

use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    pid: u32,
    /// Drains the server's output, so its logging never blocks on a full pipe.
    log: Option<JoinHandle<String>>,
}

impl ServerProcess {
    /// Starts `kind`, pinned to `cpu` with `taskset`, and waits for its `listening on` line.
    pub fn start(kind: Kind, cpu: Option<usize>) -> io::Result<ServerProcess> {
        ServerProcess::start_with_flags(kind, cpu, NETGRACE_FLAGS)
    }

    /// [`ServerProcess::start`] with netgrace given `netgrace_flags` (after `-l 127.0.0.1:0`)
    /// instead of the usual ones; the tokio peers ignore them.
    ///
    /// # Errors
    /// The spawn error, or `UnexpectedEof` with the server's own words if it exits before
    /// listening (a flag it does not know, say).
    pub fn start_with_flags(
        kind: Kind,
        cpu: Option<usize>,
        netgrace_flags: &[&'static str],
    ) -> io::Result<ServerProcess> {
        let (program, args) = kind.command(netgrace_flags)?;
        let mut command = match cpu {
            Some(cpu) => {
                let mut taskset = Command::new("taskset");
                taskset.arg("-c").arg(cpu.to_string()).arg(&program);
                taskset
            }
            None => Command::new(&program),
        };
        // The servers log on stdout and say why they fail on stderr: one pipe takes both, in the
        // order they were written, so the reader has the `listening on` line or the last words.
        let (output, writer) = io::pipe()?;
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer);
        let mut child = command
            .spawn()
            .map_err(|err| io::Error::new(err.kind(), format!("start {program}: {err}")))?;
        // It holds a copy of the pipe's write end, which would keep EOF from ever arriving.
        drop(command);
        let pid = child.id();
        let mut output = BufReader::new(output);
        let addr = match read_listening_line(&mut output, kind) {
            Ok(addr) => addr,
            Err(err) => {
                // Reap it (it has exited, or will never listen), so no zombie outlives the error.
                let _ = child.kill();
                let _ = child.wait();
                return Err(err);
            }
        };
        let log = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = output.read_to_string(&mut rest);
            rest
        });
        Ok(ServerProcess {
            kind,
            addr,
            child: Some(child),
            pid,
            log: Some(log),
        })
    }

    /// User plus system CPU time of the whole process, all threads, from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> io::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name, which is in parentheses and may hold spaces; utime and
        // stime are fields 14 and 15 of proc(5), so 12 and 13 after the ')'.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad /proc/PID/stat",
            ));
        };
        // SAFETY: sysconf has no preconditions; _SC_CLK_TCK is a valid name.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(Duration::from_secs_f64((utime + stime) as f64 / hz))
    }

    /// On-CPU time of all the process's threads, summed from `/proc/PID/task/*/schedstat` in
    /// nanoseconds: finer than [`ServerProcess::cpu_time`]'s clock ticks (10 ms), for a scenario
    /// that keeps the server mostly idle. A thread that exits is no longer counted, so take two
    /// readings only while the server's threads are all alive (they live as long as it does).
    pub fn run_time(&self) -> io::Result<Duration> {
        let mut nanos = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))? {
            let schedstat = std::fs::read_to_string(task?.path().join("schedstat"))?;
            // Three fields (schedstat in proc(5)): time on the CPU, time waiting for it, slices.
            let on_cpu = schedstat.split_whitespace().next();
            nanos += on_cpu
                .and_then(|ns| ns.parse::<u64>().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad /proc/PID/task/TID/schedstat",
                    )
                })?;
        }
        Ok(Duration::from_nanos(nanos))
    }

    /// Resident memory in bytes (`VmRSS` of `/proc/PID/status`).
    pub fn rss_bytes(&self) -> io::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            });
        kib.map(|kib| kib * 1024)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS"))
    }

    pub fn pid(&self) -> u32 {
        self.pid
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
            let log = log.and_then(|log| log.join().ok()).unwrap_or_default();
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
        // Only after an error: a normal run ends with `stop` or `terminate`.
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How a server process ended.
pub struct Exit {
    pub status: ExitStatus,
    /// When it was reaped.
    pub at: Instant,
    /// What it wrote (stdout and stderr) after its `listening on` line.
    pub log: String,
}

fn read_listening_line(output: &mut impl BufRead, kind: Kind) -> io::Result<SocketAddr> {
    // Everything read so far: if the server exits instead, its last words say why.
    let mut said = String::new();
    loop {
        let start = said.len();
        if output.read_line(&mut said)? == 0 {
            let msg = format!("{} exited before listening: {}", kind.name(), said.trim());
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
        }
        let line = &said[start..];
        if let Some((_, addr)) = line.trim_end().split_once("listening on ") {
            return addr.parse().map_err(|err| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{addr}: {err}"))
            });
        }
    }
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
