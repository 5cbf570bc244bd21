#![cfg(all(feature = "cli", target_os = "linux"))]
//! The master keeps its workers serving, through the binary: one that dies is replaced while
//! its clients wait in the queue the master keeps open, a crash loop backs off, and `--workers
//! N` share the socket, the restarts and the final report.

mod common;
// Only its kill-and-reap guard is used here.
#[allow(dead_code)]
#[path = "common/group.rs"]
mod group;
#[path = "common/master.rs"]
mod master;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use common::binary::{assert_report, counters, pids_in, Serving};
use common::{assert_echo, read_to_eof};
use group::Group;
use master::{
    assert_child_of, assert_serves, count, lines_with, new_generation, send, start_in,
    wait_for_clean_exits,
};

/// SIGKILLs `worker` of `serving`. A client that connects once the master has seen it die,
/// while no worker serves, waits in the queue the master keeps open and gets its echo from the
/// replacement, which serves within a second. Returns the replacement's pid.
#[track_caller]
fn kill_and_see_it_replaced(serving: &mut Serving, worker: u32) -> u32 {
    let killed = Instant::now();
    send(worker, Signal::KILL);
    serving.wait_for(&format!(
        "worker pid {worker} exited unexpectedly (signal: 9 (SIGKILL)); \
         starting a replacement in 0.1 s"
    ));
    let mut client = serving.connect();
    client.write_all(b"queued\n").expect("write");
    let line = serving.wait_for(" replaced the one that died; serving");
    assert!(killed.elapsed() < Duration::from_secs(1), "{line}");
    let mut echo = [0; 7];
    client
        .read_exact(&mut echo)
        .expect("the queued client's echo");
    assert_eq!(&echo, b"queued\n");
    let replacement = pids_in(&line)[0];
    assert_ne!(replacement, worker, "{line}");
    assert_child_of(replacement, serving.pid());
    replacement
}

#[test]
fn a_killed_worker_is_replaced_and_clients_queued_meanwhile_get_their_echo() {
    let group = Group::new();
    let mut serving = start_in(&group, &[]);
    let worker = serving.workers[0];
    kill_and_see_it_replaced(&mut serving, worker);
    assert_serves(&serving);
    serving.signal("TERM");
    let log = serving.wait_for_exit_0();
    assert_report(
        &log,
        &[("workers", "2"), ("unreported", "1"), ("forced", "0")],
    );
}

/// After a restart the new generation's worker is the only one on the socket: killed, it is
/// replaced all the same.
#[test]
fn a_worker_killed_after_a_restart_is_replaced_too() {
    let group = Group::new();
    let mut serving = start_in(&group, &[]);
    serving.signal("HUP");
    let line = serving.wait_for("restart complete: ");
    let [new] = new_generation(&line)[..] else {
        panic!("one new worker: {line}");
    };
    kill_and_see_it_replaced(&mut serving, new);
    assert_serves(&serving);
    serving.signal("TERM");
    let log = serving.wait_for_exit_0();
    assert_report(
        &log,
        &[("workers", "3"), ("unreported", "1"), ("forced", "0")],
    );
}

/// Each replacement is killed as soon as it serves: the pause before the next doubles, as the
/// log says (the clock is not measured: a loaded machine would blur it).
#[test]
fn a_crash_loop_backs_off_doubling_the_pause_before_each_replacement() {
    let group = Group::new();
    let mut serving = start_in(&group, &[]);
    let mut worker = serving.workers[0];
    let mut pauses = Vec::new();
    for _ in 0..4 {
        send(worker, Signal::KILL);
        let line = serving.wait_for(&format!("worker pid {worker} exited unexpectedly"));
        let pause = line.rsplit("starting a replacement in ").next();
        pauses.push(pause.unwrap_or_default().to_owned());
        let line = serving.wait_for(" replaced the one that died; serving");
        worker = pids_in(&line)[0];
    }
    assert_eq!(pauses, ["0.1 s", "0.2 s", "0.4 s", "0.8 s"]);
    assert_serves(&serving);
    serving.signal("TERM");
    serving.wait_for_exit_0();
}

/// Two workers share the socket: both are the master's children, every client is served, and a
/// graceful stop drains both, the master's last line summing their reports.
#[test]
fn two_workers_serve_and_a_graceful_stop_drains_both_into_one_sum() {
    let group = Group::new();
    let serving = start_in(&group, &["--workers", "2"]);
    assert_eq!(serving.workers.len(), 2, "{:?}", serving.log);
    for &worker in &serving.workers {
        assert_child_of(worker, serving.pid());
    }
    for i in 0..50 {
        let mut client = serving.connect();
        assert_echo(&mut client, format!("client {i}\n").as_bytes());
    }
    let mut held: Vec<_> = (0..4).map(|_| serving.connect()).collect();
    for client in &mut held {
        assert_echo(client, b"held open\n");
    }
    serving.signal("TERM");
    for client in &mut held {
        assert_eq!(read_to_eof(client), b"");
    }
    drop(held);
    let log = serving.wait_for_exit_0();
    let stopped = lines_with(&log, "worker stopped: ");
    assert_eq!(stopped.len(), 2, "{}", log.join("\n"));
    let mut accepted = 0;
    for line in stopped {
        let counters = counters(line);
        assert_eq!(counters["stop"], "graceful", "{line}");
        accepted += count(&counters, "accepted");
    }
    assert_eq!(accepted, 54);
    assert_report(
        &log,
        &[
            ("workers", "2"),
            ("accepted", "54"),
            ("drained", "4"),
            ("forced", "0"),
        ],
    );
}

/// A restart with two workers starts two new ones and, once both serve, hands both old ones
/// over; the final sum counts all four.
#[test]
fn a_restart_with_two_workers_replaces_both() {
    let group = Group::new();
    let mut serving = start_in(&group, &["--workers", "2"]);
    let mut first = serving.workers.clone();
    first.sort_unstable();
    serving.signal("HUP");
    let line = serving.wait_for("restart complete: 2 workers: pids ");
    assert!(
        line.contains("; old workers hand over and drain: pids "),
        "{line}"
    );
    let mut old = pids_in(&line);
    old.sort_unstable();
    assert_eq!(old, first, "{line}");
    let new = new_generation(&line);
    assert_eq!(new.len(), 2, "{line}");
    for worker in new {
        assert!(!first.contains(&worker), "{line}");
        assert_child_of(worker, serving.pid());
    }
    wait_for_clean_exits(&mut serving, &first);
    for _ in 0..10 {
        assert_serves(&serving);
    }
    serving.signal("TERM");
    let log = serving.wait_for_exit_0();
    let stops: Vec<String> = lines_with(&log, "worker stopped: ")
        .into_iter()
        .map(|line| counters(line)["stop"].clone())
        .collect();
    assert_eq!(stops, ["hand-over", "hand-over", "graceful", "graceful"]);
    assert_report(
        &log,
        &[("workers", "4"), ("accepted", "10"), ("forced", "0")],
    );
}
