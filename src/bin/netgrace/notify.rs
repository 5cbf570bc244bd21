//! systemd's readiness protocol (sd_notify(3)): one datagram per state change to the socket
//! named by `NOTIFY_SOCKET`; nothing at all when it is unset.
//!
//! Only the master speaks: it is the service's main process for its whole life, so the unit
//! needs no more than `NotifyAccess=main`, and workers are started without `NOTIFY_SOCKET`.
//!
//! sd-notify formats the states; the datagram is sent here, because the crate connects to a
//! path only and sd_notify(3) also allows an abstract socket, written `@name`.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

use log::warn;
use sd_notify::NotifyState;

/// The first workers serve.
pub(crate) fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// A SIGHUP restart has begun; `READY=1` (after it succeeded or failed) ends it.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        // systemd only needs MONOTONIC_USEC for Type=notify-reload; say RELOADING anyway.
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Serving again, after a restart or a replaced worker: `status` says how it went, and
/// replaces whatever the last status said.
pub(crate) fn serving(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Something the operator should see in `systemctl status`, while serving on.
pub(crate) fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// A shutdown has begun.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState<'_>]) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message: String = states.iter().map(|state| format!("{state}\n")).collect();
    // The service keeps working without systemd hearing of it; an operator should still know.
    if let Err(err) = send_to(socket.as_bytes(), message.as_bytes()) {
        warn!("notify systemd ({}): {err}", socket.to_string_lossy());
    }
}

fn send_to(socket: &[u8], message: &[u8]) -> io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    match socket.strip_prefix(b"@") {
        Some(name) => connect_abstract(&sender, name)?,
        None => sender.connect(OsStr::from_bytes(socket))?,
    }
    let sent = sender.send(message)?;
    if sent == message.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "datagram cut short",
        ))
    }
}

#[cfg(target_os = "linux")]
fn connect_abstract(sender: &UnixDatagram, name: &[u8]) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sender.connect_addr(&addr)
}

#[cfg(not(target_os = "linux"))]
fn connect_abstract(_: &UnixDatagram, _: &[u8]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}
