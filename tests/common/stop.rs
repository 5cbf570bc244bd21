//! Workloads and probes for the tests of stopping a server (tests/shutdown.rs,
//! tests/shutdown_now.rs): what "promptly" means, a stop requested before `run`, a listener with
//! chosen buffer sizes, a client that streams until the server's EOF, and a probe that tells
//! when the server's thread sleeps in `epoll_wait`.
// Not every test uses every helper.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use netgrace::Server;

use crate::common::{self, TIMEOUT};

/// A bound on "promptly": far above what a stop takes (about a millisecond), far below any
/// drain deadline or `TIMEOUT`, so a stop that waited for one of those fails.
pub const PROMPT: Duration = Duration::from_secs(1);

/// Runs `server`, whose stop was requested before `run`, and asserts that `run` returned at
/// once, accepting nothing, and that the listener is closed.
#[track_caller]
pub fn assert_run_returns_at_once(server: Server) {
    let addr = server.local_addr();
    let started = Instant::now();
    let report = common::run_on_thread(server);
    let took = started.elapsed();
    assert!(
        took < PROMPT,
        "run took {took:?} after a request made before it"
    );
    common::assert_empty(&report);
    common::assert_refused(addr);
}

/// A listener on `127.0.0.1:0` whose accepted sockets inherit these buffer sizes (socket(7)
/// `SO_RCVBUF`, `SO_SNDBUF`; the kernel doubles each); `None` keeps the kernel's default.
#[track_caller]
pub fn listener_with_buffers(receive: usize, send: Option<usize>) -> TcpListener {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(receive).expect("SO_RCVBUF");
    if let Some(send) = send {
        socket.set_send_buffer_size(send).expect("SO_SNDBUF");
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    socket.bind(&addr.into()).expect("bind");
    socket.listen(16).expect("listen");
    socket.into()
}

/// Waits (bounded by `TIMEOUT`) until this process's thread named `name` sleeps in
/// `epoll_wait`, as Linux's procfs shows it (proc(5): `/proc/[pid]/task/[tid]/stat` state `S`,
/// `wchan` `do_epoll_wait`). Retries without sleeping: each probe is a few file reads.
#[track_caller]
pub fn wait_until_blocked_in_poll(name: &str) {
    let deadline = Instant::now() + TIMEOUT;
    let mut probes = 0u64;
    while Instant::now() < deadline {
        probes += 1;
        if thread_blocked_in_poll(name) {
            return;
        }
        thread::yield_now();
    }
    panic!("thread {name} not seen blocked in epoll_wait within {TIMEOUT:?} ({probes} probes)");
}

fn thread_blocked_in_poll(name: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    tasks.flatten().any(|task| {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        // stat is "tid (comm) state ...": the state follows the last ')'.
        let sleeping = read("stat")
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'));
        // Kernels name the wait differently (do_epoll_wait, ep_poll); where wchan is hidden
        // ("0" or empty), sleeping is the best evidence there is.
        let wchan = read("wchan");
        let in_poll = wchan.contains("ep") || wchan == "0" || wchan.is_empty();
        read("comm").trim_end() == name && sleeping && in_poll
    })
}

/// Streams the test pattern into `stream` from one thread and checks its echo on another, until
/// the server's EOF; then stops writing and closes. Sends `()` on `first_echo` at the first echo,
/// and on the returned channel the number of bytes of echo received. Panics (dropping the
/// sender) if the echo differs from the pattern or ends in anything but a clean EOF.
pub fn spawn_streamer(stream: TcpStream, first_echo: Sender<()>) -> Receiver<u64> {
    const CHUNK_BYTES: usize = 16 * 1024;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer_stream = stream.try_clone().expect("clone stream");
    let writer_stop = Arc::clone(&stop);
    let writer = thread::spawn(move || {
        let mut offset = 0;
        while !writer_stop.load(Ordering::Relaxed) {
            // An error (broken pipe once the server is gone) only ends the writing: the reader
            // is the one that judges how the connection ended.
            if writer_stream
                .write_all(&common::pattern(offset, CHUNK_BYTES))
                .is_err()
            {
                break;
            }
            offset += CHUNK_BYTES as u64;
        }
    });

    let (done_tx, done) = mpsc::channel();
    thread::spawn(move || {
        let mut stream = stream;
        let mut first_echo = Some(first_echo);
        let mut buf = vec![0; 64 * 1024];
        let mut received = 0;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    common::assert_pattern(received, &buf[..n]);
                    received += n as u64;
                    if let Some(tx) = first_echo.take() {
                        let _ = tx.send(());
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => panic!("expected a clean EOF after {received} bytes, got {err}"),
            }
        }
        // The server is lingering (reading and discarding), so the writer is not stuck; once it
        // has stopped, dropping the last handle closes the client.
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer panicked");
        drop(stream);
        let _ = done_tx.send(received);
    });
    done
}
