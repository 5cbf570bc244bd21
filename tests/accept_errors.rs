//! Accept errors: running out of descriptors pauses accepting with a backoff, without spinning,
//! while existing connections are still served, and accepting resumes once descriptors free up.
//!
//! Runs the binary under `prlimit --nofile` (util-linux) so only that process is starved.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);
/// The descriptor limit for the server: a handful for itself, the rest for clients.
const NOFILE: usize = 32;

/// Kills the server if the test fails before stopping it.
struct Server {
    child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new("prlimit")
            .arg(format!("--nofile={NOFILE}:{NOFILE}"))
            .arg(env!("CARGO_BIN_EXE_netgrace"))
            .args(["-l", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn prlimit netgrace");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle` and returns it.
    #[track_caller]
    fn expect_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line with {needle:?}; log so far: {:#?}", self.log),
            }
        }
    }

    fn count_in_log(&self, needle: &str) -> usize {
        self.log.iter().filter(|line| line.contains(needle)).count()
    }

    fn open_descriptors(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.child.id());
        std::fs::read_dir(dir).expect("read /proc/PID/fd").count()
    }

    /// User plus system CPU time of the server so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/PID/stat");
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        let ticks = |i: usize| fields[i].parse::<u64>().expect("tick count");
        ticks(11) + ticks(12)
    }
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream
}

#[track_caller]
fn assert_echo(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).expect("write");
    let mut echo = vec![0; data.len()];
    stream.read_exact(&mut echo).expect("echo");
    assert_eq!(echo, data);
}

#[test]
fn descriptor_exhaustion_pauses_accepting_without_spinning_then_recovers() {
    let mut server = Server::start();
    let line = server.expect_line("listening on ");
    let addr = line.rsplit(' ').next().expect("address").to_string();

    // Fill the descriptor table exactly: each accepted client costs the server one descriptor.
    let room = NOFILE - server.open_descriptors();
    let mut served: Vec<TcpStream> = (0..room).map(|_| connect(&addr)).collect();
    for client in &mut served {
        assert_echo(client, b"ok");
    }

    // These complete their handshake in the kernel backlog, but accept(2) now fails with EMFILE.
    let mut waiting: Vec<TcpStream> = (0..3).map(|_| connect(&addr)).collect();
    for client in &mut waiting {
        client.write_all(b"late").expect("write");
    }
    server.expect_line("pausing accepts");

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
    server.expect_line("accepting again");
    assert_eq!(
        server.count_in_log("pausing accepts"),
        1,
        "one warning per episode"
    );
    drop(waiting);

    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let report = server.expect_line("shutdown complete");
    assert!(
        report.contains(&format!("accepted={}", room + 3)),
        "{report}"
    );
    assert!(server.child.wait().expect("wait").success());
}
