//! Socket activation: the listening socket a supervisor passes at descriptor 3 (`LISTEN_FDS`,
//! sd_listen_fds(3)), whether that supervisor is systemd, `systemfd`, or a netgrace process
//! handing over to its successor.
//!
//! A successor also gets a second descriptor, named `netgrace-ready` in `LISTEN_FDNAMES`: one
//! end of a Unix socket pair on which it tells its predecessor that it is serving (see
//! `restart.rs`). It travels through `LISTEN_FDS` rather than a variable of its own because
//! adopting an inherited descriptor takes `unsafe`, which `listenfd` owns for exactly the
//! descriptors `LISTEN_FDS` names.

use std::env;
use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;

use listenfd::ListenFd;
use socket2::{Domain, SockRef, Type};

/// The `LISTEN_FDNAMES` entry of the readiness socket a predecessor passes to its successor.
pub(crate) const READY_NAME: &str = "netgrace-ready";

/// What the environment handed this process.
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    /// The listening TCP socket at descriptor 3, to serve instead of binding `--listen`.
    pub(crate) listener: Option<TcpListener>,
    /// Present when this process is a successor: tell the predecessor here once serving.
    pub(crate) ready: Option<UnixStream>,
    /// Further descriptors in `LISTEN_FDS`, left alone: this server has one listener. Counted
    /// so that the caller can warn once the logger is up.
    pub(crate) ignored: usize,
}

/// Takes the descriptors named by `LISTEN_FDS` and removes `LISTEN_FDS`, `LISTEN_PID` and
/// `LISTEN_FDNAMES` from the environment, so no child of ours mistakes them for its own.
///
/// Must run before any other thread exists: it edits the environment.
///
/// # Errors
///
/// `InvalidInput` naming the descriptor when `LISTEN_FDS` is set for this process but
/// descriptor 3 is not a listening TCP socket, or the readiness socket is not a Unix stream
/// socket: serving something else, or binding `--listen` behind the supervisor's back, would
/// both be wrong.
pub(crate) fn from_env() -> io::Result<Inherited> {
    let names = env::var("LISTEN_FDNAMES").unwrap_or_default();
    env::remove_var("LISTEN_FDNAMES");
    // Checks LISTEN_PID (unset or ours) and removes LISTEN_FDS and LISTEN_PID.
    let mut fds = ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(Inherited::default());
    }
    // listenfd cannot tell a closed descriptor from one that is not a socket; procfs can.
    if cfg!(target_os = "linux") && std::fs::symlink_metadata("/proc/self/fd/3").is_err() {
        return Err(invalid(
            "descriptor 3 from LISTEN_FDS is not open".to_string(),
        ));
    }
    let listener = fds
        .take_tcp_listener(0)
        .map_err(|err| invalid(format!("descriptor 3 from LISTEN_FDS: {err}")))?
        .filter(is_listening);
    let Some(listener) = listener else {
        return Err(invalid(
            "descriptor 3 from LISTEN_FDS is a TCP socket but not a listening one".to_string(),
        ));
    };
    let mut ready = None;
    if let Some(index) = names.split(':').position(|name| name == READY_NAME) {
        let stream = fds
            .take_custom::<UnixStream>(
                index,
                Domain::UNIX.into(),
                Type::STREAM.into(),
                "unix stream socket",
            )
            .map_err(|err| invalid(format!("descriptor {} from LISTEN_FDS: {err}", 3 + index)))?;
        ready = stream;
    }
    let ignored = fds.len() - 1 - usize::from(ready.is_some());
    Ok(Inherited {
        listener: Some(listener),
        ready,
        ignored,
    })
}

/// `SO_ACCEPTCONN`: whether `listen(2)` was called on the socket.
fn is_listening(listener: &TcpListener) -> bool {
    SockRef::from(listener).is_listener().unwrap_or(false)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
