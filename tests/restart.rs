#![cfg(all(feature = "cli", target_os = "linux"))]
//! SIGHUP through the binary: the master (the process the operator started, whose pid never
//! changes) starts a new generation of workers on the socket it holds, and the old ones hand
//! over once all of it serves. Clients see nothing of it; a new worker that fails changes
//! nothing; the new workers run the program file now at the master's path, unless argv[0]
//! names another program; and a client accepted just before the hand-over still gets its echo.

mod common;
#[path = "common/restart.rs"]
mod restart;
#[path = "common/workload.rs"]
mod workload;

use std::io::Write;
use std::path::Path;

use rustix::process::Signal;

use common::binary::netgrace_at;
use common::temp_dir::TempDir;
use common::{assert_echo, binary, read_to_eof};
use restart::{count, exe, parent_of, Master};
use workload::{Flooded, Workload, FIRST_ECHO, LONG_LIVED, UNREAD_ECHO};

/// The report counters of a worker that handed over and drained every connection cleanly.
const HANDED_OVER: &[(&str, &str)] = &[("stop", "hand-over"), ("forced", "0"), ("errors", "0")];

/// How many cycles the workload runs at least before the first restart, between the two, and
/// after the second. By count, not time: a loopback connect-echo-close takes tens of
/// microseconds, and every cycle leaves a port in TIME_WAIT.
const PHASE_CYCLES: u64 = 1000;

/// Clients connecting in a tight loop across two restarts see nothing of them: no refused
/// connect, no reset, no missing, short or wrong echo. Connections opened before a restart stay
/// with the old worker, which answers them to the end and exits 0. The master is the same
/// process throughout, still running after both restarts, so a supervisor waiting on the pid it
/// started sees nothing; once it stops, nothing listens on the port.
#[test]
fn two_restarts_under_load_drop_no_client_and_the_master_stays() {
    let mut master = Master::start(binary::netgrace(&[]));
    let first = master.workers();
    let mut long_lived = workload::open_long_lived(master.addr());
    let flooded = Flooded::connect(master.addr());

    let workload = Workload::start(master.addr());
    workload.run_for(PHASE_CYCLES);
    let second = master.restart();
    assert_eq!(master.wait_for_restart_complete(&second), first);
    // Only the old worker holds these: their echo, then EOF, can only come from it.
    for (i, client) in long_lived.iter_mut().enumerate() {
        assert_eq!(read_to_eof(client), UNREAD_ECHO, "long-lived client {i}");
    }
    let flood_echo = flooded.read_all_then_eof();
    drop(long_lived);
    let report = master.wait_for_worker_report(HANDED_OVER);
    assert_eq!(master.wait_for_worker_exit(first[0]), "exit status: 0");
    assert_supervises(&master, &second);

    workload.run_for(PHASE_CYCLES);
    let third = master.restart();
    assert_eq!(master.wait_for_restart_complete(&third), second);
    master.wait_for_worker_report(HANDED_OVER);
    assert_eq!(master.wait_for_worker_exit(second[0]), "exit status: 0");
    assert_supervises(&master, &third);
    workload.run_for(PHASE_CYCLES);
    let tally = workload.stop();
    eprintln!("workload across two restarts: {tally:?}");
    tally.assert_clean();
    assert!(
        tally.cycles >= 3 * PHASE_CYCLES,
        "only {} cycles",
        tally.cycles
    );
    // Every workload client got its 64 bytes, so everything else the first worker echoed went
    // to the clients opened first: had it cut the flooded one short, this would not add up.
    let counter = |name: &str| report[name].parse::<u64>().expect("a count");
    let long_lived_echo = (LONG_LIVED * (FIRST_ECHO.len() + UNREAD_ECHO.len())) as u64;
    let workload_echo = (counter("accepted") - LONG_LIVED as u64 - 1) * Workload::ECHO_BYTES as u64;
    assert_eq!(
        counter("bytes_echoed"),
        flood_echo + long_lived_echo + workload_echo,
        "echo of the first worker that reached no client"
    );

    assert_echo(&mut master.connect(), b"still served");
    let addr = master.addr();
    let log = master.stop();
    binary::assert_report(&log, &[("workers", "3"), ("forced", "0")]);
    common::assert_refused(addr);
}

/// The master that started `workers` is their parent, and has not exited.
#[track_caller]
fn assert_supervises(master: &Master, workers: &[u32]) {
    master.assert_still_running();
    for &worker in workers {
        assert_eq!(parent_of(worker), Some(master.pid()), "worker pid {worker}");
    }
}

/// A new worker that exits before it serves fails the restart with a warning; the old worker
/// never stopped accepting, and serves its open connection and new ones as before.
#[test]
fn a_new_worker_that_exits_at_once_leaves_the_old_one_serving() {
    fails_to_restart(&[], "exit 3", |_, new, warning| {
        assert!(
            warning.contains(&format!(
                "restart failed: worker pid {new} exited before it was serving (exit status: 3); \
                 still serving"
            )),
            "{warning}"
        );
    });
}

/// A new worker that leaves the master's process group (a wrapper that calls setsid(1), say)
/// and exits at once fails the restart just as soon: the master reaps every child, not only
/// those of its own group.
#[test]
fn a_new_worker_that_leaves_the_process_group_and_exits_is_reaped_at_once() {
    let script = "exec setsid sh -c 'exit 3'";
    fails_to_restart(&["--restart-timeout", "60"], script, |_, new, warning| {
        assert!(
            warning.contains(&format!(
                "restart failed: worker pid {new} exited before it was serving (exit status: 3)"
            )),
            "{warning}"
        );
    });
}

/// A new worker not serving within `--restart-timeout` fails the restart and is stopped with
/// SIGTERM; the old worker serves as before.
#[test]
fn a_new_worker_not_serving_within_the_restart_timeout_is_stopped() {
    fails_to_restart(
        &["--restart-timeout", "0.5"],
        "exec sleep 30",
        |master, new, warning| {
            assert!(
                warning.contains(&format!(
                    "restart failed: worker pid {new} was not serving within 0.5 s \
                 (--restart-timeout); still serving"
                )),
                "{warning}"
            );
            assert_eq!(master.wait_for_worker_exit(new), "signal: 15 (SIGTERM)");
        },
    );
}

/// A new worker that ignores the SIGTERM of a failed restart gets SIGKILL a second later.
#[test]
fn a_new_worker_that_ignores_sigterm_is_killed() {
    // An ignored signal stays ignored across exec(2), so `sleep` ignores SIGTERM too.
    let body = "trap '' TERM\nexec sleep 30";
    fails_to_restart(
        &["--restart-timeout", "0.5"],
        body,
        |master, new, warning| {
            assert!(warning.contains("(--restart-timeout)"), "{warning}");
            master.wait_for(&format!("worker pid {new} still running: SIGKILL"));
            assert_eq!(master.wait_for_worker_exit(new), "signal: 9 (SIGKILL)");
        },
    );
}

/// Runs a copy of the binary with `args` and a client, replaces the copy by a script with
/// `body`, sends SIGHUP, waits for the `restart failed:` warning and passes it to `check` with
/// the new worker's pid; then checks that the script's process is gone and that nothing
/// changed for clients.
#[track_caller]
fn fails_to_restart(args: &[&str], body: &str, check: impl FnOnce(&mut Master, u32, &str)) {
    let dir = TempDir::new("failed-restart");
    let program = dir.install_binary("netgrace");
    let mut master = Master::start(netgrace_at(&program, args));
    let mut client = master.connect();
    assert_echo(&mut client, b"before");
    dir.install_script("netgrace", body);

    let new = master.restart();
    assert_eq!(new.len(), 1, "{new:?}");
    let warning = master.wait_for_restart_failed();
    check(&mut master, new[0], &warning);
    // Reaped by the master: the pid is gone, or someone else's by now.
    assert_ne!(parent_of(new[0]), Some(master.pid()), "pid {}", new[0]);
    assert_echo(&mut client, b"after");
    assert_echo(&mut master.connect(), b"new client after");

    drop(client);
    // A script still running (`sleep 30`) would hold the log open, and this would time out.
    let log = master.stop();
    assert_eq!(count(&log, "restart complete"), 0, "{log:#?}");
    assert_eq!(count(&log, "worker stopped: "), 1, "{log:#?}");
}

/// A new program file installed over the old one by rename is what SIGHUP runs: the new
/// worker's executable is the file at the path the master was started from. (`/proc/self/exe`
/// would name the replaced, deleted file.)
#[test]
fn sighup_runs_the_program_file_now_at_the_path_the_master_was_started_from() {
    use std::os::unix::fs::MetadataExt;

    let dir = TempDir::new("upgrade");
    let program = dir.install_binary("netgrace");
    let mut master = Master::start(netgrace_at(&program, &[]));
    let old = master.workers();
    dir.install_binary("netgrace");
    let installed = std::fs::metadata(&program).expect("stat the new file");

    let new = master.restart();
    let started = master.log().last().cloned().unwrap_or_default();
    assert!(
        started.contains(&format!("restarting from {}: ", program.display())),
        "{started}"
    );
    assert_eq!(master.wait_for_restart_complete(&new), old);
    assert_eq!(exe(new[0]), program);
    let running = std::fs::metadata(format!("/proc/{}/exe", new[0])).expect("stat exe");
    assert_eq!(
        (running.dev(), running.ino()),
        (installed.dev(), installed.ino()),
        "the new worker does not run the newly installed file"
    );
    // The master itself goes on running the code it was started from: a restart upgrades the
    // workers, and the master only starts them; a new master takes a stop and a start.
    assert_eq!(
        exe(master.pid()).into_os_string().into_string().ok(),
        Some(format!("{} (deleted)", program.display()))
    );
    assert_echo(&mut master.connect(), b"served by the new worker");
    master.wait_for_worker_report(HANDED_OVER);
    assert_eq!(master.wait_for_worker_exit(old[0]), "exit status: 0");
    master.stop();
}

/// A master started by a bare name restarts the file a PATH search finds now, as the shell
/// found it: the first *executable* file of that name (a non-executable one earlier on PATH is
/// skipped), through the symlink there, so repointing the link upgrades, as with a versioned
/// install (`netgrace -> netgrace-2`). `/proc/self/exe` would name the old version's file.
#[test]
fn a_master_started_by_name_restarts_the_file_path_finds() {
    use std::os::unix::fs::{symlink, PermissionsExt};

    let shadow = TempDir::new("path-shadow");
    let not_executable = shadow.install_script("netgrace", "exit 3");
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644))
        .expect("chmod 644");
    let bin = TempDir::new("path-bin");
    let link_to = |target: &str| {
        let staged = bin.path().join(".netgrace.link");
        symlink(target, &staged).expect("symlink");
        std::fs::rename(&staged, bin.path().join("netgrace")).expect("rename the link");
    };
    bin.install_binary("netgrace-1");
    link_to("netgrace-1");
    let path = std::env::join_paths([shadow.path(), bin.path()]).expect("join PATH");
    let mut command = netgrace_at(Path::new("netgrace"), &[]);
    command.env("PATH", path);
    let mut master = Master::start(command);
    let old = master.workers();
    let upgrade = bin.install_binary("netgrace-2");
    link_to("netgrace-2");

    let new = master.restart();
    assert_eq!(master.wait_for_restart_complete(&new), old);
    assert_eq!(
        exe(new[0]),
        upgrade,
        "the new worker runs the file PATH finds now"
    );
    master.wait_for_worker_report(HANDED_OVER);
    assert_eq!(master.wait_for_worker_exit(old[0]), "exit status: 0");
    assert_echo(&mut master.connect(), b"served by the new worker");
    master.stop();
}

/// While a new generation is starting, SIGHUP is ignored (one restart at a time), and SIGTERM
/// abandons the restart: the new worker, which never said it serves, is stopped without
/// waiting for `--restart-timeout`, and the service stops gracefully.
#[test]
fn sighup_during_a_restart_is_ignored_and_sigterm_abandons_the_restart() {
    let dir = TempDir::new("pending-restart");
    let program = dir.install_binary("netgrace");
    // The new worker never says it serves, and the timeout is far beyond the test.
    let mut master = Master::start(netgrace_at(&program, &["--restart-timeout", "60"]));
    let mut client = master.connect();
    assert_echo(&mut client, b"before");
    dir.install_script("netgrace", "exec sleep 30");

    let new = master.restart();
    master.signal(Signal::HUP);
    master.wait_for(&format!(
        "SIGHUP ignored: a restart is under way (1 worker: pid {})",
        new[0]
    ));
    assert_echo(&mut client, b"served while a restart is under way");
    drop(client);

    // `sleep 30` holds the log open: its closing within the bound proves the new worker was
    // stopped.
    let log = master.stop();
    assert_eq!(count(&log, "SIGHUP: restarting"), 1, "{log:#?}");
    assert_eq!(count(&log, "restart complete"), 0, "{log:#?}");
    let exited = format!("worker pid {} exited", new[0]);
    assert_eq!(count(&log, &exited), 1, "{log:#?}");
}

/// The race at the hand-over: a client the old worker accepted before its drain began, whose
/// first bytes arrive only after, gets its echo and then EOF, not a bare EOF.
#[test]
fn a_client_whose_first_bytes_arrive_after_the_hand_over_began_gets_its_echo() {
    let mut master = Master::start(binary::netgrace(&[]));
    let old = master.workers();
    let mut silent = master.connect();
    // The listen queue is FIFO: once a later client is answered, the silent one was accepted,
    // by the only worker there is.
    let mut later = master.connect();
    assert_echo(&mut later, b"after the silent one");
    drop(later);

    let new = master.restart();
    assert_eq!(master.wait_for_restart_complete(&new), old);
    // The old worker's drain found the silent client without input and waits for its first
    // bytes (for a second); a drain that closed it instead never logs this, and the wait fails.
    master.wait_for("drain: 1 connections have sent nothing yet");
    silent
        .write_all(b"first bytes, after the drain began")
        .expect("write");
    let echo = read_to_eof(&mut silent);
    assert_eq!(
        String::from_utf8_lossy(&echo),
        "first bytes, after the drain began",
        "EOF without echo"
    );
    drop(silent);
    master.wait_for_worker_report(HANDED_OVER);
    assert_eq!(master.wait_for_worker_exit(old[0]), "exit status: 0");
    master.stop();
}

/// argv[0] is whatever the starter chose (`exec -a`), and the file it names would receive the
/// live socket: a master whose argv[0] is not its own program file says at startup that it
/// refuses SIGHUP restarts, serves, and ignores SIGHUP with a warning, starting nothing.
#[test]
fn sighup_is_refused_when_argv0_names_another_program() {
    use std::os::unix::process::CommandExt;

    let dir = TempDir::new("impostor");
    let impostor = dir.install_script("impostor", "exit 3");
    let mut command = binary::netgrace(&[]);
    command.arg0(&impostor);
    let mut master = Master::start(command);
    let why = format!(
        "argv[0] resolves to {}, which is not the running program file",
        impostor.display()
    );
    let refused = format!("SIGHUP restarts are refused: {why}");
    assert_eq!(count(master.log(), &refused), 1, "{:#?}", master.log());
    let mut client = master.connect();
    assert_echo(&mut client, b"before");

    master.signal(Signal::HUP);
    master.wait_for(&format!("SIGHUP ignored: {why}"));
    assert_echo(&mut client, b"after");
    assert_echo(&mut master.connect(), b"new client after");
    drop(client);
    let log = master.stop();
    assert_eq!(count(&log, "SIGHUP: restarting"), 0, "{log:#?}");
    binary::assert_report(&log, &[("workers", "1")]);
}
