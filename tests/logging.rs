#![cfg(feature = "cli")]
//! The binary's log on stdout: one whole line per record, even when two processes write one
//! pipe as fast as they can; every line names the process that wrote it; a reader that stops
//! reading does not stop the server (its records are dropped, then counted); and at -vv the
//! trace shows what each pump did.
//!
//! Each record must reach the pipe in one write(2): a logger that wrote the text and then its
//! newline would let the other process's record land in between, which the first test sees as
//! a line holding two records (and an empty one).

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, PipeReader};
use std::net::{Shutdown, SocketAddr};
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::Instant;

use common::binary::{follow_lines, listening_addr, netgrace, pids_in, Process, Serving};
use common::{assert_echo, connect, TIMEOUT};

/// Connections each of the two servers serves at once with the other; at -vv each one makes
/// about ten records, so each process writes thousands while the other does.
const CONNECTIONS_EACH: usize = 300;

/// Connections served while nobody reads the log: at -v two records each, about 4 000 records,
/// far more than the pipe (64 KiB, some 600 records) and the logger's queue (1 024) hold.
const CONNECTIONS_UNREAD: usize = 2_000;

/// A log line taken apart: `2026-11-29T12:48:26.172Z INFO  [netgrace[PID] TARGET] MESSAGE`.
#[derive(Debug)]
struct Record<'a> {
    pid: u32,
    level: &'a str,
    message: &'a str,
}

/// Parses `line` as exactly one record; `None` if it is not one whole record.
fn parse(line: &str) -> Option<Record<'_>> {
    let after_time = line.get(TIMESTAMP.len()..)?;
    if !is_timestamp(line) || records_in(line) != 1 {
        return None;
    }
    let (level, rest) = after_time.strip_prefix(' ')?.split_at_checked(5)?;
    let level = level.trim_end();
    if !["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level) {
        return None;
    }
    let rest = rest.strip_prefix(" [netgrace[")?;
    let (pid, rest) = rest.split_once("] ")?;
    let (_target, message) = rest.split_once("] ")?;
    Some(Record {
        pid: pid.parse().ok()?,
        level,
        message,
    })
}

/// The shape of a record's timestamp: RFC 3339, UTC, milliseconds.
const TIMESTAMP: &str = "dddd-dd-ddTdd:dd:dd.dddZ";

fn is_timestamp(text: &str) -> bool {
    let text = text.as_bytes();
    text.len() >= TIMESTAMP.len()
        && TIMESTAMP
            .bytes()
            .zip(text)
            .all(|(shape, &byte)| match shape {
                b'd' => byte.is_ascii_digit(),
                _ => byte == shape,
            })
}

/// How many records begin in `line`: more than one means two were spliced together.
fn records_in(line: &str) -> usize {
    (0..line.len())
        .filter(|&i| line.is_char_boundary(i) && is_timestamp(&line[i..]))
        .count()
}

/// Parses every line of `log` as one record, failing the test on the first that is not.
#[track_caller]
fn records(log: &[String]) -> Vec<Record<'_>> {
    log.iter()
        .map(|line| {
            parse(line).unwrap_or_else(|| {
                panic!(
                    "not one whole record: {line:?}; {} lines, {} of them not whole",
                    log.len(),
                    log.iter().filter(|line| parse(line).is_none()).count()
                )
            })
        })
        .collect()
}

/// Receives lines until one contains `needle` (returned) or, with `None`, until EOF; every line
/// received is kept in `log`. Fails the test if that takes longer than [`TIMEOUT`].
#[track_caller]
fn receive(lines: &Receiver<String>, log: &mut Vec<String>, needle: Option<&str>) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                log.push(line.clone());
                if needle.is_some_and(|needle| line.contains(needle)) {
                    return line;
                }
            }
            Err(RecvTimeoutError::Disconnected) if needle.is_none() => return String::new(),
            Err(err) => panic!("waiting for {needle:?}: {err:?}; log:\n{}", log.join("\n")),
        }
    }
}

/// Two servers at -vv share one stdout pipe, as a restart's old and new process do, and are
/// kept busy at the same moment; every line of the pipe is one whole record, and each names
/// the server it came from.
#[test]
fn two_processes_logging_into_one_pipe_write_whole_lines_naming_their_pid() {
    let (reader, writer) = io::pipe().expect("pipe");
    let spawn = || {
        let mut command = netgrace(&["-vv"]);
        command
            .stdout(writer.try_clone().expect("dup the pipe"))
            .stderr(Stdio::inherit());
        Process::spawn(command)
    };
    let servers = [spawn(), spawn()];
    // Ours too must be closed, or EOF never comes.
    drop(writer);
    let lines = follow_lines(reader);

    let mut log = Vec::new();
    let mut addrs = HashMap::new();
    while addrs.len() < servers.len() {
        let line = receive(&lines, &mut log, Some("listening on "));
        let pid = parse(&line).unwrap_or_else(|| panic!("{line:?}")).pid;
        addrs.insert(pid, listening_addr(&line));
    }
    for server in &servers {
        assert!(addrs.contains_key(&server.id()), "{addrs:?}");
    }
    // Each master names its worker; the worker's lines name the worker.
    let mut master_of = HashMap::new();
    while master_of.len() < servers.len() {
        let line = receive(&lines, &mut log, Some("serving: "));
        let master = parse(&line).unwrap_or_else(|| panic!("{line:?}")).pid;
        for worker in pids_in(&line) {
            master_of.insert(worker, master);
        }
    }

    // Each server's clients on their own thread, so that both processes log at once.
    let clients: Vec<_> = addrs
        .iter()
        .map(|(&pid, &addr)| thread::spawn(move || (pid, serve_clients(addr))))
        .collect();
    // The clients of each server, by pid. A port may serve a client of each server in turn
    // (the two 4-tuples differ), so a peer can be in both sets.
    let mut clients_of = HashMap::new();
    for client in clients {
        let (pid, peers) = client.join().expect("client thread");
        clients_of.insert(pid, peers.into_iter().collect::<HashSet<_>>());
    }
    for server in &servers {
        server.signal("TERM");
    }
    receive(&lines, &mut log, None);

    let records = records(&log);
    for server in &servers {
        let pid = server.id();
        let own: Vec<_> = records
            .iter()
            .filter(|record| record.pid == pid || master_of.get(&record.pid) == Some(&pid))
            .collect();
        assert!(own.len() > CONNECTIONS_EACH, "{} lines of {pid}", own.len());
        assert!(
            own.iter()
                .any(|record| record.message.starts_with("shutdown complete: ")),
            "no report from {pid}"
        );
    }
    // The pid is the logging process's own: each connection's line names its server.
    let mut accepted = 0;
    for record in &records {
        let Some((_, peer)) = record.message.split_once(": accepted from ") else {
            continue;
        };
        let peer: SocketAddr = peer
            .split(' ')
            .next()
            .and_then(|peer| peer.parse().ok())
            .unwrap_or_else(|| panic!("{record:?}"));
        let master = master_of[&record.pid];
        assert!(clients_of[&master].contains(&peer), "{record:?}");
        accepted += 1;
    }
    assert_eq!(accepted, 2 * CONNECTIONS_EACH);
}

/// Connects [`CONNECTIONS_EACH`] clients to `addr` one after another, each checking its echo;
/// returns their addresses.
fn serve_clients(addr: SocketAddr) -> Vec<SocketAddr> {
    (0..CONNECTIONS_EACH)
        .map(|_| {
            let mut client = connect(addr);
            assert_echo(&mut client, b"a line for the log\n");
            client.local_addr().expect("local_addr")
        })
        .collect()
}

/// Every record says which process wrote it, with a level: an operator can tell an old
/// process's lines from a new one's.
#[test]
fn each_line_names_the_process_that_wrote_it() {
    let mut serving = Serving::start(&["-v"]);
    let client = serving.connect();
    let peer = client.local_addr().expect("local_addr");
    serving.wait_for(&format!("accepted from {peer}"));
    drop(client);
    serving.signal("TERM");
    let (master, worker) = (serving.pid(), serving.workers[0]);
    let log = serving.wait_for_exit_0();

    let records = records(&log);
    assert!(records.len() >= 4, "{log:#?}");
    for record in &records {
        let expected = if record.message.contains("accepted from")
            || record.message.starts_with("worker stopped")
        {
            worker
        } else if record.message.starts_with("listening on")
            || record.message.starts_with("shutdown complete")
        {
            master
        } else {
            continue;
        };
        assert_eq!(record.pid, expected, "{record:?}");
    }
    assert!(
        records
            .iter()
            .all(|record| record.pid == master || record.pid == worker),
        "{log:#?}"
    );
    let levels: Vec<_> = records.iter().map(|record| record.level).collect();
    assert!(
        levels.contains(&"INFO") && levels.contains(&"DEBUG"),
        "{levels:?}"
    );
}

/// A log reader that stops reading fills the pipe; the server goes on serving, drops the
/// records it cannot write, and once the reader reads again says how many, then logs on.
#[test]
fn a_log_reader_that_stops_does_not_stop_the_server() {
    let (reader, writer) = io::pipe().expect("pipe");
    let mut command = netgrace(&["-v"]);
    command.stdout(writer).stderr(Stdio::inherit());
    let server = Process::spawn(command);

    let (lines, resume) = read_to_listening_then_pause(reader);
    let mut log = Vec::new();
    let addr = listening_addr(&receive(&lines, &mut log, Some("listening on ")));

    // With a logger that blocks on the full pipe, one of these echoes never comes.
    for _ in 0..CONNECTIONS_UNREAD {
        assert_echo(&mut connect(addr), b"served while the log is not read\n");
    }

    resume.send(()).expect("the reader is waiting");
    let dropped = receive(&lines, &mut log, Some("log records while stdout was full"));
    server.signal("TERM");
    receive(&lines, &mut log, None);

    let records = records(&log);
    let count: u64 = dropped
        .split_once("dropped ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("{dropped:?}"));
    assert!(count > 0, "{dropped:?}");
    let report = records
        .last()
        .map(|record| record.message)
        .unwrap_or_default();
    assert!(
        report.starts_with("shutdown complete: ")
            && report.contains(&format!("accepted={CONNECTIONS_UNREAD} ")),
        "the report is the last line: {report:?}"
    );
}

/// Forwards the lines of `reader` up to the `listening on` line, then reads nothing more until
/// told to go on (a send on the returned sender), or closes the pipe if the sender is dropped.
fn read_to_listening_then_pause(reader: PipeReader) -> (Receiver<String>, Sender<()>) {
    let (resume, resumed) = mpsc::channel::<()>();
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(reader).lines();
        for line in reader.by_ref() {
            let Ok(line) = line else { return };
            let listening = line.contains("listening on ");
            if tx.send(line).is_err() || listening {
                break;
            }
        }
        if resumed.recv().is_err() {
            return;
        }
        for line in reader.map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (lines, resume)
}

/// A log reader that goes away (`netgrace | head -1`) ends the logging, not the serving: the
/// next write fails (EPIPE), which ends the logger's writer thread with a panic message on
/// stderr, and the server goes on, then exits 0 at its signal without waiting for records
/// nobody can read.
#[test]
fn a_log_reader_that_goes_away_does_not_stop_the_server() {
    let (reader, writer) = io::pipe().expect("pipe");
    let (stderr, stderr_writer) = io::pipe().expect("pipe");
    let mut command = netgrace(&["-v"]);
    command.stdout(writer).stderr(stderr_writer);
    let mut server = Process::spawn(command);
    let stderr = follow_lines(stderr);
    let (lines, resume) = read_to_listening_then_pause(reader);
    let mut log = Vec::new();
    let addr = listening_addr(&receive(&lines, &mut log, Some("listening on ")));
    drop(resume);
    // The channel closes when the reader's thread ends, dropping the pipe's only read end.
    receive(&lines, &mut log, None);

    for _ in 0..10 {
        assert_echo(&mut connect(addr), b"served with nobody reading the log\n");
    }
    server.signal("TERM");
    let mut said = Vec::new();
    // EOF on stderr: the process has exited.
    receive(&stderr, &mut said, None);
    let status = server.wait();
    let said = said.join("\n");
    assert!(status.success(), "{status}; stderr:\n{said}");
    assert!(
        said.contains("failed printing to stdout"),
        "stderr:\n{said}"
    );
}

/// At -vv the loop traces every pump ("Watch it run" in docs/event-loop.md): the bytes it moved,
/// why it stopped, and the phase it left the connection in.
#[test]
fn the_trace_shows_each_pumps_bytes_why_it_stopped_and_the_phase() {
    let mut serving = Serving::start(&["-vv"]);
    let mut client = serving.connect();
    assert_echo(&mut client, b"hello\n");
    let echoed = serving.wait_for(": read 6, wrote 6, ");
    // The pump stops at a trusted short read, or at WouldBlock when it ran before the event.
    assert!(
        echoed.ends_with(": read 6, wrote 6, short read trusted -> open")
            || echoed.ends_with(": read 6, wrote 6, read WouldBlock -> open"),
        "{echoed}"
    );
    client.shutdown(Shutdown::Write).expect("shutdown write");
    assert!(common::read_to_eof(&mut client).is_empty());
    serving.wait_for(": read 0, wrote 0, client EOF -> closed");
    serving.signal("TERM");
    serving.wait_for_exit_0();
}
