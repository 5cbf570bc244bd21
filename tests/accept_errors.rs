//! Accept errors: running out of descriptors pauses accepting with a backoff, without spinning,
//! while existing connections are still served, and accepting resumes once descriptors free up.
//!
//! Runs the binary under `prlimit --nofile` (util-linux) so only that process is starved.
#![cfg(feature = "cli")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::binary::{netgrace_under, Serving};
use common::{assert_echo, connect};

/// The descriptor limit for the server: a handful for itself, the rest for clients.
const NOFILE: usize = 32;

/// The binary under `prlimit --nofile=NOFILE:NOFILE`; prlimit executes it in its own process, so
/// `/proc/PID` is the server's. At debug (`-v`), where the library says that accepting resumed.
#[track_caller]
fn start_starved() -> Serving {
    let limit = format!("--nofile={NOFILE}:{NOFILE}");
    Serving::spawn(netgrace_under(&["prlimit", &limit], &["-v"]))
}

#[test]
fn descriptor_exhaustion_pauses_accepting_without_spinning_then_recovers() {
    let mut server = start_starved();
    let addr = server.addr;

    // Fill the descriptor table exactly: each accepted client costs the server one descriptor.
    let room = NOFILE - server.descriptors();
    let mut served: Vec<TcpStream> = (0..room).map(|_| connect(addr)).collect();
    for client in &mut served {
        assert_echo(client, b"ok");
    }

    // These complete their handshake in the kernel backlog, but accept(2) now fails with EMFILE.
    let mut waiting: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    for client in &mut waiting {
        client.write_all(b"late").expect("write");
    }
    server.wait_for("pausing accepts");

    // While exhausted the loop must not spin: over a second of retries (5 ms doubling) the
    // server uses a small fraction of a second of CPU. A spinning loop would use nearly all of it.
    let before = server.cpu_ticks();
    let window = Instant::now();
    for client in &mut served {
        assert_echo(client, b"still served");
    }
    std::thread::sleep(Duration::from_secs(1).saturating_sub(window.elapsed()));
    let used = server.cpu_ticks() - before;
    eprintln!("cpu while exhausted: {used} ticks over ~1 s");
    assert!(
        used < 30,
        "server used {used} ticks of CPU in 1 s while exhausted"
    );

    // Free descriptors: the waiting clients are accepted on a backoff retry, no new event needed.
    served.clear();
    for client in &mut waiting {
        let mut echo = [0; 4];
        client
            .read_exact(&mut echo)
            .expect("echo after descriptors freed");
        assert_eq!(&echo, b"late");
    }
    server.wait_for("accepting again");
    assert_eq!(
        server.count_in_log("pausing accepts"),
        1,
        "one warning per episode"
    );
    drop(waiting);

    server.signal("TERM");
    let report = server.wait_for("shutdown complete");
    assert!(
        report.contains(&format!("accepted={}", room + 3)),
        "{report}"
    );
    server.wait_for_exit_0();
}
