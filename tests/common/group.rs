//! A kill-and-reap guard for the tests that start a master (tests/activation.rs,
//! tests/notify.rs): the master runs in its own process group with its workers, and the test
//! process is a child subreaper, so whatever is left of the group at the end is ours to kill and
//! reap, even when the test failed.

use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::{Pid, Signal, WaitOptions};

use crate::common::binary::Serving;

/// The process group of a master started with `process_group(0)`: the master and every worker
/// it starts (they inherit the group). Dropped after the master's own handle (declare it
/// first), it kills and reaps whatever of the group is left, even if the test failed.
///
/// A worker whose master was killed first (by its handle's drop, or by a crash) is reparented
/// to the nearest child subreaper (prctl(2) `PR_SET_CHILD_SUBREAPER`): this test process, which
/// sets the flag, so that it can reap it, instead of init.
pub struct Group {
    leader: std::cell::Cell<Option<Pid>>,
}

impl Group {
    #[track_caller]
    pub fn new() -> Group {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .expect("PR_SET_CHILD_SUBREAPER");
        Group {
            leader: std::cell::Cell::new(None),
        }
    }

    /// The group is the one `leader`, started with `process_group(0)`, leads.
    #[track_caller]
    pub fn adopt(&self, leader: u32) {
        let pid = i32::try_from(leader).ok().and_then(Pid::from_raw);
        self.leader
            .set(Some(pid.unwrap_or_else(|| panic!("pid {leader}"))));
    }
}

/// Spawns `command` as [`Serving::spawn`] does, leading a process group of its own that `group`
/// adopts, kills and reaps at the end. Declare `group` before the returned [`Serving`], so that
/// it is dropped after it.
#[track_caller]
pub fn spawn_in(group: &Group, mut command: Command) -> Serving {
    command.process_group(0);
    let serving = Serving::spawn(command);
    group.adopt(serving.pid());
    serving
}

impl Drop for Group {
    fn drop(&mut self) {
        let Some(leader) = self.leader.get() else {
            return;
        };
        // ESRCH when the group is already gone: the test ended everything itself.
        let _ = rustix::process::kill_process_group(leader, Signal::KILL);
        // Every child of ours in the group, until none is left (ECHILD). Bounded: each was
        // just sent SIGKILL.
        while let Ok(Some(_)) = rustix::process::waitpgid(leader, WaitOptions::empty()) {}
    }
}
