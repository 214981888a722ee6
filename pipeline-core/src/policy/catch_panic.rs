//! [`CatchPanic`]: a panicking attempt becomes an error value.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt as _;
use futures::future::Either;

use crate::Context;
use crate::Stage;
use crate::options::StageOptions;
use crate::policy::counters::{Counters, Event};
use crate::policy::failure::Failure;

/// The error of an attempt that panicked.
///
/// # Examples
///
/// ```
/// use pipeline_core::policy::Panicked;
///
/// let p = Panicked::new("index out of bounds");
/// assert_eq!(p.message(), "index out of bounds");
/// assert_eq!(p.to_string(), "stage panicked: index out of bounds");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stage panicked: {message}")]
pub struct Panicked {
    message: String,
}

impl Panicked {
    /// A panic with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Panicked {
            message: message.into(),
        }
    }

    /// Reads the message of a caught panic's payload (`&str` or `String`, as `panic!`
    /// makes them; other payloads get a placeholder).
    pub fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic payload of an unknown type".to_owned()
        };
        Panicked { message }
    }

    /// The panic message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Wraps a stage so that a panic in an attempt is caught and returned as
/// [`Failure::Panicked`]; the stage's own errors become [`Failure::Call`].
///
/// This is the innermost policy and the one that lifts a stage's `Result<_, E>` into
/// `Result<_, Failure<E>>`, which the other wrappers then extend. A caught panic counts
/// as one failed (retryable) attempt of one item; rebuilding the stage's state
/// ([`Stage::restart`]) is the supervisor's job, not this wrapper's.
///
/// Both building the attempt's future and polling it are guarded. With
/// `panic = "abort"` nothing can be caught and a panic ends the process.
///
/// # Examples
///
/// ```
/// use pipeline_core::policy::{CatchPanic, Failure};
/// use pipeline_core::prelude::*;
///
/// struct Picky;
/// impl Stage for Picky {
///     type In = u32;
///     type Output = u32;
///     type Shape = Map;
///     type Error = std::convert::Infallible;
///     async fn call(&self, n: u32, _cx: &Context) -> Result<u32, Self::Error> {
///         assert!(n != 13, "unlucky {n}");
///         Ok(n)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # std::panic::set_hook(Box::new(|_| {}));
/// let stage = CatchPanic::new(Picky);
/// let cx = Context::new("picky");
/// let Err(Failure::Panicked(p)) = stage.call(13, &cx).await else { panic!() };
/// assert_eq!(p.message(), "unlucky 13");
/// assert_eq!(stage.call(7, &cx).await.ok(), Some(7));
/// # }
/// ```
pub struct CatchPanic<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S: Stage> CatchPanic<S> {
    /// Catches the panics of `inner`.
    pub fn new(inner: S) -> Self {
        let counters = Counters::for_stage(&inner);
        CatchPanic { inner, counters }
    }
}

impl<S> CatchPanic<S> {
    /// Counts panics into `counters` (shared with the stage's other policies).
    #[must_use]
    pub fn with_counters(mut self, counters: Arc<Counters>) -> Self {
        self.counters = counters;
        self
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

    /// Runs the attempt `make` builds, turning a panic (while building or polling) into
    /// a [`Panicked`] error. Combinators, not an `async fn`, so the attempt is stored once.
    fn guard<F>(
        &self,
        make: impl FnOnce() -> F,
        cx: &Context,
    ) -> impl Future<Output = Result<S::Output, Failure<S::Error>>>
    where
        S: Stage,
        F: Future<Output = Result<S::Output, S::Error>>,
    {
        // A hand-written `call` may panic before returning its future: guard that too.
        match std::panic::catch_unwind(AssertUnwindSafe(make)) {
            Ok(attempt) => Either::Left(AssertUnwindSafe(attempt).catch_unwind().map(
                move |caught| match caught {
                    Ok(result) => result.map_err(Failure::Call),
                    Err(payload) => Err(self.caught(&*payload, cx).into()),
                },
            )),
            Err(payload) => {
                Either::Right(std::future::ready(Err(self.caught(&*payload, cx).into())))
            }
        }
    }

    pub(crate) fn caught(&self, payload: &(dyn Any + Send), cx: &Context) -> Panicked {
        let panicked = Panicked::from_payload(payload);
        self.counters.record(Event::Panic);
        tracing::warn!(
            stage = cx.stage(),
            attempt = cx.attempt(),
            message = panicked.message(),
            "stage panicked"
        );
        panicked
    }
}

impl<S: Stage> Stage for CatchPanic<S> {
    type In = S::In;
    type Output = S::Output;
    type Shape = S::Shape;
    type Error = Failure<S::Error>;

    // Forwarded: dead letters of the wrapped stage still show the item.
    const DEAD_LETTER_ITEM: Option<fn(&S::In) -> Option<serde_json::Value>> = S::DEAD_LETTER_ITEM;

    const BORROWS: bool = S::BORROWS;

    fn call(
        &self,
        item: S::In,
        cx: &Context,
    ) -> impl Future<Output = Result<S::Output, Failure<S::Error>>> + Send {
        self.guard(move || self.inner.call(item, cx), cx)
    }

    fn call_ref<'a>(
        &'a self,
        item: &'a S::In,
        cx: &'a Context,
    ) -> impl Future<Output = Result<S::Output, Failure<S::Error>>> + Send + 'a
    where
        S::In: Clone + Sync,
    {
        self.guard(move || self.inner.call_ref(item, cx), cx)
    }

    /// The stage's own verdict for its errors; [`Failure::BreakerOpen`] (fail-fast) is
    /// permanent; timeouts and panics are retryable.
    fn is_permanent(&self, error: &Failure<S::Error>) -> bool {
        match error {
            Failure::Call(e) => self.inner.is_permanent(e),
            Failure::BreakerOpen(_) => true,
            Failure::Panicked(_) | Failure::Elapsed(_) => false,
        }
    }

    fn restart(&self) -> Result<(), crate::error::BoxError> {
        self.inner.restart()
    }

    fn options(&self) -> StageOptions {
        self.inner.options()
    }
}

impl<S: fmt::Debug> fmt::Debug for CatchPanic<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatchPanic")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Map;
    use std::future::Future;

    /// Panics (with various payloads) on some items, in the future or before it.
    struct Bomb;
    impl Stage for Bomb {
        type In = u32;
        type Output = u32;
        type Shape = Map;
        type Error = std::io::Error;
        #[allow(clippy::manual_async_fn)]
        fn call(
            &self,
            n: u32,
            _cx: &Context,
        ) -> impl Future<Output = Result<u32, std::io::Error>> + Send {
            if n == 1 {
                panic!("eager {n}");
            }
            async move {
                tokio::task::yield_now().await;
                match n {
                    2 => panic!("lazy {n}"),
                    3 => std::panic::panic_any(42u8),
                    4 => Err(std::io::Error::other("plain error")),
                    _ => Ok(n),
                }
            }
        }
        fn is_permanent(&self, e: &std::io::Error) -> bool {
            e.to_string() == "plain error"
        }
    }

    #[tokio::test(start_paused = true)]
    async fn panics_become_errors_and_the_runtime_survives() {
        let stage = CatchPanic::new(Bomb);
        let cx = Context::new("bomb");
        let msg = |r: Result<u32, Failure<std::io::Error>>| match r {
            Err(Failure::Panicked(p)) => p.message().to_owned(),
            other => format!("not a panic: {other:?}"),
        };
        assert_eq!(msg(stage.call(1, &cx).await), "eager 1");
        assert_eq!(msg(stage.call(2, &cx).await), "lazy 2");
        assert_eq!(
            msg(stage.call(3, &cx).await),
            "panic payload of an unknown type"
        );
        assert!(matches!(stage.call(4, &cx).await, Err(Failure::Call(_))));
        assert_eq!(stage.call(5, &cx).await.ok(), Some(5));
        assert_eq!(stage.counters().panics(), 3);
        // Another task on the same runtime is unaffected.
        let other = tokio::spawn(async { 7 }).await.ok();
        assert_eq!(other, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn classification_of_failures() {
        let stage = CatchPanic::new(Bomb);
        assert!(stage.is_permanent(&Failure::Call(std::io::Error::other("plain error"))));
        assert!(!stage.is_permanent(&Failure::Call(std::io::Error::other("other"))));
        assert!(!stage.is_permanent(&Panicked::new("x").into()));
        assert!(
            !stage.is_permanent(&crate::policy::Elapsed::new(std::time::Duration::ZERO).into())
        );
    }
}
