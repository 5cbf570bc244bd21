//! [`Config`]: what the server listens on and the limits it keeps.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The port the `netgrace` binary listens on by default (`127.0.0.1:5388`): the port of the Go
/// example netgrace descends from.
///
/// The library never picks it by itself: [`Config::default`] listens on port 0, so that two
/// servers in one process, or two test runs, never collide. Use it to reach the binary.
///
/// # Examples
///
/// ```
/// use std::net::SocketAddr;
/// let binary_default = SocketAddr::from(([127, 0, 0, 1], netgrace::DEFAULT_PORT));
/// assert_eq!(binary_default.to_string(), "127.0.0.1:5388");
/// ```
pub const DEFAULT_PORT: u16 = 5388;

/// The default [`Config::idle_timeout`](crate::Config#structfield.idle_timeout): 300 s, so silent
/// clients cannot hold every slot for ever. Set `idle_timeout` to `None` (the binary:
/// `--idle-timeout never`) to turn the timer off.
///
/// # Examples
///
/// ```
/// let config = netgrace::Config::default();
/// assert_eq!(config.idle_timeout, Some(netgrace::DEFAULT_IDLE_TIMEOUT));
/// assert_eq!(netgrace::DEFAULT_IDLE_TIMEOUT.as_secs(), 300);
/// ```
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest accepted `max_connections`: 2^24.
///
/// Connection keys run from 0 to `max_connections - 1` and double as poll tokens, so keeping them
/// below this leaves the top of the token space to the listener and the waker ([token
/// space](crate::guide::architecture#token-space)). It is far above what one thread can serve
/// anyway.
///
/// # Examples
///
/// ```
/// let config = netgrace::Config::default().max_connections(netgrace::MAX_CONNECTIONS_LIMIT + 1);
/// assert!(config.validate().is_err());
/// ```
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 24;

/// How a [`Server`](crate::Server) listens, how much it holds, and how long it drains.
///
/// Build one with [`Config::new`] (or [`Config::default`], on `127.0.0.1:0`) and chain the
/// setters you need, each named after the field it sets; the fields are public too, to read or
/// assign. The struct is `#[non_exhaustive]`, so that new limits can be added without breaking
/// you: outside this crate it cannot be written as a struct literal, not even with
/// `..Config::default()`. [`Config::validate`] is called by [`Server::bind`](crate::Server::bind)
/// and [`Server::from_std`](crate::Server::from_std), so an invalid value is an
/// [`io::ErrorKind::InvalidInput`] error at startup, never a panic later.
///
/// # Which constructor uses what
///
/// [`Server::bind`](crate::Server::bind) uses every field.
/// [`Server::from_std`](crate::Server::from_std) serves a listener that already exists, so it
/// ignores the two fields about making one, `listen` and `backlog` (still validated), and uses the
/// four limits: `max_connections`, `max_buffer`, `drain_timeout` and `idle_timeout`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use netgrace::Config;
///
/// let config = Config::new("127.0.0.1:0".parse().unwrap())
///     .max_connections(100)
///     .max_buffer(16 * 1024)
///     .drain_timeout(Duration::from_secs(2));
/// assert_eq!(config.max_connections, 100);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Address to listen on.
    ///
    /// Default `127.0.0.1:0`: loopback, so a server started by accident is not reachable from
    /// the network, and port 0, which asks the OS for a free port; read the result with
    /// [`Server::local_addr`](crate::Server::local_addr). Ignored by
    /// [`Server::from_std`](crate::Server::from_std), which uses the listener it is given.
    pub listen: SocketAddr,

    /// Most connections served at once.
    ///
    /// Default 1024; valid range 1 to [`MAX_CONNECTIONS_LIMIT`]. At the limit the server stops
    /// accepting: new clients wait in the kernel's accept backlog until a connection closes, then
    /// the server accepts again by itself. Once the backlog is full too, Linux silently drops their
    /// handshakes and the clients retry after a second or more (see
    /// [`Config::backlog`](crate::Config#structfield.backlog)).
    ///
    /// The server also reserves its descriptor table for this many connections when it starts
    /// (the repository's `docs/hard-edges.md`, "Connection storms and the listen backlog"); a
    /// limit above the process's descriptor limit (`ulimit -n`) is logged as a warning, since
    /// accepting will pause with `EMFILE` there first.
    pub max_connections: usize,

    /// Most connections the kernel holds completed but not yet accepted: `listen(2)`'s backlog.
    ///
    /// Default 1024; valid range 1 to `i32::MAX`. Linux silently caps it at
    /// `net.core.somaxconn` (4096 since Linux 5.4, 128 before), so raise that sysctl too for a
    /// deeper queue. When the queue is full, Linux does not refuse a new client: it drops the
    /// handshake (`TcpExtListenOverflows` in `nstat`), and the client retransmits its SYN after a
    /// second, then two, then four. The queue only fills when clients arrive faster than the loop
    /// accepts, as in the reconnect storm after a restart; a backlog at least as deep as the
    /// largest burst expected absorbs it. Used by [`Server::bind`](crate::Server::bind) only:
    /// [`Server::from_std`](crate::Server::from_std) keeps the backlog its caller chose.
    pub backlog: u32,

    /// Most bytes one connection may hold read but not yet echoed, in bytes.
    ///
    /// Default 65 536 (64 KiB); valid range 1 to `isize::MAX`. At the limit the server stops
    /// reading that connection (backpressure) until its client reads some echo back; the kernel's
    /// socket buffers then fill and the client's writes block. Server memory for echo data is at
    /// most `max_connections × max_buffer` (plus one shared read buffer of `min(64 KiB,
    /// max_buffer)`), and a connection with nothing pending holds none.
    pub max_buffer: usize,

    /// How long a graceful shutdown waits for connections to finish.
    ///
    /// Default 5 s; any value is valid, including zero (flush what the socket takes at once, then
    /// cut the rest) and very large ones (wait for clients indefinitely). When it passes, every
    /// connection still open is closed and counted as [`Report::forced`](crate::Report::forced).
    pub drain_timeout: Duration,

    /// How long a connection may stay silent before the server closes it.
    ///
    /// Default 300 s (5 minutes); `None` turns the timer off; any non-zero duration is valid.
    /// Without a bound, `max_connections` clients that connect and never send would hold every slot
    /// for ever while the next clients wait in the backlog; servers people trust ship one (nginx's
    /// `keepalive_timeout` is 75 s; HAProxy warns at startup when `timeout client` is unset).
    /// "Silent" means no byte moved in either direction. At the limit the connection is closed as
    /// in a graceful shutdown: pending echo is flushed, the write side is shut (the client reads
    /// EOF), and the server reads and discards until the client closes; if the client has not
    /// closed within a short grace (the timeout itself, at most 1 s), the connection is cut, so its
    /// slot is free within one idle period plus that grace. Either way it counts as
    /// [`Report::timed_out`](crate::Report::timed_out), unless it ends on an IO error (then
    /// [`Report::errors`](crate::Report::errors)). Keeping this timer costs O(1) per event,
    /// whatever the number of connections.
    pub idle_timeout: Option<Duration>,
}

impl Config {
    /// A default configuration listening on `listen`.
    ///
    /// Every limit takes its default (see each field); chain the setters you need. The result is
    /// not validated until [`Config::validate`] or a [`Server`](crate::Server) constructor runs.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = netgrace::Config::new("127.0.0.1:0".parse().unwrap());
    /// assert_eq!(config.max_connections, 1024);
    /// ```
    #[must_use]
    pub fn new(listen: SocketAddr) -> Config {
        Config {
            listen,
            ..Config::default()
        }
    }

    /// Sets the address to listen on, [`listen`](#structfield.listen).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = netgrace::Config::default().listen("127.0.0.1:0".parse().unwrap());
    /// assert_eq!(config.listen.port(), 0);
    /// ```
    #[must_use = "a setter returns the changed Config and leaves the original as it was"]
    pub fn listen(mut self, listen: SocketAddr) -> Config {
        self.listen = listen;
        self
    }

    /// Sets the most connections served at once, [`max_connections`](#structfield.max_connections).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = netgrace::Config::default().max_connections(10);
    /// assert_eq!(config.max_connections, 10);
    /// ```
    #[must_use = "a setter returns the changed Config and leaves the original as it was"]
    pub fn max_connections(mut self, max_connections: usize) -> Config {
        self.max_connections = max_connections;
        self
    }

    /// Sets the listen backlog, [`backlog`](#structfield.backlog).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = netgrace::Config::default().backlog(4096);
    /// assert_eq!(config.backlog, 4096);
    /// ```
    #[must_use = "a setter returns the changed Config and leaves the original as it was"]
    pub fn backlog(mut self, backlog: u32) -> Config {
        self.backlog = backlog;
        self
    }

    /// Sets the bytes held per connection, [`max_buffer`](#structfield.max_buffer).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = netgrace::Config::default().max_buffer(16 * 1024);
    /// assert_eq!(config.max_buffer, 16_384);
    /// ```
    #[must_use = "a setter returns the changed Config and leaves the original as it was"]
    pub fn max_buffer(mut self, max_buffer: usize) -> Config {
        self.max_buffer = max_buffer;
        self
    }

    /// Sets how long a graceful shutdown waits, [`drain_timeout`](#structfield.drain_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = netgrace::Config::default().drain_timeout(Duration::from_secs(2));
    /// assert_eq!(config.drain_timeout, Duration::from_secs(2));
    /// ```
    #[must_use = "a setter returns the changed Config and leaves the original as it was"]
    pub fn drain_timeout(mut self, drain_timeout: Duration) -> Config {
        self.drain_timeout = drain_timeout;
        self
    }

    /// Sets how long a connection may stay silent, [`idle_timeout`](#structfield.idle_timeout):
    /// a [`Duration`], or `None` to turn the timer off.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = netgrace::Config::default().idle_timeout(Duration::from_secs(60));
    /// assert_eq!(config.idle_timeout, Some(Duration::from_secs(60)));
    /// assert_eq!(config.idle_timeout(None).idle_timeout, None);
    /// ```
    #[must_use = "a setter returns the changed Config and leaves the original as it was"]
    pub fn idle_timeout(mut self, idle_timeout: impl Into<Option<Duration>>) -> Config {
        self.idle_timeout = idle_timeout.into();
        self
    }

    /// Checks every limit, so a bad value is refused before any socket exists.
    ///
    /// [`Server::bind`](crate::Server::bind) and [`Server::from_std`](crate::Server::from_std)
    /// call it first; call it yourself to report a bad configuration before doing anything else
    /// (the binary does, to exit with a usage error).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] naming the field when `max_connections` is zero or above
    /// [`MAX_CONNECTIONS_LIMIT`], `max_buffer` is zero or above `isize::MAX`, `backlog` is zero or
    /// above `i32::MAX`, or `idle_timeout` is `Some(Duration::ZERO)` (use `None` to turn the
    /// timer off).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = netgrace::Config::default().max_buffer(0);
    /// let err = config.validate().unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    pub fn validate(&self) -> io::Result<()> {
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS_LIMIT {
            return Err(invalid(format!(
                "max_connections must be between 1 and {MAX_CONNECTIONS_LIMIT}, got {}",
                self.max_connections
            )));
        }
        // isize::MAX: the most a Vec<u8> may ever hold.
        if self.max_buffer == 0 || self.max_buffer > isize::MAX as usize {
            return Err(invalid(format!(
                "max_buffer must be between 1 and {} bytes, got {}",
                isize::MAX,
                self.max_buffer
            )));
        }
        // i32::MAX: listen(2) takes an int.
        if self.backlog == 0 || self.backlog > i32::MAX as u32 {
            return Err(invalid(format!(
                "backlog must be between 1 and {}, got {}",
                i32::MAX,
                self.backlog
            )));
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return Err(invalid(
                "idle_timeout must be more than zero (None turns it off)".to_string(),
            ));
        }
        Ok(())
    }
}

impl Default for Config {
    /// `127.0.0.1:0` (loopback, a port the OS picks), 1024 connections, a backlog of 1024,
    /// 64 KiB per connection, 5 s drain, 300 s idle timeout.
    ///
    /// A library has no port of its own to claim: a fixed one would make two servers in one
    /// process, or two runs of a test suite, collide. The binary asks for [`DEFAULT_PORT`].
    fn default() -> Config {
        Config {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            max_connections: 1024,
            backlog: 1024,
            max_buffer: 64 * 1024,
            drain_timeout: Duration::from_secs(5),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:0");
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.backlog, 1024);
        assert_eq!(config.max_buffer, 65_536);
        assert_eq!(config.drain_timeout, Duration::from_secs(5));
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(300)));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn zero_or_huge_limits_are_invalid_input() {
        let cases = [
            (0, 1, "max_connections"),
            (MAX_CONNECTIONS_LIMIT + 1, 1, "max_connections"),
            (1, 0, "max_buffer"),
        ];
        for (max_connections, max_buffer, field) in cases {
            let config = Config {
                max_connections,
                max_buffer,
                ..Config::default()
            };
            let err = config.validate().expect_err(field);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn a_backlog_outside_listens_int_is_invalid_input() {
        for backlog in [0, i32::MAX as u32 + 1] {
            let config = Config {
                backlog,
                ..Config::default()
            };
            let err = config.validate().expect_err("backlog");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains("backlog"), "{err}");
        }
    }

    #[test]
    fn a_zero_idle_timeout_is_invalid_input() {
        let config = Config {
            idle_timeout: Some(Duration::ZERO),
            ..Config::default()
        };
        let err = config.validate().expect_err("zero idle timeout");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("idle_timeout"), "{err}");
    }

    #[test]
    fn limits_at_the_edges_are_valid() {
        let config = Config {
            max_connections: MAX_CONNECTIONS_LIMIT,
            max_buffer: 1,
            backlog: i32::MAX as u32,
            drain_timeout: Duration::MAX,
            idle_timeout: Some(Duration::MAX),
            ..Config::default()
        };
        assert!(config.validate().is_ok());
    }
}
