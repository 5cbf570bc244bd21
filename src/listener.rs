//! The listening socket, built step by step so that its listen backlog is ours to choose.
//!
//! `mio::net::TcpListener::bind` does what this does, in the same order, but always with a
//! backlog of 128 (std's value); `socket2` exposes each step without `unsafe` in this crate.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a listener on `addr` with a `listen(2)` backlog of `backlog`, in blocking mode (the
/// default for a new socket): [`Server::bind`](crate::Server::bind) makes it nonblocking for its
/// poll, [`Server::bind_listener`](crate::Server::bind_listener) hands it over as it is.
///
/// `backlog` has been validated to fit an `int`; Linux silently caps it at
/// `net.core.somaxconn` (listen(2), "NOTES").
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    // socket2 creates the socket close-on-exec, as mio and std do: a child process must not
    // inherit the listener by accident.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Rebinding right after a restart must not wait for the old connections' TIME_WAIT
    // (socket(7), SO_REUSEADDR). Not on Windows, where it lets another process take the port.
    #[cfg(not(windows))]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog)?;
    Ok(socket.into())
}
