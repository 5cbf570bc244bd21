#![cfg(all(feature = "cli", target_os = "linux"))]
//! What an operator's tools see of the master, through the binary: the signals it takes
//! (SIGQUIT stops; SIGUSR1 and SIGUSR2 change nothing), the pid file scripts signal it by, and
//! the descriptor limit it raises for its workers.

mod common;
// Only its kill-and-reap guard is used here.
#[allow(dead_code)]
#[path = "common/group.rs"]
mod group;
#[path = "common/master.rs"]
mod master;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use rustix::process::Signal;

use common::binary::{assert_report, netgrace_under, run};
use common::temp_dir::TempDir;
use common::{assert_echo, read_to_eof};
use group::{spawn_in, Group};
use master::{assert_serves, is_running, lines_with, max_open_files, send, start_in, wait_until};

/// nginx's meaning: SIGQUIT is a graceful stop, not a core dump.
#[test]
fn sigquit_stops_gracefully() {
    let group = Group::new();
    let serving = start_in(&group, &[]);
    let mut client = serving.connect();
    assert_echo(&mut client, b"ping\n");
    client.write_all(b"last words\n").expect("write");
    serving.signal("QUIT");
    assert_eq!(read_to_eof(&mut client), b"last words\n");
    drop(client);
    let log = serving.wait_for_exit_0();
    assert_eq!(lines_with(&log, "SIGQUIT: stopping gracefully").len(), 1);
    assert_report(
        &log,
        &[
            ("stop", "graceful"),
            ("accepted", "1"),
            ("drained", "1"),
            ("forced", "0"),
        ],
    );
}

/// Their default action would end the process and cut every connection; sent to the master or
/// to a worker, they are logged and change nothing: the open client still gets its echo, and
/// the same worker serves to the end.
#[test]
fn sigusr1_and_sigusr2_to_the_master_or_a_worker_are_logged_and_ignored() {
    let group = Group::new();
    let mut serving = start_in(&group, &[]);
    let worker = serving.workers[0];
    let mut client = serving.connect();
    assert_echo(&mut client, b"before\n");
    for (signal, name) in [(Signal::USR1, "USR1"), (Signal::USR2, "USR2")] {
        serving.signal(name);
        serving.wait_for(&format!("SIG{name} ignored: netgrace has no use for it"));
        send(worker, signal);
        let master = serving.pid();
        serving.wait_for(&format!(
            "SIG{name} ignored by a worker: signal the master, pid {master}"
        ));
    }
    assert_echo(&mut client, b"after\n");
    assert_serves(&serving);
    assert!(is_running(worker), "worker pid {worker} is gone");

    serving.signal("TERM");
    assert_eq!(read_to_eof(&mut client), b"");
    drop(client);
    let log = serving.wait_for_exit_0();
    assert_report(
        &log,
        &[("workers", "1"), ("accepted", "2"), ("forced", "0")],
    );
}

/// The path of `name` in `dir`, as the `&str` a command line takes.
fn path_in(dir: &TempDir, name: &str) -> String {
    dir.path()
        .join(name)
        .to_str()
        .expect("a UTF-8 path")
        .to_owned()
}

/// Waits until the pid file at `path` holds `pid`: it is written just after the `serving:`
/// line, and no line says when.
#[track_caller]
fn wait_for_pid_file(path: &str, pid: u32) {
    wait_until(&format!("{path} holds {pid}"), || {
        fs::read_to_string(path).is_ok_and(|text| text == format!("{pid}\n"))
    });
}

/// `kill -HUP "$(cat PATH)"`, the README's recipe: the file names the master, the one pid
/// that restarts the service; removed when the service has stopped.
#[test]
fn the_pid_file_names_the_master_for_kill_hup_and_is_removed_at_exit() {
    let dir = TempDir::new("pid-file");
    let path = path_in(&dir, "netgrace.pid");
    let group = Group::new();
    let mut serving = start_in(&group, &["--pid-file", &path]);
    wait_for_pid_file(&path, serving.pid());

    let status = Command::new("sh")
        .args(["-c", r#"kill -HUP "$(cat "$1")""#, "sh", &path])
        .status()
        .expect("run sh");
    assert!(status.success(), "kill -HUP \"$(cat {path})\": {status}");
    serving.wait_for("restart complete: ");
    assert_serves(&serving);

    serving.signal("TERM");
    serving.wait_for_exit_0();
    assert!(!Path::new(&path).exists(), "{path} is left behind");
}

/// Two services told to use one pid file would take each other's signals: the second exits 1,
/// naming the file and the pid, before it binds (it was given the first one's address, so a
/// bind would have failed on that instead), and leaves the file alone.
#[test]
fn a_second_netgrace_given_a_live_ones_pid_file_exits_1_without_binding() {
    let dir = TempDir::new("pid-file-taken");
    let path = path_in(&dir, "netgrace.pid");
    let group = Group::new();
    let serving = start_in(&group, &["--pid-file", &path]);
    let master = serving.pid();
    wait_for_pid_file(&path, master);

    let addr = serving.addr.to_string();
    let second = run(&["--pid-file", &path, "-l", &addr]);
    let output = format!("{}{}", second.stdout, second.stderr);
    assert_eq!(second.status.code(), Some(1), "{output}");
    assert!(
        output.contains(&format!(
            "pid file {path}: netgrace pid {master} is running and uses it"
        )),
        "{output}"
    );
    assert!(!output.contains("listening on"), "{output}");
    wait_for_pid_file(&path, master);

    serving.signal("TERM");
    serving.wait_for_exit_0();
}

/// A pid file left by a run that did not remove it (killed, or the machine crashed) names a
/// pid that is gone or reused by another program: it is not a reason to refuse, and is
/// overwritten.
#[test]
fn a_stale_pid_file_is_overwritten() {
    let dir = TempDir::new("pid-file-stale");
    let path = path_in(&dir, "netgrace.pid");
    // Our own pid is a live process that is not netgrace; i32::MAX is above any pid_max
    // (PID_MAX_LIMIT is 2^22), so no process has it.
    for stale in [std::process::id(), i32::MAX as u32] {
        fs::write(&path, format!("{stale}\n")).expect("write a stale pid file");
        let group = Group::new();
        let serving = start_in(&group, &["--pid-file", &path]);
        wait_for_pid_file(&path, serving.pid());
        serving.signal("TERM");
        serving.wait_for_exit_0();
        assert!(!Path::new(&path).exists(), "{path} is left behind");
    }
}

/// systemd and most shells start services with a soft limit of 1024, which would clamp the
/// workers' descriptor reservation: the master raises it to the hard limit, and its workers
/// inherit that.
#[test]
fn a_1024_descriptor_limit_is_raised_to_the_hard_limit_for_the_workers() {
    let command = netgrace_under(&["prlimit", "--nofile=1024:4096"], &[]);
    let group = Group::new();
    let serving = spawn_in(&group, command);
    let raised = "descriptor limit raised from 1024 to the hard limit 4096";
    assert_eq!(serving.count_in_log(raised), 1, "{:?}", serving.log);
    let limit = ("4096".to_owned(), "4096".to_owned());
    assert_eq!(max_open_files(serving.pid()), limit, "the master");
    assert_eq!(max_open_files(serving.workers[0]), limit, "the worker");
    serving.signal("TERM");
    serving.wait_for_exit_0();
}
