//! The master: the process the operator (or systemd, a container runtime, runit, a shell)
//! starts, and the only one it ever needs to know. It holds the listening socket for the whole
//! life of the service and serves no client itself; its workers do ([`crate::worker`]).
//!
//! It is an event loop too, on a [`mio::Poll`] with one token per worker's control channel and
//! a [`mio::Waker`] that the signal thread wakes, so a signal, a worker saying `ready`, a child's
//! exit and a deadline are each one event. The state is a slab of [`Worker`]s and a few fields,
//! owned by this loop alone: no lock.
//!
//! - **Restart (SIGHUP)**: a new generation of workers from the program file; once every one
//!   of them serves, the old ones hand over and drain. If one fails or is not serving within
//!   `--restart-timeout`, the new generation is dismissed and the old one serves on
//!   (`master/restart.rs`).
//! - **A worker that dies** is replaced, after a pause that doubles with each failure in a
//!   row; clients wait in the accept queue meanwhile, since we hold the socket
//!   (`master/failure.rs`).
//! - **Stop (SIGTERM, SIGINT, SIGQUIT)**: our copy of the socket goes, every worker is told
//!   to stop, and we exit once the last one has: with the service's exit code, after a line
//!   that sums their reports.
//! - **PID 1**: every child is reaped, the orphans a PID 1 inherits included.
//!
//! docs/restart.md has the process model, beside nginx, HAProxy, Envoy and tableflip.

use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::{Events, Interest, Poll, Token, Waker};
use netgrace::Server;
use signal_hook::iterator::Signals;
use slab::Slab;

use crate::args::Options;
use crate::children::{self, Message, Phase, Totals, Worker};
use crate::pidfile::{self, PidFile};
use crate::program::Program;
use crate::signals::{self, Order};
use crate::{notify, worker};

mod failure;
mod restart;

/// The waker's token; workers' tokens are their slab keys, far below it.
const WAKE: Token = Token(usize::MAX);

/// How long a worker sent SIGTERM (given up on while starting) has before SIGKILL. One that
/// wrote `ready` an instant too late may have accepted a client: SIGTERM lets it drain.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// The longest the loop sleeps: children are also reaped this often, should a SIGCHLD be
/// merged with another, so no zombie outlives a second.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// A worker that served this long before it died is not part of a crash loop.
const STABLE: Duration = Duration::from_secs(10);

/// How long after a worker stopped by a signal of its own it is replaced. The same signal has
/// usually reached the master too (Ctrl-C, `systemctl stop`), and its stop, coming within this,
/// cancels the replacement; a worker signalled alone is replaced after it.
const SIGNALLED_PAUSE: Duration = Duration::from_millis(500);

/// Runs the service: exit code 0 after an orderly stop, 1 if it could not start or ended by a
/// failure.
pub(crate) fn run(options: Options, inherited: Option<TcpListener>) -> ExitCode {
    match Master::start(options, inherited) {
        Ok(master) => master.serve(),
        Err(err) => {
            crate::fatal(&err);
            ExitCode::FAILURE
        }
    }
}

struct Master {
    poll: Poll,
    signals: Receiver<i32>,
    /// Our copy of the socket, passed to every worker; dropped once the service stops.
    listener: Option<TcpListener>,
    count: usize,
    restart_timeout: Duration,
    program: Program,
    args: Vec<OsString>,
    pid_file: Option<std::path::PathBuf>,
    written: Option<PidFile>,
    workers: Slab<Worker>,
    /// The generation that serves (or, before `announced`, is starting up).
    current: u64,
    /// The generation a SIGHUP started, until all of it serves or it is dismissed.
    restarting: Option<u64>,
    /// The first generation has served: from then on a failed worker is replaced, not fatal.
    announced: bool,
    /// When each missing worker of the current generation is to be started again.
    respawns: Vec<Instant>,
    /// Worker failures in a row, for the backoff.
    failures: u32,
    /// Stop signals so far.
    stops: u32,
    stopped_at: Option<Instant>,
    /// Why the service failed, when it did: the exit is then 1.
    failure: Option<String>,
    totals: Totals,
}

impl Master {
    fn start(options: Options, inherited: Option<TcpListener>) -> io::Result<Master> {
        if let Some(path) = &options.pid_file {
            pidfile::check(path)?;
        }
        raise_descriptor_limit();
        let from = if inherited.is_some() {
            " (inherited at descriptor 3; --listen not used)"
        } else {
            ""
        };
        let listener = match inherited {
            Some(listener) => listener,
            None => Server::bind_listener(&options.config).map_err(|err| {
                crate::context(format_args!("bind {}", options.config.listen), err)
            })?,
        };
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        // Before the address is announced: a signal from someone who saw it must reach our
        // handler, not the default action that kills the process.
        let signals = watch_signals(waker)?;
        info!("listening on {addr}{from}");
        match options.config.idle_timeout {
            // Said once: the default closes silent clients, which an operator should know.
            Some(timeout) => info!(
                "idle timeout {} s (--idle-timeout never turns it off)",
                timeout.as_secs_f64()
            ),
            None => info!("idle timeout off"),
        }
        let program = Program::from_argv0();
        if let Some(why) = &program.restarts_refused {
            warn!("SIGHUP restarts are refused: {why}; workers run the running program");
        }
        let mut master = Master {
            poll,
            signals,
            listener: Some(listener),
            count: options.workers,
            restart_timeout: options.restart_timeout,
            program,
            args: std::env::args_os().skip(1).collect(),
            pid_file: options.pid_file,
            written: None,
            workers: Slab::new(),
            current: 1,
            restarting: None,
            announced: false,
            respawns: Vec::new(),
            failures: 0,
            stops: 0,
            stopped_at: None,
            failure: None,
            totals: Totals::default(),
        };
        for _ in 0..master.count {
            master.start_worker(1)?;
        }
        Ok(master)
    }

    fn serve(mut self) -> ExitCode {
        let mut events = Events::with_capacity(64);
        loop {
            let now = Instant::now();
            let sleep = self
                .next_deadline()
                .map_or(MAX_SLEEP, |at| at.saturating_duration_since(now))
                .min(MAX_SLEEP);
            if let Err(err) = self.poll.poll(&mut events, Some(sleep)) {
                if err.kind() != io::ErrorKind::Interrupted {
                    if self.failure.is_none() {
                        self.fail(format!("poll: {err}"));
                    }
                    // Without a poll the loop still reaps, once per pause, until the end.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            for event in &events {
                if event.token() != WAKE {
                    self.on_readable(event.token().0);
                }
            }
            while let Ok(signal) = self.signals.try_recv() {
                self.on_signal(signal);
            }
            while let Some((pid, status)) = children::reap() {
                self.on_exit(pid, status);
            }
            self.on_deadlines(Instant::now());
            if self.workers.is_empty() && (self.stopped_at.is_some() || self.failure.is_some()) {
                return self.finish();
            }
        }
    }

    fn on_readable(&mut self, key: usize) {
        let Some(worker) = self.workers.get_mut(key) else {
            return;
        };
        for message in worker.read() {
            match message {
                Message::Ready => self.on_ready(key),
                Message::Stopping => {
                    let worker = &mut self.workers[key];
                    worker.signalled = true;
                    info!(
                        "worker pid {} is stopping on a signal sent to it",
                        worker.pid
                    );
                }
                Message::Other(line) => {
                    let worker = &mut self.workers[key];
                    if let Phase::Starting { .. } = worker.phase {
                        let why = format!("worker pid {} sent {line:?}, not ready", worker.pid);
                        worker.dismiss(Instant::now() + KILL_GRACE);
                        let generation = worker.generation;
                        self.on_failure(generation, why);
                    } else {
                        warn!("worker pid {} sent {line:?}; ignored", worker.pid);
                    }
                }
            }
        }
    }

    fn on_signal(&mut self, signal: i32) {
        let name = signals::name(signal);
        match signals::order(signal, &mut self.stops) {
            Order::Restart => self.restart(),
            Order::Stop => self.stop(name),
            Order::StopNow => {
                warn!("{name} again: stopping at once");
                let kill_at = Instant::now() + KILL_GRACE;
                for (_, worker) in self.workers.iter_mut() {
                    worker.order(worker::STOP_NOW);
                    worker.phase = Phase::Leaving {
                        kill_at: Some(kill_at),
                    };
                }
            }
            Order::Reap => {}
            Order::Ignore => info!("{name} ignored: netgrace has no use for it"),
        }
    }

    /// The first stop signal: no more workers or restarts; every worker stops gracefully.
    fn stop(&mut self, name: &str) {
        info!("{name}: stopping gracefully (send again to stop at once)");
        notify::stopping();
        self.stopped_at = Some(Instant::now());
        self.stop_all();
    }

    fn stop_all(&mut self) {
        // Our copy goes first: once the workers have closed theirs, new clients are refused
        // rather than queued for no one.
        self.listener = None;
        self.restarting = None;
        self.respawns.clear();
        let kill_at = Instant::now() + KILL_GRACE;
        for (_, worker) in self.workers.iter_mut() {
            worker.order(worker::STOP);
            match worker.phase {
                Phase::Serving { .. } => worker.phase = Phase::Leaving { kill_at: None },
                // One still starting may not read its channel yet (or ever: a hung start), and
                // has served nobody: SIGTERM now, SIGKILL after the grace.
                Phase::Starting { .. } => worker.dismiss(kill_at),
                Phase::Leaving { .. } => {}
            }
        }
    }

    fn fail(&mut self, why: String) {
        warn!("{why}: stopping");
        self.failure = Some(why);
        self.stop_all();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let workers = self.workers.iter().filter_map(|(_, w)| match w.phase {
            Phase::Starting { deadline } => Some(deadline),
            Phase::Leaving { kill_at } => kill_at,
            Phase::Serving { .. } => None,
        });
        workers.chain(self.respawns.iter().copied()).min()
    }

    fn start_worker(&mut self, generation: u64) -> io::Result<()> {
        let listener = self
            .listener
            .as_ref()
            .ok_or_else(|| io::Error::other("the listening socket is closed"))?;
        let deadline = Instant::now() + self.restart_timeout;
        let mut worker = Worker::start(
            &self.program.path,
            &self.args,
            listener,
            generation,
            deadline,
        )?;
        let entry = self.workers.vacant_entry();
        if let Err(err) =
            self.poll
                .registry()
                .register(worker.control(), Token(entry.key()), Interest::READABLE)
        {
            worker.dismiss(Instant::now() + KILL_GRACE);
            return Err(err);
        }
        debug!(
            "worker pid {} started (generation {generation})",
            worker.pid
        );
        entry.insert(worker);
        Ok(())
    }

    /// `2 workers: pids 10 11`, for the log.
    fn describe(&self, generation: u64) -> String {
        let pids: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.generation == generation && !matches!(w.phase, Phase::Leaving { .. })
            })
            .map(|(_, w)| w.pid.to_string())
            .collect();
        let (workers, pid) = if pids.len() == 1 {
            ("worker", "pid")
        } else {
            ("workers", "pids")
        };
        format!("{} {workers}: {pid} {}", pids.len(), pids.join(" "))
    }

    fn finish(self) -> ExitCode {
        let stop = if self.stops > 1 {
            "immediate"
        } else {
            "graceful"
        };
        let took = self
            .stopped_at
            .map_or(0.0, |at| at.elapsed().as_secs_f64() * 1000.0);
        drop(self.written);
        match self.failure {
            None => {
                info!(
                    "shutdown complete: {} shutdown_ms={took:.3} stop={stop}",
                    self.totals
                );
                ExitCode::SUCCESS
            }
            Some(why) => {
                warn!("stopped by a failure: {}", self.totals);
                crate::fatal(&why);
                ExitCode::FAILURE
            }
        }
    }
}

/// The signal thread: each signal onto a channel, then a wake-up of the loop.
fn watch_signals(waker: Waker) -> io::Result<Receiver<i32>> {
    let mut signals = Signals::new(signals::HANDLED)
        .map_err(|err| io::Error::new(err.kind(), format!("install signal handlers: {err}")))?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if tx.send(signal).is_err() || waker.wake().is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// Raises the soft descriptor limit to the hard one, as Go does at startup: systemd and most
/// shells start services at 1024, which would clamp the workers' descriptor reservation for
/// `--max-connections` (inherited by every worker).
fn raise_descriptor_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), Some(hard)) = (limit.current, limit.maximum) else {
        return;
    };
    if soft >= hard {
        return debug!("descriptor limit {soft}");
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => info!("descriptor limit raised from {soft} to the hard limit {hard}"),
        Err(err) => warn!("descriptor limit stays {soft} (hard limit {hard}): {err}"),
    }
}
