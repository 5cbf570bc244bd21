//! Helpers for the tests that drive the netgrace binary as a child process: a predictable
//! command line, runs that end by themselves, a server whose log (stdout) is followed line by
//! line, signals, and (in binary/procfs.rs) the server's `/proc/PID` figures.
//!
//! Every process is owned by a [`Process`] that kills and reaps it on drop, so a failing test
//! never leaves a server behind.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Instant;

use super::TIMEOUT;

mod procfs;

/// A `netgrace` command with a predictable environment.
///
/// `-l 127.0.0.1:0` comes first (a later `-l` wins), so that even a regression that makes an
/// invocation serve instead of exiting binds a free port, never 5388 on the test machine.
/// `RUST_LOG` is removed because it would change the default level (info: lifecycle lines only,
/// not one debug line per connection); `RUST_BACKTRACE=1` makes a panic impossible to miss.
pub fn netgrace(args: &[&str]) -> Command {
    netgrace_under(&[], args)
}

/// Like [`netgrace`], but run through `wrapper`, a program and its arguments that then executes
/// netgrace in the same process (e.g. `prlimit --nofile=32:32`), so `/proc/PID` is still netgrace's.
pub fn netgrace_under(wrapper: &[&str], args: &[&str]) -> Command {
    let binary = env!("CARGO_BIN_EXE_netgrace");
    let Some((program, wrapper_args)) = wrapper.split_first() else {
        return netgrace_at(Path::new(binary), args);
    };
    let mut command = Command::new(program);
    command.args(wrapper_args).arg(binary);
    with_test_environment(command, args)
}

/// Like [`netgrace`], but runs `program`: a copy of the binary, or what replaced it.
pub fn netgrace_at(program: &Path, args: &[&str]) -> Command {
    with_test_environment(Command::new(program), args)
}

/// `command` with netgrace's `args`, after `-l 127.0.0.1:0`, in the environment [`netgrace`]
/// describes.
fn with_test_environment(mut command: Command, args: &[&str]) -> Command {
    command
        .args(["-l", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    command
}

/// A spawned netgrace, killed and reaped on drop.
pub struct Process(Child);

impl Process {
    /// Spawns `command`, failing the test if it cannot start.
    #[track_caller]
    pub fn spawn(mut command: Command) -> Process {
        Process(command.spawn().expect("spawn netgrace"))
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Reaps the process; call it once its output is at EOF, so that it does not block.
    #[track_caller]
    pub fn wait(&mut self) -> ExitStatus {
        self.0.wait().expect("wait for netgrace")
    }

    /// Sends `signal` (`TERM`, `INT`) with kill(1), as an operator would.
    #[track_caller]
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed: {status}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Both are no-ops once the test has reaped the process itself.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a run that ends by itself (usage error, help, version, failed bind) left behind.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs netgrace until it exits by itself; fails the test if that takes longer than [`TIMEOUT`].
#[track_caller]
pub fn run(args: &[&str]) -> Finished {
    let mut command = netgrace(args);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut process = Process::spawn(command);
    let stdout = read_pipe_on_thread(process.0.stdout.take().expect("stdout is piped"));
    let stderr = read_pipe_on_thread(process.0.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + TIMEOUT;
    let stdout = recv_by(&stdout, deadline)
        .unwrap_or_else(|| panic!("netgrace {args:?} did not exit within {TIMEOUT:?}"));
    let stderr = recv_by(&stderr, deadline)
        .unwrap_or_else(|| panic!("netgrace {args:?} did not exit within {TIMEOUT:?}"));
    // Both pipes are at EOF, so the process has exited (or closed them on its way out).
    let status = process.0.wait().expect("wait for netgrace");
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// Reads `pipe` to EOF on a thread; the text arrives on the returned channel.
fn read_pipe_on_thread(mut pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        // A read error leaves the text short, which the test's assertions then show.
        let _ = pipe.read_to_string(&mut text);
        // The receiver is gone only if the test already failed.
        let _ = tx.send(text);
    });
    rx
}

/// The next message, or `None` if it does not arrive by `deadline`.
fn recv_by<T>(rx: &Receiver<T>, deadline: Instant) -> Option<T> {
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// Forwards `child`'s stdout, where the binary logs, line by line over a channel, from a thread,
/// until EOF (when every process sharing that stdout, successors included, has exited).
pub fn follow_stdout(child: &mut Child) -> Receiver<String> {
    follow_lines(child.stdout.take().expect("stdout is piped"))
}

/// Points `command`'s stdout and stderr at one pipe and forwards its lines over a channel, from
/// a thread, in the order they were written: the log and any fatal error together.
///
/// EOF comes when every process holding the pipe has exited and `command`, which holds a copy
/// of the pipe's write end until it is dropped, is gone.
pub fn follow_output(command: &mut Command) -> Receiver<String> {
    let (reader, writer) = std::io::pipe().expect("pipe");
    command
        .stdout(writer.try_clone().expect("dup the pipe"))
        .stderr(writer);
    follow_lines(reader)
}

/// Forwards the lines of `stream` (a pipe the binary writes) over a channel, from a thread,
/// until EOF.
pub fn follow_lines(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            // A read error ends the log early; a failed send means the test has gone.
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// The pids a line names after `pid ` or `pids `, such as the master's
/// `serving: 2 workers: pids 10 11`.
pub fn pids_in(line: &str) -> Vec<u32> {
    let Some(at) = line.rfind("pid") else {
        return Vec::new();
    };
    line[at..]
        .split_whitespace()
        .skip(1)
        .map_while(|word| word.trim_end_matches([';', ',']).parse().ok())
        .collect()
}

/// The address of a `listening on ADDR` line: its first word, since an inherited socket adds
/// "(inherited at ...)" after it.
#[track_caller]
pub fn listening_addr(line: &str) -> SocketAddr {
    line.rsplit("listening on ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|err| panic!("address in {line:?}: {err}"))
}

/// A netgrace serving on `127.0.0.1:0`, its log (stdout) forwarded line by line over a channel.
///
/// The process is the master, which holds the socket and is the one to signal; its workers
/// serve. The `/proc/PID` figures are the first worker's, the process that holds the
/// connections.
pub struct Serving {
    process: Process,
    /// The address from the `listening on` line.
    pub addr: SocketAddr,
    /// The workers' pids, from the master's `serving:` line.
    pub workers: Vec<u32>,
    /// Closed by the forwarding thread at EOF, that is when the process exits.
    lines: Receiver<String>,
    /// Every log line received so far: for assertions and for failure messages.
    pub log: Vec<String>,
}

impl Serving {
    /// Starts netgrace with `args` and waits until it has logged the address it listens on.
    #[track_caller]
    pub fn start(args: &[&str]) -> Serving {
        Serving::spawn(netgrace(args))
    }

    /// Spawns `command` (from [`netgrace`] or [`netgrace_under`]) and waits until it has logged
    /// the address it listens on.
    #[track_caller]
    pub fn spawn(mut command: Command) -> Serving {
        // stderr stays the test's: the binary writes there only a fatal error (or a panic),
        // which a failing test then shows.
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut process = Process::spawn(command);
        let lines = follow_stdout(&mut process.0);
        let mut serving = Serving {
            process,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: Vec::new(),
            lines,
            log: Vec::new(),
        };
        // The binary installs its signal handlers before this line, so signals are safe after it.
        let line = serving.wait_for("listening on ");
        serving.addr = listening_addr(&line);
        assert!(serving.addr.ip().is_loopback(), "{line}");
        assert_ne!(serving.addr.port(), 0, "{line}");
        let line = serving.wait_for("serving: ");
        serving.workers = pids_in(&line);
        assert!(!serving.workers.is_empty(), "{line}");
        serving
    }

    /// Sends `signal` (`TERM`, `INT`) with kill(1), as an operator would.
    #[track_caller]
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// The master's process id.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// Waits (bounded by [`TIMEOUT`]) for a log line containing `needle`, and returns it.
    #[track_caller]
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.next_line(deadline) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(err) => panic!(
                    "no log line with {needle:?}: {err:?}; log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The next log line, also kept in `log`; `Disconnected` once the process has exited.
    fn next_line(&mut self, deadline: Instant) -> Result<String, RecvTimeoutError> {
        let line = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        self.log.push(line.clone());
        Ok(line)
    }

    /// How many log lines received so far contain `needle`.
    pub fn count_in_log(&self, needle: &str) -> usize {
        self.log.iter().filter(|line| line.contains(needle)).count()
    }

    /// A client with read and write timeouts of [`TIMEOUT`].
    #[track_caller]
    pub fn connect(&self) -> TcpStream {
        super::connect(self.addr)
    }

    /// Waits (bounded by [`TIMEOUT`]) for the process to exit, asserts it exited 0, and returns
    /// its log.
    ///
    /// The log channel closes at EOF, when the process exits; only then is `wait` called, so
    /// it does not block.
    #[track_caller]
    pub fn wait_for_exit_0(mut self) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.next_line(deadline) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "netgrace did not exit within {TIMEOUT:?}; log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
        let status = self.process.0.wait().expect("wait for netgrace");
        let log = std::mem::take(&mut self.log);
        assert!(status.success(), "{status}; log:\n{}", log.join("\n"));
        log
    }
}

/// The counters of the `shutdown complete:` line, which must be the last line of `log`.
#[track_caller]
pub fn report(log: &[String]) -> HashMap<String, String> {
    let last = log.last().map(String::as_str).unwrap_or_default();
    let Some((_, counters)) = last.split_once("shutdown complete: ") else {
        panic!(
            "the last log line should be the report; log:\n{}",
            log.join("\n")
        );
    };
    self::counters(counters)
}

/// The `name=value` counters of a log line: a report, or a `worker stopped:` line.
pub fn counters(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Asserts that the report at the end of `log` has each `(counter, value)` in `expected`.
#[track_caller]
pub fn assert_report(log: &[String], expected: &[(&str, &str)]) {
    let report = report(log);
    for (counter, value) in expected {
        assert_eq!(
            report.get(*counter).map(String::as_str),
            Some(*value),
            "{counter} in the report; log:\n{}",
            log.join("\n")
        );
    }
}
