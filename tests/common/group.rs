//! A kill-and-reap guard for the tests that start a server whose successors outlive it
//! (tests/activation.rs, tests/notify.rs): the server runs in its own process group, and the test
//! process is a child subreaper, so whatever is left of the group at the end is ours to kill and
//! reap, even when the test failed.

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

/// The process group of a server started with `process_group(0)`: the server and every
/// successor a restart starts (they inherit the group). Dropped after the server's own handle
/// (declare it first), it kills and reaps whatever of the group is left, even if the test failed.
///
/// A successor outlives its predecessor and is then reparented to the nearest child subreaper
/// (prctl(2) `PR_SET_CHILD_SUBREAPER`): this test process, which sets the flag, so that it can
/// reap it, instead of init.
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
    pub fn adopt(&self, leader: u32) {
        self.leader.set(Some(pid(leader)));
    }

    /// Sends `signal` to `member`, which has not been reaped, so its pid is still its own.
    #[track_caller]
    pub fn signal(&self, member: u32, signal: Signal) {
        rustix::process::kill_process(pid(member), signal).expect("kill successor");
    }

    /// Reaps `member`, a successor whose stderr is at EOF (it has exited, so this does not
    /// block), and returns its status.
    #[track_caller]
    pub fn reap(&self, member: u32) -> WaitStatus {
        match rustix::process::waitpid(Some(pid(member)), WaitOptions::empty()) {
            Ok(Some((_, status))) => status,
            other => panic!("reap successor {member}: {other:?}"),
        }
    }
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

#[track_caller]
pub fn pid(raw: u32) -> Pid {
    i32::try_from(raw)
        .ok()
        .and_then(Pid::from_raw)
        .unwrap_or_else(|| panic!("pid {raw}"))
}
