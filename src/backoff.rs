//! The pause in accepting after the machine runs out of descriptors or memory.
//!
//! When `accept(2)` fails with `EMFILE`, `ENFILE`, `ENOBUFS` or `ENOMEM` the pending connection
//! stays in the backlog, so the listener stays readable: retrying at once would spin the loop at
//! 100 % CPU without progress. Go's net/http answers with a sleep of 5 ms doubling to 1 s
//! (`net/http/server.go`, `Server.Serve`); we do the same, but without sleeping: the reactor keeps
//! serving its connections and retries when the poll timeout reaches [`Backoff::until`].

use std::time::{Duration, Instant};

/// First pause after an exhaustion error; Go's net/http uses the same.
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(5);
/// Longest pause: retrying once a second costs nothing and recovers soon after a descriptor frees.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accept backoff state: `None` while accepting works.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    /// The current episode: the last delay used and when accepting may be retried. Set by
    /// [`Backoff::fail`], cleared by [`Backoff::succeed`].
    episode: Option<(Duration, Instant)>,
    /// Failures in the current episode, for the recovery log line.
    failures: u64,
}

impl Backoff {
    /// Records an exhaustion failure at `now` and returns true if it starts a new episode, which
    /// is the one failure worth a warning (one warning per episode, not per attempt).
    pub(crate) fn fail(&mut self, now: Instant) -> bool {
        let delay = match self.episode {
            None => BACKOFF_START,
            Some((last, _)) => (last * 2).min(BACKOFF_MAX),
        };
        let starts_episode = self.episode.is_none();
        self.episode = Some((delay, now + delay));
        self.failures += 1;
        starts_episode
    }

    /// Records a successful accept; returns how many failures the episode that just ended had
    /// (0 if none was running).
    pub(crate) fn succeed(&mut self) -> u64 {
        self.episode = None;
        std::mem::take(&mut self.failures)
    }

    /// When accepting may be retried, if it is paused.
    pub(crate) fn until(&self) -> Option<Instant> {
        self.episode.map(|(_, until)| until)
    }

    /// Whether accepting must wait at `now`.
    pub(crate) fn is_paused(&self, now: Instant) -> bool {
        self.until().is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_5ms_to_1s_and_stay() {
        let start = Instant::now();
        let mut backoff = Backoff::default();
        let mut delays = Vec::new();
        for _ in 0..10 {
            backoff.fail(start);
            delays.push(backoff.until().map(|until| until - start));
        }
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            delays,
            [
                ms(5),
                ms(10),
                ms(20),
                ms(40),
                ms(80),
                ms(160),
                ms(320),
                ms(640),
                ms(1000),
                ms(1000)
            ]
        );
    }

    #[test]
    fn only_the_first_failure_of_an_episode_warns() {
        let now = Instant::now();
        let mut backoff = Backoff::default();
        assert!(backoff.fail(now));
        assert!(!backoff.fail(now));
        assert!(!backoff.fail(now));
        assert_eq!(backoff.succeed(), 3);
        assert!(backoff.fail(now), "a new episode warns again");
    }

    #[test]
    fn paused_until_the_deadline_then_free() {
        let now = Instant::now();
        let mut backoff = Backoff::default();
        assert!(!backoff.is_paused(now));
        backoff.fail(now);
        assert!(backoff.is_paused(now + Duration::from_millis(4)));
        assert!(!backoff.is_paused(now + Duration::from_millis(5)));
        backoff.succeed();
        assert_eq!(backoff.until(), None);
    }
}
