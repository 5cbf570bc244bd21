//! [`Server`]: the public facade over the reactor.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};

use crate::reactor::{Reactor, LISTENER, WAKER};
use crate::shutdown::Shared;
use crate::{descriptors, listener};
use crate::{Config, Report, RunError, ShutdownHandle};

/// A bound, not yet running echo server.
///
/// Creating it binds the socket and creates the poll and its waker, so that every error that can
/// happen at startup happens here, before [`Server::run`], and so that a [`ShutdownHandle`] exists
/// before the loop starts.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::io::{Read, Write};
/// use netgrace::{Config, Server};
///
/// let server = Server::bind(Config::new("127.0.0.1:0".parse().unwrap()))?;
/// let addr = server.local_addr();
/// let handle = server.shutdown_handle();
/// let thread = std::thread::spawn(move || server.run());
///
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"ping")?;
/// let mut echo = [0; 4];
/// client.read_exact(&mut echo)?;
/// assert_eq!(&echo, b"ping");
/// drop(client);
///
/// handle.shutdown();
/// let report = thread.join().expect("server thread panicked")?;
/// assert_eq!(report.bytes_echoed, 4);
/// # Ok(())
/// # }
/// ```
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Config,
    shared: Arc<Shared>,
}

impl Server {
    /// Validates `config` and binds a listener on `config.listen`.
    ///
    /// The socket gets `SO_REUSEADDR` (a restarted server can rebind at once) and a listen backlog
    /// of [`Config::backlog`](crate::Config#structfield.backlog). For other options
    /// (`SO_REUSEPORT`, a specific interface), bind the listener yourself and use
    /// [`Server::from_std`].
    ///
    /// Both constructors also reserve the process's descriptor table for
    /// [`Config::max_connections`](crate::Config#structfield.max_connections) connections, so that
    /// a burst of clients never waits for the table to grow (the repository's
    /// `docs/hard-edges.md`, "Connection storms and the listen backlog").
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::InvalidInput`] if `config` is invalid (see [`Config::validate`]);
    /// - the OS error of `socket(2)`, `bind(2)` or `listen(2)` as the OS gave it, as std's
    ///   [`TcpListener::bind`](std::net::TcpListener::bind) returns it: match its
    ///   [`kind`](io::Error::kind) ([`io::ErrorKind::AddrInUse`], or
    ///   [`io::ErrorKind::PermissionDenied`] for a privileged port) or its
    ///   [`raw_os_error`](io::Error::raw_os_error) (`EADDRINUSE`). Its message does not name the
    ///   address, which the caller has in `config.listen`: the binary adds it, as
    ///   `bind 127.0.0.1:5388: address already in use (os error 98)`;
    /// - the OS error of creating the poll or its waker (out of descriptors, for example).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let server = netgrace::Server::bind(netgrace::Config::new("127.0.0.1:0".parse().unwrap()))?;
    /// assert_ne!(server.local_addr().port(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn bind(config: Config) -> io::Result<Server> {
        config.validate()?;
        let listener = Server::bind_listener(&config)?;
        listener.set_nonblocking(true)?;
        Server::new(TcpListener::from_std(listener), config)
    }

    /// Binds the listening socket exactly as [`Server::bind`] would
    /// ([`Config::listen`](crate::Config#structfield.listen),
    /// [`Config::backlog`](crate::Config#structfield.backlog), the same errors), without a server:
    /// for a process that holds the socket while other processes serve it, each adopting a copy
    /// with [`Server::from_std`] (the binary's master and its workers, [the restart
    /// guide](crate::guide::restart)).
    ///
    /// The socket is blocking and close-on-exec; pass it on deliberately.
    ///
    /// # Errors
    ///
    /// As [`Server::bind`], minus the poll: an OS error comes back as the OS gave it, its
    /// `raw_os_error()` intact.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let config = netgrace::Config::new("127.0.0.1:0".parse().unwrap());
    /// let listener = netgrace::Server::bind_listener(&config)?;
    /// let server = netgrace::Server::from_std(listener.try_clone()?, config)?;
    /// assert_eq!(server.local_addr(), listener.local_addr()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn bind_listener(config: &Config) -> io::Result<std::net::TcpListener> {
        config.validate()?;
        // The OS error as it is: wrapped with context it would lose its `raw_os_error()`.
        listener::bind(config.listen, config.backlog)
    }

    /// Serves on a listener the host already has (inherited from a supervisor, or bound with
    /// options this crate does not offer); `config.listen` and `config.backlog` are ignored.
    ///
    /// The listener is switched to nonblocking mode; its listen backlog stays whatever its
    /// creator chose (std's `TcpListener::bind` uses 128).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if `config` is invalid; otherwise the OS error of making the
    /// socket nonblocking, reading its address, or creating the poll and its waker.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let addr = listener.local_addr()?;
    /// let server = netgrace::Server::from_std(listener, netgrace::Config::default())?;
    /// assert_eq!(server.local_addr(), addr);
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_std(listener: std::net::TcpListener, config: Config) -> io::Result<Server> {
        config.validate()?;
        listener.set_nonblocking(true)?;
        Server::new(TcpListener::from_std(listener), config)
    }

    fn new(mut listener: TcpListener, config: Config) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        descriptors::reserve(&listener, config.max_connections);
        Ok(Server {
            poll,
            listener,
            local_addr,
            config,
            shared: Arc::new(Shared::new(waker)),
        })
    }

    /// The address the server listens on, with port 0 resolved to the real port.
    ///
    /// Read it once at startup: it is fixed for the server's life. With
    /// [`Server::from_std`] it is the adopted listener's address.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let server = netgrace::Server::bind(netgrace::Config::new("127.0.0.1:0".parse().unwrap()))?;
    /// println!("listening on {}", server.local_addr());
    /// # Ok(())
    /// # }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A second descriptor for the listening socket, for a process that will take over from this
    /// one (a restart without downtime: [the restart guide](crate::guide::restart)).
    ///
    /// Both descriptors name one socket with one accept queue: whichever process calls `accept`
    /// first gets the next client, and the queue outlives either descriptor being closed. Pass
    /// the copy to the successor (at descriptor 3 with `LISTEN_FDS=1`, as systemd does, so it can
    /// adopt it with [`Server::from_std`]), wait until it serves, then call
    /// [`ShutdownHandle::hand_over`] on this server.
    ///
    /// The copy is close-on-exec, so only a child it is deliberately mapped into inherits it.
    /// Drop it before a plain [`ShutdownHandle::shutdown`]: while any descriptor for the socket
    /// is open, new clients are queued rather than refused, and no one will accept them.
    ///
    /// # Errors
    ///
    /// The OS error of `fcntl(F_DUPFD_CLOEXEC)`: [`io::ErrorKind`] `Other` with `EMFILE` when the
    /// process is out of descriptors.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let server = netgrace::Server::bind(netgrace::Config::new("127.0.0.1:0".parse().unwrap()))?;
    /// let copy = server.try_clone_listener()?;
    /// assert_eq!(copy.local_addr()?, server.local_addr());
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_clone_listener(&self) -> io::Result<std::net::TcpListener> {
        let copy = socket2::SockRef::from(&self.listener).try_clone()?;
        Ok(copy.into())
    }

    /// A handle that stops this server from any thread; see [`ShutdownHandle`] for its contract.
    ///
    /// Take it before calling [`Server::run`], which consumes the server.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let server = netgrace::Server::bind(netgrace::Config::new("127.0.0.1:0".parse().unwrap()))?;
    /// let handle = server.shutdown_handle();
    /// let for_another_thread = handle.clone();
    /// for_another_thread.shutdown();
    /// server.run()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle::new(Arc::clone(&self.shared))
    }

    /// Serves on the calling thread until shutdown completes, then returns what it did.
    ///
    /// # Contract
    ///
    /// Guaranteed:
    /// - `run` returns only after a [`ShutdownHandle`] request (or on a failure of the loop
    ///   itself); nothing a client does ends it or makes it panic;
    /// - after [`ShutdownHandle::shutdown`], the clients already waiting in the accept backlog are
    ///   accepted (within `max_connections`) and the listener is closed at once; each client
    ///   receives every byte the server had read from it, and every byte that was already waiting
    ///   in its socket (the drain reads until the socket is empty, at most
    ///   [`Config::max_buffer`](crate::Config#structfield.max_buffer) more bytes), then EOF; `run`
    ///   returns when all have closed or
    ///   [`Config::drain_timeout`](crate::Config#structfield.drain_timeout) has passed, whichever
    ///   is first;
    /// - after [`ShutdownHandle::shutdown_now`], `run` closes everything and returns at once;
    /// - when it returns, every socket it opened is closed.
    ///
    /// Not guaranteed: the order in which connections are served or closed; echo beyond
    /// `max_buffer` bytes of waiting input, or for input that arrives after the drain found the
    /// socket empty (it is read and discarded until the client closes); a clean EOF for
    /// clients still in the accept backlog beyond `max_connections`, or while accepting is paused
    /// after descriptor exhaustion (closing the listener resets them).
    ///
    /// The caller must get a [`ShutdownHandle`] first (this consumes the server), and run this on
    /// a thread it can spare: it blocks until shutdown.
    ///
    /// # Errors
    ///
    /// Only if the event loop itself fails: a [`RunError`] holding the OS error of
    /// `epoll_wait(2)` (other than [`io::ErrorKind::Interrupted`], which is retried) and the
    /// [`Report`] of what the run did until then. It converts into an [`io::Error`] for `?`.
    /// Errors on a connection close that connection and are counted in [`Report::errors`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let server = netgrace::Server::bind(netgrace::Config::new("127.0.0.1:0".parse().unwrap()))?;
    /// let handle = server.shutdown_handle();
    /// let thread = std::thread::spawn(move || server.run());
    /// handle.shutdown();
    /// let report = thread.join().expect("server thread panicked")?;
    /// println!("{report}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn run(self) -> Result<Report, RunError> {
        Reactor::new(self.poll, self.listener, self.config, self.shared).run()
    }

    /// [`Server::run`] with room for no event, which makes the first `epoll_wait(2)` fail with
    /// `EINVAL`: the one way to make the loop itself fail on purpose, so that a test (of this
    /// crate, or of an embedder's handling of a [`RunError`]) can see one. Hidden, and outside
    /// the API's promises.
    #[doc(hidden)]
    pub fn run_failing_at_first_poll(self) -> Result<Report, RunError> {
        Reactor::new(self.poll, self.listener, self.config, self.shared)
            .run_with(mio::Events::with_capacity(0))
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
