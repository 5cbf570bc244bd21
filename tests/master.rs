#![cfg(all(feature = "cli", target_os = "linux"))]
//! The master through the binary: the pid the operator starts is the service's for its whole
//! life, under whatever supervises it: a PID namespace whose init it is, a supervisor that waits
//! on it, a terminal whose Ctrl-C signals its whole process group.

mod common;
// Only its kill-and-reap guard is used here.
#[allow(dead_code)]
#[path = "common/group.rs"]
mod group;
#[path = "common/master.rs"]
mod master;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::Signal;

use common::binary::{assert_report, pids_in};
use common::{assert_echo, read_to_eof};
use group::Group;
use master::{
    assert_child_of, assert_serves, children_of, command_of, is_running, lines_with,
    namespace_pids, new_generation, pid, send, start_in, state_and_parent, wait_for_clean_exits,
    zombies_of, Namespaced,
};

/// The longest a zombie may wait to be reaped: the master reaps on SIGCHLD, and at least this
/// often should a SIGCHLD be merged with another.
const REAPED_WITHIN: Duration = Duration::from_secs(1);

/// Rounds of a race that any one round may miss.
const ROUNDS: usize = 20;

/// As a container's PID 1 (`unshare --pid --fork`), the master serves before and after two
/// SIGHUPs (the restarts replace workers, never the namespace's init), reaps its old workers
/// and an orphan of another process group that the kernel hands it, and exits 0 on SIGTERM;
/// unshare exits with its status.
#[test]
fn as_pid_1_of_a_pid_namespace_it_serves_across_two_restarts_and_reaps_every_child() {
    let group = Group::new();
    let Some(mut namespaced) = Namespaced::start(&group, &[]) else {
        // It said why, in the `skipped:` line of `common::skipped`.
        return;
    };
    let master = namespaced.master;
    assert_eq!(
        namespace_pids(master).last(),
        Some(&1),
        "PID 1 in its namespace"
    );
    assert_serves(namespaced.serving());
    // Pids as the master sees them, in its namespace: only for matching its lines.
    let mut handed_over = Vec::new();
    for _ in 0..2 {
        send(master, Signal::HUP);
        let line = namespaced.serving().wait_for("restart complete: ");
        assert_serves(namespaced.serving());
        handed_over.extend(pids_in(&line));
    }
    wait_for_clean_exits(namespaced.serving(), &handed_over);
    assert_eq!(
        zombies_of(master),
        Vec::<u32>::new(),
        "zombies of the master"
    );

    // It ends when we say, so it is still there to be found; then it is the master's to reap.
    let orphan = orphan_in_namespace_of(master);
    send(orphan, Signal::KILL);
    assert_reaped_promptly(orphan);

    send(master, Signal::TERM);
    let log = namespaced.wait_for_exit_0();
    assert_report(
        &log,
        &[("workers", "3"), ("stop", "graceful"), ("errors", "0")],
    );
}

/// Starts, inside `master`'s PID namespace, a `sleep` whose parent exits at once: the kernel
/// reparents it to the namespace's init, the master. It is in a process group of its own, not
/// the master's, like anything an operator's tool starts in a container from outside. Returns
/// its pid as we see it. Should the test fail before it ends it, it dies with the namespace.
#[track_caller]
fn orphan_in_namespace_of(master: u32) -> u32 {
    let status = Command::new("nsenter")
        .args(["--target", &master.to_string(), "--pid", "--"])
        .args(["sh", "-c", "sleep 60 & exit 0"])
        .process_group(0)
        .status()
        .expect("run nsenter (util-linux)");
    assert!(status.success(), "nsenter: {status}");
    // nsenter waited for sh, so its child is an orphan already; but it may not have exec'd
    // `sleep` yet.
    let mut orphans = Vec::new();
    master::wait_until("an orphaned sleep among the master's children", || {
        orphans = children_of(master);
        orphans.retain(|&child| command_of(child) == "sleep");
        !orphans.is_empty()
    });
    let [orphan] = orphans[..] else {
        panic!("one orphaned sleep among the master's children: {orphans:?}");
    };
    orphan
}

/// Waits until `orphan` has exited and been reaped, failing if it stays a zombie longer than
/// [`REAPED_WITHIN`].
#[track_caller]
fn assert_reaped_promptly(orphan: u32) {
    let mut zombie_since = None;
    master::wait_until("the orphan exits and is reaped", || {
        match state_and_parent(orphan) {
            None => return true,
            Some(('Z', _)) => {
                let since = *zombie_since.get_or_insert_with(Instant::now);
                assert!(
                    since.elapsed() < REAPED_WITHIN,
                    "pid {orphan} a zombie for {REAPED_WITHIN:?}"
                );
            }
            Some(_) => {}
        }
        false
    });
}

/// runit, s6 or a shell script wait on the pid they started: across a restart it must not
/// exit (that would read as the service stopping), and it is still the one serving.
#[test]
fn a_supervisor_that_waits_on_the_started_pid_sees_it_run_through_a_restart() {
    let group = Group::new();
    let mut serving = start_in(&group, &[]);
    let first = serving.workers.clone();
    serving.signal("HUP");
    let line = serving.wait_for("restart complete: ");
    assert_eq!(pids_in(&line), first, "the old worker hands over: {line}");
    wait_for_clean_exits(&mut serving, &first);

    assert!(is_running(serving.pid()), "the started pid exited");
    for worker in new_generation(&line) {
        assert!(!first.contains(&worker), "{line}");
        assert_child_of(worker, serving.pid());
    }
    assert_serves(&serving);
    serving.signal("TERM");
    let log = serving.wait_for_exit_0();
    assert_report(&log, &[("workers", "2"), ("stop", "graceful")]);
}

/// Ctrl-C in a terminal signals every process of the foreground group at once: the master and
/// its workers. After a restart (which, before the master existed, left a successor running in
/// the background, out of Ctrl-C's reach), the service stops gracefully, once: the client gets
/// its echo, then EOF; one report per worker that served, then the master's, last; no process
/// of the group outlives the master.
#[test]
fn ctrl_c_to_the_process_group_after_a_restart_stops_every_process_once_and_leaves_none() {
    let group = Group::new();
    let mut serving = start_in(&group, &["--workers", "2"]);
    let leader = serving.pid();
    serving.signal("HUP");
    let line = serving.wait_for("restart complete: ");
    wait_for_clean_exits(&mut serving, &pids_in(&line));
    let mut client = serving.connect();
    assert_echo(&mut client, b"ping\n");
    client.write_all(b"last words\n").expect("write");

    rustix::process::kill_process_group(pid(leader), Signal::INT).expect("kill -INT -PGID");
    assert_eq!(read_to_eof(&mut client), b"last words\n");
    drop(client);
    let log = serving.wait_for_exit_0();
    let text = log.join("\n");
    assert_eq!(lines_with(&log, "worker stopped: ").len(), 4, "{text}");
    assert_eq!(lines_with(&log, "shutdown complete: ").len(), 1, "{text}");
    assert_eq!(lines_with(&log, "exited unexpectedly").len(), 0, "{text}");
    // The report is the last line (`report` checks): the log reached EOF right after it, so
    // no worker wrote after the master had exited.
    assert_report(
        &log,
        &[
            ("workers", "4"),
            ("accepted", "1"),
            ("drained", "1"),
            ("forced", "0"),
            ("stop", "graceful"),
        ],
    );
    assert_eq!(
        rustix::process::test_kill_process_group(pid(leader)),
        Err(Errno::SRCH),
        "a process of the group is left"
    );
}

/// The workers stop on the group's SIGINT as fast as the master does, often faster: each
/// exit must still be read as part of the stop, not as a worker dying, however the two race.
/// Several rounds with several workers, since any one round may go the master's way.
#[test]
fn ctrl_c_is_never_taken_for_workers_dying() {
    for _ in 0..ROUNDS {
        let group = Group::new();
        let serving = start_in(&group, &["--workers", "8"]);
        rustix::process::kill_process_group(pid(serving.pid()), Signal::INT)
            .expect("kill -INT -PGID");
        let log = serving.wait_for_exit_0();
        let text = log.join("\n");
        assert_eq!(lines_with(&log, "exited unexpectedly").len(), 0, "{text}");
        assert_eq!(lines_with(&log, "replacement").len(), 0, "{text}");
        assert_report(&log, &[("workers", "8"), ("stop", "graceful")]);
    }
}
