#![cfg(feature = "cli")]
//! The binary as a user runs it: flags and exit codes, logs on stderr, and the signals that stop
//! it (the first one gracefully, a second one at once).
//!
//! Every process is spawned through [`netgrace`], which puts `-l 127.0.0.1:0` first, and is owned
//! by a [`Process`] that kills it on drop, so a failing test never leaves a server behind.
//!
//! The helpers live here, not in `tests/common`, because they drive a process rather than the
//! library; that is why this file runs past the guide's 400 lines (a judgment call).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The longest any single wait may take before the test fails. Generous, because CI machines are
/// slow and loaded, yet far below the 60 s drain that the second-signal test must cut short.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A `netgrace` command with a predictable environment.
///
/// `-l 127.0.0.1:0` comes first (a later `-l` wins), so that even a regression that makes an
/// invocation serve instead of exiting binds a free port, never 5388 on the test machine.
/// `RUST_LOG` is removed because it would change the default level; `RUST_BACKTRACE=1` makes a
/// panic impossible to miss.
fn netgrace(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_netgrace"));
    command
        .args(["-l", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    command
}

/// A spawned netgrace, killed and reaped on drop.
struct Process(Child);

impl Process {
    #[track_caller]
    fn spawn(mut command: Command) -> Process {
        Process(command.spawn().expect("spawn netgrace"))
    }

    /// Sends `signal` (`TERM`, `INT`) with kill(1), as an operator would.
    #[track_caller]
    fn signal(&self, signal: &str) {
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
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs netgrace until it exits by itself; fails the test if that takes longer than [`TIMEOUT`].
#[track_caller]
fn run(args: &[&str]) -> Finished {
    let mut command = netgrace(args);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut process = Process::spawn(command);
    let stdout = read_to_eof(process.0.stdout.take().expect("stdout is piped"));
    let stderr = read_to_eof(process.0.stderr.take().expect("stderr is piped"));
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
fn read_to_eof(mut pipe: impl Read + Send + 'static) -> Receiver<String> {
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

/// Asserts a usage error: exit 2, nothing on stdout, then on stderr one `netgrace: ` line that
/// contains every string in `names`, followed by the usage line.
#[track_caller]
fn assert_usage_error(args: &[&str], names: &[&str]) {
    let run = run(args);
    let stderr = &run.stderr;
    assert_eq!(run.status.code(), Some(2), "{args:?}: stderr:\n{stderr}");
    assert_eq!(run.stdout, "", "{args:?}: stdout should be empty");
    assert!(!stderr.contains("panicked"), "{args:?}: stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() >= 2,
        "{args:?}: expected an error line, then usage; stderr:\n{stderr}"
    );
    assert!(
        lines[0].starts_with("netgrace: "),
        "{args:?}: error line: {}",
        lines[0]
    );
    for name in names {
        assert!(
            lines[0].contains(name),
            "{args:?}: the error line should name {name:?}: {}",
            lines[0]
        );
    }
    assert!(
        lines[1].starts_with("usage: netgrace"),
        "{args:?}: the error should be one line, then usage; stderr:\n{stderr}"
    );
}

/// A netgrace serving on `127.0.0.1:0`, its stderr forwarded line by line over a channel.
struct Serving {
    process: Process,
    /// The address from the `listening on` line.
    addr: SocketAddr,
    /// Closed by the forwarding thread at EOF, that is when the process exits.
    lines: Receiver<String>,
    /// Every stderr line received so far: for assertions and for failure messages.
    log: Vec<String>,
}

impl Serving {
    /// Starts netgrace with `args` and waits until it has logged the address it listens on.
    #[track_caller]
    fn start(args: &[&str]) -> Serving {
        let mut command = netgrace(args);
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut process = Process::spawn(command);
        let stderr = process.0.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                // A read error ends the log early; a failed send means the test has gone.
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serving = Serving {
            process,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
            log: Vec::new(),
        };
        // The binary installs its signal handlers before this line, so signals are safe after it.
        let line = serving.wait_for("listening on ");
        let addr = line.rsplit("listening on ").next().unwrap_or_default();
        serving.addr = addr
            .trim()
            .parse()
            .unwrap_or_else(|err| panic!("address in {line:?}: {err}"));
        assert!(serving.addr.ip().is_loopback(), "{line}");
        assert_ne!(serving.addr.port(), 0, "{line}");
        serving
    }

    /// Waits (bounded by [`TIMEOUT`]) for a stderr line containing `needle`, and returns it.
    #[track_caller]
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.next_line(deadline) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(err) => panic!(
                    "no log line with {needle:?}: {err:?}; stderr:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The next stderr line, also kept in `log`; `Disconnected` once the process has exited.
    fn next_line(&mut self, deadline: Instant) -> Result<String, RecvTimeoutError> {
        let line = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        self.log.push(line.clone());
        Ok(line)
    }

    /// A client with read and write timeouts of [`TIMEOUT`].
    #[track_caller]
    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, TIMEOUT).expect("connect");
        stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(TIMEOUT))
            .expect("set_write_timeout");
        stream
    }

    /// Waits (bounded by [`TIMEOUT`]) for the process to exit, asserts it exited 0, and returns
    /// its log.
    ///
    /// The stderr channel closes at EOF, when the process exits; only then is `wait` called, so
    /// it does not block.
    #[track_caller]
    fn wait_for_exit_0(mut self) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.next_line(deadline) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "netgrace did not exit within {TIMEOUT:?}; stderr:\n{}",
                    self.log.join("\n")
                ),
            }
        }
        let status = self.process.0.wait().expect("wait for netgrace");
        let log = std::mem::take(&mut self.log);
        assert!(status.success(), "{status}; stderr:\n{}", log.join("\n"));
        log
    }
}

/// Writes `data` and reads back exactly as many bytes, asserting they are equal.
#[track_caller]
fn assert_echo(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).expect("write");
    let mut echo = vec![0; data.len()];
    stream.read_exact(&mut echo).expect("read echo");
    assert_eq!(echo, data, "echo differs from what was sent");
}

/// The counters of the `shutdown complete:` line, which must be the last line of `log`.
#[track_caller]
fn report(log: &[String]) -> HashMap<String, String> {
    let last = log.last().map(String::as_str).unwrap_or_default();
    let Some((_, counters)) = last.split_once("shutdown complete: ") else {
        panic!(
            "the last log line should be the report; stderr:\n{}",
            log.join("\n")
        );
    };
    counters
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Asserts that the report at the end of `log` has each `(counter, value)` in `expected`.
#[track_caller]
fn assert_report(log: &[String], expected: &[(&str, &str)]) {
    let report = report(log);
    for (counter, value) in expected {
        assert_eq!(
            report.get(*counter).map(String::as_str),
            Some(*value),
            "{counter} in the report; stderr:\n{}",
            log.join("\n")
        );
    }
}

#[test]
fn unknown_flag_exits_2_naming_it_then_usage() {
    assert_usage_error(&["--bogus"], &["'--bogus'"]);
    assert_usage_error(&["-x"], &["'-x'"]);
}

#[test]
fn non_numeric_max_connections_exits_2_naming_option_and_value() {
    assert_usage_error(&["--max-connections", "x"], &["--max-connections", "'x'"]);
}

#[test]
fn zero_max_connections_exits_2_naming_the_option() {
    assert_usage_error(&["--max-connections", "0"], &["--max-connections"]);
}

#[test]
fn zero_max_buffer_exits_2_naming_the_option() {
    assert_usage_error(&["--max-buffer", "0"], &["--max-buffer"]);
}

#[test]
fn negative_drain_timeout_exits_2_naming_option_and_value() {
    assert_usage_error(&["--drain-timeout", "-1"], &["--drain-timeout", "'-1'"]);
}

#[test]
fn zero_or_bad_idle_timeout_exits_2_naming_option_and_value() {
    assert_usage_error(&["--idle-timeout", "0"], &["--idle-timeout", "'0'"]);
    assert_usage_error(&["--idle-timeout", "soon"], &["--idle-timeout", "'soon'"]);
}

#[test]
fn unparsable_listen_address_exits_2_naming_option_and_value() {
    assert_usage_error(&["--listen", "nonsense"], &["--listen", "'nonsense'"]);
}

#[test]
fn missing_value_exits_2_naming_the_option() {
    assert_usage_error(&["--listen"], &["--listen", "missing"]);
}

#[test]
fn help_exits_0_and_lists_every_option_and_the_default_port() {
    for flag in ["--help", "-h"] {
        let run = run(&[flag]);
        assert_eq!(
            run.status.code(),
            Some(0),
            "{flag}: stderr:\n{}",
            run.stderr
        );
        assert_eq!(run.stderr, "", "{flag}: help goes to stdout");
        let help = &run.stdout;
        assert!(help.contains("usage: netgrace"), "{flag}:\n{help}");
        for option in [
            "-l, --listen",
            "--max-connections",
            "--max-buffer",
            "--drain-timeout",
            "--idle-timeout",
            "-v, --verbose",
            "-q, --quiet",
            "-h, --help",
            "-V, --version",
            "5388",
        ] {
            assert!(
                help.contains(option),
                "{flag}: help lacks {option:?}:\n{help}"
            );
        }
    }
}

#[test]
fn version_exits_0_and_prints_name_and_crate_version() {
    for flag in ["--version", "-V"] {
        let run = run(&[flag]);
        assert_eq!(
            run.status.code(),
            Some(0),
            "{flag}: stderr:\n{}",
            run.stderr
        );
        assert_eq!(
            run.stdout,
            concat!("netgrace ", env!("CARGO_PKG_VERSION"), "\n")
        );
        assert_eq!(run.stderr, "", "{flag}");
    }
}

/// The test holds the port for the whole run, so the collision is certain, not a race.
#[test]
fn address_in_use_exits_1_with_one_line_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = taken.local_addr().expect("local_addr").to_string();
    let run = run(&["-l", &addr]);
    let stderr = &run.stderr;
    assert_eq!(run.status.code(), Some(1), "stderr:\n{stderr}");
    assert_eq!(run.stdout, "");
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr:\n{stderr}");
    assert!(
        stderr.starts_with(&format!("netgrace: bind {addr}: address already in use")),
        "stderr:\n{stderr}"
    );
}

/// `-q` quiets the logger, but the reason for a failed start is not a log line.
#[test]
fn quiet_still_reports_a_failed_bind() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = taken.local_addr().expect("local_addr").to_string();
    let run = run(&["-qqq", "-l", &addr]);
    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains(&addr) && run.stderr.contains("address already in use"),
        "stderr:\n{}",
        run.stderr
    );
}

/// The first signal: the client gets its echo, then a clean EOF; once it closes, the process
/// exits 0 with a report that counts it as drained.
fn first_signal_drains_then_exits_0(signal: &str) {
    let serving = Serving::start(&[]);
    let mut client = serving.connect();
    assert_echo(&mut client, b"hello, netgrace\n");

    serving.process.signal(signal);
    let mut rest = Vec::new();
    client
        .read_to_end(&mut rest)
        .expect("a clean EOF, not a reset");
    assert_eq!(rest, b"", "nothing was left to echo");
    drop(client);

    let log = serving.wait_for_exit_0();
    let stderr = log.join("\n");
    assert!(stderr.contains("shutting down"), "stderr:\n{stderr}");
    // The default level is info: per-connection lines (debug) stay hidden.
    assert!(!stderr.contains("DEBUG"), "stderr:\n{stderr}");
    assert_report(
        &log,
        &[
            ("accepted", "1"),
            ("bytes_echoed", "16"),
            ("drained", "1"),
            ("forced", "0"),
            ("errors", "0"),
        ],
    );
}

#[test]
fn sigterm_drains_the_client_then_exits_0() {
    first_signal_drains_then_exits_0("TERM");
}

#[test]
fn sigint_drains_the_client_then_exits_0() {
    first_signal_drains_then_exits_0("INT");
}

/// The client never closes, so the graceful drain alone would last 60 s; the second signal
/// ends it at once. [`Serving::wait_for_exit_0`] allows only [`TIMEOUT`].
#[test]
fn second_signal_stops_at_once_and_counts_the_client_forced() {
    let mut serving = Serving::start(&["--drain-timeout", "60"]);
    let mut client = serving.connect();
    assert_echo(&mut client, b"ping\n");

    serving.process.signal("TERM");
    // The reactor's line: the drain is under way and waiting for this client.
    serving.wait_for("draining 1 connections");
    serving.process.signal("TERM");

    let log = serving.wait_for_exit_0();
    assert_report(
        &log,
        &[("accepted", "1"), ("drained", "0"), ("forced", "1")],
    );
    let shutdown_ms: f64 = report(&log)["shutdown_ms"].parse().expect("shutdown_ms");
    assert!(shutdown_ms < 60_000.0, "shutdown_ms={shutdown_ms}");
    // Held open until here: closing earlier would let the drain finish on its own.
    drop(client);
}

#[test]
fn verbose_logs_each_accepted_connection_at_debug() {
    let mut serving = Serving::start(&["-v"]);
    let client = serving.connect();
    let peer = client.local_addr().expect("local_addr");
    let line = serving.wait_for(&format!("accepted from {peer}"));
    assert!(line.contains("DEBUG"), "{line}");
    drop(client);

    serving.process.signal("TERM");
    let log = serving.wait_for_exit_0();
    assert_report(&log, &[("accepted", "1"), ("forced", "0")]);
}
