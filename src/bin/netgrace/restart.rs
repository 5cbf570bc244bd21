//! SIGHUP: a restart without downtime, by handing the listening socket to a successor.
//!
//! 1. Start the program file again, from the path this process was started from, with the same
//!    arguments; the listener at descriptor 3 and one end of a socket pair at descriptor 4
//!    (`LISTEN_FDS=2`, `LISTEN_FDNAMES=listener:netgrace-ready`).
//! 2. Wait, at most `--restart-timeout`, for the successor to write `ready` on the pair: it does
//!    so once its server exists, when its accept loop is one call away.
//! 3. Then hand over ([`netgrace::ShutdownHandle::hand_over`]): stop accepting, leave the
//!    backlog to the successor, drain our own connections, exit 0.
//!
//! If the successor exits, or stays silent past the timeout, it is killed and nothing else
//! changes: this process never stopped accepting. docs/restart.md has the protocol beside
//! nginx's, HAProxy's, Envoy's and tableflip's.

use std::env;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use log::{info, warn};
use netgrace::ShutdownHandle;
use rustix::process::{Pid, Signal};

use crate::activation::READY_NAME;
use crate::notify;

/// What a successor writes on the readiness socket once it serves.
const READY_MESSAGE: &[u8] = b"ready\n";

/// Where the restart is; one per process, behind the mutex of [`Restart`].
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Serving; a SIGHUP starts a successor.
    Serving,
    /// A successor with this pid was started and has not said it serves yet.
    Starting(u32),
    /// The successor with this pid serves; this process is draining and will exit.
    HandedOver(u32),
    /// A SIGINT or SIGTERM began a shutdown; no successor will be started or adopted.
    Stopping,
}

struct State {
    phase: Phase,
    /// Our own copy of the listening socket, duplicated for each successor. Dropped as soon as
    /// this process stops for good: while any descriptor for the socket is open, new clients
    /// queue instead of being refused.
    listener: Option<TcpListener>,
}

/// The restart machinery: shared by the signal thread (which starts restarts and shutdowns)
/// and the thread that waits for a successor.
#[derive(Clone)]
pub(crate) struct Restart {
    inner: Arc<Inner>,
}

struct Inner {
    program: PathBuf,
    args: Vec<OsString>,
    timeout: Duration,
    handle: ShutdownHandle,
    state: Mutex<State>,
}

impl Restart {
    /// `listener` is a copy of the served socket ([`netgrace::Server::try_clone_listener`]).
    pub(crate) fn new(listener: TcpListener, handle: ShutdownHandle, timeout: Duration) -> Restart {
        Restart {
            inner: Arc::new(Inner {
                program: program_path(),
                args: env::args_os().skip(1).collect(),
                timeout,
                handle,
                state: Mutex::new(State {
                    phase: Phase::Serving,
                    listener: Some(listener),
                }),
            }),
        }
    }

    /// SIGHUP: start a successor, unless a restart or a shutdown is already under way.
    pub(crate) fn begin(&self) {
        let mut state = self.inner.lock();
        match state.phase {
            Phase::Serving => {}
            Phase::Starting(pid) => {
                return info!("SIGHUP ignored: successor pid {pid} is still starting");
            }
            Phase::HandedOver(pid) => {
                return info!("SIGHUP ignored: already handed over to pid {pid}, draining");
            }
            Phase::Stopping => return info!("SIGHUP ignored: shutting down"),
        }
        notify::reloading();
        let started = state
            .listener
            .as_ref()
            .ok_or_else(|| io::Error::other("no listener left to pass on"))
            .and_then(|listener| self.inner.spawn(listener));
        let (child, ours) = match started {
            Ok(started) => started,
            Err(err) => {
                let program = self.inner.program.display();
                warn!("restart failed: cannot start {program}: {err}; still serving");
                return notify::still_ready("restart failed; still serving");
            }
        };
        let pid = child.id();
        info!(
            "SIGHUP: restarting; successor pid {pid} from {}",
            self.inner.program.display()
        );
        state.phase = Phase::Starting(pid);
        drop(state);
        let restart = self.clone();
        let waiter = std::thread::Builder::new()
            .name("restart".into())
            .spawn(move || restart.finish(child, ours));
        if let Err(err) = waiter {
            // Without the waiter nobody would adopt or reap the successor: stop it now.
            warn!("restart failed: cannot start a thread to wait for pid {pid}: {err}");
            self.inner.lock().phase = Phase::Serving;
            signal(pid, Signal::KILL);
            notify::still_ready("restart failed; still serving");
        }
    }

    /// The first SIGINT or SIGTERM: no more restarts, the successor being started (if any) is
    /// abandoned, and our copy of the listener goes. Returns whether this process is still the
    /// service's main process (it is not after a hand-over), which then says STOPPING=1.
    pub(crate) fn stop(&self) -> bool {
        let mut state = self.inner.lock();
        state.listener = None;
        let main = match state.phase {
            Phase::Starting(pid) => {
                info!("restart abandoned: stopping successor pid {pid}");
                // SIGTERM, not SIGKILL: it may have become ready a moment ago and accepted a
                // client from the shared backlog; a graceful stop drains that client instead of
                // resetting it. One that is not serving yet has no handler and simply dies.
                signal(pid, Signal::TERM);
                true
            }
            Phase::HandedOver(_) => false,
            Phase::Serving | Phase::Stopping => true,
        };
        if main {
            state.phase = Phase::Stopping;
        }
        main
    }

    /// On the waiter thread: adopt the successor once it serves, or kill it.
    fn finish(&self, mut child: Child, ours: UnixStream) {
        let pid = child.id();
        let outcome = wait_until_ready(ours, self.inner.timeout);
        let mut state = self.inner.lock();
        if let Phase::Stopping = state.phase {
            // A shutdown began while it started, and `stop` sent it SIGTERM. Reap it if it is
            // gone; if it is draining clients it took, let it finish: it is reparented when we
            // exit.
            return match child.try_wait() {
                Ok(Some(status)) => info!("successor pid {pid} stopped ({status})"),
                _ => info!("successor pid {pid} is stopping by itself"),
            };
        }
        match outcome {
            Ok(()) => {
                state.phase = Phase::HandedOver(pid);
                state.listener = None;
                info!("restart: successor pid {pid} is serving; handing over");
                self.inner.handle.hand_over();
                // Not waited for: it outlives this process, and is then reparented.
            }
            Err(reason) => {
                let status = end(&mut child);
                state.phase = Phase::Serving;
                warn!("restart failed: successor pid {pid} {reason} ({status}); still serving");
                notify::still_ready("restart failed; still serving");
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it can only come from a bug in this file; the state is a plain
        // enum and an Option, valid at every point, so carry on with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts the successor with the listener at descriptor 3 and its end of the readiness
    /// pair at descriptor 4. Returns it and our end of the pair.
    fn spawn(&self, listener: &TcpListener) -> io::Result<(Child, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env("LISTEN_FDS", "2")
            .env("LISTEN_FDNAMES", format!("listener:{READY_NAME}"))
            // systemd sets LISTEN_PID to the child's pid; we cannot know it before the fork,
            // and sd_listen_fds(3) accepts it unset.
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null());
        command
            .fd_mappings(vec![
                FdMapping {
                    parent_fd: listener.try_clone()?.into(),
                    child_fd: 3,
                },
                FdMapping {
                    parent_fd: theirs.into(),
                    child_fd: 4,
                },
            ])
            .map_err(|err| io::Error::other(format!("descriptor mapping: {err}")))?;
        let child = command.spawn()?;
        // `command` still holds our copies of the listener and of the successor's end: drop
        // them, so that the successor's exit closes its end and ends our wait at once.
        drop(command);
        Ok((child, ours))
    }
}

impl Restart {
    /// Says that this process serves: to systemd, and, in a successor, to the predecessor on
    /// `ready` (which then hands over at once). Not if a SIGINT or SIGTERM came first: a
    /// successor told to stop must not take the service over, or predecessor and successor
    /// would both leave. Under the lock, so `stop` comes either before (nothing is announced)
    /// or after (a plain shutdown of a process that took over).
    pub(crate) fn announce(&self, ready: Option<UnixStream>) {
        let state = self.inner.lock();
        if let Phase::Stopping = state.phase {
            return info!("not announcing readiness: stopping already");
        }
        match ready {
            // systemd first: the new MAINPID must be known before the predecessor exits.
            Some(ready) => {
                notify::successor_ready();
                tell_predecessor(ready);
            }
            None => notify::ready(),
        }
    }
}

/// In the successor: tell the predecessor that we serve. A failure is only logged: the
/// predecessor then times out, kills us, and keeps serving.
fn tell_predecessor(mut ready: UnixStream) {
    if let Err(err) = ready.write_all(READY_MESSAGE) {
        warn!("telling the predecessor that we serve: {err}");
    }
}

/// Reads the successor's readiness message, at most until `timeout`. `Err` says why not, as
/// the rest of a sentence that begins "successor pid N".
fn wait_until_ready(mut ours: UnixStream, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut message = Vec::with_capacity(READY_MESSAGE.len());
    let mut buf = [0; 16];
    while message.len() < READY_MESSAGE.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "was not serving within {} s (--restart-timeout)",
                timeout.as_secs_f64()
            ));
        }
        ours.set_read_timeout(Some(left))
            .map_err(|err| format!("readiness socket: {err}"))?;
        match ours.read(&mut buf) {
            // Every copy of its end is closed: it exited (or closed it without a word).
            Ok(0) => return Err("exited before it was serving".to_string()),
            Ok(n) => message.extend_from_slice(&buf[..n]),
            // The read timeout: the loop checks the deadline.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            // A signal landed on this thread: read again.
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("readiness socket failed: {err}")),
        }
    }
    if message == READY_MESSAGE {
        Ok(())
    } else {
        Err(format!("sent {message:?} instead of {READY_MESSAGE:?}"))
    }
}

/// Kills (if still running) and reaps a successor; its exit status, for the log.
fn end(child: &mut Child) -> String {
    // On a process that already exited, kill does nothing and wait returns its own status; on
    // one that is exiting, the status it chose is kept.
    let _ = child.kill();
    match child.wait() {
        Ok(status) => status.to_string(),
        Err(err) => format!("not reaped: {err}"),
    }
}

/// Signals a successor we have not reaped, so its pid cannot have been reused.
fn signal(pid: u32, signal: Signal) {
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw);
    if let Some(pid) = pid {
        if let Err(err) = rustix::process::kill_process(pid, signal) {
            warn!("signal successor: {err}");
        }
    }
}

/// The program file to run for a successor: the path this process was started from, so that
/// installing a new binary there and sending SIGHUP upgrades. Not `/proc/self/exe`: once the
/// file is replaced, that names the old, deleted one ("... (deleted)").
fn program_path() -> PathBuf {
    let Some(arg0) = env::args_os().next().map(PathBuf::from) else {
        return current_exe();
    };
    if arg0.components().count() > 1 {
        // A path: make it absolute now, while the working directory is the one it was meant for.
        return env::current_dir()
            .map(|dir| dir.join(&arg0))
            .unwrap_or(arg0);
    }
    // A bare name was found on PATH by whoever started us; find it the same way.
    env::var_os("PATH")
        .and_then(|path| {
            env::split_paths(&path)
                .map(|dir| dir.join(&arg0))
                .find(|candidate| is_executable(candidate))
        })
        .unwrap_or_else(current_exe)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn current_exe() -> PathBuf {
    env::current_exe().unwrap_or_else(|_| PathBuf::from("netgrace"))
}
