//! Descriptors passed in at startup, by the letter of sd_listen_fds(3): the listening socket
//! systemd (or `systemd-socket-activate`, `systemfd`) passes at descriptor 3, or, in a worker,
//! the socket and the control channel its master passes at descriptors 3 and 4.
//!
//! Whose descriptors they are decides everything. `LISTEN_FDS` is inherited by every child
//! process, so a process that merely inherits it with a parent's descriptor 3 must not serve
//! that socket: systemd's are ours only when `LISTEN_PID` is our pid. A master cannot know its
//! worker's pid before the fork (setting it after takes `unsafe` code), so it marks the worker
//! with its own pid in `NETGRACE_MASTER`, which is ours only when it names our parent.
//!
//! The descriptors themselves are adopted through `listenfd`, which owns the `unsafe` that
//! turning an inherited number into a socket takes, for exactly the descriptors `LISTEN_FDS`
//! names: so the control channel travels as a second descriptor in `LISTEN_FDS`, named
//! `netgrace-control` in `LISTEN_FDNAMES`.

use std::env;
use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;

use listenfd::ListenFd;
use socket2::{Domain, SockRef, Type};

/// The variable in which a master names itself to its workers.
pub(crate) const MASTER_VAR: &str = "NETGRACE_MASTER";

/// The `LISTEN_FDNAMES` a master passes to its workers: the listener, then the control channel.
pub(crate) const WORKER_FDNAMES: &str = "listener:netgrace-control";

/// Every variable of the protocol, removed at startup so that no child of ours (a worker, or
/// anything a worker might run) takes them for its own. `LISTEN_FDS_FIRST_FD` is listenfd's
/// extension: honoured, it would move the descriptors a master passes to its workers.
const VARS: [&str; 5] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "LISTEN_FDS_FIRST_FD",
    MASTER_VAR,
];

/// What the environment handed this process.
#[derive(Debug, Default)]
pub(crate) enum Inherited {
    /// Nothing: bind `--listen`.
    #[default]
    Nothing,
    /// A listening socket from systemd (or any supervisor that follows sd_listen_fds(3)).
    Listener(TcpListener),
    /// This process is a worker of the master with this pid: serve `listener`, take orders and
    /// report on `control`.
    Worker {
        master: u32,
        listener: TcpListener,
        control: UnixStream,
    },
    /// `LISTEN_FDS` was set for another process (its `LISTEN_PID` names it, or is unset): the
    /// reason, to log once the logger is up. Its descriptors are left alone: they are not ours.
    NotOurs(String),
}

/// Reads and removes the protocol's variables, and adopts the descriptors they pass to us.
///
/// Must run before any other thread exists: it edits the environment.
///
/// # Errors
///
/// `InvalidInput`, naming what was passed, when the descriptors are for this process but are not
/// what netgrace serves: any count but one listening TCP socket from systemd (netgrace serves one
/// socket, and a second one held open unserved would let its clients connect and hang), or a
/// descriptor 3 that is closed, not a socket, not TCP, or not listening. Serving something else,
/// or binding `--listen` behind the supervisor's back, would both be wrong.
pub(crate) fn from_env() -> io::Result<Inherited> {
    let [fds, pid, names, _first_fd, master] = VARS.map(|var| {
        let value = env::var(var).ok();
        env::remove_var(var);
        value
    });
    let Some(fds) = fds else {
        return Ok(Inherited::Nothing);
    };
    let parent = rustix::process::getppid().map_or(0, |pid| pid.as_raw_pid());
    if let Some(master) = master.as_deref().and_then(|m| m.parse::<u32>().ok()) {
        if i64::from(master) == i64::from(parent) {
            return adopt_as_worker(&fds, names.as_deref(), master);
        }
    }
    let ours = rustix::process::getpid().as_raw_pid();
    match pid.as_deref() {
        Some(pid) if pid.parse::<i32>() == Ok(ours) => {}
        Some(pid) => {
            return Ok(Inherited::NotOurs(format!(
                "LISTEN_FDS ignored: LISTEN_PID={pid} names another process (we are pid {ours})"
            )))
        }
        None => {
            return Ok(Inherited::NotOurs(
                "LISTEN_FDS ignored: LISTEN_PID is not set, so the descriptors are not ours"
                    .to_string(),
            ))
        }
    }
    match count(&fds)? {
        0 => Ok(Inherited::Nothing),
        1 => {
            let mut passed = listen_fds(1);
            Ok(Inherited::Listener(take_listener(&mut passed)?))
        }
        n => Err(invalid(format!(
            "LISTEN_FDS={n}: netgrace serves exactly one listening socket; pass one \
             (one ListenStream= in the .socket unit, one -l for systemd-socket-activate)"
        ))),
    }
}

fn adopt_as_worker(fds: &str, names: Option<&str>, master: u32) -> io::Result<Inherited> {
    if count(fds)? != 2 || names != Some(WORKER_FDNAMES) {
        return Err(invalid(format!(
            "{MASTER_VAR}={master} with LISTEN_FDS={fds} and LISTEN_FDNAMES={names:?}: \
             a worker takes two descriptors, named {WORKER_FDNAMES}"
        )));
    }
    let mut passed = listen_fds(2);
    let listener = take_listener(&mut passed)?;
    let control = passed
        .take_custom::<UnixStream>(1, Domain::UNIX.into(), Type::STREAM.into(), "unix stream")
        .map_err(|err| invalid(format!("descriptor 4 from the master: {err}")))?
        .ok_or_else(|| invalid("descriptor 4 from the master is not open".to_string()))?;
    SockRef::from(&control).set_cloexec(true)?;
    Ok(Inherited::Worker {
        master,
        listener,
        control,
    })
}

/// `LISTEN_FDS` parsed strictly, and bounded before listenfd (which would allocate a slot per
/// descriptor claimed) sees it.
fn count(fds: &str) -> io::Result<u32> {
    match fds.parse::<u32>() {
        Ok(n) if n <= 2 => Ok(n),
        Ok(_) | Err(_) => Err(invalid(format!(
            "LISTEN_FDS={fds:?}: netgrace serves exactly one listening socket, passed at \
             descriptor 3 with LISTEN_FDS=1"
        ))),
    }
}

/// The validated count back in the environment, for listenfd alone: it reads and removes it.
fn listen_fds(count: u32) -> ListenFd {
    env::set_var("LISTEN_FDS", count.to_string());
    ListenFd::from_env()
}

/// Descriptor 3: it must be a listening TCP socket.
fn take_listener(passed: &mut ListenFd) -> io::Result<TcpListener> {
    // listenfd cannot tell a closed descriptor from one that is not a socket; procfs can.
    if cfg!(target_os = "linux") && std::fs::symlink_metadata("/proc/self/fd/3").is_err() {
        return Err(invalid(
            "descriptor 3 from LISTEN_FDS is not open".to_string(),
        ));
    }
    let listener = passed
        .take_tcp_listener(0)
        .map_err(|err| invalid(format!("descriptor 3 from LISTEN_FDS: {err}")))?
        .filter(is_listening);
    let listener = listener.ok_or_else(|| {
        invalid("descriptor 3 from LISTEN_FDS is a TCP socket but not a listening one".to_string())
    })?;
    // Inherited without close-on-exec, as the protocol requires; from here on it is passed on
    // only on purpose (to a worker, at descriptor 3), never leaked into another program.
    SockRef::from(&listener).set_cloexec(true)?;
    Ok(listener)
}

/// `SO_ACCEPTCONN`: whether `listen(2)` was called on the socket.
fn is_listening(listener: &TcpListener) -> bool {
    SockRef::from(listener).is_listener().unwrap_or(false)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
