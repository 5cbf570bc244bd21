//! Two measurements that need the library in this process rather than the binary beside it:
//! heap allocations per echoed message, and how long an idle server takes to stop.
//!
//! Allocations are counted by a global allocator that counts only on threads that asked to be
//! counted, here the reactor's thread, so the load generator's own allocations do not blur the
//! figure. Every other thread of this binary pays one thread-local read per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netgrace::{Config, Report, Server, ShutdownHandle};

use crate::load::{Load, Shape, Stop};
use crate::process::{pin_current_thread, pinning};

/// How long the reactor thread gets to reach its first `poll` before a shutdown is timed: a
/// request that arrives before `run` starts is seen without waiting, which would time nothing.
const SETTLE: Duration = Duration::from_millis(2);

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations (including reallocations) made by counted threads.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread's allocations count. `const`: reading it never allocates.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// The system allocator, plus a counter for the threads that set `COUNTED`.
struct Counting;

impl Counting {
    fn note(&self) {
        // try_with: during thread teardown the thread-local may be gone; then it did not count.
        if COUNTED.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds GlobalAlloc's contract;
// counting touches only an atomic and a const thread-local, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.note();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.note();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// A netgrace server on a thread of this process, pinned to the server core.
struct InProcess {
    addr: SocketAddr,
    handle: ShutdownHandle,
    thread: JoinHandle<io::Result<(Report, Instant)>>,
}

impl InProcess {
    fn start(counted: bool) -> io::Result<InProcess> {
        let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.max_connections = 1024;
        let server = Server::bind(config)?;
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let cpu = pinning();
        let thread = std::thread::spawn(move || {
            if let Some(cpu) = cpu {
                pin_current_thread(cpu)?;
            }
            COUNTED.with(|flag| flag.set(counted));
            let report = server.run()?;
            Ok((report, Instant::now()))
        });
        Ok(InProcess {
            addr,
            handle,
            thread,
        })
    }

    /// Asks for a graceful shutdown; returns the report and when `run` returned.
    fn stop(self) -> io::Result<(Report, Instant)> {
        self.handle.shutdown();
        self.thread
            .join()
            .map_err(|_| io::Error::other("server thread panicked"))?
    }
}

/// Heap allocations on the reactor thread per echoed message, in pingpong with `shape`, over
/// `messages` messages after a warm-up. Returns (allocations, messages).
pub fn allocations(shape: Shape, messages: u64) -> io::Result<(u64, u64)> {
    let server = InProcess::start(true)?;
    let mut load = Load::connect(server.addr, shape)?;
    // Warm up: accepts, the slab's growth and the first reads are one-time costs, not per message.
    load.drive(Stop::After(Duration::from_millis(300)), false)?;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let stats = load.drive(Stop::Messages(messages), false)?;
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    drop(load);
    server.stop()?;
    Ok((allocations, stats.messages))
}

/// `shutdown()` to `run()` returning, on a server with no connections, `samples` times.
pub fn idle_shutdown(samples: usize) -> io::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let server = InProcess::start(false)?;
        // Only lets the thread reach `poll`; a bench may wait where a test would synchronise.
        std::thread::sleep(SETTLE);
        let asked = Instant::now();
        let (_, returned) = server.stop()?;
        times.push(returned - asked);
    }
    Ok(times)
}
