//! [`ShutdownHandle`]: how any thread asks the reactor to stop.
//!
//! A request is two things: an atomic that records *what* was asked (graceful or immediate), and a
//! [`mio::Waker`] that makes the reactor's `poll` return so it looks at that atomic now rather
//! than at its next timeout or connection. The atomic is the truth; the wake-up only makes it
//! prompt. That is why a request made before `run` starts, or lost in a wake-up that coalesced
//! with another, is never missed: the reactor reads the atomic on every turn.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use mio::Waker;

/// What has been asked of the reactor so far. Values only grow: immediate overrides graceful,
/// and nothing takes a request back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Request {
    /// Keep serving.
    Run = 0,
    /// Stop accepting, drain connections, then return.
    Graceful = 1,
    /// Like `Graceful`, but leave the clients in the accept backlog to another process that
    /// shares the listening socket. Above `Graceful` because, asked together, the caller has a
    /// successor, and accepting its clients only to send them an EOF would be wrong.
    HandOver = 2,
    /// Close everything now and return.
    Immediate = 3,
}

/// State shared by every handle and the reactor.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The highest [`Request`] made so far, as its `u8` value.
    request: AtomicU8,
    /// Wakes the reactor's poll; registered with the reactor's `Poll` under the `WAKER` token.
    waker: Waker,
}

impl Shared {
    pub(crate) fn new(waker: Waker) -> Shared {
        Shared {
            request: AtomicU8::new(Request::Run as u8),
            waker,
        }
    }

    /// The request the reactor should act on now.
    pub(crate) fn request(&self) -> Request {
        match self.request.load(Ordering::Acquire) {
            0 => Request::Run,
            1 => Request::Graceful,
            2 => Request::HandOver,
            _ => Request::Immediate,
        }
    }

    fn ask(&self, request: Request) {
        // fetch_max: a graceful request arriving after an immediate one must not downgrade it.
        self.request.fetch_max(request as u8, Ordering::AcqRel);
        // A wake-up can only fail if the eventfd cannot be written, which mio already retries on a
        // full counter; the request is recorded either way and read on the reactor's next turn.
        if let Err(err) = self.waker.wake() {
            log::debug!("shutdown wake-up failed: {err}");
        }
    }
}

/// Asks a running (or not yet running, or finished) [`Server`](crate::Server) to stop.
///
/// Get one from [`Server::shutdown_handle`](crate::Server::shutdown_handle). It is cheap to clone
/// and can be sent to and shared between threads: a signal thread, a supervisor, a test. The
/// handles share the waker's descriptor (an eventfd on Linux), which is closed when the last
/// handle and the server are gone. [The shutdown guide](crate::guide::shutdown) follows each way
/// to stop step by step.
///
/// # Contract
///
/// Guaranteed:
/// - both methods may be called from any thread, any number of times, in any order, before
///   [`Server::run`](crate::Server::run) starts, while it runs, or after it has returned; a call
///   never blocks, never panics and never fails;
/// - a request made before `run` starts is acted on as soon as `run` starts;
/// - an immediate request overrides a graceful one in progress; a graceful request after an
///   immediate one changes nothing;
/// - while `run` is blocked waiting for events, a request wakes it at once: stopping an idle server
///   takes about a millisecond, not a timeout.
///
/// Not guaranteed:
/// - that `run` has returned when the method returns: the methods only *ask*; join the thread
///   that called `run` to know it finished;
/// - the order in which connections close during the drain.
///
/// What the caller must do: join the thread that runs `run` (or wait for `run` to return) to learn
/// that shutdown is complete and to get the [`Report`](crate::Report). There is no "resume": a
/// stopped server is finished.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use netgrace::{Config, Server};
///
/// let server = Server::bind(Config::new("127.0.0.1:0".parse().unwrap()))?;
/// let handle = server.shutdown_handle();
/// let thread = std::thread::spawn(move || server.run());
/// handle.shutdown(); // from this thread, while `run` is on the other
/// let report = thread.join().expect("server thread panicked")?;
/// assert_eq!(report.accepted, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> ShutdownHandle {
        ShutdownHandle { shared }
    }

    /// Asks for a graceful shutdown.
    ///
    /// The server accepts the clients already waiting in its backlog (within `max_connections`),
    /// then stops accepting (later connection attempts are refused). On each connection it answers
    /// the input already waiting in the socket (reading until it is empty, at most `max_buffer`
    /// bytes), writes back every byte it has read, shuts down the write side so the client sees a
    /// clean EOF, discards whatever arrives after that, and waits — until each client closes or
    /// [`Config::drain_timeout`](crate::Config#structfield.drain_timeout) passes — before returning
    /// its [`Report`](crate::Report).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let server = netgrace::Server::bind(netgrace::Config::new("127.0.0.1:0".parse().unwrap()))?;
    /// let handle = server.shutdown_handle();
    /// handle.shutdown(); // before run: run returns as soon as it starts
    /// handle.shutdown(); // calling again is harmless
    /// assert_eq!(server.run()?.forced, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown(&self) {
        self.shared.ask(Request::Graceful);
    }

    /// Asks for an immediate shutdown: the listener and every connection are closed now, pending
    /// echo is discarded, and each open connection counts as
    /// [`Report::forced`](crate::Report::forced).
    ///
    /// Use it as the second stage when a graceful shutdown takes too long (the binary calls it on
    /// a second SIGINT or SIGTERM, as nginx does).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let server = netgrace::Server::bind(netgrace::Config::new("127.0.0.1:0".parse().unwrap()))?;
    /// let handle = server.shutdown_handle();
    /// handle.shutdown_now();
    /// assert_eq!(server.run()?.accepted, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown_now(&self) {
        self.shared.ask(Request::Immediate);
    }

    /// Asks for a graceful shutdown that leaves the listen backlog to a successor: the clients
    /// waiting in it are *not* accepted, and the listener is closed at once; then every open
    /// connection drains exactly as with [`ShutdownHandle::shutdown`], and
    /// [`Report::stop`](crate::Report::stop) is [`Stop::HandOver`](crate::Stop::HandOver).
    ///
    /// This is the old process's half of a restart without downtime: another process holds the same
    /// listening socket (from [`Server::try_clone_listener`](crate::Server::try_clone_listener),
    /// passed to it across `exec`) and is already accepting. The kernel keeps one accept queue per
    /// socket, not per descriptor, so closing this server's descriptor leaves the queue, and every
    /// client in it, to the successor ([the restart guide](crate::guide::restart)).
    ///
    /// Guaranteed, beyond [`ShutdownHandle::shutdown`]'s guarantees for the open connections:
    /// after the reactor sees the request it calls `accept` no more, so a client the successor
    /// could serve is never taken by the process that is leaving.
    ///
    /// Not guaranteed: anything for the backlog if no other process holds the socket. Then
    /// closing the listener resets the waiting clients, as the kernel does for any listener
    /// closed with a non-empty queue; use [`ShutdownHandle::shutdown`] instead.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// use std::io::{Read, Write};
    /// use netgrace::{Config, Server, Stop};
    ///
    /// let old = Server::bind(Config::new("127.0.0.1:0".parse().unwrap()))?;
    /// let addr = old.local_addr();
    /// // The successor's copy of the socket; between processes it crosses exec (docs/restart.md).
    /// let successor = Server::from_std(old.try_clone_listener()?, Config::default())?;
    /// let successor_handle = successor.shutdown_handle();
    /// let successor = std::thread::spawn(move || successor.run());
    ///
    /// old.shutdown_handle().hand_over();
    /// assert_eq!(old.run()?.stop, Stop::HandOver);
    ///
    /// // The old server is gone; the address still answers.
    /// let mut client = std::net::TcpStream::connect(addr)?;
    /// client.write_all(b"still here")?;
    /// let mut echo = [0; 10];
    /// client.read_exact(&mut echo)?;
    /// assert_eq!(&echo, b"still here");
    /// drop(client);
    ///
    /// successor_handle.shutdown();
    /// successor.join().expect("successor thread panicked")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn hand_over(&self) {
        self.shared.ask(Request::HandOver);
    }
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("request", &self.shared.request())
            .finish()
    }
}

/// Compile-time proof that handles can cross and be shared between threads.
const _: fn() = || {
    fn is_send_sync_clone<T: Send + Sync + Clone>() {}
    is_send_sync_clone::<ShutdownHandle>();
};
