#![cfg(feature = "cli")]
//! Socket activation by the letter of sd_listen_fds(3): the master serves the listening socket
//! at descriptor 3 only when `LISTEN_FDS=1` and `LISTEN_PID` names the master itself; it binds
//! `--listen` when the descriptors are another process's; it refuses to start on anything but
//! one listening TCP socket; and its workers get the socket, their control channel and the
//! master's marker, nothing of systemd's.
//!
//! Each test binds the sockets itself and maps them into the master (`command-fds`), as
//! systemd does for a `.socket` unit.

#[path = "common/activate.rs"]
mod activate;
mod common;
#[path = "common/group.rs"]
mod group;

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::Command;

use activate::{
    descriptors, environ, map_descriptors, own_target, pass_listen_fds, run_to_exit, target,
    with_own_listen_pid,
};
use common::binary::{assert_report, netgrace, netgrace_under, pids_in};
use common::{assert_echo, assert_refused, connect, read_to_eof};
use group::{spawn_in, Group};

/// What the master logs when it serves an inherited socket instead of binding `--listen`.
const INHERITED: &str = "(inherited at descriptor 3; --listen not used)";

/// A listener on `127.0.0.1:0`: the socket to pass, or a port to hold.
fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

fn addr_of(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().expect("local_addr")
}

/// `netgrace -l TAKEN` with `LISTEN_PID` naming it and `fd` passed at descriptor 3. `TAKEN` is
/// a port the test holds: a master that bound `--listen` instead of serving descriptor 3 could
/// not start.
fn activated(fd: OwnedFd, taken: &TcpListener, args: &[&str]) -> Command {
    let taken = addr_of(taken).to_string();
    let mut command = with_own_listen_pid(&[], &[&["-l", &taken], args].concat());
    pass_listen_fds(&mut command, vec![fd]);
    command
}

/// The served socket is the one systemd passed, and the master holds the last copy of it: once
/// the service has stopped, connecting is refused.
#[test]
fn an_inherited_listener_with_our_listen_pid_is_served_and_closed_at_exit() {
    let group = Group::new();
    let (taken, listener) = (bind(), bind());
    let addr = addr_of(&listener);
    let serving = spawn_in(&group, activated(listener.into(), &taken, &[]));
    assert_eq!(serving.addr, addr, "{:?}", serving.log);
    assert_eq!(serving.count_in_log(INHERITED), 1, "{:?}", serving.log);

    let mut client = serving.connect();
    assert_echo(&mut client, b"served from descriptor 3\n");
    serving.signal("TERM");
    assert_eq!(read_to_eof(&mut client), b"", "nothing was left to echo");
    drop(client);
    let log = serving.wait_for_exit_0();
    let report = [("accepted", "1"), ("bytes_echoed", "25"), ("errors", "0")];
    assert_report(&log, &report);
    assert_refused(addr);
}

/// Starts `netgrace` (`--listen 127.0.0.1:0`) with `count` listening sockets at descriptors 3
/// onward, `LISTEN_FDS` naming them and `LISTEN_PID` as given, and asserts that the master says
/// `why`, binds `--listen`, and that no worker holds any of the passed sockets.
#[track_caller]
fn assert_not_adopted(listen_pid: Option<String>, count: usize, why: &str) {
    let group = Group::new();
    let listeners: Vec<TcpListener> = (0..count).map(|_| bind()).collect();
    let passed: Vec<SocketAddr> = listeners.iter().map(addr_of).collect();
    let sockets: Vec<String> = listeners.iter().map(own_target).collect();
    let mut command = netgrace(&[]);
    match listen_pid {
        Some(pid) => command.env("LISTEN_PID", pid),
        None => command.env_remove("LISTEN_PID"),
    };
    pass_listen_fds(
        &mut command,
        listeners.into_iter().map(OwnedFd::from).collect(),
    );
    let serving = spawn_in(&group, command);
    let log = serving.log.join("\n");
    assert_eq!(serving.count_in_log(why), 1, "{why:?}; log:\n{log}");
    assert_eq!(serving.count_in_log(INHERITED), 0, "log:\n{log}");
    assert!(!passed.contains(&serving.addr), "log:\n{log}");
    for &worker in &serving.workers {
        let held = descriptors(worker);
        let leaked: Vec<_> = held.iter().filter(|(_, to)| sockets.contains(to)).collect();
        assert!(
            leaked.is_empty(),
            "worker {worker} holds {leaked:?} of {sockets:?}"
        );
    }
    assert_echo(&mut serving.connect(), b"bound by itself\n");
    serving.signal("TERM");
    assert_report(&serving.wait_for_exit_0(), &[("accepted", "1")]);
}

/// sd_listen_fds(3) returns 0 when `LISTEN_PID` is unset: a process that merely inherited
/// `LISTEN_FDS` and a parent's descriptor 3 must not serve the parent's socket.
#[test]
fn listen_fds_without_listen_pid_is_not_adopted_and_listen_is_bound() {
    let why = "LISTEN_FDS ignored: LISTEN_PID is not set, so the descriptors are not ours";
    assert_not_adopted(None, 1, why);
}

#[test]
fn listen_fds_with_listen_pid_naming_another_process_is_not_adopted() {
    let other = std::process::id();
    let why = format!("LISTEN_FDS ignored: LISTEN_PID={other} names another process");
    assert_not_adopted(Some(other.to_string()), 1, &why);
}

/// Sockets meant for another process are left alone by the master, but must not reach a
/// worker either: there each would be a listening socket held open unserved, whose clients
/// connect and hang. A worker's descriptors 3 and 4 are replaced by its own; a third socket,
/// at 5, is the one that could leak.
#[test]
fn listeners_passed_to_another_process_never_reach_a_worker() {
    let other = std::process::id();
    let why = format!("LISTEN_FDS ignored: LISTEN_PID={other} names another process");
    assert_not_adopted(Some(other.to_string()), 3, &why);
}

/// Runs `command` to its end and asserts that it refused to start: exit 1 and one line, which
/// starts `netgrace: ` and then `start`. Returns that line.
#[track_caller]
fn assert_refused_to_start(command: Command, start: &str) -> String {
    let exited = run_to_exit(command);
    let output = exited.output.join("\n");
    assert_eq!(exited.status.code(), Some(1), "output:\n{output}");
    assert_eq!(exited.output.len(), 1, "one line; output:\n{output}");
    let expected = format!("netgrace: {start}");
    assert!(
        output.starts_with(&expected),
        "{expected:?}; output:\n{output}"
    );
    output
}

/// Serving one of two sockets would hold the other open unserved: its clients would connect
/// and hang. Neither is left listening once the master has exited.
#[test]
fn two_inherited_listeners_exit_1_naming_listen_fds_2() {
    let (first, second) = (bind(), bind());
    let addrs = [addr_of(&first), addr_of(&second)];
    let mut command = with_own_listen_pid(&[], &[]);
    pass_listen_fds(&mut command, vec![first.into(), second.into()]);
    assert_refused_to_start(
        command,
        "LISTEN_FDS=2: netgrace serves exactly one listening",
    );
    addrs.into_iter().for_each(assert_refused);
}

/// A value listenfd cannot use: it is named, before listenfd (which would allocate a slot per
/// descriptor claimed) sees it. The address space is capped, so a regression that allocates
/// for 2147483647 descriptors fails at once instead of eating the machine's memory.
#[test]
fn a_huge_or_non_numeric_listen_fds_exits_1_at_once_naming_it() {
    const ADDRESS_SPACE_BYTES: &str = "--as=1073741824";
    for value in ["3000000000", "2147483647", "one"] {
        let (taken, listener) = (bind(), bind());
        let taken = addr_of(&taken).to_string();
        let mut command = with_own_listen_pid(&["prlimit", ADDRESS_SPACE_BYTES], &["-l", &taken]);
        pass_listen_fds(&mut command, vec![listener.into()]);
        command.env("LISTEN_FDS", value);
        assert_refused_to_start(command, &format!("LISTEN_FDS=\"{value}\": "));
    }
}

/// `LISTEN_FDS=1` with our `LISTEN_PID` and `fd` at descriptor 3, which must be refused with a
/// line that names descriptor 3 and contains `reason`.
#[track_caller]
fn assert_descriptor_3_refused(fd: OwnedFd, reason: &str) {
    let taken = bind();
    let line = assert_refused_to_start(activated(fd, &taken, &[]), "descriptor 3 from LISTEN_FDS");
    assert!(line.contains(reason), "{reason:?}: {line}");
}

#[test]
fn a_file_or_a_pipe_at_descriptor_3_exits_1() {
    let file =
        File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).expect("open Cargo.toml");
    assert_descriptor_3_refused(file.into(), "is not a socket");
    let (reader, _writer) = std::io::pipe().expect("pipe");
    assert_descriptor_3_refused(reader.into(), "is not a socket");
}

#[test]
fn a_udp_or_unix_socket_at_descriptor_3_exits_1() {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
    assert_descriptor_3_refused(udp.into(), "not a valid tcp socket");
    let (unix, _peer) = UnixStream::pair().expect("socketpair");
    assert_descriptor_3_refused(unix.into(), "not a valid tcp socket");
}

/// A connected TCP socket has the right family and type; only `SO_ACCEPTCONN` tells.
#[test]
fn a_tcp_socket_that_is_not_listening_at_descriptor_3_exits_1() {
    let peer = bind();
    let stream = TcpStream::connect(addr_of(&peer)).expect("connect");
    assert_descriptor_3_refused(stream.into(), "is a TCP socket but not a listening one");
}

/// `LISTEN_FDS=1` with descriptor 3 closed (a shell closes it, then becomes netgrace): the
/// message says so (listenfd alone would say "not a socket"; the binary asks procfs first).
#[test]
fn listen_fds_with_descriptor_3_not_open_exits_1() {
    const CLOSE_3_EXPORT_OWN_PID: &str = "exec 3>&-; export LISTEN_PID=$$; exec \"$@\"";
    let held = bind();
    let taken = addr_of(&held).to_string();
    let mut command = netgrace_under(&["sh", "-c", CLOSE_3_EXPORT_OWN_PID, "sh"], &["-l", &taken]);
    command.env("LISTEN_FDS", "1");
    let line = assert_refused_to_start(command, "descriptor 3 from LISTEN_FDS");
    assert_eq!(line, "netgrace: descriptor 3 from LISTEN_FDS is not open");
}

/// The master removes systemd's variables at startup, so a worker sees only what the master
/// passed: its marker and the two descriptors. (`/proc/WORKER/environ` is the environment the
/// worker was started with, so it shows what the master passed; the master's own would still
/// show what it was started with, since unsetenv(3) does not rewrite it.)
#[test]
fn a_worker_environment_names_its_master_and_nothing_of_systemd() {
    let group = Group::new();
    let taken = bind();
    let mut command = activated(bind().into(), &taken, &["--workers", "2"]);
    // Unreachable: the master warns that it cannot notify, and serves on.
    let no_socket = std::env::temp_dir().join(format!("netgrace-{}-none", std::process::id()));
    command
        .env("LISTEN_FDS_FIRST_FD", "3")
        .env("NOTIFY_SOCKET", no_socket);
    let serving = spawn_in(&group, command);
    let master = format!("NETGRACE_MASTER={}", serving.pid());
    assert_eq!(serving.workers.len(), 2, "{:?}", serving.log);
    for &worker in &serving.workers {
        let vars = environ(worker);
        for passed in [
            &master[..],
            "LISTEN_FDS=2",
            "LISTEN_FDNAMES=listener:netgrace-control",
        ] {
            assert!(vars.iter().any(|var| var == passed), "{passed}: {vars:?}");
        }
        for removed in ["LISTEN_PID=", "LISTEN_FDS_FIRST_FD=", "NOTIFY_SOCKET="] {
            let kept: Vec<&String> = vars.iter().filter(|v| v.starts_with(removed)).collect();
            assert!(kept.is_empty(), "worker {worker} has {kept:?}");
        }
    }
    serving.signal("TERM");
    serving.wait_for_exit_0();
}

/// Whatever else the master inherited (here a pipe at descriptor 5, beside `LISTEN_FDS=1`)
/// is not passed on: a worker holds the socket at 3, its control channel at 4, and what it
/// opened itself.
#[test]
fn a_descriptor_the_master_inherited_beyond_its_listener_does_not_reach_a_worker() {
    let group = Group::new();
    let (taken, listener) = (bind(), bind());
    let socket = own_target(&listener);
    let (_reader, writer) = std::io::pipe().expect("pipe");
    let pipe = own_target(&writer);
    let taken = addr_of(&taken).to_string();
    let mut command = with_own_listen_pid(&[], &["-l", &taken, "--workers", "2"]);
    command.env("LISTEN_FDS", "1");
    map_descriptors(&mut command, vec![(3, listener.into()), (5, writer.into())]);
    let serving = spawn_in(&group, command);
    // The master did inherit it: there is something to leak.
    assert_eq!(target(serving.pid(), 5).as_ref(), Some(&pipe));
    for &worker in &serving.workers {
        let held = descriptors(worker);
        assert_eq!(target(worker, 3).as_ref(), Some(&socket), "{held:?}");
        let control = target(worker, 4).unwrap_or_default();
        assert!(control.starts_with("socket:"), "{held:?}");
        let leaked: Vec<_> = held.iter().filter(|(_, to)| *to == pipe).collect();
        assert!(leaked.is_empty(), "worker {worker} holds {leaked:?}");
    }
    serving.signal("TERM");
    serving.wait_for_exit_0();
}

/// A SIGHUP restart of a socket-activated service: the new workers serve the very socket
/// systemd passed (the master passes its copy on), the old ones hand over and exit.
#[test]
fn a_restart_serves_the_inherited_socket_from_new_workers() {
    let group = Group::new();
    let (taken, listener) = (bind(), bind());
    let (addr, socket) = (addr_of(&listener), own_target(&listener));
    let mut serving = spawn_in(&group, activated(listener.into(), &taken, &[]));
    let old = serving.workers.clone();
    for &worker in &old {
        assert_eq!(target(worker, 3).as_ref(), Some(&socket), "worker {worker}");
    }
    assert_echo(&mut serving.connect(), b"before the restart\n");

    serving.signal("HUP");
    let line = serving.wait_for("restart complete: ");
    let new = pids_in(line.split(';').next().unwrap_or_default());
    assert!(
        !new.is_empty() && new.iter().all(|pid| !old.contains(pid)),
        "{line}"
    );
    for &worker in &new {
        assert_eq!(target(worker, 3).as_ref(), Some(&socket), "worker {worker}");
        let vars = environ(worker);
        assert!(
            !vars.iter().any(|v| v.starts_with("LISTEN_PID=")),
            "{vars:?}"
        );
    }
    for pid in &old {
        serving.wait_for(&format!("worker pid {pid} exited (exit status: 0)"));
    }
    let mut client = connect(addr);
    assert_echo(&mut client, b"after the restart\n");
    serving.signal("TERM");
    assert_eq!(read_to_eof(&mut client), b"", "nothing was left to echo");
    drop(client);
    let log = serving.wait_for_exit_0();
    assert_report(
        &log,
        &[("workers", "2"), ("accepted", "2"), ("errors", "0")],
    );
    assert_refused(addr);
}
