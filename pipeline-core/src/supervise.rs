//! Supervision: what the policy engine does after a call panicked. The restart strategy is a
//! value ([`RestartOptions`]); this module only keeps count.
//!
//! A panic costs one attempt of one item (the panic capture turns it into an error). The
//! engine then rebuilds the stage's state ([`Stage::restart`](crate::Stage::restart))
//! before the item's next call, after the configured backoff. The restart intensity
//! counts once per item: more than `max` panicking items within `within` escalate, and
//! the pipeline stops with an error naming the stage.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::options::RestartOptions;

/// What to do after a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Restart the stage after this delay and go on.
    Restart(Duration),
    /// Too many restarts: stop the pipeline.
    Escalate {
        /// Restarts seen within the window, this one included.
        restarts: u32,
        /// The window.
        within: Duration,
    },
}

/// Restart bookkeeping of one stage: the policy engine asks it once per item that
/// panicked (however many of the item's attempts did).
#[derive(Debug)]
pub(crate) struct Supervisor {
    limit: Option<RestartOptions>,
    recent: VecDeque<Instant>,
    total: u64,
}

impl Supervisor {
    /// With `limit = None` a stage restarts after every panic, without limit.
    pub(crate) fn new(limit: Option<RestartOptions>) -> Self {
        Supervisor {
            limit,
            recent: VecDeque::new(),
            total: 0,
        }
    }

    /// Records a panic at `now` and decides.
    pub(crate) fn on_panic(&mut self, now: Instant) -> Verdict {
        self.total += 1;
        let Some(limit) = self.limit else {
            return Verdict::Restart(Duration::ZERO);
        };
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limit.within)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let restarts = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        if restarts > limit.max {
            Verdict::Escalate {
                restarts,
                within: limit.within,
            }
        } else {
            Verdict::Restart(limit.backoff)
        }
    }

    /// Panics seen in all.
    #[cfg(test)]
    fn panics(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn restarts_outside_the_window_are_forgotten() {
        let mut limit = RestartOptions::new(1, Duration::from_secs(10));
        limit.backoff = Duration::from_millis(5);
        let mut s = Supervisor::new(Some(limit));
        let t0 = Instant::now();
        assert_eq!(s.on_panic(t0), Verdict::Restart(Duration::from_millis(5)));
        assert_eq!(
            s.on_panic(t0 + Duration::from_secs(10)),
            Verdict::Restart(Duration::from_millis(5))
        );
        assert_eq!(
            s.on_panic(t0 + Duration::from_secs(11)),
            Verdict::Escalate {
                restarts: 2,
                within: Duration::from_secs(10)
            }
        );
        assert_eq!(s.panics(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_counts_within_the_window() {
        let mut s = Supervisor::new(Some(RestartOptions::new(2, Duration::from_secs(60))));
        let now = Instant::now();
        assert_eq!(s.on_panic(now), Verdict::Restart(Duration::ZERO));
        assert_eq!(s.on_panic(now), Verdict::Restart(Duration::ZERO));
        assert!(matches!(
            s.on_panic(now),
            Verdict::Escalate { restarts: 3, .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_it_always_restarts() {
        let mut s = Supervisor::new(None);
        for _ in 0..1_000 {
            assert_eq!(s.on_panic(Instant::now()), Verdict::Restart(Duration::ZERO));
        }
    }
}
