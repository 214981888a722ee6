//! The breaker's sliding windows: the last `n` calls, or the calls of the last `d` in
//! one-second buckets (Resilience4j's `COUNT_BASED` and `TIME_BASED`).

use std::time::Duration;

use tokio::time::Instant;

/// Outcome bits of one recorded call.
pub(super) const FAILED: u8 = 1;
pub(super) const SLOW: u8 = 2;

/// Calls, failures and slow calls in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Totals {
    pub(super) calls: u32,
    pub(super) failures: u32,
    pub(super) slow: u32,
}

impl Totals {
    pub(super) fn add(&mut self, outcome: u8) {
        self.calls += 1;
        self.failures += u32::from(outcome & FAILED != 0);
        self.slow += u32::from(outcome & SLOW != 0);
    }

    fn remove(&mut self, outcome: u8) {
        self.calls -= 1;
        self.failures -= u32::from(outcome & FAILED != 0);
        self.slow -= u32::from(outcome & SLOW != 0);
    }

    fn merge(&mut self, other: &Totals) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow += other.slow;
    }
}

/// One of the two window kinds.
#[derive(Debug)]
pub(super) enum SlidingWindow {
    Count(CountWindow),
    Time(TimeWindow),
}

impl SlidingWindow {
    pub(super) fn count(n: u32) -> Self {
        let n = n.max(1) as usize;
        SlidingWindow::Count(CountWindow {
            ring: vec![0; n].into_boxed_slice(),
            next: 0,
            len: 0,
            totals: Totals::default(),
        })
    }

    /// `d` rounded up to whole seconds, at least one.
    pub(super) fn time(d: Duration, origin: Instant) -> Self {
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        let n = usize::try_from(secs.max(1))
            .unwrap_or(usize::MAX)
            .min(1 << 20);
        SlidingWindow::Time(TimeWindow {
            buckets: vec![Bucket::default(); n].into_boxed_slice(),
            origin,
        })
    }

    /// Records one call's outcome and returns the window's totals after it. `now` is
    /// only read by time windows.
    pub(super) fn record(&mut self, outcome: u8, now: Instant) -> Totals {
        match self {
            SlidingWindow::Count(w) => w.record(outcome),
            SlidingWindow::Time(w) => w.record(outcome, now),
        }
    }

    /// Records `n` successes in a clean count window (every slot zero): in O(1).
    /// Returns `false` (recording nothing) when the window is not clean.
    pub(super) fn record_successes(&mut self, n: u64) -> bool {
        match self {
            SlidingWindow::Count(w) if w.totals.failures == 0 && w.totals.slow == 0 => {
                let cap = w.ring.len();
                let n = usize::try_from(n.min(cap as u64)).unwrap_or(cap);
                w.len = (w.len + n).min(cap);
                w.next = (w.next + n) % cap;
                w.totals.calls = u32::try_from(w.len).unwrap_or(u32::MAX);
                true
            }
            _ => false,
        }
    }

    /// The totals of a count window (a time window's are computed on record; it never
    /// takes tallies, so zero).
    pub(super) fn totals(&self) -> Totals {
        match self {
            SlidingWindow::Count(w) => w.totals,
            SlidingWindow::Time(_) => Totals::default(),
        }
    }

    /// Forgets every call.
    pub(super) fn reset(&mut self) {
        match self {
            SlidingWindow::Count(w) => {
                // Zeroed, so a clean window (no failure, no slow call) holds only zeros
                // and `record_successes` may skip writing them.
                w.ring.fill(0);
                w.next = 0;
                w.len = 0;
                w.totals = Totals::default();
            }
            SlidingWindow::Time(w) => w.buckets.fill(Bucket::default()),
        }
    }
}

/// A ring of the last `n` outcomes with running totals.
#[derive(Debug)]
pub(super) struct CountWindow {
    ring: Box<[u8]>,
    /// Where the next outcome goes (the oldest one once full).
    next: usize,
    len: usize,
    totals: Totals,
}

impl CountWindow {
    fn record(&mut self, outcome: u8) -> Totals {
        if self.len == self.ring.len() {
            self.totals.remove(self.ring[self.next]);
        } else {
            self.len += 1;
        }
        self.ring[self.next] = outcome;
        self.next = (self.next + 1) % self.ring.len();
        self.totals.add(outcome);
        self.totals
    }
}

/// One bucket per second of age of the breaker, reused round-robin.
#[derive(Debug)]
pub(super) struct TimeWindow {
    buckets: Box<[Bucket]>,
    origin: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// The second (since the window's origin) this bucket counts; `totals` are stale
    /// when it is not one of the last `n` seconds.
    second: u64,
    totals: Totals,
}

impl TimeWindow {
    fn record(&mut self, outcome: u8, now: Instant) -> Totals {
        let second = now.saturating_duration_since(self.origin).as_secs();
        let n = self.buckets.len() as u64;
        let bucket = &mut self.buckets[(second % n) as usize];
        if bucket.second != second {
            *bucket = Bucket {
                second,
                totals: Totals::default(),
            };
        }
        bucket.totals.add(outcome);
        // The window is the current second and the n - 1 before it.
        let mut totals = Totals::default();
        for b in self.buckets.iter() {
            if b.second <= second && second - b.second < n {
                totals.merge(&b.totals);
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_keeps_the_last_n() {
        let mut w = SlidingWindow::count(3);
        let now = Instant::now();
        w.record(FAILED, now);
        w.record(FAILED | SLOW, now);
        let t = w.record(0, now);
        assert_eq!((t.calls, t.failures, t.slow), (3, 2, 1));
        let t = w.record(0, now); // evicts the first failure
        assert_eq!((t.calls, t.failures, t.slow), (3, 1, 1));
        let t = w.record(0, now);
        assert_eq!((t.calls, t.failures, t.slow), (3, 0, 0));
        w.reset();
        let t = w.record(SLOW, now);
        assert_eq!((t.calls, t.failures, t.slow), (1, 0, 1));
    }

    #[test]
    fn time_window_drops_old_seconds() {
        let origin = Instant::now();
        let mut w = SlidingWindow::time(Duration::from_millis(2500), origin); // 3 buckets
        let at = |ms| origin + Duration::from_millis(ms);
        w.record(FAILED, at(0));
        w.record(FAILED, at(999));
        assert_eq!(w.record(0, at(1500)).calls, 3);
        assert_eq!(w.record(0, at(2999)).calls, 4);
        // Second 3: second 0 (two failures) is out.
        let t = w.record(0, at(3000));
        assert_eq!((t.calls, t.failures), (3, 0));
        // Long after: only the new call.
        assert_eq!(w.record(0, at(60_000)).calls, 1);
    }
}
