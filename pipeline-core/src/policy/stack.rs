//! [`Policies`]: the whole fixed stack of policies around one stage.

use std::fmt;

use std::sync::Arc;

use crate::Context;
use crate::Stage;
use crate::options::StageOptions;
use crate::policy::breaker::{Breaker, CircuitBreaker};
use crate::policy::catch_panic::CatchPanic;
use crate::policy::counters::Counters;
use crate::policy::failure::Failure;
use crate::policy::rate::RateLimit;
use crate::policy::retry::{Retry, RetryOutcome};
use crate::policy::timeout::Timeout;

/// The type of the fixed policy stack around a stage `S`, outermost first.
pub type Stack<S> = Retry<Breaker<RateLimit<Timeout<CatchPanic<S>>>>>;

/// A stage wrapped in every policy its options declare, in the fixed order (outermost
/// first):
///
/// ```text
/// retry + budget ( breaker ( rate_limit ( timeout ( catch_panic ( stage )))))
/// ```
///
/// So waiting for a breaker permit or a rate token costs no attempt and starts no
/// timeout; a timeout, a panic or an error fails one attempt, which the breaker records
/// and the retry may repeat. (`on_error`, outside all of them, is the runtime's.)
///
/// Every layer is always present and a pass-through when its option is `None`, so the
/// type is [`Stack<S>`] whatever is configured and the error is always
/// [`Failure<S::Error>`]. All layers count into one shared [`Counters`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipeline_core::options::{RetryOptions, StageOptions};
/// use pipeline_core::policy::{Failure, Policies};
/// use pipeline_core::prelude::*;
///
/// struct Hang;
/// impl Stage for Hang {
///     type In = u32;
///     type Output = u32;
///     type Shape = Map;
///     type Error = std::io::Error;
///     async fn call(&self, n: u32, _cx: &Context) -> Result<u32, std::io::Error> {
///         std::future::pending::<()>().await;
///         Ok(n)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut opts = StageOptions::default();
/// opts.name = Some("hang".into());
/// opts.timeout = Some(Duration::from_millis(50));
/// let mut retry = RetryOptions::new(3);
/// retry.jitter = false;
/// opts.retry = Some(retry);
///
/// let stage = Policies::new(Hang, &opts);
/// let outcome = stage.run(1, &Context::new("hang")).await;
/// assert!(matches!(outcome.result, Err(Failure::Elapsed(_))));
/// assert_eq!(outcome.attempts, 3);
/// let counts = stage.counters().snapshot();
/// assert_eq!((counts.timeouts, counts.retries), (3, 2));
/// # }
/// ```
pub struct Policies<S: Stage> {
    stack: Stack<S>,
    counters: Arc<Counters>,
    /// No layer but the panic capture does anything.
    plain: bool,
}

/// Wraps `stage` in the policies `opts` declare ([`Policies::new`]).
pub fn layer<S>(stage: S, opts: &StageOptions) -> Policies<S>
where
    S: Stage,
    S::In: Clone,
{
    Policies::new(stage, opts)
}

impl<S: Stage> Policies<S> {
    /// Wraps `stage` in the policies `opts` declare; settings `opts` leaves unset come
    /// from [`Stage::options`]. Counters and metrics are named after `opts.name`.
    pub fn new(stage: S, opts: &StageOptions) -> Self
    where
        S::In: Clone,
    {
        let opts = opts.clone().or(stage.options());
        Policies::build(stage, &opts, |inner, o| match &o.retry {
            Some(retry) => Retry::new(inner, retry),
            None => Retry::disabled(inner),
        })
    }

    /// Like [`new`](Self::new) but with one attempt per item, for inputs that are not
    /// `Clone`. `opts.retry` is **not applied**: a caller that accepted it must refuse
    /// the configuration instead of calling this.
    pub fn without_retry(stage: S, opts: &StageOptions) -> Self {
        let opts = opts.clone().or(stage.options());
        Policies::build(stage, &opts, |inner, _| Retry::disabled(inner))
    }

    fn build<F>(stage: S, opts: &StageOptions, retry: F) -> Self
    where
        F: FnOnce(Breaker<RateLimit<Timeout<CatchPanic<S>>>>, &StageOptions) -> Stack<S>,
    {
        let counters = match &opts.name {
            Some(name) => Arc::new(Counters::new(name.as_ref())),
            None => Counters::for_stage(&stage),
        };
        let shared = || Arc::clone(&counters);
        let caught = CatchPanic::new(stage).with_counters(shared());
        let timed = Timeout::optional(caught, opts.timeout).with_counters(shared());
        let limited = RateLimit::optional(timed, opts.rate).with_counters(shared());
        let guarded = match &opts.breaker {
            Some(b) => {
                let breaker = CircuitBreaker::with_counters(b, shared());
                Breaker::with_breaker(limited, Arc::new(breaker))
            }
            None => Breaker::optional(limited, None),
        };
        let stack = retry(guarded, opts).with_counters(shared());
        let plain = opts.timeout.is_none()
            && opts.rate.is_none()
            && opts.breaker.is_none()
            && opts.retry.as_ref().is_none_or(|r| r.attempts <= 1);
        Policies {
            stack,
            counters,
            plain,
        }
    }

    /// Whether no policy but the panic capture is configured: then a caller may call
    /// [`catch_panic`](Self::catch_panic) directly and skip the other layers.
    pub fn is_plain(&self) -> bool {
        self.plain
    }

    /// The innermost layer: the stage under panic capture.
    pub fn catch_panic(&self) -> &CatchPanic<S> {
        self.stack.get_ref().get_ref().get_ref().get_ref()
    }

    /// The counters every layer updates (for the runtime's `stats()`).
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The circuit breaker, if one is configured (its state, for `stats()` and health).
    pub fn breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.stack.get_ref().breaker()
    }

    /// The whole stack, to reach a single layer.
    pub fn stack(&self) -> &Stack<S> {
        &self.stack
    }

    /// The wrapped stage.
    pub fn get_ref(&self) -> &S {
        self.catch_panic().get_ref()
    }

    /// Unwraps the stage.
    pub fn into_inner(self) -> S {
        let retry = self.stack.into_inner();
        retry.into_inner().into_inner().into_inner().into_inner()
    }

    /// Runs one item through every attempt and reports how many it took (the runtime's
    /// entry point: dead letters need the count).
    pub async fn run(
        &self,
        item: S::In,
        cx: &Context,
    ) -> RetryOutcome<S::Output, Failure<S::Error>> {
        self.stack.run(item, cx).await
    }
}

impl<S: Stage> Policies<S>
where
    S::In: Clone + Sync,
{
    /// Like [`run`](Self::run); a stage that borrows its input ([`Stage::BORROWS`]) has
    /// every attempt borrow the one item, so nothing is cloned for its retries.
    pub async fn run_shared(
        &self,
        item: S::In,
        cx: &Context,
    ) -> RetryOutcome<S::Output, Failure<S::Error>> {
        if S::BORROWS {
            self.stack.run_borrowed(item, cx).await
        } else {
            self.stack.run(item, cx).await
        }
    }
}

impl<S: Stage> Stage for Policies<S> {
    type In = S::In;
    type Output = S::Output;
    type Shape = S::Shape;
    type Error = Failure<S::Error>;

    // Forwarded: dead letters of the wrapped stage still show the item.
    const DEAD_LETTER_ITEM: Option<fn(&S::In) -> Option<serde_json::Value>> = S::DEAD_LETTER_ITEM;

    async fn call(&self, item: S::In, cx: &Context) -> Result<S::Output, Failure<S::Error>> {
        self.stack.run(item, cx).await.result
    }

    fn is_permanent(&self, error: &Failure<S::Error>) -> bool {
        self.stack.is_permanent(error)
    }

    fn restart(&self) -> Result<(), crate::error::BoxError> {
        self.stack.restart()
    }

    fn options(&self) -> StageOptions {
        self.stack.options()
    }
}

impl<S: Stage + fmt::Debug> fmt::Debug for Policies<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policies")
            .field("stack", &self.stack)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Map;
    use crate::options::{BreakerOptions, RateOptions, RetryOptions, Window};
    use crate::policy::BreakerState;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::Duration;
    use tokio::time::Instant;

    /// Takes `work` ms per call; fails while `down`.
    struct Dep {
        work: u64,
        down: AtomicBool,
        calls: AtomicU32,
    }

    impl Stage for Dep {
        type In = u32;
        type Output = u32;
        type Shape = Map;
        type Error = std::io::Error;
        async fn call(&self, n: u32, _cx: &Context) -> Result<u32, std::io::Error> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(self.work)).await;
            if self.down.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("connection refused"));
            }
            Ok(n)
        }
    }

    fn dep(work: u64, down: bool) -> Dep {
        Dep {
            work,
            down: AtomicBool::new(down),
            calls: AtomicU32::new(0),
        }
    }

    fn named(name: &'static str) -> StageOptions {
        StageOptions {
            name: Some(name.into()),
            ..StageOptions::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_rate_token_starts_no_timeout() {
        let mut o = named("rated");
        o.rate = Some(RateOptions::new(1, Duration::from_secs(1)));
        o.timeout = Some(Duration::from_millis(50));
        let p = Policies::new(dep(10, false), &o);
        let start = Instant::now();
        for n in 0..3 {
            assert_eq!(p.call(n, &Context::new("rated")).await.ok(), Some(n));
        }
        // Tokens at 0, 1 s, 2 s; each call 10 ms; no timeout although each waited ~1 s.
        assert_eq!(start.elapsed(), Duration::from_millis(2_010));
        let c = p.counters().snapshot();
        assert_eq!((c.timeouts, c.rate_waits), (0, 2));
        assert_eq!(p.counters().stage(), "rated");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_dependency_opens_the_breaker_and_every_item_gets_one_outcome() {
        let mut o = named("dead");
        let mut retry = RetryOptions::new(3);
        retry.backoff = Duration::from_millis(10);
        retry.budget = Some(0.2);
        o.retry = Some(retry);
        o.timeout = Some(Duration::from_millis(100));
        o.breaker = Some(BreakerOptions {
            window: Window::Count(10),
            min_calls: 10,
            open_for: Duration::from_secs(1),
            half_open: 1,
            ..BreakerOptions::default()
        });
        let p = Policies::new(dep(1, true), &o);
        let start = Instant::now();
        let items = 200u32;
        let mut failed = 0;
        for n in 0..items {
            let out = p.run(n, &Context::new("dead")).await;
            assert!(out.attempts >= 1 && out.attempts <= 3);
            failed += u32::from(out.result.is_err());
        }
        assert_eq!(failed, items, "exactly one (failed) outcome per item");
        let c = p.counters().snapshot();
        assert!(c.breaker_transitions >= 2, "{c:?}");
        assert!(
            c.breaker_waits > 0,
            "wait mode waits instead of failing: {c:?}"
        );
        // Retries stay within 20% of the items plus the floor (10/s over the run).
        let secs = start.elapsed().as_secs() + 10;
        assert!(
            c.retries <= u64::from(items) / 5 + 10 * secs,
            "{c:?} over {secs}s"
        );
        // In wait mode every attempt still reaches the dependency, but as a probe: after
        // the first window, at most one call per `open_for`.
        let calls = u64::from(p.get_ref().calls.load(Ordering::Relaxed));
        let elapsed = start.elapsed().as_secs();
        assert!(
            calls <= 10 + elapsed + 1,
            "{calls} calls in {elapsed}s; {c:?}"
        );
        assert!(
            elapsed >= calls - 10 - 1,
            "{calls} calls in only {elapsed}s"
        );
        // It heals: the next probe succeeds and closes the breaker.
        p.get_ref().down.store(false, Ordering::Relaxed);
        assert_eq!(p.call(7, &Context::new("dead")).await.ok(), Some(7));
        assert_eq!(p.breaker().map(|b| b.state()), Some(BreakerState::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_waits_cost_no_attempt() {
        let mut o = named("wait");
        let mut retry = RetryOptions::new(2);
        retry.jitter = false;
        o.retry = Some(retry);
        o.breaker = Some(BreakerOptions {
            window: Window::Count(1),
            min_calls: 1,
            open_for: Duration::from_secs(5),
            half_open: 1,
            ..BreakerOptions::default()
        });
        let p = Policies::new(dep(0, false), &o);
        if let Some(b) = p.breaker() {
            b.force_open();
        }
        let out = p.run(1, &Context::new("wait")).await;
        assert_eq!(out.result.ok(), Some(1));
        assert_eq!(out.attempts, 1, "the 5 s wait was not an attempt");
    }

    #[tokio::test(start_paused = true)]
    async fn no_options_means_a_plain_call() {
        let p = layer(dep(3, false), &StageOptions::default());
        assert!(p.breaker().is_none());
        assert_eq!(p.call(5, &Context::new("plain")).await.ok(), Some(5));
        assert_eq!(p.counters().snapshot(), Default::default());
        assert_eq!(p.into_inner().calls.load(Ordering::Relaxed), 1);
    }
}
