//! [`RateLimiter`] (GCRA on tokio's clock) and the [`RateLimit`] stage wrapper.

use std::fmt;
use std::future::Future;

use futures::future::Either;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::Context;
use crate::Stage;
use crate::options::{RateOptions, StageOptions};
use crate::policy::counters::{Counters, Event};

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
        let now = self.nanos(Instant::now());
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance {
                let ready = start - self.tolerance;
                return Err(Overloaded {
                    ready_at: self.origin + Duration::from_nanos(ready),
                });
            }
            let next = start.saturating_add(self.interval);
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
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

/// Wraps a stage so that each attempt first waits for a [`RateLimiter`] slot.
///
/// Waiting costs no attempt and produces no error; the waiting item keeps its
/// concurrency slot, so a saturated rate backpressures the source. With no rate
/// (`RateLimit::optional(stage, None)`) it is a pass-through.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipeline_core::options::RateOptions;
/// use pipeline_core::policy::RateLimit;
/// use pipeline_core::prelude::*;
///
/// struct Echo;
/// impl Stage for Echo {
///     type In = u32;
///     type Output = u32;
///     type Shape = Map;
///     type Error = std::convert::Infallible;
///     async fn call(&self, n: u32, _cx: &Context) -> Result<u32, Self::Error> { Ok(n) }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let stage = RateLimit::new(Echo, RateOptions::new(10, Duration::from_secs(1)));
/// let start = tokio::time::Instant::now();
/// for n in 0..20 {
///     stage.call(n, &Context::new("echo")).await.unwrap();
/// }
/// // 10 at once, then one every 100 ms.
/// assert_eq!(start.elapsed(), Duration::from_millis(1000));
/// assert_eq!(stage.counters().rate_waits(), 10);
/// # }
/// ```
pub struct RateLimit<S> {
    inner: S,
    limiter: Option<Arc<RateLimiter>>,
    counters: Arc<Counters>,
}

impl<S: Stage> RateLimit<S> {
    /// Limits `inner` to `rate`.
    pub fn new(inner: S, rate: RateOptions) -> Self {
        RateLimit::optional(inner, Some(rate))
    }

    /// A limit if `rate` is `Some`; a pass-through otherwise.
    pub fn optional(inner: S, rate: Option<RateOptions>) -> Self {
        let counters = Counters::for_stage(&inner);
        RateLimit {
            inner,
            limiter: rate.map(|r| Arc::new(RateLimiter::new(r))),
            counters,
        }
    }

    /// Limits `inner` with a shared limiter (several stages under one rate).
    pub fn with_limiter(inner: S, limiter: Arc<RateLimiter>) -> Self {
        let counters = Counters::for_stage(&inner);
        RateLimit {
            inner,
            limiter: Some(limiter),
            counters,
        }
    }
}

impl<S> RateLimit<S> {
    /// Counts waits into `counters` (shared with the stage's other policies).
    #[must_use]
    pub fn with_counters(mut self, counters: Arc<Counters>) -> Self {
        self.counters = counters;
        self
    }

    /// The limiter, if any.
    pub fn limiter(&self) -> Option<&Arc<RateLimiter>> {
        self.limiter.as_ref()
    }

    /// The event counts of this wrapper.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The wrapped stage.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stage, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the stage.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Stage> Stage for RateLimit<S> {
    type In = S::In;
    type Output = S::Output;
    type Shape = S::Shape;
    type Error = S::Error;

    // Forwarded: dead letters of the wrapped stage still show the item.
    const DEAD_LETTER_ITEM: Option<fn(&S::In) -> Option<serde_json::Value>> = S::DEAD_LETTER_ITEM;

    fn call(
        &self,
        item: S::In,
        cx: &Context,
    ) -> impl Future<Output = Result<S::Output, S::Error>> + Send {
        // No limiter, or a token at once: the inner call itself, with no extra state.
        match self.limiter.as_ref().filter(|l| l.try_acquire().is_err()) {
            None => Either::Left(self.inner.call(item, cx)),
            Some(limiter) => Either::Right(self.wait(limiter, || self.inner.call(item, cx), cx)),
        }
    }

    const BORROWS: bool = S::BORROWS;

    fn call_ref<'a>(
        &'a self,
        item: &'a S::In,
        cx: &'a Context,
    ) -> impl Future<Output = Result<S::Output, S::Error>> + Send + 'a
    where
        S::In: Clone + Sync,
    {
        match self.limiter.as_ref().filter(|l| l.try_acquire().is_err()) {
            None => Either::Left(self.inner.call_ref(item, cx)),
            Some(limiter) => {
                Either::Right(self.wait(limiter, || self.inner.call_ref(item, cx), cx))
            }
        }
    }

    fn is_permanent(&self, error: &S::Error) -> bool {
        self.inner.is_permanent(error)
    }

    fn restart(&self) -> Result<(), crate::error::BoxError> {
        self.inner.restart()
    }

    fn options(&self) -> StageOptions {
        self.inner.options()
    }
}

impl<S: Stage> RateLimit<S> {
    /// Waits for a token (none was free at once), then runs the attempt `make` builds.
    async fn wait<F>(
        &self,
        limiter: &RateLimiter,
        make: impl FnOnce() -> F,
        cx: &Context,
    ) -> F::Output
    where
        F: Future,
    {
        self.counters.record(Event::RateWait);
        tracing::trace!(stage = cx.stage(), "waiting for rate limit");
        limiter.until_ready().await;
        make().await
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
