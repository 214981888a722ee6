//! [`Breaker`]: a stage behind a [`CircuitBreaker`].

use std::fmt;
use std::pin::pin;

use futures::future::Either;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{BreakerOpen, CircuitBreaker};
use crate::Context;
use crate::Stage;
use crate::options::{BreakerMode, BreakerOptions, StageOptions};
use crate::policy::counters::{Counters, Event};

/// Wraps a stage in a [`CircuitBreaker`]: each attempt takes a permit first and reports
/// its outcome after.
///
/// - In [`BreakerMode::Wait`] (the default) an attempt waits for a permit while the
///   breaker is open; the wait costs no attempt and starts no timeout (the timeout sits
///   inside), and the waiting item keeps its concurrency slot, so an open breaker
///   backpressures the source.
/// - In [`BreakerMode::FailFast`] the attempt fails at once with [`BreakerOpen`], which
///   [`CatchPanic`](crate::policy::CatchPanic)'s classification makes permanent: the item
///   goes to `on_error` without retrying.
///
/// Errors the stage calls permanent ([`Stage::is_permanent`]) are neither failures nor
/// successes for the breaker. Slow calls are timed only when `slow_call` is set; the time
/// includes any wait for a rate-limit token, since the rate limit sits inside the breaker.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipeline_core::options::{BreakerMode, BreakerOptions, Window};
/// use pipeline_core::policy::{Breaker, BreakerState, CatchPanic, Failure};
/// use pipeline_core::prelude::*;
///
/// struct Down;
/// impl Stage for Down {
///     type In = u32;
///     type Output = u32;
///     type Shape = Map;
///     type Error = std::io::Error;
///     async fn call(&self, _: u32, _cx: &Context) -> Result<u32, std::io::Error> {
///         Err(std::io::Error::other("connection refused"))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut opts = BreakerOptions::default();
/// opts.window = Window::Count(2);
/// opts.min_calls = 2;
/// opts.mode = BreakerMode::FailFast;
/// let stage = Breaker::new(CatchPanic::new(Down), &opts);
/// let cx = Context::new("down");
/// for _ in 0..2 {
///     assert!(matches!(stage.call(1, &cx).await, Err(Failure::Call(_))));
/// }
/// assert_eq!(stage.breaker().map(|b| b.state()), Some(BreakerState::Open));
/// assert!(matches!(stage.call(1, &cx).await, Err(Failure::BreakerOpen(_))));
/// # }
/// ```
pub struct Breaker<S> {
    inner: S,
    breaker: Option<Arc<CircuitBreaker>>,
    mode: BreakerMode,
    /// Time calls only when slow calls are tracked (two clock reads per call).
    timed: bool,
    counters: Arc<Counters>,
}

impl<S: Stage> Breaker<S> {
    /// Guards `inner` with a new breaker built from `opts`.
    pub fn new(inner: S, opts: &BreakerOptions) -> Self {
        Breaker::optional(inner, Some(opts))
    }

    /// A breaker if `opts` is `Some`; a pass-through otherwise.
    pub fn optional(inner: S, opts: Option<&BreakerOptions>) -> Self {
        let counters = Counters::for_stage(&inner);
        match opts {
            Some(opts) => {
                let breaker = CircuitBreaker::with_counters(opts, counters);
                Breaker::with_breaker(inner, Arc::new(breaker))
            }
            None => Breaker {
                inner,
                breaker: None,
                mode: BreakerMode::default(),
                timed: false,
                counters,
            },
        }
    }

    /// Guards `inner` with an existing (possibly shared) breaker, in the mode of its
    /// options. Waits and rejections are counted in the breaker's counters.
    pub fn with_breaker(inner: S, breaker: Arc<CircuitBreaker>) -> Self {
        let opts = breaker.options();
        Breaker {
            inner,
            mode: opts.mode,
            timed: opts.slow_call.is_some(),
            counters: Arc::clone(breaker.counters()),
            breaker: Some(breaker),
        }
    }
}

impl<S> Breaker<S> {
    /// The breaker, if any (for the runtime's stats and health check).
    pub fn breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.breaker.as_ref()
    }

    /// What an attempt does while the breaker is open.
    pub fn mode(&self) -> BreakerMode {
        self.mode
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

impl<S> Stage for Breaker<S>
where
    S: Stage,
    S::Error: From<BreakerOpen>,
{
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
        match &self.breaker {
            // No breaker: the inner call itself, with no extra state.
            None => Either::Left(self.inner.call(item, cx)),
            Some(breaker) => Either::Right(self.guarded(breaker, || self.inner.call(item, cx), cx)),
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
        match &self.breaker {
            None => Either::Left(self.inner.call_ref(item, cx)),
            Some(breaker) => {
                Either::Right(self.guarded(breaker, || self.inner.call_ref(item, cx), cx))
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

impl<S: Stage> Breaker<S>
where
    S::Error: From<BreakerOpen>,
{
    async fn guarded<F>(
        &self,
        breaker: &CircuitBreaker,
        make: impl FnOnce() -> F,
        cx: &Context,
    ) -> Result<S::Output, S::Error>
    where
        F: Future<Output = Result<S::Output, S::Error>>,
    {
        let permit = match breaker.try_acquire() {
            Ok(permit) => permit,
            Err(open) => match self.mode {
                BreakerMode::FailFast => {
                    self.counters.record(Event::BreakerRejection);
                    tracing::debug!(stage = cx.stage(), "breaker open: call refused");
                    return Err(open.into());
                }
                BreakerMode::Wait => {
                    self.counters.record(Event::BreakerWait);
                    tracing::debug!(stage = cx.stage(), "breaker open: waiting for a permit");
                    // Boxed: a rare wait must not enlarge every call's future.
                    Box::pin(breaker.acquire()).await
                }
            },
        };
        let start = self.timed.then(Instant::now);
        // Pinned where it is built: awaiting the returned value would copy it first.
        let result = pin!(make()).await;
        let elapsed = start.map_or(Duration::ZERO, |start| start.elapsed());
        match &result {
            Ok(_) => permit.success(elapsed),
            Err(e) if self.inner.is_permanent(e) => permit.ignore(),
            Err(_) => permit.failure(elapsed),
        }
        result
    }
}

impl<S: fmt::Debug> fmt::Debug for Breaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}
