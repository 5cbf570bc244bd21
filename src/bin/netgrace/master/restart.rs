//! The master's restarts: a new generation of workers on SIGHUP, and the moment it takes over
//! from the old one, once every new worker has said `ready`; or its dismissal, if one fails.

use std::time::Instant;

use log::{debug, info, warn};

use super::{Master, KILL_GRACE};
use crate::children::Phase;
use crate::pidfile::PidFile;
use crate::{notify, worker};

impl Master {
    pub(super) fn on_ready(&mut self, key: usize) {
        let worker = &mut self.workers[key];
        let Phase::Starting { .. } = worker.phase else {
            // Given up on a moment ago, or told to stop: it is on its way out.
            return debug!("late ready from worker pid {} ignored", worker.pid);
        };
        if self.stopped_at.is_some() || self.failure.is_some() {
            // It was ordered to stop while starting: it serves only what it took, then leaves.
            worker.phase = Phase::Leaving { kill_at: None };
            return;
        }
        worker.phase = Phase::Serving {
            since: Instant::now(),
        };
        let (pid, generation) = (worker.pid, worker.generation);
        debug!("worker pid {pid} is serving");
        if !self.all_serving(generation) {
            return;
        }
        if self.restarting == Some(generation) {
            self.hand_over(generation);
        } else if !self.announced {
            self.announce();
        } else {
            info!("worker pid {pid} replaced the one that died; serving");
            notify::serving("serving; a worker was replaced");
        }
    }

    /// The first generation serves: tell whoever waits for it.
    pub(super) fn announce(&mut self) {
        self.announced = true;
        info!("serving: {}", self.describe(self.current));
        if let Some(path) = &self.pid_file {
            match PidFile::write(path) {
                Ok(written) => self.written = Some(written),
                Err(err) => warn!("{err}"),
            }
        }
        notify::ready();
    }

    /// The new generation serves in full: the old one stops accepting and drains.
    pub(super) fn hand_over(&mut self, generation: u64) {
        let old = std::mem::replace(&mut self.current, generation);
        self.restarting = None;
        self.respawns.clear();
        self.failures = 0;
        let mut handing_over = Vec::new();
        for (_, worker) in self.workers.iter_mut() {
            if worker.generation == old && !matches!(worker.phase, Phase::Leaving { .. }) {
                worker.order(worker::HAND_OVER);
                worker.phase = Phase::Leaving { kill_at: None };
                handing_over.push(worker.pid.to_string());
            }
        }
        info!(
            "restart complete: {}; old workers hand over and drain: pids {}",
            self.describe(generation),
            handing_over.join(" ")
        );
        notify::serving("serving; restarted");
    }

    pub(super) fn restart(&mut self) {
        let ignored = if self.stopped_at.is_some() || self.failure.is_some() {
            Some("stopping".to_string())
        } else if !self.announced {
            Some("still starting".to_string())
        } else if let Some(generation) = self.restarting {
            Some(format!(
                "a restart is under way ({})",
                self.describe(generation)
            ))
        } else {
            self.program.restarts_refused.clone()
        };
        if let Some(why) = ignored {
            return warn!("SIGHUP ignored: {why}");
        }
        notify::reloading();
        let generation = self.current.max(self.restarting.unwrap_or(0)) + 1;
        self.restarting = Some(generation);
        for _ in 0..self.count {
            if let Err(err) = self.start_worker(generation) {
                let why = format!("cannot start {}: {err}", self.program.path.display());
                return self.dismiss_restart(&why);
            }
        }
        info!(
            "SIGHUP: restarting from {}: {}",
            self.program.path.display(),
            self.describe(generation)
        );
    }

    /// A restart failed: its workers go, the current ones serve on as if nothing happened.
    pub(super) fn dismiss_restart(&mut self, why: &str) {
        let Some(generation) = self.restarting.take() else {
            return;
        };
        let kill_at = Instant::now() + KILL_GRACE;
        for (_, worker) in self.workers.iter_mut() {
            if worker.generation == generation && !matches!(worker.phase, Phase::Leaving { .. }) {
                worker.dismiss(kill_at);
            }
        }
        warn!("restart failed: {why}; still serving");
        notify::serving("restart failed; still serving");
    }

    pub(super) fn all_serving(&self, generation: u64) -> bool {
        let serving = self
            .workers
            .iter()
            .filter(|(_, w)| w.generation == generation && matches!(w.phase, Phase::Serving { .. }))
            .count();
        serving == self.count
    }
}
