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
        Policies { stack, counters }
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
        self.stack.get_ref().get_ref().get_ref().get_ref().get_ref()
    }

    /// Unwraps the stage.
    pub fn into_inner(self) -> S {
        let retry = self.stack.into_inner();
        retry.into_inner().into_inner().into_inner().into_inner()
    }

    /// Runs one item through every attempt and reports how many it took (the runtime's
    /// entry point: dead letters need the count).
    pub async fn run(&self, item: S::In, cx: &Context) -> RetryOutcome<S::Output, Failure<S::Error>> {
        self.stack.run(item, cx).await
    }
}

impl<S: Stage> Stage for Policies<S> {
    type In = S::In;
    type Output = S::Output;
    type Shape = S::Shape;
    type Error = Failure<S::Error>;

    async fn call(&self, item: S::In, cx: &Context) -> Result<S::Output, Failure<S::Error>> {
        self.stack.run(item, cx).await.result
    }

    fn is_permanent(&self, error: &Failure<S::Error>) -> bool {
        self.stack.is_permanent(error)
    }

    fn restart(&self) {
        self.stack.restart();
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
