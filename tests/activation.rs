#![cfg(feature = "cli")]
//! Socket activation (sd_listen_fds(3)): with `LISTEN_FDS=1`, and `LISTEN_PID` unset or naming
//! the server itself, the binary serves the listening socket at descriptor 3 instead of binding
//! `--listen`, and refuses to start on anything else there.
//!
//! Each test binds the socket itself and maps it to descriptor 3 of the child (`command-fds`),
//! as systemd does for a `.socket` unit. `--listen` names a port the test holds, so a binary
//! that bound it instead of serving descriptor 3 would fail to start.
//!
//! [`Started`] follows stderr like `common::binary::Serving`, which cannot be used here: it
//! reads the `listening on` line as a bare address (an inherited listener's line says more),
//! and these tests need the server's pid.

mod common;
#[path = "common/group.rs"]
mod group;

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use command_fds::{CommandFdExt, FdMapping};
use group::Group;
use rustix::process::Signal;

use common::binary::{assert_report, follow_output, listening_addr, netgrace, netgrace_under};
use common::{assert_echo, assert_refused, connect, read_to_eof, TIMEOUT};

/// The line a server serving an inherited listener on `addr` logs once it serves.
fn inherited_line(addr: SocketAddr) -> String {
    format!("listening on {addr} (inherited at descriptor 3; --listen not used)")
}

/// A listener on `127.0.0.1:0`: the socket to pass, or a port to hold.
fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

fn addr_of(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().expect("local_addr")
}

/// Sets `LISTEN_FDS=1` and a systemd-like `LISTEN_FDNAMES` on `command`, and gives it `fd` as
/// descriptor 3. The command owns `fd` from here on: once it has spawned and is dropped, the
/// test holds no copy, and only the server keeps the socket open.
fn pass_at_descriptor_3(command: &mut Command, fd: OwnedFd) {
    command
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "netgrace.socket")
        .fd_mappings(vec![FdMapping {
            parent_fd: fd,
            child_fd: 3,
        }])
        .expect("map to descriptor 3");
}

/// `netgrace -l TAKEN` with `fd` at descriptor 3, `LISTEN_FDS=1` and no `LISTEN_PID`
/// (sd_listen_fds(3) accepts it unset, as a successor started by a restart has it).
fn activated(fd: OwnedFd, taken: &TcpListener) -> Command {
    let mut command = netgrace(&["-l", &addr_of(taken).to_string()]);
    command.env_remove("LISTEN_PID");
    pass_at_descriptor_3(&mut command, fd);
    command
}

/// Like [`activated`], but with `LISTEN_PID` set to the server's own pid, as systemd sets it:
/// a shell exports its own pid, then becomes netgrace (`exec` keeps the pid and descriptor 3).
fn activated_with_own_pid(fd: OwnedFd, taken: &TcpListener) -> Command {
    const EXPORT_OWN_PID: &str = "export LISTEN_PID=$$; exec \"$@\"";
    let taken = addr_of(taken).to_string();
    let mut command = netgrace_under(&["sh", "-c", EXPORT_OWN_PID, "sh"], &["-l", &taken]);
    pass_at_descriptor_3(&mut command, fd);
    command
}

#[test]
fn an_inherited_listener_is_served_instead_of_listen_and_closed_at_exit() {
    let taken = bind();
    let listener = bind();
    let addr = addr_of(&listener);
    let mut server = Started::spawn(activated(listener.into(), &taken));
    server.wait_for(&inherited_line(addr));

    let mut client = connect(addr);
    assert_echo(&mut client, b"served from descriptor 3\n");
    server.signal("TERM");
    assert_eq!(read_to_eof(&mut client), b"", "nothing was left to echo");
    drop(client);

    let (status, log) = server.wait_for_exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", log.join("\n"));
    assert_report(
        &log,
        &[
            ("accepted", "1"),
            ("bytes_echoed", "25"),
            ("drained", "1"),
            ("errors", "0"),
            ("stop", "graceful"),
        ],
    );
    // The server held the last descriptor of the socket; with it gone, nothing listens.
    assert_refused(addr);
}

#[test]
fn listen_pid_naming_the_server_itself_is_honoured() {
    let taken = bind();
    let listener = bind();
    let addr = addr_of(&listener);
    let mut server = Started::spawn(activated_with_own_pid(listener.into(), &taken));
    server.wait_for(&inherited_line(addr));
    assert_echo(&mut connect(addr), b"ping\n");
    server.signal("TERM");
    let (status, log) = server.wait_for_exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", log.join("\n"));
    assert_report(&log, &[("accepted", "1"), ("errors", "0")]);
}

/// `LISTEN_FDS` meant for another process (this test's pid in `LISTEN_PID`) is not ours: the
/// server binds `--listen` (`127.0.0.1:0` from `netgrace`) and leaves descriptor 3 alone.
#[test]
fn listen_pid_naming_another_process_binds_listen_instead() {
    let listener = bind();
    let passed = addr_of(&listener);
    let mut command = netgrace(&[]);
    command.env("LISTEN_PID", std::process::id().to_string());
    pass_at_descriptor_3(&mut command, listener.into());
    let mut server = Started::spawn(command);

    let line = server.wait_for("listening on ");
    assert!(!line.contains("inherited"), "{line}");
    let bound = listening_addr(&line);
    assert_ne!(bound, passed, "{line}");
    assert_echo(&mut connect(bound), b"bound by itself\n");

    server.signal("TERM");
    let (status, log) = server.wait_for_exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", log.join("\n"));
    assert_report(&log, &[("accepted", "1"), ("errors", "0")]);
}

/// Runs `command` to its end and asserts that it refused descriptor 3: exit 1, one stderr line
/// `netgrace: descriptor 3 from LISTEN_FDS...` that contains `reason`, and nothing served.
#[track_caller]
fn assert_descriptor_3_refused(command: Command, reason: &str) {
    let (status, log) = Started::spawn(command).wait_for_exit();
    let stderr = log.join("\n");
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    assert_eq!(log.len(), 1, "one line; stderr:\n{stderr}");
    assert!(
        log[0].starts_with("netgrace: descriptor 3 from LISTEN_FDS"),
        "stderr:\n{stderr}"
    );
    assert!(log[0].contains(reason), "{reason:?}; stderr:\n{stderr}");
}

#[test]
fn a_file_or_a_pipe_at_descriptor_3_exits_1() {
    let taken = bind();
    let file =
        File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).expect("open Cargo.toml");
    assert_descriptor_3_refused(activated(file.into(), &taken), "is not a socket");
    let (reader, _writer) = std::io::pipe().expect("pipe");
    assert_descriptor_3_refused(activated(reader.into(), &taken), "is not a socket");
}

#[test]
fn a_udp_or_unix_socket_at_descriptor_3_exits_1() {
    let taken = bind();
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
    assert_descriptor_3_refused(activated(udp.into(), &taken), "not a valid tcp socket");
    let (unix, _peer) = UnixStream::pair().expect("socketpair");
    assert_descriptor_3_refused(activated(unix.into(), &taken), "not a valid tcp socket");
}

/// A connected TCP socket has the right family and type; only `SO_ACCEPTCONN` tells.
#[test]
fn a_tcp_socket_that_is_not_listening_at_descriptor_3_exits_1() {
    let taken = bind();
    let stream = TcpStream::connect(addr_of(&taken)).expect("connect");
    assert_descriptor_3_refused(
        activated(stream.into(), &taken),
        "is a TCP socket but not a listening one",
    );
}

/// `LISTEN_FDS=1` with descriptor 3 closed (a shell closes it, then becomes netgrace): the
/// message says so (listenfd alone would say "not a socket"; the binary asks procfs first).
#[test]
fn listen_fds_with_descriptor_3_not_open_exits_1() {
    const CLOSE_3: &str = "exec 3>&-; exec \"$@\"";
    let held = bind();
    let taken = addr_of(&held).to_string();
    let mut command = netgrace_under(&["sh", "-c", CLOSE_3, "sh"], &["-l", &taken]);
    command.env("LISTEN_FDS", "1").env_remove("LISTEN_PID");
    assert_descriptor_3_refused(command, "is not open");
}

/// A SIGHUP restart of a socket-activated server passes the same socket on, and the successor's
/// environment names only what its predecessor passed: `LISTEN_FDS=2` (listener and readiness
/// socket), their names, and no `LISTEN_PID` (systemd's, naming the predecessor, would make the
/// successor ignore both).
///
/// The server's own `/proc/PID/environ` cannot show that it removed the variables: it is the
/// environment as the process started, which unsetenv(3) does not rewrite. What a child of the
/// server inherits is what matters, and this is it.
#[test]
fn a_restart_passes_the_inherited_socket_on_with_a_fresh_environment() {
    let group = Group::new();
    let taken = bind();
    let listener = bind();
    let addr = addr_of(&listener);
    let mut command = activated_with_own_pid(listener.into(), &taken);
    command.process_group(0);
    let mut server = Started::spawn(command);
    group.adopt(server.pid());
    server.wait_for(&inherited_line(addr));

    server.signal("HUP");
    let line = server.wait_for("SIGHUP: restarting; successor pid ");
    let successor: u32 = line
        .split("successor pid ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    server.wait_for(&format!("restart: successor pid {successor} is serving"));
    // The successor says where it listens before it tells its predecessor (whose line this
    // is), but perhaps before the predecessor's "restarting" line: count, don't wait.
    assert_eq!(
        server.count_in_log(&inherited_line(addr)),
        2,
        "the successor serves the same socket; stderr:\n{}",
        server.log.join("\n")
    );
    let environ = std::fs::read(format!("/proc/{successor}/environ")).expect("read environ");
    let mut listen_vars: Vec<String> = environ
        .split(|&byte| byte == 0)
        .map(|var| String::from_utf8_lossy(var).into_owned())
        .filter(|var| var.starts_with("LISTEN_"))
        .collect();
    listen_vars.sort();
    assert_eq!(
        listen_vars,
        ["LISTEN_FDNAMES=listener:netgrace-ready", "LISTEN_FDS=2"],
        "the successor's LISTEN_ variables"
    );

    // The old process has handed over and exits; whoever connects now reaches the successor.
    server.wait_for("stop=hand-over");
    let mut client = connect(addr);
    assert_echo(&mut client, b"after the restart\n");
    group.signal(successor, Signal::TERM);
    assert_eq!(read_to_eof(&mut client), b"", "nothing was left to echo");
    drop(client);

    let (status, log) = server.wait_for_exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", log.join("\n"));
    let successor_status = group.reap(successor);
    assert_eq!(
        successor_status.exit_status(),
        Some(0),
        "{successor_status:?}"
    );
    // The successor's report is the last line: both processes share stderr.
    assert_report(&log, &[("accepted", "1"), ("stop", "graceful")]);
    assert_refused(addr);
}

/// A netgrace child whose stderr is forwarded line by line over a channel; killed and reaped
/// on drop, so a failing test never leaves a server behind.
struct Started {
    child: Child,
    /// Closed by the forwarding thread at EOF, when every process sharing stderr has exited.
    lines: Receiver<String>,
    /// Every stderr line received so far: for assertions and failure messages.
    log: Vec<String>,
}

impl Started {
    #[track_caller]
    fn spawn(mut command: Command) -> Started {
        let lines = follow_output(&mut command);
        let child = command.spawn().expect("spawn netgrace");
        // The command holds this process's copy of whatever was mapped to descriptor 3.
        drop(command);
        Started {
            child,
            lines,
            log: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `HUP`) with kill(1), as an operator would.
    #[track_caller]
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed: {status}");
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

    /// How many stderr lines received so far contain `needle`.
    fn count_in_log(&self, needle: &str) -> usize {
        self.log.iter().filter(|line| line.contains(needle)).count()
    }

    fn next_line(&mut self, deadline: Instant) -> Result<String, RecvTimeoutError> {
        let line = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        self.log.push(line.clone());
        Ok(line)
    }

    /// Waits (bounded by [`TIMEOUT`]) for stderr's EOF, then reaps the process: its status and
    /// its whole log. EOF comes first, so `wait` does not block.
    #[track_caller]
    fn wait_for_exit(mut self) -> (ExitStatus, Vec<String>) {
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
        let status = self.child.wait().expect("wait for netgrace");
        (status, std::mem::take(&mut self.log))
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // Both are no-ops once the test has reaped the process itself.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
