//! netgrace: a TCP echo server on one hand-written [`mio`] event loop, whose point is shutting
//! down gracefully.
//!
//! A server blocked in `accept` cannot simply be told to stop. A well-known Go example (2013)
//! closed a quit channel, then closed the listener; its accept loop, handed an error, checked the
//! quit channel to tell a deliberate close from a failure, because Go did not export the "use of
//! closed network connection" error until Go 1.16. Here the reactor polls three kinds of token —
//! the listener, a [`mio::Waker`] any thread can wake, and one per connection — so "stop" is an
//! event like any other, and every step of stopping is explicit.
//!
//! Along the way it can hand its listening socket to a successor, so that a restart refuses no
//! client ([the restart guide](guide::restart)).
//!
//! # A complete program
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//! use std::time::Duration;
//! use netgrace::{Config, Server};
//!
//! fn main() -> std::io::Result<()> {
//!     // Port 0: the OS picks a free port; local_addr() tells which.
//!     let config = Config::new("127.0.0.1:0".parse().unwrap())
//!         .max_connections(100)
//!         .drain_timeout(Duration::from_secs(2));
//!     let server = Server::bind(config)?;
//!     let addr = server.local_addr();
//!     let handle = server.shutdown_handle();
//!     let serving = std::thread::spawn(move || server.run());
//!
//!     let mut client = TcpStream::connect(addr)?;
//!     client.write_all(b"hello")?;
//!     let mut echo = [0; 5];
//!     client.read_exact(&mut echo)?;
//!     assert_eq!(&echo, b"hello");
//!
//!     // Graceful: the server stops accepting, flushes, sends EOF, waits for the client to close.
//!     handle.shutdown();
//!     let mut rest = Vec::new();
//!     client.read_to_end(&mut rest)?; // a clean EOF, not a reset
//!     drop(client);
//!
//!     // `?` turns a failed run's RunError into an io::Error.
//!     let report = serving.join().expect("server thread panicked")?;
//!     assert_eq!((report.accepted, report.drained, report.forced), (1, 1, 0));
//!     println!("{report}");
//!     Ok(())
//! }
//! ```
//!
//! Walk through:
//! - [`Config::new`] makes a [`Config`] for an address, with every limit at its default, and its
//!   setters change the limits: [`Config::max_connections`], [`Config::backlog`],
//!   [`Config::max_buffer`], [`Config::drain_timeout`], [`Config::idle_timeout`];
//! - [`Server::bind`] validates it and binds (or [`Server::from_std`] adopts a listener), and
//!   [`Server::local_addr`] tells which port the OS picked;
//! - [`Server::shutdown_handle`] gives a [`ShutdownHandle`] that any thread may use, before,
//!   during or after the run: [`ShutdownHandle::shutdown`] is graceful,
//!   [`ShutdownHandle::shutdown_now`] immediate, and [`ShutdownHandle::hand_over`] is graceful
//!   but leaves the waiting clients to a successor sharing the socket
//!   ([`Server::try_clone_listener`]);
//! - [`Server::run`] serves on the calling thread until shutdown completes and returns a
//!   [`Report`], whose [`Report::stop`] (a [`Stop`]) says how the run ended; if the event loop
//!   itself fails, a [`RunError`] instead, with the OS error and the report of the run so far.
//!
//! # Layout
//!
//! - `config`: [`Config`], its defaults and validation.
//! - `server`: [`Server`], the facade: bind, adopt, hand out shutdown handles, run.
//! - `listener`: the listening socket, bound with the configured backlog.
//! - `descriptors`: the descriptor table, reserved at startup for `max_connections`.
//! - `error`: [`RunError`], why a run failed, with the report of what it did until then.
//! - `reactor`: the loop: token space, one turn, dispatch, the ready list.
//! - `reactor::drain`: the ways to stop: graceful or hand-over drain, the first-bytes grace,
//!   the immediate stop.
//! - `reactor::trace`: the loop narrating itself at log level trace (`netgrace -vv`).
//! - `reactor::accept`: the accept burst, the pause after exhaustion, registration, and the
//!   accept-error classification.
//! - `connection`: one client's echo buffer and phases, generic over the stream;
//!   `connection::drain`: its graceful end.
//! - `shutdown`: [`ShutdownHandle`]: an atomic request plus a waker.
//! - `backoff`: the accept pause after running out of descriptors.
//! - `idle`: the idle timer, a list of connections ordered by last traffic.
//! - `report`: [`Report`], the counters of one run.
//! - [`guide`]: the guides, from the repository's `docs/`: architecture, shutdown and restart.
//!
//! # Guarantees
//!
//! - Echo is exact: every byte read is written back, in order, whatever the chunking.
//! - Memory for echo data is at most `max_connections × max_buffer`, plus one shared read
//!   buffer of `min(64 KiB, max_buffer)`; an idle connection holds
//!   no buffer. A client that does not read is throttled (backpressure), not buffered.
//! - A client can only affect its own connection: errors close that connection only, and a
//!   flooding client gets a bounded number of reads per turn, so it cannot starve the others.
//! - Silent connections are closed cleanly after
//!   [`Config::idle_timeout`](crate::Config#structfield.idle_timeout) (300 s by default), at O(1)
//!   cost per event; one whose client does not close in turn is cut a second later.
//! - A storm of up to [`Config::backlog`](crate::Config#structfield.backlog) clients connecting at
//!   once, as after a restart, is taken without a dropped handshake: the descriptor table is
//!   reserved for `max_connections` when the server is created, so no accept stalls while the
//!   kernel grows it (the repository's `docs/hard-edges.md`, "Connection storms and the listen
//!   backlog").
//! - Graceful shutdown: the clients already waiting in the accept backlog are accepted (within
//!   `max_connections`), then the listener closes and later connection attempts are refused;
//!   every client receives the echo of all the server had read and of the input already waiting
//!   in its socket (up to `max_buffer` bytes), then EOF, not a reset; `run` returns within
//!   `drain_timeout`. A client that has sent nothing yet when the drain begins gets up to a
//!   second (at most half of `drain_timeout`) for its first bytes before its EOF, so a request
//!   racing the shutdown is answered. [The shutdown guide](guide::shutdown) walks through each
//!   step.
//! - Hand-over: the clients waiting in the backlog are not accepted; they stay queued for the
//!   process that shares the socket ([the restart guide](guide::restart)). The open
//!   connections drain as above.
//! - Stopping an idle server takes about a millisecond.
//! - No `unsafe` code in this crate.
//!
//! # Non-goals
//!
//! TLS, multiple reactor threads, protocols other than echo, TCP urgent data (never stalls a
//! connection, but the urgent byte is not echoed), and platforms other than Linux as a tested
//! target (mio runs elsewhere, untested).

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod backoff;
mod config;
mod connection;
mod descriptors;
mod error;
// In the docs only: the guides hold no code, and their code blocks are excerpts, not doctests
// (rustdoc collects doctests with both `doc` and `doctest` set).
#[cfg(all(doc, not(doctest)))]
pub mod guide;
mod idle;
mod listener;
mod reactor;
mod report;
mod server;
mod shutdown;

pub use config::{Config, DEFAULT_IDLE_TIMEOUT, DEFAULT_PORT, MAX_CONNECTIONS_LIMIT};
pub use error::RunError;
pub use report::{Report, Stop};
pub use server::Server;
pub use shutdown::ShutdownHandle;

/// The README's library example, compiled and run as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// A program as an embedder writes it, compiled as its own crate as every doctest is, so that
/// `#[non_exhaustive]` and privacy apply as they do downstream: a `Config` built with its
/// setters, a run stopped by its handle, a failed run read for its report and its cause, and a
/// failed bind matched the std way.
///
/// ```
/// use std::error::Error as _;
/// use std::io::{self, Read, Write};
/// use std::time::Duration;
/// use netgrace::{Config, RunError, Server, Stop};
///
/// fn main() -> io::Result<()> {
///     let config = Config::new("127.0.0.1:0".parse().unwrap())
///         .max_connections(10)
///         .backlog(64)
///         .max_buffer(4096)
///         .drain_timeout(Duration::from_secs(2))
///         .idle_timeout(None);
///     assert_eq!((config.max_connections, config.idle_timeout), (10, None));
///
///     let server = Server::bind(config.clone())?;
///     let addr = server.local_addr();
///     let handle = server.shutdown_handle();
///     let serving = std::thread::spawn(move || server.run());
///     let mut client = std::net::TcpStream::connect(addr)?;
///     client.write_all(b"x")?;
///     client.read_exact(&mut [0])?;
///     handle.shutdown();
///     client.read_to_end(&mut Vec::new())?;
///     drop(client);
///     let report = serving.join().expect("server thread panicked")?;
///     assert_eq!((report.accepted, report.bytes_echoed, report.stop), (1, 1, Stop::Graceful));
///
///     // The one failure of the loop a program can cause on purpose (a hidden test hook).
///     let failed: RunError = Server::bind(config)?
///         .run_failing_at_first_poll()
///         .expect_err("epoll_wait with room for no event fails");
///     assert_eq!(failed.report().stop, Stop::Failure);
///     assert_eq!((failed.kind(), failed.raw_os_error()), (io::ErrorKind::InvalidInput, Some(22)));
///     let cause = failed.source().and_then(|cause| cause.downcast_ref::<io::Error>());
///     assert_eq!(cause.and_then(io::Error::raw_os_error), Some(22));
///     // Through `?` it becomes an io::Error of the same kind, with the RunError inside.
///     let err = io::Error::from(failed);
///     assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
///     let inside = err.get_ref().and_then(|inner| inner.downcast_ref::<RunError>());
///     assert_eq!(inside.map(|failed| failed.report().stop), Some(Stop::Failure));
///
///     // A failed start is the OS error itself, as std's bind returns it.
///     let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
///     let err = Server::bind(Config::new(taken.local_addr()?)).expect_err("the port is taken");
///     assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
///     assert!(err.raw_os_error().is_some(), "{err:?}");
///     Ok(())
/// }
/// ```
#[cfg(doctest)]
struct Downstream;
