//! [`RateLimiter`]: GCRA on tokio's clock.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::options::RateOptions;

/// A call was refused by a [`RateLimiter`]; one will be allowed at [`ready_at`](Self::ready_at).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit reached")]
pub struct Overloaded {
    ready_at: Instant,
}

impl Overloaded {
    /// The earliest instant at which a call will be allowed (if no one else takes it).
    pub fn ready_at(&self) -> Instant {
        self.ready_at
    }
}

/// `calls` per `per`, with bursts of up to `burst` (default `calls`), by the generic cell rate algorithm
/// (one atomic: the "theoretical arrival time" of the next call) on tokio's clock, so
/// paused-time tests drive it.
///
/// A zero `calls` counts as 1. Every acquisition reads the clock once.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipeline_core::options::RateOptions;
/// use pipeline_core::policy::RateLimiter;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = RateLimiter::new(RateOptions::new(2, Duration::from_secs(1)));
/// assert!(limiter.try_acquire().is_ok());
/// assert!(limiter.try_acquire().is_ok()); // a burst of 2
/// let refused = limiter.try_acquire().unwrap_err();
/// let start = tokio::time::Instant::now();
/// assert_eq!(refused.ready_at() - start, Duration::from_millis(500));
/// limiter.until_ready().await; // waits 500 ms of (paused) time
/// assert_eq!(start.elapsed(), Duration::from_millis(500));
/// # }
/// ```
pub struct RateLimiter {
    /// Emission interval: `per / calls`, in nanoseconds.
    interval: u64,
    /// How far ahead of now the arrival time may run: `interval * (calls - 1)`.
    tolerance: u64,
    origin: Instant,
    /// Theoretical arrival time of the next call, in nanoseconds since `origin`.
    tat: AtomicU64,
    opts: RateOptions,
}

impl RateLimiter {
    /// A limiter allowing `opts.calls` per `opts.per`.
    pub fn new(opts: RateOptions) -> Self {
        let calls = opts.calls.max(1);
        let burst = opts.burst.unwrap_or(calls).max(1);
        let interval = u64::try_from((opts.per / calls).as_nanos()).unwrap_or(u64::MAX);
        RateLimiter {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst - 1)),
            origin: Instant::now(),
            tat: AtomicU64::new(0),
            opts,
        }
    }

    /// The configured rate.
    pub fn options(&self) -> RateOptions {
        self.opts
    }

    /// Takes a call slot now, or says when one will be free.
    ///
    /// # Errors
    ///
    /// [`Overloaded`] when the rate is used up; nothing is taken then.
    pub fn try_acquire(&self) -> Result<(), Overloaded> {
        self.try_acquire_many(1).map(|_| ())
    }

    /// Takes up to `max` call slots now, as many as are free (at least one), or says
    /// when one will be. One clock read however many are taken. The policy engine takes
    /// its tokens this way, in chunks of at most the burst, and spends them one per call.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pipeline_core::options::RateOptions;
    /// use pipeline_core::policy::RateLimiter;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let limiter = RateLimiter::new(RateOptions::new(10, Duration::from_secs(1)).with_burst(4));
    /// assert_eq!(limiter.try_acquire_many(100).ok(), Some(4)); // the burst
    /// assert!(limiter.try_acquire_many(100).is_err());
    /// tokio::time::advance(Duration::from_millis(200)).await;
    /// assert_eq!(limiter.try_acquire_many(100).ok(), Some(2));
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Overloaded`] when no slot is free; nothing is taken then.
    pub fn try_acquire_many(&self, max: u32) -> Result<u32, Overloaded> {
        let max = u64::from(max.max(1));
        let now = self.nanos(Instant::now());
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            let ahead = start - now;
            if ahead > self.tolerance {
                let ready = start - self.tolerance;
                return Err(Overloaded {
                    ready_at: self.origin + Duration::from_nanos(ready),
                });
            }
            // Slot `i` of the chunk starts at `start + i * interval`; each must be within
            // the tolerance.
            let free = match (self.tolerance - ahead).checked_div(self.interval) {
                Some(more) => more.saturating_add(1),
                None => u64::MAX,
            };
            let take = free.min(max);
            let next = start.saturating_add(self.interval.saturating_mul(take));
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(u32::try_from(take).unwrap_or(u32::MAX)),
                Err(actual) => tat = actual,
            }
        }
    }

    /// The most tokens one [`try_acquire_many`](Self::try_acquire_many) may take: the burst.
    pub fn burst(&self) -> u32 {
        let calls = self.opts.calls.max(1);
        self.opts.burst.unwrap_or(calls).max(1)
    }

    /// Waits until a call slot is free and takes it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is reserved while waiting, so a dropped wait takes no slot.
    /// Waiters are not served in arrival order.
    pub async fn until_ready(&self) {
        while let Err(overloaded) = self.try_acquire() {
            tokio::time::sleep_until(overloaded.ready_at).await;
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX)
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("calls", &self.opts.calls)
            .field("per", &self.opts.per)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::time::advance;

    fn per_sec(calls: u32) -> RateLimiter {
        RateLimiter::new(RateOptions::new(calls, Duration::from_secs(1)))
    }

    #[tokio::test(start_paused = true)]
    async fn n_calls_over_a_period_respect_the_rate() {
        let limiter = per_sec(10);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..100 {
            limiter.until_ready().await;
            times.push(start.elapsed());
        }
        // A burst of 10, then one per 100 ms: the 100th at 9 s.
        assert!(times[..10].iter().all(|t| t.is_zero()));
        for (i, t) in times.iter().enumerate().skip(10) {
            assert_eq!(*t, Duration::from_millis(100 * (i as u64 - 9)), "call {i}");
        }
        // GCRA's bound: a window of length w holds at most the burst plus w / interval
        // (strictly less than 1 s here: 10 + 9).
        for (i, t) in times.iter().enumerate() {
            let within = times[i..]
                .iter()
                .take_while(|u| **u - *t < Duration::from_secs(1))
                .count();
            assert!(within <= 19, "{within} calls in 1s from call {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_up_to_the_burst_only() {
        let limiter = per_sec(5);
        advance(Duration::from_secs(60)).await;
        let granted = (0..100).filter(|_| limiter.try_acquire().is_ok()).count();
        assert_eq!(granted, 5);
        advance(Duration::from_millis(200)).await;
        assert!(limiter.try_acquire().is_ok());
        assert!(limiter.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn until_ready_is_cancel_safe() {
        let limiter = per_sec(1);
        assert!(limiter.try_acquire().is_ok());
        // A wait dropped half-way takes no slot.
        let timed_out =
            tokio::time::timeout(Duration::from_millis(500), limiter.until_ready()).await;
        assert!(timed_out.is_err());
        advance(Duration::from_millis(500)).await;
        assert!(limiter.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_smaller_burst_spaces_calls_from_the_start() {
        let limiter = RateLimiter::new(RateOptions::new(10, Duration::from_secs(1)).with_burst(2));
        assert!(limiter.try_acquire().is_ok());
        assert!(limiter.try_acquire().is_ok());
        let refused = limiter.try_acquire().unwrap_err();
        assert_eq!(
            refused.ready_at() - Instant::now(),
            Duration::from_millis(100)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_calls_counts_as_one() {
        let limiter = RateLimiter::new(RateOptions::new(0, Duration::from_secs(1)));
        assert!(limiter.try_acquire().is_ok());
        assert!(limiter.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_waiters_are_spaced() {
        let limiter = Arc::new(per_sec(4));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let l = Arc::clone(&limiter);
            tasks.push(tokio::spawn(async move {
                l.until_ready().await;
                start.elapsed()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap_or_default());
        }
        times.sort();
        let expected: Vec<_> = [0, 0, 0, 0, 250, 500, 750, 1000]
            .map(Duration::from_millis)
            .to_vec();
        assert_eq!(times, expected);
    }
}
