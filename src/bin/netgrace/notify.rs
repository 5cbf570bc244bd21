//! systemd's readiness protocol (sd_notify(3)): one datagram per state change to the socket
//! named by `NOTIFY_SOCKET`; nothing at all when it is unset.
//!
//! `NOTIFY_SOCKET` stays in the environment on purpose: a successor started by SIGHUP inherits
//! it and sends its own `MAINPID=` and `READY=1` (the unit needs `NotifyAccess=all` for that).

use log::{debug, warn};
use sd_notify::NotifyState;

/// Serving, as the process systemd started.
pub(crate) fn ready() {
    send(&[NotifyState::Ready]);
}

/// Serving, as the successor of a restart: systemd must learn the new main process before the
/// old one exits, or it would take that exit for the service's end.
pub(crate) fn successor_ready() {
    send(&[NotifyState::MainPid(std::process::id()), NotifyState::Ready]);
}

/// A SIGHUP restart has begun; `READY=1` (from the successor, or from us if it fails) ends it.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(err) => {
            // systemd only needs MONOTONIC_USEC for Type=notify-reload; say RELOADING anyway.
            debug!("clock for MONOTONIC_USEC: {err}");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// The restart failed and this process goes on serving.
pub(crate) fn still_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A shutdown has begun (only from the process that is still the service's main process).
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState]) {
    // The service keeps working without systemd hearing of it; an operator should still know.
    if let Err(err) = sd_notify::notify(states) {
        warn!("notify systemd: {err}");
    }
}
