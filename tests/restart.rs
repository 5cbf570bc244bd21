#![cfg(all(feature = "cli", target_os = "linux"))]
//! SIGHUP through the binary: the listening socket passes to a successor while clients keep
//! coming, a successor that fails changes nothing, a new program file is what the successor runs,
//! and a client accepted just before the hand-over still gets its answer.
//!
//! Every test runs its servers through a [`Lineage`], which makes the test process a child
//! subreaper and kills and reaps every successor the log names, even when the test fails.

mod common;
#[path = "common/restart.rs"]
mod lineage;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use common::{assert_echo, read_to_eof, TIMEOUT};
use lineage::{parent_of, Lineage, TempDir};

/// The report counters of a process that handed over and drained every connection cleanly.
const HANDED_OVER: &[(&str, &str)] = &[("stop", "hand-over"), ("forced", "0"), ("errors", "0")];

/// Issue 9: clients connecting in a tight loop across two restarts see nothing of them: no
/// refused connect, no reset, no missing, short or wrong echo. Connections opened before a
/// restart stay with the old process, which answers them to the end, then exits 0; at the end
/// one process serves, the last successor, and once it stops nothing listens on the port.
#[test]
fn issue_9_two_restarts_under_load_drop_no_client() {
    let mut lineage = Lineage::start(&[]);
    let original = lineage.original();
    let mut long_lived = open_long_lived(lineage.addr);
    let flooded = Flooded::connect(lineage.addr);

    let workload = Workload::start(lineage.addr);
    workload.run_for(PHASE_CYCLES);
    let first = lineage.restart(original);
    lineage.wait_for(&format!("successor pid {first} is serving; handing over"));
    // Only the old process holds these: their echo, then EOF, can only come from it.
    for (i, client) in long_lived.iter_mut().enumerate() {
        assert_eq!(read_to_eof(client), UNREAD_ECHO, "long-lived client {i}");
    }
    let flood_echo = flooded.read_all_then_eof();
    drop(long_lived);
    let report = lineage.assert_next_report(HANDED_OVER);
    assert_eq!(lineage.wait_for_original_exit(), Some(0), "the original");

    workload.run_for(PHASE_CYCLES);
    let second = lineage.restart(first);
    lineage.wait_for(&format!("successor pid {second} is serving; handing over"));
    lineage.assert_next_report(HANDED_OVER);
    assert_eq!(
        lineage.wait_for_successor_exit(first),
        Some(0),
        "pid {first}"
    );
    workload.run_for(PHASE_CYCLES);
    let tally = workload.stop();
    eprintln!("workload across two restarts: {tally:?}");

    assert_eq!(
        (tally.refused, tally.resets, tally.eof_without_echo),
        (0, 0, 0),
        "refused, reset, EOF without echo: {tally:?}"
    );
    assert_eq!((tally.partial, tally.wrong), (0, 0), "{tally:?}");
    assert!(tally.other.is_empty(), "{tally:?}");
    assert!(
        tally.cycles >= 3 * PHASE_CYCLES,
        "only {} cycles",
        tally.cycles
    );
    // Every workload client got its 64 bytes, so everything else the original echoed went to
    // the clients opened first: had it cut the flooded one short, this would not add up.
    let counter = |name: &str| report[name].parse::<u64>().expect("a count");
    let long_lived_echo = (LONG_LIVED * (b"long-lived".len() + UNREAD_ECHO.len())) as u64;
    let workload_echo = (counter("accepted") - LONG_LIVED as u64 - 1) * Workload::ECHO_BYTES as u64;
    assert_eq!(
        counter("bytes_echoed"),
        flood_echo + long_lived_echo + workload_echo,
        "echo of the original that reached no client"
    );

    // One process serves: the last successor. When it stops, the port refuses and the shared
    // stderr closes, so no other process of the lineage is left.
    assert_echo(&mut lineage.connect(), b"still served");
    lineage.signal(second, Signal::TERM);
    lineage.assert_next_report(&[("stop", "graceful")]);
    assert_eq!(
        lineage.wait_for_successor_exit(second),
        Some(0),
        "pid {second}"
    );
    common::assert_refused(lineage.addr);
    lineage.wait_for_all_gone();
}

/// A successor that exits before it serves is reaped with a warning; the old process never
/// stopped accepting, and serves its open connection and new ones as before.
#[test]
fn successor_that_exits_at_once_leaves_the_old_process_serving() {
    let warning = fails_to_restart(&[], "exit 3");
    assert!(
        warning.contains("exited before it was serving (exit status: 3); still serving"),
        "{warning}"
    );
}

/// A successor that is not serving within `--restart-timeout` is killed with a warning, and
/// the old process serves as before.
#[test]
fn successor_not_serving_within_the_restart_timeout_is_killed() {
    let warning = fails_to_restart(&["--restart-timeout", "0.5"], "exec sleep 30");
    assert!(
        warning.contains("was not serving within 0.5 s (--restart-timeout)")
            && warning.contains("SIGKILL"),
        "{warning}"
    );
}

/// Runs a copy of the binary with `args` and a client, replaces the copy by a script with
/// `body`, sends SIGHUP, and checks that nothing changed for clients and that the script's
/// process is gone. Returns the warning.
#[track_caller]
fn fails_to_restart(args: &[&str], body: &str) -> String {
    let dir = TempDir::new("failed-successor");
    let program = dir.install_binary("netgrace");
    let mut lineage = Lineage::spawn(lineage::netgrace_at(&program, args));
    let mut client = lineage.connect();
    assert_echo(&mut client, b"before");
    dir.install_script("netgrace", body);

    let successor = lineage.restart(lineage.original());
    let warning = lineage.wait_for(&format!("restart failed: successor pid {successor} "));
    // Reaped by the old process before it warned: the pid is gone, or someone else's by now.
    assert!(
        parent_of(successor) != Some(lineage.original()),
        "pid {successor} is still the server's child"
    );
    assert_echo(&mut client, b"after");
    assert_echo(&mut lineage.connect(), b"new client after");

    lineage.signal(lineage.original(), Signal::TERM);
    assert!(read_to_eof(&mut client).is_empty());
    drop(client);
    lineage.assert_next_report(&[("stop", "graceful"), ("forced", "0")]);
    assert_eq!(lineage.wait_for_original_exit(), Some(0));
    // A script still running (`sleep 30`) would hold the stderr open.
    let log = lineage.wait_for_all_gone();
    assert_eq!(count(&log, "handing over"), 0, "{log:#?}");
    warning
}

/// Issue 9: a new program file installed over the old one by rename is what SIGHUP runs: the
/// successor's executable is the file at the path, while the old process's is the replaced,
/// deleted file. (`/proc/self/exe` would have named that deleted file.)
#[test]
fn sighup_runs_the_program_file_now_at_the_path_the_server_was_started_from() {
    use std::os::unix::fs::MetadataExt;

    let dir = TempDir::new("upgrade");
    let program = dir.install_binary("netgrace");
    let mut lineage = Lineage::spawn(lineage::netgrace_at(&program, &[]));
    let original = lineage.original();
    // Holds the old process in its drain, so both processes can be looked at side by side.
    let mut client = lineage.connect();
    assert_echo(&mut client, b"held");
    dir.install_binary("netgrace");
    let installed = std::fs::metadata(&program).expect("stat the new file");

    let successor = lineage.restart(original);
    let started = lineage.log.last().cloned().unwrap_or_default();
    assert!(
        started.ends_with(&format!("from {}", program.display())),
        "{started}"
    );
    lineage.wait_for(&format!(
        "successor pid {successor} is serving; handing over"
    ));
    let exe = |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).expect("read exe link");
    assert_eq!(exe(successor), program);
    let running = std::fs::metadata(format!("/proc/{successor}/exe")).expect("stat exe");
    assert_eq!(
        (running.dev(), running.ino()),
        (installed.dev(), installed.ino()),
        "the successor does not run the newly installed file"
    );
    assert_eq!(
        exe(original).into_os_string().into_string().ok(),
        Some(format!("{} (deleted)", program.display()))
    );
    assert_echo(&mut lineage.connect(), b"served by the successor");

    assert!(read_to_eof(&mut client).is_empty());
    drop(client);
    lineage.assert_next_report(HANDED_OVER);
    assert_eq!(lineage.wait_for_original_exit(), Some(0));
    lineage.signal(successor, Signal::TERM);
    lineage.assert_next_report(&[("stop", "graceful")]);
    assert_eq!(lineage.wait_for_successor_exit(successor), Some(0));
    lineage.wait_for_all_gone();
}

/// A server started by a bare name restarts the file a PATH search finds now, as the shell
/// found it: the first *executable* file of that name (a non-executable one earlier on PATH is
/// skipped), through the symlink there, so repointing the link upgrades, as with a versioned
/// install (`netgrace -> netgrace-2`). `/proc/self/exe` would name the old version's file.
#[test]
fn a_server_started_by_name_restarts_the_file_path_finds() {
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
    let mut command = lineage::netgrace_at(std::path::Path::new("netgrace"), &[]);
    command.env("PATH", path);
    let mut lineage = Lineage::spawn(command);
    let original = lineage.original();
    let upgrade = bin.install_binary("netgrace-2");
    link_to("netgrace-2");

    let successor = lineage.restart(original);
    lineage.wait_for(&format!(
        "successor pid {successor} is serving; handing over"
    ));
    let exe = std::fs::read_link(format!("/proc/{successor}/exe")).expect("read exe link");
    assert_eq!(exe, upgrade, "the successor runs the file PATH finds now");
    lineage.assert_next_report(HANDED_OVER);
    assert_eq!(lineage.wait_for_original_exit(), Some(0));
    assert_echo(&mut lineage.connect(), b"served by the successor");
    lineage.signal(successor, Signal::TERM);
    lineage.assert_next_report(&[("stop", "graceful")]);
    assert_eq!(lineage.wait_for_successor_exit(successor), Some(0));
    lineage.wait_for_all_gone();
}

/// While a successor is starting, SIGHUP is ignored (one successor at a time), and SIGTERM
/// abandons the successor, stops it with a signal, and shuts down as it always does.
#[test]
fn sighup_during_a_restart_is_ignored_and_sigterm_abandons_the_successor() {
    let dir = TempDir::new("pending-restart");
    let program = dir.install_binary("netgrace");
    // The successor never says it serves; the timeout is far beyond the test.
    let mut lineage = Lineage::spawn(lineage::netgrace_at(&program, &["--restart-timeout", "60"]));
    let original = lineage.original();
    let mut client = lineage.connect();
    assert_echo(&mut client, b"before");
    dir.install_script("netgrace", "exec sleep 30");

    let successor = lineage.restart(original);
    lineage.signal(original, Signal::HUP);
    lineage.wait_for(&format!(
        "SIGHUP ignored: successor pid {successor} is still starting"
    ));
    assert_echo(&mut client, b"served while a restart is pending");

    lineage.signal(original, Signal::TERM);
    lineage.wait_for(&format!(
        "restart abandoned: stopping successor pid {successor}"
    ));
    assert!(read_to_eof(&mut client).is_empty());
    drop(client);
    lineage.assert_next_report(&[("stop", "graceful"), ("forced", "0")]);
    assert_eq!(lineage.wait_for_original_exit(), Some(0));
    // `sleep 30` holds the stderr: its closing within the bound proves the successor was stopped.
    let log = lineage.wait_for_all_gone();
    assert_eq!(count(&log, "SIGHUP: restarting"), 1, "{log:#?}");
}

/// Issue 9, the race at the hand-over: a client the old process accepted before its drain
/// began, whose first bytes arrive only after, gets its echo and then EOF, not a bare EOF.
#[test]
fn issue_9_client_whose_bytes_arrive_after_the_hand_over_began_gets_its_echo() {
    let mut lineage = Lineage::start(&[]);
    let original = lineage.original();
    let mut silent = lineage.connect();
    // The listen queue is FIFO: once a later client is answered, the silent one was accepted.
    let mut later = lineage.connect();
    assert_echo(&mut later, b"after the silent one");
    drop(later);

    let successor = lineage.restart(original);
    wait_until_the_drain_awaits(&mut lineage, &silent);
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
    lineage.assert_next_report(HANDED_OVER);
    assert_eq!(lineage.wait_for_original_exit(), Some(0));

    lineage.signal(successor, Signal::TERM);
    lineage.assert_next_report(&[("stop", "graceful")]);
    assert_eq!(lineage.wait_for_successor_exit(successor), Some(0));
    lineage.wait_for_all_gone();
}

/// Waits (bounded by `TIMEOUT`) until the old process's drain has found `silent` without input
/// and waits for its first bytes, as its log says; fails at once if instead the drain closes it.
/// The two events have no common channel, so each is checked in turn, a millisecond at a time.
#[track_caller]
fn wait_until_the_drain_awaits(lineage: &mut Lineage, silent: &TcpStream) {
    const PROBE: Duration = Duration::from_millis(1);
    let deadline = Instant::now() + TIMEOUT;
    silent.set_nonblocking(true).expect("set_nonblocking");
    loop {
        if lineage
            .wait_for_within("drain: 1 connections have sent nothing yet", PROBE)
            .is_ok()
        {
            break;
        }
        match silent.peek(&mut [0]) {
            Ok(0) => panic!("EOF without echo: the drain closed a client that had sent nothing"),
            Ok(_) => panic!("bytes from the server before the client sent any"),
            Err(err) if common::timed_out(&err) => {}
            Err(err) => panic!("the silent client: {err}"),
        }
        assert!(
            Instant::now() < deadline,
            "the drain did not begin within {TIMEOUT:?}; stderr:\n{}",
            lineage.log.join("\n")
        );
    }
    silent.set_nonblocking(false).expect("set_nonblocking");
}

fn count(log: &[String], needle: &str) -> usize {
    log.iter().filter(|line| line.contains(needle)).count()
}

/// How many cycles the workload runs at least before the first restart, between the two, and
/// after the second. By count, not time: a loopback connect-echo-close takes tens of
/// microseconds, and every cycle leaves a port in TIME_WAIT.
const PHASE_CYCLES: u64 = 1000;

/// How many clients connect before the first restart and stay (besides the flooded one).
const LONG_LIVED: usize = 3;

/// What each long-lived client wrote last and has not read yet.
const UNREAD_ECHO: &[u8] = b"echo still unread at the restart";

/// Clients connected before the restart, served once, and holding echo they have not read.
fn open_long_lived(addr: SocketAddr) -> Vec<TcpStream> {
    (0..LONG_LIVED)
        .map(|_| {
            let mut client = common::connect(addr);
            assert_echo(&mut client, b"long-lived");
            client.write_all(UNREAD_ECHO).expect("write");
            client
        })
        .collect()
}

/// A client that wrote without reading until everything stalled: the old process holds echo it
/// cannot send (backpressure) when the restart comes.
struct Flooded {
    stream: TcpStream,
    sent: u64,
}

impl Flooded {
    /// How long a blocked write means the echo path is full.
    const STALL: Duration = Duration::from_millis(250);
    /// Far more than the buffers of the echo path hold.
    const MOST_BYTES: u64 = 256 << 20;

    fn connect(addr: SocketAddr) -> Flooded {
        let mut stream = common::connect(addr);
        let sent = common::write_until_stalled(&mut stream, Self::MOST_BYTES, Self::STALL);
        assert!(sent < Self::MOST_BYTES, "the flood never stalled");
        Flooded { stream, sent }
    }

    /// Reads the echo to EOF (the test stream from its start, then a clean EOF), closes, and
    /// returns how much there was.
    ///
    /// Not all of what was sent: the drain answers at most `max_buffer` bytes of the input
    /// waiting in the server's socket, and discards the rest while lingering (docs/shutdown.md).
    fn read_all_then_eof(mut self) -> u64 {
        let echo = read_to_eof(&mut self.stream);
        common::assert_pattern(0, &echo);
        eprintln!("flooded client: sent {}, echoed {}", self.sent, echo.len());
        // The old process held max_buffer (64 KiB) of echo when it stopped reading.
        assert!(
            echo.len() > 64 * 1024,
            "only {} bytes of echo for the {} sent",
            echo.len(),
            self.sent
        );
        echo.len() as u64
    }
}

/// Clients in a loop on several threads: connect, 64 bytes, read their echo, close.
struct Workload {
    stop: Arc<AtomicBool>,
    /// One message per `PROGRESS_CYCLES` cycles of any worker.
    progress: Receiver<()>,
    workers: Vec<JoinHandle<Tally>>,
}

/// What the workload's clients saw, summed over its workers.
#[derive(Debug, Default)]
struct Tally {
    cycles: u64,
    refused: u64,
    resets: u64,
    eof_without_echo: u64,
    partial: u64,
    wrong: u64,
    /// Any other failure, described.
    other: Vec<String>,
}

impl Workload {
    const WORKERS: u64 = 4;
    const PROGRESS_CYCLES: u64 = 10;
    /// A bound on each worker's cycles (each leaves a port in TIME_WAIT), far above what a run
    /// needs.
    const MOST_CYCLES: u64 = 25_000;
    const ECHO_BYTES: usize = 64;

    fn start(addr: SocketAddr) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, progress) = mpsc::channel();
        let workers = (0..Self::WORKERS)
            .map(|worker| {
                let stop = Arc::clone(&stop);
                let tx = tx.clone();
                thread::spawn(move || {
                    let mut tally = Tally::default();
                    // Each worker's bytes differ from every other's, so a crossed echo is wrong.
                    let mut offset = worker << 40;
                    while !stop.load(Ordering::Relaxed) && tally.cycles < Self::MOST_CYCLES {
                        let payload = common::pattern(offset, Self::ECHO_BYTES);
                        tally.cycle(addr, &payload);
                        offset += Self::ECHO_BYTES as u64;
                        if tally.cycles % Self::PROGRESS_CYCLES == 0 {
                            let _ = tx.send(());
                        }
                    }
                    tally
                })
            })
            .collect();
        Workload {
            stop,
            progress,
            workers,
        }
    }

    /// Lets the workload run for at least `cycles` more cycles (each step bounded by
    /// `TIMEOUT`).
    #[track_caller]
    fn run_for(&self, cycles: u64) {
        while self.progress.try_recv().is_ok() {}
        for _ in 0..cycles.div_ceil(Self::PROGRESS_CYCLES) {
            common::recv(&self.progress, "progress of the workload");
        }
    }

    #[track_caller]
    fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut sum = Tally::default();
        for worker in std::mem::take(&mut self.workers) {
            let tally = common::join_thread(worker);
            sum.cycles += tally.cycles;
            sum.refused += tally.refused;
            sum.resets += tally.resets;
            sum.eof_without_echo += tally.eof_without_echo;
            sum.partial += tally.partial;
            sum.wrong += tally.wrong;
            sum.other.extend(tally.other);
        }
        sum
    }
}

impl Drop for Workload {
    /// A failed test does not leave its workers connecting.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Tally {
    /// One connect, write, read, close; counts how it went.
    fn cycle(&mut self, addr: SocketAddr, payload: &[u8]) {
        self.cycles += 1;
        let mut stream = match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(stream) => stream,
            Err(err) => return self.failed("connect", &err),
        };
        let timeouts = stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .and_then(|()| stream.set_nodelay(true));
        if let Err(err) = timeouts.and_then(|()| stream.write_all(payload)) {
            return self.failed("write", &err);
        }
        let mut echo = vec![0; payload.len()];
        let mut received = 0;
        while received < echo.len() {
            match stream.read(&mut echo[received..]) {
                Ok(0) => break,
                Ok(n) => received += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return self.failed("read", &err),
            }
        }
        match received {
            0 => self.eof_without_echo += 1,
            n if n < payload.len() => self.partial += 1,
            _ if echo != payload => self.wrong += 1,
            _ => {}
        }
    }

    fn failed(&mut self, operation: &str, err: &io::Error) {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => self.refused += 1,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => self.resets += 1,
            _ => self.other.push(format!("{operation}: {err}")),
        }
    }
}
