#![cfg(feature = "cli")]
//! systemd without systemd: the binary's notifications (sd_notify(3)) to a Unix datagram socket
//! the test binds and names in `NOTIFY_SOCKET`, across a SIGHUP restart and a failed one; and
//! the unit files in `examples/systemd/` checked by `systemd-analyze verify`.
//!
//! The socket learns each sender's pid from the kernel (`SO_PASSCRED`), as systemd does, so the
//! tests can tell the old process's notifications from its successor's.

mod common;
#[path = "common/group.rs"]
mod group;

use std::fs;
use std::io;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use group::Group;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use rustix::process::Signal;

use common::binary::{assert_report, netgrace, Serving};
use common::{assert_echo, read_to_eof, recv, TIMEOUT};

/// A restart, as systemd sees it: `READY=1`; at SIGHUP `RELOADING=1` from the old process; then
/// `MAINPID=` and `READY=1` from the successor; at SIGTERM `STOPPING=1` from the successor only.
///
/// The old process gets a SIGTERM too while it drains, as `systemctl stop` sends one to every
/// process of the unit: it is not the main process any more, so it must stay silent.
#[test]
fn a_restart_says_reloading_then_the_successor_says_mainpid_ready_and_stopping() {
    let group = Group::new();
    let mut notify = NotifySocket::bind();
    // The drain waits for the client below; the test closes it long before 60 s.
    let mut command = netgrace(&["--drain-timeout", "60"]);
    command.env("NOTIFY_SOCKET", &notify.path).process_group(0);
    let mut serving = Serving::spawn(command);
    let old = notify.recv().expect_from(None, &["READY=1"]);
    group.adopt(old);
    let mut client = serving.connect();
    assert_echo(&mut client, b"before the restart\n");

    serving.signal("HUP");
    let reloading = notify.recv();
    reloading.assert_reloading_from(old);
    let handed = notify.recv();
    let successor: u32 = handed
        .lines
        .first()
        .and_then(|line| line.strip_prefix("MAINPID="))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("MAINPID= first: {handed:?}"));
    assert_ne!(successor, old, "{handed:?}");
    handed.expect_from(
        Some(successor),
        &[&format!("MAINPID={successor}"), "READY=1"],
    );
    serving.wait_for(&format!("restart: successor pid {successor} is serving"));
    serving.wait_for("draining 1 connection");

    serving.signal("TERM");
    serving.wait_for("SIGTERM: shutting down gracefully");
    assert_eq!(read_to_eof(&mut client), b"", "nothing was left to echo");
    drop(client);
    serving.wait_for("stop=hand-over");
    group.signal(successor, Signal::TERM);
    // Had the old process said STOPPING=1, right after its SIGTERM line, it would come first.
    notify.recv().expect_from(Some(successor), &["STOPPING=1"]);

    let log = serving.wait_for_exit_0();
    let status = group.reap(successor);
    assert_eq!(status.exit_status(), Some(0), "successor: {status:?}");
    assert_report(&log, &[("stop", "graceful")]);
    // Both have exited, so everything they sent is queued.
    notify.assert_no_more();
    let stopping_from_old = notify
        .received
        .iter()
        .filter(|n| n.pid == old && n.lines.iter().any(|line| line == "STOPPING=1"))
        .count();
    assert_eq!(stopping_from_old, 0, "{:?}", notify.received);
}

/// A successor that fails (the program file replaced by a script that exits 1) leaves the old
/// process serving, and systemd must hear that the reload is over: `READY=1` with a `STATUS=`.
#[test]
fn a_failed_restart_says_ready_again_with_a_status() {
    let dir = TempDir::new("failed-restart");
    let program = dir.0.join("netgrace");
    let built = Path::new(env!("CARGO_BIN_EXE_netgrace"));
    shell("cp \"$1\" \"$2\"", &[built, &program]);
    let mut notify = NotifySocket::bind();
    let mut command = netgrace_at(&program);
    command.env("NOTIFY_SOCKET", &notify.path);
    let mut serving = Serving::spawn(command);
    let pid = notify.recv().expect_from(None, &["READY=1"]);

    // Replaced as an upgrade would be: a new file renamed over the old name.
    let script = dir.0.join("failing");
    shell(
        "printf '#!/bin/sh\\nexit 1\\n' >\"$1\" && chmod 755 \"$1\" && mv \"$1\" \"$2\"",
        &[&script, &program],
    );
    serving.signal("HUP");
    notify.recv().assert_reloading_from(pid);
    serving.wait_for(&format!("from {}", program.display()));
    let line = serving.wait_for("restart failed: successor pid ");
    assert!(
        line.contains("exited before it was serving (exit status: 1); still serving"),
        "{line}"
    );
    let again = notify.recv();
    assert_eq!(again.pid, pid, "{again:?}");
    assert!(
        again.lines.len() == 2
            && again.lines[0] == "READY=1"
            && again.lines[1].starts_with("STATUS=restart failed"),
        "READY=1 and a STATUS=: {again:?}"
    );

    let mut client = serving.connect();
    assert_echo(&mut client, b"still served\n");
    serving.signal("TERM");
    notify.recv().expect_from(Some(pid), &["STOPPING=1"]);
    assert_eq!(read_to_eof(&mut client), b"", "nothing was left to echo");
    drop(client);
    let log = serving.wait_for_exit_0();
    assert_report(&log, &[("accepted", "1"), ("stop", "graceful")]);
    notify.assert_no_more();
}

/// The unit files pass `systemd-analyze verify` without a word about them. Verify checks that
/// `ExecStart=`'s program exists, and `/usr/local/bin/netgrace` need not: so it checks a copy
/// of the units, in a temporary directory, whose `ExecStart=` runs the binary just built.
#[test]
fn unit_files_pass_systemd_analyze_verify() {
    const EXEC_START: &str = "ExecStart=/usr/local/bin/netgrace";
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/systemd");
    let dir = TempDir::new("units");
    let socket = dir.0.join("netgrace.socket");
    let service = dir.0.join("netgrace.service");
    fs::copy(units.join("netgrace.socket"), &socket).expect("copy netgrace.socket");
    let text = fs::read_to_string(units.join("netgrace.service")).expect("read netgrace.service");
    assert_eq!(text.lines().filter(|line| *line == EXEC_START).count(), 1);
    let built = format!("ExecStart={}", env!("CARGO_BIN_EXE_netgrace"));
    fs::write(&service, text.replace(EXEC_START, &built)).expect("write netgrace.service");

    let mut command = Command::new("systemd-analyze");
    command.arg("verify").arg(&socket).arg(&service);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = match command.spawn() {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            eprintln!(
                "SKIPPED: systemd-analyze is not installed (Debian: the systemd package), \
                 so examples/systemd/ was not verified"
            );
            return;
        }
        spawned => {
            let child = spawned.expect("run systemd-analyze");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || tx.send(child.wait_with_output()));
            recv(&rx, "systemd-analyze verify").expect("systemd-analyze output")
        }
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{}:\n{said}", output.status);
    let about_ours: Vec<&str> = said
        .lines()
        .filter(|line| line.contains("netgrace"))
        .collect();
    assert!(about_ours.is_empty(), "systemd-analyze verify:\n{said}");
}

/// `netgrace -l 127.0.0.1:0` run from `program`, set up as `common::binary::netgrace` sets up
/// the built binary; a restart runs `program` again.
fn netgrace_at(program: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .args(["-l", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    command
}

/// Runs `script` with `sh -c`, `args` as `$1`, `$2`, ..., and asserts that it succeeds.
///
/// For writing a program file that is then run: if this process opened it for writing, a child
/// that another test forks meanwhile would hold the descriptor until its exec, and running the
/// file then fails with ETXTBSY ("text file busy"). A shell's descriptors are its own.
#[track_caller]
fn shell(script: &str, args: &[&Path]) {
    let status = Command::new("sh")
        .args(["-c", script, "sh"])
        .args(args)
        .stdin(Stdio::null())
        .status()
        .expect("run sh");
    assert!(status.success(), "sh -c {script:?}: {status}");
}

/// A name no other test, in this process or another, uses at the same time.
fn unique_name(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("netgrace-{what}-{}-{n}", std::process::id())
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    #[track_caller]
    fn new(what: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_name(what));
        fs::create_dir(&path).expect("create temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One datagram: who sent it, and its `KEY=VALUE` lines.
#[derive(Debug, Clone)]
struct Notification {
    pid: u32,
    lines: Vec<String>,
}

impl Notification {
    /// Asserts that it is exactly `lines`, sent by `pid` (any pid if `None`); returns the pid.
    #[track_caller]
    fn expect_from(&self, pid: Option<u32>, lines: &[&str]) -> u32 {
        assert_eq!(self.lines, lines, "{self:?}");
        if let Some(pid) = pid {
            assert_eq!(self.pid, pid, "sender of {self:?}");
        }
        self.pid
    }

    /// `RELOADING=1` and `MONOTONIC_USEC=` (CLOCK_MONOTONIC, in µs: not zero), sent by `pid`.
    #[track_caller]
    fn assert_reloading_from(&self, pid: u32) {
        assert_eq!(self.pid, pid, "sender of {self:?}");
        let usec = self
            .lines
            .get(1)
            .and_then(|line| line.strip_prefix("MONOTONIC_USEC="))
            .and_then(|usec| usec.parse::<u64>().ok());
        assert!(
            self.lines.len() == 2 && self.lines[0] == "RELOADING=1" && usec > Some(0),
            "RELOADING=1 and MONOTONIC_USEC=: {self:?}"
        );
    }
}

/// A stand-in for systemd's notify socket at a fresh path; removed on drop.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    /// Every notification received so far, in order.
    received: Vec<Notification>,
}

impl NotifySocket {
    #[track_caller]
    fn bind() -> NotifySocket {
        let path = std::env::temp_dir().join(unique_name("notify") + ".sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        rustix::net::sockopt::set_socket_passcred(&socket, true).expect("SO_PASSCRED");
        socket
            .set_read_timeout(Some(TIMEOUT))
            .expect("set_read_timeout");
        NotifySocket {
            socket,
            path,
            received: Vec::new(),
        }
    }

    /// The next notification; fails the test if none arrives within [`TIMEOUT`].
    #[track_caller]
    fn recv(&mut self) -> Notification {
        match self.try_recv() {
            Ok(notification) => notification,
            Err(err) => panic!(
                "no notification within {TIMEOUT:?} ({err}); received so far: {:?}",
                self.received
            ),
        }
    }

    fn try_recv(&mut self) -> io::Result<Notification> {
        let mut buf = [0; 4096];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let message = rustix::net::recvmsg(
            &self.socket,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::empty(),
        )?;
        let pid = control
            .drain()
            .find_map(|message| match message {
                RecvAncillaryMessage::ScmCredentials(credentials) => Some(credentials.pid),
                _ => None,
            })
            .ok_or_else(|| io::Error::other("a datagram without the sender's credentials"))?;
        let text = String::from_utf8_lossy(&buf[..message.bytes]);
        let notification = Notification {
            pid: pid.as_raw_pid().unsigned_abs(),
            lines: text.lines().map(str::to_owned).collect(),
        };
        self.received.push(notification.clone());
        Ok(notification)
    }

    /// Asserts that nothing more is queued; call it once every sender has exited.
    #[track_caller]
    fn assert_no_more(&mut self) {
        self.socket.set_nonblocking(true).expect("set_nonblocking");
        match self.try_recv() {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("unexpected: {other:?}; before it: {:?}", self.received),
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
