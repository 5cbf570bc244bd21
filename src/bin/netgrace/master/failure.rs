//! The master's answers to workers that fail: a child's exit, a worker not ready by its
//! deadline, a SIGTERM that needs a SIGKILL; and replacements, paced by [`backoff`].

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::{Master, KILL_GRACE, STABLE};
use crate::children::Phase;
use crate::notify;

impl Master {
    pub(super) fn on_exit(&mut self, pid: u32, status: ExitStatus) {
        let Some(key) = self
            .workers
            .iter()
            .find(|(_, w)| w.pid == pid)
            .map(|(k, _)| k)
        else {
            // An orphan reparented to us as PID 1, or a stray child: reaped, nothing more.
            return debug!("reaped pid {pid} ({status})");
        };
        // A report written just before the exit may still wait in the channel.
        self.on_readable(key);
        // Out of the slab before anything else: its pid is reaped and may be reused at once, so
        // no order or signal may reach it from here on.
        let mut worker = self.workers.remove(key);
        let _ = self.poll.registry().deregister(worker.control());
        self.totals.add(worker.report.as_deref());
        let stopping = self.stopped_at.is_some() || self.failure.is_some();
        match worker.phase {
            _ if stopping || matches!(worker.phase, Phase::Leaving { .. }) => {
                if status.success() {
                    info!("worker pid {pid} exited ({status})");
                } else {
                    warn!("worker pid {pid} exited ({status})");
                }
            }
            Phase::Serving { since } => {
                if since.elapsed() >= STABLE {
                    self.failures = 0;
                }
                let why = format!("worker pid {pid} exited unexpectedly ({status})");
                self.on_failure(worker.generation, why);
            }
            Phase::Starting { .. } | Phase::Leaving { .. } => {
                let why = format!("worker pid {pid} exited before it was serving ({status})");
                self.on_failure(worker.generation, why);
            }
        }
    }

    /// A worker of `generation` failed to start or died while serving: what follows depends on
    /// the generation.
    pub(super) fn on_failure(&mut self, generation: u64, why: String) {
        if self.stopped_at.is_some() || self.failure.is_some() {
            warn!("{why}");
        } else if self.restarting == Some(generation) {
            self.dismiss_restart(&why);
        } else if generation != self.current {
            warn!("{why}");
        } else if !self.announced {
            self.fail(format!("{why}; the service never served"));
        } else {
            self.failures += 1;
            let pause = backoff(self.failures);
            warn!("{why}; starting a replacement in {} s", pause.as_secs_f64());
            notify::status(&format!("{why}; replacing it"));
            self.respawns.push(Instant::now() + pause);
        }
    }

    pub(super) fn on_deadlines(&mut self, now: Instant) {
        let expired: Vec<usize> = self
            .workers
            .iter()
            .filter(|(_, w)| matches!(w.phase, Phase::Starting { deadline } if deadline <= now))
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            // A `ready` that arrived at the deadline's edge still counts.
            self.on_readable(key);
            let worker = &mut self.workers[key];
            if let Phase::Starting { .. } = worker.phase {
                let why = format!(
                    "worker pid {} was not serving within {} s (--restart-timeout)",
                    worker.pid,
                    self.restart_timeout.as_secs_f64()
                );
                worker.dismiss(now + KILL_GRACE);
                let generation = worker.generation;
                self.on_failure(generation, why);
            }
        }
        for (_, worker) in self.workers.iter_mut() {
            if let Phase::Leaving { kill_at: Some(at) } = worker.phase {
                if at <= now {
                    warn!("worker pid {} still running: SIGKILL", worker.pid);
                    worker.signal(rustix::process::Signal::KILL);
                    worker.phase = Phase::Leaving { kill_at: None };
                }
            }
        }
        let due = self.respawns.iter().filter(|&&at| at <= now).count();
        self.respawns.retain(|&at| at > now);
        for _ in 0..due {
            if let Err(err) = self.start_worker(self.current) {
                self.failures += 1;
                let pause = backoff(self.failures);
                warn!(
                    "cannot start a replacement worker: {err}; trying again in {} s",
                    pause.as_secs_f64()
                );
                self.respawns.push(now + pause);
            }
        }
    }
}

/// The pause before replacing a worker after `failures` failures in a row: 0.1 s, doubling, at
/// most 10 s. Prompt for one crash, and a crash loop costs a start every 10 s, not a spin.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(7);
    (Duration::from_millis(100) * (1 << doublings)).min(Duration::from_secs(10))
}
