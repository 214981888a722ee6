//! [`Timeout`]: a deadline for each attempt.

use std::fmt;

use futures::future::Either;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::Context;
use crate::Stage;
use crate::options::StageOptions;
use crate::policy::counters::{Counters, Event};

/// The error of an attempt that did not finish within its deadline.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipeline_core::policy::Elapsed;
///
/// let e = Elapsed::new(Duration::from_millis(250));
/// assert_eq!(e.after(), Duration::from_millis(250));
/// assert_eq!(e.to_string(), "attempt timed out after 250ms");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("attempt timed out after {after:?}")]
pub struct Elapsed {
    after: Duration,
}

impl Elapsed {
    /// An expiry after `after`.
    pub fn new(after: Duration) -> Self {
        Elapsed { after }
    }

    /// The deadline that was missed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

/// Wraps a stage so that each attempt fails with [`Elapsed`] when it runs longer than a
/// deadline; the attempt's future is then dropped (see the `Stage` docs on cancel safety).
///
/// With no deadline (`Timeout::optional(stage, None)`) the wrapper costs one branch.
/// With one, the attempt is polled once first and a timer is armed (one clock read) only
/// if it is still pending, so attempts that finish in their first poll pay for no timer.
/// The deadline therefore runs from the end of the first poll.
///
/// The inner stage's error must be buildable from [`Elapsed`]; [`Failure`] is, so the
/// usual stack is `Timeout<CatchPanic<S>>`.
///
/// [`Failure`]: crate::policy::Failure
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipeline_core::policy::{CatchPanic, Failure, Timeout};
/// use pipeline_core::prelude::*;
///
/// struct Slow;
/// impl Stage for Slow {
///     type In = u32;
///     type Output = u32;
///     type Shape = Map;
///     type Error = std::io::Error;
///     async fn call(&self, n: u32, _cx: &Context) -> Result<u32, std::io::Error> {
///         tokio::time::sleep(Duration::from_secs(60)).await;
///         Ok(n)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let stage = Timeout::new(CatchPanic::new(Slow), Duration::from_secs(2));
/// let err = stage.call(1, &Context::new("slow")).await.unwrap_err();
/// assert!(matches!(err, Failure::Elapsed(_)));
/// assert_eq!(stage.counters().timeouts(), 1);
/// # }
/// ```
pub struct Timeout<S> {
    inner: S,
    after: Option<Duration>,
    counters: Arc<Counters>,
}

impl<S: Stage> Timeout<S> {
    /// Each attempt of `inner` gets `after` to finish.
    pub fn new(inner: S, after: Duration) -> Self {
        Timeout::optional(inner, Some(after))
    }

    /// A deadline if `after` is `Some`; a pass-through otherwise.
    pub fn optional(inner: S, after: Option<Duration>) -> Self {
        let counters = Counters::for_stage(&inner);
        Timeout {
            inner,
            after,
            counters,
        }
    }
}

impl<S> Timeout<S> {
    /// Counts timeouts into `counters` (shared with the stage's other policies).
    #[must_use]
    pub fn with_counters(mut self, counters: Arc<Counters>) -> Self {
        self.counters = counters;
        self
    }

    /// The deadline of one attempt, if any.
    pub fn after(&self) -> Option<Duration> {
        self.after
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

impl<S> Stage for Timeout<S>
where
    S: Stage,
    S::Error: From<Elapsed>,
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
        match self.after {
            // No deadline: the inner call itself, with no extra state.
            None => Either::Left(self.inner.call(item, cx)),
            Some(after) => Either::Right(self.deadline(|| self.inner.call(item, cx), cx, after)),
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
        match self.after {
            None => Either::Left(self.inner.call_ref(item, cx)),
            Some(after) => {
                Either::Right(self.deadline(|| self.inner.call_ref(item, cx), cx, after))
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

impl<S: Stage> Timeout<S>
where
    S::Error: From<Elapsed>,
{
    async fn deadline<F>(
        &self,
        make: impl FnOnce() -> F,
        cx: &Context,
        after: Duration,
    ) -> Result<S::Output, S::Error>
    where
        F: Future<Output = Result<S::Output, S::Error>>,
    {
        // Built here, not passed in: the attempt lives in this future's state only once.
        let mut attempt = pin!(make());
        let mut timer = pin!(None::<tokio::time::Sleep>);
        let outcome = poll_fn(|task| {
            if let Poll::Ready(result) = attempt.as_mut().poll(task) {
                return Poll::Ready(Some(result));
            }
            if timer.is_none() {
                // Still pending after its first poll: only now read the clock.
                timer.set(Some(tokio::time::sleep(after)));
            }
            match timer.as_mut().as_pin_mut().map(|sleep| sleep.poll(task)) {
                Some(Poll::Ready(())) => Poll::Ready(None),
                _ => Poll::Pending,
            }
        })
        .await;
        match outcome {
            Some(result) => result,
            None => {
                self.counters.record(Event::Timeout);
                tracing::debug!(
                    stage = cx.stage(),
                    attempt = cx.attempt(),
                    after = ?after,
                    "attempt timed out"
                );
                Err(Elapsed::new(after).into())
            }
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Timeout<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("inner", &self.inner)
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Map;
    use crate::policy::{CatchPanic, Failure};
    use tokio::time::{Instant, sleep};

    /// Sleeps for the item's number of milliseconds, then echoes it.
    struct Nap;
    impl Stage for Nap {
        type In = u64;
        type Output = u64;
        type Shape = Map;
        type Error = std::io::Error;
        async fn call(&self, ms: u64, _cx: &Context) -> Result<u64, std::io::Error> {
            if ms > 0 {
                sleep(Duration::from_millis(ms)).await;
            }
            Ok(ms)
        }
    }

    fn cx() -> Context {
        Context::new("nap")
    }

    #[tokio::test(start_paused = true)]
    async fn fires_exactly_at_the_deadline() {
        let t = Timeout::new(CatchPanic::new(Nap), Duration::from_millis(100));
        let start = Instant::now();
        let r = t.call(1_000, &cx()).await;
        assert!(matches!(r, Err(Failure::Elapsed(e)) if e.after() == Duration::from_millis(100)));
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(t.counters().timeouts(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_inside_the_deadline_passes() {
        let t = Timeout::new(CatchPanic::new(Nap), Duration::from_millis(100));
        assert!(matches!(t.call(99, &cx()).await, Ok(99)));
        assert!(matches!(t.call(0, &cx()).await, Ok(0)));
        assert_eq!(t.counters().timeouts(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn none_is_a_pass_through() {
        let t = Timeout::optional(CatchPanic::new(Nap), None);
        let start = Instant::now();
        assert!(matches!(t.call(5_000, &cx()).await, Ok(5_000)));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(t.after(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_are_per_attempt() {
        let t = Timeout::new(CatchPanic::new(Nap), Duration::from_millis(100));
        for _ in 0..3 {
            assert!(t.call(80, &cx()).await.is_ok());
        }
        assert_eq!(t.counters().timeouts(), 0);
    }
}
