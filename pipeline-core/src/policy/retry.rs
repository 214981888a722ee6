//! [`Retry`]: more attempts after retryable failures, with backoff and a budget.

use std::fmt;
use std::future::Future;
use std::pin::pin;

use futures::FutureExt;
use futures::future::Either;
use std::sync::Arc;

use tokio::time::Instant;

use crate::Context;
use crate::Stage;
use crate::options::{RetryOptions, StageOptions};
use crate::policy::backoff::{Backoff, Schedule};
use crate::policy::budget::RetryBudget;
use crate::policy::counters::{Counters, Event};

/// `Clone::clone` of a stage input, kept as a plain function pointer so that `Retry`
/// itself needs no `Clone` bound.
type CloneFn<T> = fn(&T) -> T;

/// What [`Retry::run`] reports besides the result: how many attempts it took.
#[derive(Debug)]
#[non_exhaustive]
pub struct RetryOutcome<T, E> {
    /// The last attempt's result.
    pub result: Result<T, E>,
    /// Attempts made, the first included (at least 1).
    pub attempts: u32,
    /// When the first attempt failed, if one did (read from tokio's clock on failure
    /// only; the runtime's dead letters carry it).
    pub first_failure: Option<Instant>,
}

/// Wraps a stage to retry failed attempts: up to `attempts` in all (the first included),
/// waiting a [`Backoff`] delay before each retry, while the error is retryable
/// ([`Stage::is_permanent`] is `false`) and the [`RetryBudget`], if any, can pay.
///
/// Attempt `n` runs with [`Context::with_attempt`]`(n)`. The item is cloned for every
/// attempt but the last possible one, so the input must be `Clone` for
/// [`Retry::new`]; [`Retry::disabled`] (one attempt, no clone) has no such bound.
///
/// A retried attempt is a new call of the inner stage: with the fixed policy order the
/// breaker permit, the rate-limit token and the timeout are per attempt, and the wait
/// between attempts holds the item's concurrency slot.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use pipeline_core::options::RetryOptions;
/// use pipeline_core::policy::Retry;
/// use pipeline_core::prelude::*;
///
/// /// Fails twice, then succeeds.
/// struct Flaky(AtomicU32);
/// impl Stage for Flaky {
///     type In = u32;
///     type Output = u32;
///     type Shape = Map;
///     type Error = std::io::Error;
///     async fn call(&self, n: u32, cx: &Context) -> Result<u32, std::io::Error> {
///         if self.0.fetch_add(1, Ordering::Relaxed) < 2 {
///             return Err(std::io::Error::other("try again"));
///         }
///         Ok(n + cx.attempt())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut opts = RetryOptions::new(5);
/// opts.backoff = Duration::from_millis(100);
/// opts.jitter = false;
/// let stage = Retry::new(Flaky(AtomicU32::new(0)), &opts);
/// let start = tokio::time::Instant::now();
/// let outcome = stage.run(10, &Context::new("flaky")).await;
/// assert_eq!(outcome.result.ok(), Some(13)); // the third attempt
/// assert_eq!(outcome.attempts, 3);
/// assert_eq!(start.elapsed(), Duration::from_millis(300)); // 100 + 200
/// assert_eq!(stage.counters().retries(), 2);
/// # }
/// ```
pub struct Retry<S: Stage> {
    inner: S,
    attempts: u32,
    backoff: Backoff,
    budget: Option<Arc<RetryBudget>>,
    /// `Clone::clone` of the input when retries are possible; `None` for one attempt.
    clone_in: Option<CloneFn<S::In>>,
    counters: Arc<Counters>,
}

impl<S: Stage> Retry<S>
where
    S::In: Clone,
{
    /// Retries `inner` as `opts` say (a zero `attempts` counts as 1). A `budget` share
    /// gets a [`RetryBudget`] of its own with the default floor and window.
    pub fn new(inner: S, opts: &RetryOptions) -> Self {
        let counters = Counters::for_stage(&inner);
        Retry {
            inner,
            attempts: opts.attempts.max(1),
            backoff: Backoff::from_options(opts),
            budget: opts
                .budget
                .map(|share| Arc::new(RetryBudget::new(share).with_min_per_sec(opts.budget_floor))),
            clone_in: Some(<S::In as Clone>::clone),
            counters,
        }
    }
}

impl<S: Stage> Retry<S> {
    /// One attempt, no retry: a pass-through, for inputs that are not `Clone`.
    pub fn disabled(inner: S) -> Self {
        let counters = Counters::for_stage(&inner);
        Retry {
            inner,
            attempts: 1,
            backoff: Backoff::exponential(Default::default(), Default::default()),
            budget: None,
            clone_in: None,
            counters,
        }
    }

    /// Replaces the delay schedule (any iterator of durations fits, see [`Backoff`]).
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Replaces the retry budget (share one between several stages, or remove it).
    #[must_use]
    pub fn with_budget(mut self, budget: Option<Arc<RetryBudget>>) -> Self {
        self.budget = budget;
        self
    }

    /// Counts retries into `counters` (shared with the stage's other policies).
    #[must_use]
    pub fn with_counters(mut self, counters: Arc<Counters>) -> Self {
        self.counters = counters;
        self
    }

    /// Attempts in all, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The delay schedule.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The retry budget, if any.
    pub fn budget(&self) -> Option<&Arc<RetryBudget>> {
        self.budget.as_ref()
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

    /// Runs the item through its attempts and reports how many it took.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the current attempt (or the wait before the next one).
    pub async fn run(&self, item: S::In, cx: &Context) -> RetryOutcome<S::Output, S::Error> {
        let Some(clone_in) = self.clone_in.filter(|_| self.attempts > 1) else {
            return Self::once(self.inner.call(item, cx)).await;
        };
        // Each attempt works on a clone: the original stays for the next one.
        self.drive(cx, move |n| self.attempt(clone_in(&item), cx, n))
            .await
    }

    /// Like [`run`](Self::run), for a stage that borrows its input
    /// ([`Stage::BORROWS`]): every attempt borrows `item`, nothing is cloned.
    pub async fn run_borrowed(&self, item: S::In, cx: &Context) -> RetryOutcome<S::Output, S::Error>
    where
        S::In: Clone + Sync,
    {
        if self.attempts <= 1 || self.clone_in.is_none() {
            return Self::once(self.inner.call(item, cx)).await;
        }
        let item = &item;
        self.drive(cx, |n| self.attempt_ref(item, cx, n)).await
    }

    /// A single attempt, reported as such. A combinator, not an `async fn`: a future passed
    /// to an `async fn` would be stored twice in its state (the argument and the awaitee).
    fn once<F>(attempt: F) -> impl Future<Output = RetryOutcome<S::Output, S::Error>>
    where
        F: Future<Output = Result<S::Output, S::Error>>,
    {
        attempt.map(|result| {
            let first_failure = result.is_err().then(Instant::now);
            RetryOutcome {
                result,
                attempts: 1,
                first_failure,
            }
        })
    }

    /// The attempt loop: `make(n)` builds attempt `n` (1-based); between failed attempts
    /// it waits out the backoff, while the error is retryable and the budget can pay.
    async fn drive<F, Fut>(&self, cx: &Context, mut make: F) -> RetryOutcome<S::Output, S::Error>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<S::Output, S::Error>>,
    {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
        let mut schedule: Option<Schedule> = None;
        let mut first_failure = None;
        let mut attempt = 1;
        loop {
            // Pinned where it is built: awaiting the returned value would copy it first.
            let result = pin!(make(attempt)).await;
            let Err(error) = &result else {
                return RetryOutcome {
                    result,
                    attempts: attempt,
                    first_failure,
                };
            };
            first_failure.get_or_insert_with(Instant::now);
            if attempt >= self.attempts {
                return RetryOutcome {
                    result,
                    attempts: attempt,
                    first_failure,
                };
            }
            let delay = if self.inner.is_permanent(error) {
                None
            } else {
                // A custom schedule that ends stops the retries.
                schedule
                    .get_or_insert_with(|| self.backoff.schedule())
                    .next()
            };
            let delay = delay.filter(|_| match &self.budget {
                Some(budget) if !budget.withdraw() => {
                    self.counters.record(Event::BudgetExhausted);
                    tracing::debug!(stage = cx.stage(), attempt, "retry budget exhausted");
                    false
                }
                _ => true,
            });
            let Some(delay) = delay else {
                return RetryOutcome {
                    result,
                    attempts: attempt,
                    first_failure,
                };
            };
            self.counters.record(Event::Retry);
            tracing::debug!(
                stage = cx.stage(),
                attempt,
                delay = ?delay,
                error = %crate::error::chain(error),
                "retrying"
            );
            if !delay.is_zero() {
                // Boxed: a retry is rare, and a timer inline would enlarge every item's future.
                Box::pin(tokio::time::sleep(delay)).await;
            }
            attempt += 1;
        }
    }

    /// Attempt `n` with a borrowed input.
    fn attempt_ref<'a>(
        &'a self,
        item: &'a S::In,
        cx: &'a Context,
        n: u32,
    ) -> impl Future<Output = Result<S::Output, S::Error>> + Send + 'a
    where
        S::In: Clone + Sync,
    {
        if n == 1 {
            Either::Left(self.inner.call_ref(item, cx))
        } else {
            Either::Right(async move { self.inner.call_ref(item, &cx.with_attempt(n)).await })
        }
    }

    /// Attempt `n`: the first is the inner call itself; later ones carry their number in
    /// the context.
    fn attempt<'a>(
        &'a self,
        item: S::In,
        cx: &'a Context,
        n: u32,
    ) -> impl Future<Output = Result<S::Output, S::Error>> + Send + 'a {
        if n == 1 {
            Either::Left(self.inner.call(item, cx))
        } else {
            Either::Right(async move { self.inner.call(item, &cx.with_attempt(n)).await })
        }
    }
}

impl<S: Stage> Stage for Retry<S> {
    type In = S::In;
    type Output = S::Output;
    type Shape = S::Shape;
    type Error = S::Error;

    // Forwarded: dead letters of the wrapped stage still show the item.
    const DEAD_LETTER_ITEM: Option<fn(&S::In) -> Option<serde_json::Value>> = S::DEAD_LETTER_ITEM;

    async fn call(&self, item: S::In, cx: &Context) -> Result<S::Output, S::Error> {
        self.run(item, cx).await.result
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

impl<S: Stage + fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Map;
    use crate::options::StageOptions;
    use crate::policy::{Failure, Fault, Permanent, Policies};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// Records each call's start time and attempt number; then hangs (`hang`) or fails.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<(Instant, u32)>>,
        hang: bool,
    }

    impl Stage for Recorder {
        type In = u32;
        type Output = u32;
        type Shape = Map;
        type Error = std::io::Error;
        async fn call(&self, n: u32, cx: &Context) -> Result<u32, std::io::Error> {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push((Instant::now(), cx.attempt()));
            }
            if self.hang {
                std::future::pending::<()>().await;
            }
            Err(std::io::Error::other(format!("failed {n}")))
        }
    }

    impl Recorder {
        fn calls(&self) -> Vec<(Instant, u32)> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn retry_opts(attempts: u32, jitter: bool) -> RetryOptions {
        let mut o = RetryOptions::new(attempts);
        o.backoff = ms(100);
        o.max_backoff = ms(1_000);
        o.jitter = jitter;
        o
    }

    fn stack(hang: bool, timeout: Option<Duration>, retry: RetryOptions) -> Policies<Recorder> {
        let opts = StageOptions {
            name: Some("rec".into()),
            timeout,
            retry: Some(retry),
            ..StageOptions::default()
        };
        Policies::new(
            Recorder {
                hang,
                ..Recorder::default()
            },
            &opts,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_gaps_within_jitter_bounds_and_timeouts_fire_on_time() {
        for seed_round in 0..20 {
            let p = stack(true, Some(ms(50)), retry_opts(6, true));
            let start = Instant::now();
            let out = p.run(seed_round, &Context::new("rec")).await;
            assert!(matches!(out.result, Err(Failure::Elapsed(_))));
            assert_eq!(out.attempts, 6);
            assert_eq!(out.first_failure, Some(start + ms(50)));
            let calls = p.get_ref().calls();
            let attempts: Vec<u32> = calls.iter().map(|c| c.1).collect();
            assert_eq!(attempts, [1, 2, 3, 4, 5, 6]);
            assert_eq!(calls[0].0, start);
            for (k, pair) in calls.windows(2).enumerate() {
                // Each attempt times out after exactly 50 ms, then waits its jittered
                // delay: 0..=100 ms * 2^k, capped at 1 s.
                let delay = pair[1].0 - pair[0].0 - ms(50);
                let nominal = ms(100 << k).min(ms(1_000));
                assert!(delay <= nominal, "gap {k}: {delay:?} > {nominal:?}");
            }
            // The call ends when the last attempt times out.
            let last = calls.last().map(|c| c.0).unwrap_or(start);
            assert_eq!(Instant::now(), last + ms(50));
            assert_eq!(p.counters().timeouts(), 6);
            assert_eq!(p.counters().retries(), 5);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_jitter_the_gaps_are_exact() {
        let p = stack(true, Some(ms(50)), retry_opts(5, false));
        let start = Instant::now();
        let _ = p.run(1, &Context::new("rec")).await;
        let offsets: Vec<Duration> = p.get_ref().calls().iter().map(|c| c.0 - start).collect();
        // 50 ms attempt + 100, 200, 400, 800 ms delays.
        assert_eq!(offsets, [0, 150, 400, 850, 1_700].map(ms));
        assert_eq!(start.elapsed(), ms(1_750));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        struct Strict(AtomicU32);
        impl Stage for Strict {
            type In = u32;
            type Output = u32;
            type Shape = Map;
            type Error = Fault<std::io::Error>;
            async fn call(&self, n: u32, _cx: &Context) -> Result<u32, Self::Error> {
                self.0.fetch_add(1, Ordering::Relaxed);
                if n == 0 {
                    Err(Permanent(std::io::Error::other("zero")))?;
                }
                Err(std::io::Error::other("flaky"))?
            }
            fn is_permanent(&self, e: &Self::Error) -> bool {
                e.is_permanent()
            }
        }
        let r = Retry::new(Strict(AtomicU32::new(0)), &retry_opts(4, false));
        let out = r.run(0, &Context::new("strict")).await;
        assert_eq!(out.attempts, 1);
        assert!(out.result.is_err_and(|e| e.is_permanent()));
        let out = r.run(1, &Context::new("strict")).await;
        assert_eq!(out.attempts, 4);
        assert_eq!(r.get_ref().0.load(Ordering::Relaxed), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_retries_of_a_dead_dependency() {
        let budget = Arc::new(RetryBudget::new(0.2).with_min_per_sec(0));
        let r = Retry::new(Recorder::default(), &retry_opts(3, false))
            .with_backoff(Backoff::from_iter(std::iter::repeat(Duration::ZERO)))
            .with_budget(Some(budget));
        for n in 0..100 {
            let out = r.run(n, &Context::new("rec")).await;
            assert!(out.result.is_err(), "exactly one failed outcome per item");
        }
        // 100 first attempts buy 20 retries at 20%; nothing more without a floor.
        assert_eq!(r.counters().retries(), 20);
        assert_eq!(r.get_ref().calls().len(), 120);
        assert!(r.counters().budget_exhausted() >= 80);
    }

    #[tokio::test(start_paused = true)]
    async fn a_custom_schedule_that_ends_stops_retrying() {
        let r = Retry::new(Recorder::default(), &retry_opts(10, false))
            .with_backoff(Backoff::from_iter([ms(5), ms(7)]));
        let start = Instant::now();
        let out = r.run(1, &Context::new("rec")).await;
        assert_eq!(out.attempts, 3);
        assert_eq!(start.elapsed(), ms(12));
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_costs_one_attempt_and_the_item_recovers() {
        struct PanicOnce(AtomicU32);
        impl Stage for PanicOnce {
            type In = u32;
            type Output = u32;
            type Shape = Map;
            type Error = std::io::Error;
            async fn call(&self, n: u32, _cx: &Context) -> Result<u32, std::io::Error> {
                if self.0.fetch_add(1, Ordering::Relaxed) == 0 {
                    panic!("first attempt panics");
                }
                Ok(n)
            }
        }
        let opts = StageOptions {
            retry: Some(retry_opts(2, false)),
            ..StageOptions::default()
        };
        let p = Policies::new(PanicOnce(AtomicU32::new(0)), &opts);
        let out = p.run(9, &Context::new("p")).await;
        assert_eq!(out.result.ok(), Some(9));
        assert_eq!(out.attempts, 2);
        assert_eq!(p.counters().panics(), 1);
        assert_eq!(p.counters().retries(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_makes_one_attempt_without_clone() {
        struct NotClone(u32);
        struct Take;
        impl Stage for Take {
            type In = NotClone;
            type Output = u32;
            type Shape = Map;
            type Error = std::io::Error;
            async fn call(&self, n: NotClone, _cx: &Context) -> Result<u32, std::io::Error> {
                Err(std::io::Error::other(n.0.to_string()))
            }
        }
        let r = Retry::disabled(Take);
        let out = r.run(NotClone(3), &Context::new("take")).await;
        assert_eq!(out.attempts, 1);
        assert!(out.first_failure.is_some());
        let opts = StageOptions {
            retry: Some(retry_opts(5, false)),
            ..StageOptions::default()
        };
        let p = Policies::without_retry(Take, &opts);
        assert_eq!(p.run(NotClone(4), &Context::new("take")).await.attempts, 1);
        assert_eq!(p.counters().retries(), 0);
    }
}
