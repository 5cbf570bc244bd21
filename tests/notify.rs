#![cfg(feature = "cli")]
//! systemd without systemd: the binary's notifications (sd_notify(3)) to a Unix datagram socket
//! the test binds and names in `NOTIFY_SOCKET`; and the unit files in `examples/systemd/`
//! checked by `systemd-analyze verify`.
//!
//! The master is the service's main process for its whole life, so every notification comes
//! from its pid (the socket learns each sender's pid from the kernel, as systemd does) and the
//! unit needs no more than `NotifyAccess=main`. Workers say nothing: they are started without
//! `NOTIFY_SOCKET`.

#[path = "common/activate.rs"]
mod activate;
mod common;
#[path = "common/group.rs"]
mod group;
#[path = "common/notify_socket.rs"]
mod notify_socket;

use std::fs;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use activate::environ;
use common::binary::{netgrace, netgrace_at, Serving};
use common::temp_dir::{unique_name, TempDir};
use common::{assert_echo, recv};
use group::{spawn_in, Group};
use notify_socket::NotifySocket;

/// Spawns `command` with `NOTIFY_SOCKET` naming `notify`, in a process group of its own that
/// `group` kills and reaps at the end.
#[track_caller]
fn spawn_notifying(group: &Group, mut command: Command, notify: &NotifySocket) -> Serving {
    command.env("NOTIFY_SOCKET", &notify.name);
    spawn_in(group, command)
}

/// A good SIGHUP restart of `serving` (the master) as systemd hears it: `RELOADING=1`, then
/// `READY=1` with a status that says it serves, with no word of a failure.
#[track_caller]
fn restart_and_hear_it_serve(serving: &mut Serving, notify: &mut NotifySocket) {
    let master = serving.pid();
    serving.signal("HUP");
    notify.recv().assert_reloading_from(master);
    serving.wait_for("restart complete: ");
    let restarted = notify.recv();
    let status = restarted.assert_ready_from(master);
    assert!(
        status.starts_with("serving") && !status.contains("fail"),
        "{restarted:?}"
    );
}

/// SIGTERM to `serving` (the master): `STOPPING=1`, a clean exit, and nothing more on the
/// socket; every notification of the run came from the master.
#[track_caller]
fn stop_and_hear_only_the_master(serving: Serving, mut notify: NotifySocket) {
    let master = serving.pid();
    serving.signal("TERM");
    notify.recv().assert_from(master, &["STOPPING=1"]);
    serving.wait_for_exit_0();
    // Every process has exited, so everything any of them sent is queued.
    notify.assert_no_more();
    notify.assert_all_from(master);
}

/// A restart as systemd sees it: `READY=1` once serving; at SIGHUP `RELOADING=1`, then
/// `READY=1` with a status that says it serves again; at SIGTERM `STOPPING=1`. All from the
/// master, which never hands `MAINPID=` to anyone; its workers, old or new, never speak.
#[test]
fn a_restart_says_reloading_then_ready_and_stopping_all_from_the_master() {
    let group = Group::new();
    let mut notify = NotifySocket::bind();
    let command = netgrace(&["--workers", "2"]);
    let mut serving = spawn_notifying(&group, command, &notify);
    let master = serving.pid();
    assert_eq!(notify.recv().assert_ready_from(master), "serving");
    for &worker in &serving.workers {
        let vars = environ(worker);
        let told: Vec<&String> = vars
            .iter()
            .filter(|v| v.starts_with("NOTIFY_SOCKET="))
            .collect();
        assert!(told.is_empty(), "worker {worker}: {told:?}");
    }

    restart_and_hear_it_serve(&mut serving, &mut notify);
    assert_echo(&mut serving.connect(), b"after the restart\n");

    stop_and_hear_only_the_master(serving, notify);
}

/// A restart whose new worker exits before it serves leaves the old one serving, and systemd
/// must hear that the reload is over and how it went: `READY=1` and `STATUS=restart failed`.
/// A later good restart replaces that status, so `systemctl status` stops saying it failed.
#[test]
fn a_failed_restart_says_restart_failed_until_a_good_restart_clears_it() {
    let group = Group::new();
    let dir = TempDir::new("failed-restart");
    let program = dir.path().join("netgrace");
    let built = Path::new(env!("CARGO_BIN_EXE_netgrace"));
    shell("cp \"$1\" \"$2\"", &[built, &program]);
    let mut notify = NotifySocket::bind();
    let mut serving = spawn_notifying(&group, netgrace_at(&program, &[]), &notify);
    let master = serving.pid();
    assert_eq!(notify.recv().assert_ready_from(master), "serving");

    // Each new program file is renamed over the old name, as an upgrade installs it.
    let failing = dir.path().join("failing");
    let exits_3 = "printf '#!/bin/sh\\nexit 3\\n' >\"$1\" && chmod 755 \"$1\" && mv \"$1\" \"$2\"";
    shell(exits_3, &[&failing, &program]);
    serving.signal("HUP");
    notify.recv().assert_reloading_from(master);
    let line = serving.wait_for("restart failed: ");
    assert!(line.contains("(exit status: 3); still serving"), "{line}");
    let failed = notify.recv();
    let status = failed.assert_ready_from(master);
    assert!(status.starts_with("restart failed"), "{failed:?}");
    assert_echo(&mut serving.connect(), b"still served\n");

    let good = dir.path().join("good");
    shell(
        "cp \"$1\" \"$2\" && mv \"$2\" \"$3\"",
        &[built, &good, &program],
    );
    restart_and_hear_it_serve(&mut serving, &mut notify);

    stop_and_hear_only_the_master(serving, notify);
}

/// sd_notify(3) allows `NOTIFY_SOCKET=@name`, a socket in the abstract namespace (unix(7)),
/// which has no file to connect to.
#[test]
fn an_abstract_notify_socket_receives_ready_and_stopping() {
    let group = Group::new();
    let mut notify = NotifySocket::bind_abstract();
    let serving = spawn_notifying(&group, netgrace(&[]), &notify);
    let master = serving.pid();
    assert_eq!(notify.recv().assert_ready_from(master), "serving");
    serving.signal("TERM");
    notify.recv().assert_from(master, &["STOPPING=1"]);
    let log = serving.wait_for_exit_0();
    let warnings: Vec<&String> = log.iter().filter(|l| l.contains("notify")).collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// A notify socket that cannot be reached costs one warning per notification, naming the
/// socket and the reason, and nothing else: the service starts, serves and stops as usual.
#[test]
fn an_unreachable_notify_socket_is_a_warning_and_serving_goes_on() {
    let group = Group::new();
    let missing = std::env::temp_dir().join(unique_name("no-notify") + ".sock");
    let mut command = netgrace(&[]);
    command.env("NOTIFY_SOCKET", &missing);
    let mut serving = spawn_in(&group, command);
    let warning = format!("notify systemd ({})", missing.display());
    let line = serving.wait_for(&warning);
    assert!(line.contains("No such file or directory"), "{line}");
    assert_echo(&mut serving.connect(), b"served all the same\n");
    serving.signal("TERM");
    let log = serving.wait_for_exit_0();
    let warnings = log.iter().filter(|line| line.contains(&warning)).count();
    assert_eq!(
        warnings,
        2,
        "READY=1 and STOPPING=1; log:\n{}",
        log.join("\n")
    );
}

/// The unit files pass `systemd-analyze verify` without a word about them. Verify checks that
/// `ExecStart=`'s program exists, and `/usr/local/bin/netgrace` need not: so it checks a copy
/// of the units, in a temporary directory, whose `ExecStart=` runs the binary just built.
#[test]
fn unit_files_pass_systemd_analyze_verify() {
    const EXEC_START: &str = "ExecStart=/usr/local/bin/netgrace";
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/systemd");
    let dir = TempDir::new("units");
    let socket = dir.path().join("netgrace.socket");
    let service = dir.path().join("netgrace.service");
    fs::copy(units.join("netgrace.socket"), &socket).expect("copy netgrace.socket");
    let text = fs::read_to_string(units.join("netgrace.service")).expect("read netgrace.service");
    assert_eq!(text.lines().filter(|line| *line == EXEC_START).count(), 1);
    // Only the master speaks, and it stays the main process: no other process need be heard.
    assert!(
        text.lines().any(|line| line == "NotifyAccess=main"),
        "{text}"
    );
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
            return common::skipped(
                "systemd-analyze is not installed (Debian: the systemd package), so \
                 examples/systemd/ was not verified",
            );
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
