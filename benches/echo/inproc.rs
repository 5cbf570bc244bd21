//! Figures of the library in this process: heap allocations per echoed message, counted only on
//! the reactor's thread (the load generator's do not blur it), and how long a server with no
//! connections takes to stop.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::{cell::Cell, io, net::SocketAddr, time::Duration, time::Instant};

use netgrace::{Config, Server};

use crate::common::load::{Load, Shape, Stop, WARMUP};
use crate::common::process::{self, Kind, Plan};
use crate::common::table::{median, Better, Table};

const COUNTED_MESSAGES: u64 = 20_000;
/// Samples of the no-connection shutdown; the target is on their median.
const SHUTDOWN_SAMPLES: usize = 100;
/// Time for the reactor to reach its first `poll`: a request before `run` would time nothing.
const SETTLE: Duration = Duration::from_millis(2);

pub const ALLOCATIONS: &str = "heap allocations per message (pingpong 64 B × 50)";
pub const IDLE_STOP: &str = "shutdown() to run() returning, no connections, µs";

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations and reallocations by counted threads.
static ALLOCATED: AtomicU64 = AtomicU64::new(0);

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
            ALLOCATED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call goes unchanged to `System`, which upholds GlobalAlloc's contract (the
// default `alloc_zeroed` calls `alloc`);
// counting touches only an atomic and a const thread-local, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.note();
        unsafe { System.alloc(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs a netgrace server on a thread (on the server core) while `load` runs against it, then
/// stops it; returns what `load` returned and the time from `shutdown()` until `run` returned.
fn serve<T>(
    counted: bool,
    load: impl FnOnce(SocketAddr) -> io::Result<T>,
) -> io::Result<(T, Duration)> {
    let config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = Server::bind(config.max_connections(1024))?;
    let (addr, handle) = (server.local_addr(), server.shutdown_handle());
    let pinned = process::pinned().is_some();
    let thread = std::thread::spawn(move || {
        if pinned {
            process::pin_current_thread(process::SERVER_CPU)?;
        }
        COUNTED.with(|flag| flag.set(counted));
        server.run().map_err(io::Error::other)?;
        Ok::<_, io::Error>(Instant::now())
    });
    let result = load(addr)?;
    let asked = Instant::now();
    handle.shutdown();
    let panicked = |_| io::Error::other("server thread panicked");
    let returned = thread.join().map_err(panicked)??;
    Ok((result, returned - asked))
}

pub fn measure(table: &mut Table, _plan: &Plan) -> io::Result<()> {
    let ((allocations, messages), _) = serve(true, |addr| {
        let mut load = Load::connect(addr, Shape::pingpong(50))?;
        // Accepts, the slab's growth and the first reads are one-time costs, not per message.
        load.drive(Stop::After(WARMUP))?;
        let before = ALLOCATED.load(Ordering::Relaxed);
        let stats = load.drive(Stop::Messages(COUNTED_MESSAGES))?;
        Ok((ALLOCATED.load(Ordering::Relaxed) - before, stats.messages))
    })?;
    let per_message = allocations as f64 / messages as f64;
    table.add(ALLOCATIONS, Better::Lower, Kind::Netgrace, per_message);
    eprintln!("allocations on the reactor thread: {allocations} in {messages} messages");
    let mut times = Vec::with_capacity(SHUTDOWN_SAMPLES);
    for _ in 0..SHUTDOWN_SAMPLES {
        // Only lets the thread reach `poll`; a benchmark may wait where a test would synchronise.
        let (_, took) = serve(false, |_| {
            std::thread::sleep(SETTLE);
            Ok(())
        })?;
        table.add(
            IDLE_STOP,
            Better::Lower,
            Kind::Netgrace,
            took.as_secs_f64() * 1e6,
        );
        times.push(took.as_secs_f64() * 1e6);
    }
    let median = median(&times).unwrap_or(f64::NAN);
    eprintln!("shutdown() to run() returning, no connections: median {median:.0} µs");
    Ok(())
}
