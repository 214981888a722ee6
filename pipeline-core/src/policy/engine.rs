//! [`Policies`]: the policy engine, the one seam between a stage task and the policies of
//! its stage.
//!
//! Every call of a stage goes through [`Policies::attempt`]. With no policy configured it
//! is the stage's own future under panic capture (the plain fast path); otherwise one
//! `async fn` whose first attempt, when it is admitted at once and succeeds, costs a
//! breaker load, a rate token from a local chunk and nothing else: the deadline is armed
//! only if the call returns `Pending`, the retry state (schedule, budget withdrawal) is
//! built only after a failure, and everything after a failure runs in a boxed slow path.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskCx, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::context::Context;
use crate::error::chain;
use crate::options::{BreakerMode, OnError, RetryOptions, RetryWhen, StageOptions};
use crate::policy::backoff::{Backoff, Schedule};
use crate::policy::breaker::{BreakerOpen, CircuitBreaker, Permit};
use crate::policy::budget::RetryBudget;
use crate::policy::catch_panic::Panicked;
use crate::policy::counters::{Event, PolicyCounters};
use crate::policy::failure::Failure;
use crate::policy::rate::RateLimiter;
use crate::policy::timeout::Elapsed;
use crate::stage::CloneFn;
use crate::stage::Stage;
use crate::supervise::{Supervisor, Verdict};

/// What one item's call through [`Policies::attempt`] came to.
///
/// Kept small (it is returned for every item): the result, and in one box, allocated
/// only for items that failed, were retried or panicked, everything else.
#[derive(Debug)]
#[non_exhaustive]
pub struct CallOutcome<T, E, I> {
    /// The last attempt's result.
    pub result: Result<T, E>,
    rare: Option<Box<Rare<I>>>,
}

/// What only items that failed, were retried or panicked carry.
#[derive(Debug)]
struct Rare<I> {
    attempts: u32,
    probes: u32,
    panics: u32,
    restarts: u32,
    first_failure: Option<Instant>,
    stop: Option<String>,
    input: Option<I>,
}

/// The outcome type of stage `S`.
pub(crate) type Outcome<S> =
    CallOutcome<<S as Stage>::Output, Failure<<S as Stage>::Error>, <S as Stage>::In>;

impl<T, E, I> CallOutcome<T, E, I> {
    #[inline(always)]
    fn ok(output: T) -> Self {
        CallOutcome {
            result: Ok(output),
            rare: None,
        }
    }

    /// Attempts made, the first included (at least 1). A failed half-open probe of a
    /// waiting breaker is not an attempt (see [`probes`](Self::probes)).
    pub fn attempts(&self) -> u32 {
        self.rare.as_ref().map_or(1, |r| r.attempts)
    }

    /// Calls made as half-open probes that failed: each sent the item back to wait for
    /// the breaker and spent none of its attempts.
    pub fn probes(&self) -> u32 {
        self.rare.as_ref().map_or(0, |r| r.probes)
    }

    /// When the first call failed, if one did (read from tokio's clock on failure only).
    pub fn first_failure(&self) -> Option<Instant> {
        self.rare.as_ref().and_then(|r| r.first_failure)
    }

    /// How many of the item's calls panicked.
    pub fn panics(&self) -> u32 {
        self.rare.as_ref().map_or(0, |r| r.panics)
    }

    /// The input, given back when the item failed and the engine still held it (a stage
    /// that borrows its input, or one that retries or shows its items in dead letters).
    pub fn input(&self) -> Option<&I> {
        self.rare.as_ref().and_then(|r| r.input.as_ref())
    }

    /// Whether any of the item's calls panicked.
    #[inline(always)]
    pub(crate) fn panicked(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.panics > 0)
    }

    /// Why the pipeline must stop because of this item (the restart limit was exceeded,
    /// or a restart failed), if it must.
    pub(crate) fn stop(&self) -> Option<&str> {
        self.rare.as_ref().and_then(|r| r.stop.as_deref())
    }

    /// State rebuilds ([`Stage::restart`]) made after this item's panics.
    pub(crate) fn restarts(&self) -> u32 {
        self.rare.as_ref().map_or(0, |r| r.restarts)
    }

    /// The output of a call that succeeded at its first attempt with nothing else to
    /// report (the common case), else the outcome back: the runner's fast path reads no
    /// tries and builds no [`Tried`] for it.
    #[inline(always)]
    pub(crate) fn into_ok(self) -> Result<T, Self> {
        match self {
            CallOutcome {
                result: Ok(output),
                rare: None,
            } => Ok(output),
            other => Err(other),
        }
    }

    /// The result, what the dead letter needs of the tries, and the input.
    #[inline(always)]
    pub(crate) fn split(self) -> (Result<T, E>, Tried, Option<I>) {
        match self.rare {
            None => (self.result, Tried::once(), None),
            Some(rare) => {
                let tried = Tried {
                    attempts: rare.attempts,
                    probes: rare.probes,
                    first_failure: rare.first_failure,
                };
                (self.result, tried, rare.input)
            }
        }
    }
}

/// An item's tries, for its dead letter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tried {
    pub(crate) attempts: u32,
    pub(crate) probes: u32,
    pub(crate) first_failure: Option<Instant>,
}

impl Tried {
    #[inline(always)]
    fn once() -> Self {
        Tried {
            attempts: 1,
            probes: 0,
            first_failure: None,
        }
    }
}

/// A stage with every policy its options declare: the policy engine.
///
/// The order is fixed, outermost first:
///
/// ```text
/// on_error( retry + budget( breaker( rate_limit( timeout( catch_panic( stage ))))))
/// ```
///
/// (`on_error` is the runtime's; a future `fallback` goes between it and the retry.) So
/// waiting for a breaker permit or a rate token costs no attempt and starts no timeout; a
/// timeout, a panic or an error fails one attempt, which the breaker records and the retry
/// may repeat. In [`BreakerMode::Wait`] a call made as a half-open probe that fails is not
/// an attempt: the item goes back to waiting and spends nothing
/// ([`CallOutcome::probes`] counts such calls).
///
/// # After a panic
///
/// A panicking call is one failed attempt. The stage's state is rebuilt
/// ([`Stage::restart`]) after every panicking call, so the retry that follows runs on
/// fresh state; the restart intensity of [`RestartOptions`](crate::options::RestartOptions)
/// counts once per item however many of its attempts panicked, and its `backoff` is
/// waited before that item's first rebuild. Exceeding the limit, or a restart that fails
/// (an error or a panic), ends the item's retries and stops the pipeline naming the
/// stage.
///
/// # Inputs
///
/// A stage that borrows its input ([`Stage::BORROWS`]) lends the one item to every call.
/// A stage that takes it by value gets a copy per call that may be followed by another,
/// made with [`Stage::CLONE_IN`] (the `#[stage]` macro provides it with `retry`, and the
/// builder's [`retry`](crate::Builder::retry) with its `Clone` bound) or
/// [`with_input_clone`](Self::with_input_clone); without one, retries are refused at
/// build time with an error event, and each item gets one attempt.
///
/// # Cost
///
/// Without a timeout, retry, breaker or rate limit the call is the stage's own future
/// under `catch_unwind`. With them, a call admitted at once that succeeds at once reads
/// no clock and arms no timer: a closed breaker with a clean window costs one atomic load
/// (successes are tallied and folded into its window once per batch, or before the next
/// failure is recorded); rate tokens come in chunks of at most the burst. Meant to be
/// driven from one task (a stage task is); calls from several threads at once are safe,
/// but the tally and the token chunk are then approximate.
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
///     const CLONE_IN: Option<fn(&u32) -> u32> = Some(u32::clone);
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
/// let outcome = stage.attempt(1, &Context::new("hang")).await;
/// assert!(matches!(outcome.result, Err(Failure::Elapsed(_))));
/// assert_eq!(outcome.attempts(), 3);
/// let counts = stage.counters().snapshot();
/// assert_eq!((counts.timeouts, counts.retries), (3, 2));
/// # }
/// ```
pub struct Policies<S: Stage> {
    stage: S,
    counters: Arc<PolicyCounters>,
    timeout: Option<Duration>,
    /// Attempts configured; [`attempts`](Self::attempts) is what can be honoured.
    wanted: u32,
    backoff: Backoff,
    budget: Option<Arc<RetryBudget>>,
    retry_when: Option<RetryWhen>,
    clone_in: Option<CloneFn<S::In>>,
    /// Keep the input for the dead letter (the stage shows its items, `on_error` is
    /// `dead_letter`).
    keep: bool,
    breaker: Option<Arc<CircuitBreaker>>,
    mode: BreakerMode,
    /// Time calls (slow-call tracking).
    timed: bool,
    limiter: Option<Arc<RateLimiter>>,
    /// Tokens taken from the limiter and not spent yet.
    tokens: AtomicU32,
    /// Successes of calls admitted while the breaker was clean, not yet folded into its
    /// window: their epoch and count. Relaxed loads and stores: one task drives this.
    tally_epoch: AtomicU64,
    tally_count: AtomicU64,
    supervisor: Mutex<Supervisor>,
    /// Nothing to do but catch panics.
    plain: bool,
    /// Whether the first call of an item needs a copy of its input (another call may
    /// follow, or the dead letter shows it).
    copy_first: bool,
}

impl<S: Stage> Policies<S> {
    /// The engine for `stage` with the policies `opts` declare; settings `opts` leaves
    /// unset come from [`Stage::options`]. Counters and metrics are named after the name
    /// in `opts` (or the stage's own, or its type's).
    pub fn new(stage: S, opts: &StageOptions) -> Self {
        Policies::build(stage, opts, S::CLONE_IN)
    }

    /// [`new`](Self::new) with the runtime's copy of the input, if it has one.
    pub(crate) fn build(stage: S, opts: &StageOptions, clone: Option<CloneFn<S::In>>) -> Self {
        let opts = opts.clone().or(stage.options());
        let name: Arc<str> = match &opts.name {
            Some(name) => Arc::from(&**name),
            None => Arc::from(crate::stage::short_type_name::<S>()),
        };
        let counters = Arc::new(PolicyCounters::new(Arc::clone(&name)));
        let retry = opts.retry.clone().unwrap_or_else(|| RetryOptions::new(1));
        let breaker = opts.breaker.as_ref().map(|b| {
            Arc::new(CircuitBreaker::new(Arc::clone(&name), b).with_counters(Arc::clone(&counters)))
        });
        let keep = S::DEAD_LETTER_ITEM.is_some()
            && opts.on_error.unwrap_or_default() == OnError::DeadLetter;
        let mut engine = Policies {
            stage,
            counters,
            timeout: opts.timeout,
            wanted: retry.attempts.max(1),
            backoff: Backoff::from_options(&retry),
            budget: retry.budget.map(|share| {
                Arc::new(RetryBudget::new(share).with_min_per_sec(retry.budget_floor))
            }),
            retry_when: retry.when.clone(),
            clone_in: clone.or(S::CLONE_IN),
            keep,
            mode: opts.breaker.as_ref().map(|b| b.mode).unwrap_or_default(),
            timed: opts.breaker.as_ref().is_some_and(|b| b.slow_call.is_some()),
            breaker,
            limiter: opts.rate.map(|r| Arc::new(RateLimiter::new(r))),
            tokens: AtomicU32::new(0),
            tally_epoch: AtomicU64::new(u64::MAX),
            tally_count: AtomicU64::new(0),
            supervisor: Mutex::new(Supervisor::new(opts.restart)),
            plain: false,
            copy_first: false,
        };
        if engine.wanted > 1 && !engine.can_copy() {
            tracing::error!(
                stage = engine.counters.stage(),
                attempts = engine.wanted,
                "retry is configured but the stage's input cannot be copied for a second \
                 attempt (it is not `Clone`, or the stage gives no `Stage::CLONE_IN`); each \
                 item gets one attempt"
            );
        }
        if engine.keep && !S::BORROWS && engine.clone_in.is_none() {
            tracing::error!(
                stage = engine.counters.stage(),
                "the stage shows its items in dead letters but its input cannot be copied \
                 (no `Stage::CLONE_IN`); dead letters will not carry the item"
            );
        }
        engine.replan();
        engine
    }

    /// Whether a second call of one item is possible.
    fn can_copy(&self) -> bool {
        S::BORROWS || self.clone_in.is_some()
    }

    fn replan(&mut self) {
        self.plain = self.timeout.is_none()
            && self.breaker.is_none()
            && self.limiter.is_none()
            && self.attempts() <= 1
            && !(self.keep && S::BORROWS);
        let again = !self.plain && (1 < self.attempts() || self.waits());
        self.copy_first = self.clone_in.is_some() && (again || self.keep);
    }

    /// Guards the calls with an existing (possibly shared) breaker, in the mode of its
    /// options, instead of the one the options declared.
    #[must_use]
    pub fn with_breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.mode = breaker.options().mode;
        self.timed = breaker.options().slow_call.is_some();
        self.breaker = Some(breaker);
        self.replan();
        self
    }

    /// Limits the calls with an existing (possibly shared) limiter.
    #[must_use]
    pub fn with_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self.tokens.store(0, Ordering::Relaxed);
        self.replan();
        self
    }

    /// Replaces the retry budget (share one between several stages, or remove it).
    #[must_use]
    pub fn with_budget(mut self, budget: Option<Arc<RetryBudget>>) -> Self {
        self.budget = budget;
        self
    }

    /// Replaces the delay schedule between attempts.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How to copy an input for a second call, for a by-value stage that gives no
    /// [`Stage::CLONE_IN`].
    #[must_use]
    pub fn with_input_clone(mut self, clone: fn(&S::In) -> S::In) -> Self {
        self.clone_in = Some(clone);
        self.replan();
        self
    }

    /// Attempts per item, the first included, as they can be honoured (1 when the input
    /// cannot be copied).
    pub fn attempts(&self) -> u32 {
        if self.can_copy() { self.wanted } else { 1 }
    }

    /// The deadline of one attempt, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The event counts of every policy (for the runtime's `stats()`).
    pub fn counters(&self) -> &Arc<PolicyCounters> {
        &self.counters
    }

    /// The circuit breaker, if one is configured (its state, for `stats()` and health).
    pub fn breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.breaker.as_ref()
    }

    /// The rate limiter, if one is configured.
    pub fn limiter(&self) -> Option<&Arc<RateLimiter>> {
        self.limiter.as_ref()
    }

    /// The user's stage.
    pub fn get_ref(&self) -> &S {
        &self.stage
    }

    /// Unwraps the user's stage.
    pub fn into_inner(self) -> S {
        self.stage
    }

    /// Runs one item through every policy: the only way the runtime calls a stage.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the call in progress (or the wait before the next one);
    /// nothing is recorded for it.
    #[inline(always)]
    pub fn attempt<'a>(
        &'a self,
        item: S::In,
        cx: &'a Context,
    ) -> impl Future<Output = Outcome<S>> + Send + 'a {
        let mut admit = None;
        if !self.plain {
            if let Some(budget) = &self.budget {
                budget.deposit();
            }
            // A borrowing stage's calls hold a reference to the item, which must then
            // live in the future: the general path, boxed (one allocation per item).
            if S::BORROWS {
                return Attempt::Boxed {
                    fut: Box::pin(self.general(Some(item), None, cx)),
                };
            }
            match self.admit_at_once() {
                Some(fast) => admit = fast.epoch,
                None => {
                    return Attempt::Boxed {
                        fut: Box::pin(self.general(Some(item), None, cx)),
                    };
                }
            }
        }
        let kept = if self.copy_first {
            self.clone_in.map(|clone| clone(&item))
        } else {
            None
        };
        // A hand-written `call` may panic before it returns its future.
        match catch_unwind(AssertUnwindSafe(|| self.stage.call(item, cx))) {
            Ok(call) => Attempt::Call {
                call,
                kept,
                admit,
                timer: LazyTimer(None),
                engine: self,
                cx,
            },
            Err(payload) => {
                let failure = Failure::Panicked(self.caught(&*payload, cx));
                drop(payload);
                Attempt::Boxed {
                    fut: self.after_first(kept, failure, admit, cx),
                }
            }
        }
    }

    /// [`attempt`](Self::attempt), for its result only.
    ///
    /// # Errors
    ///
    /// The last attempt's failure.
    pub async fn call(&self, item: S::In, cx: &Context) -> Result<S::Output, Failure<S::Error>> {
        self.attempt(item, cx).await.result
    }

    /// Folds the breaker's tally of successes into its window. The runtime calls it once
    /// per batch.
    #[inline]
    pub(crate) fn end_batch(&self) {
        if let Some(breaker) = &self.breaker {
            let n = self.tally_count.load(Ordering::Relaxed);
            if n > 0 {
                self.tally_count.store(0, Ordering::Relaxed);
                breaker.fold_successes(self.tally_epoch.load(Ordering::Relaxed), n);
            }
        }
    }

    // ---- the plain path ----

    // ---- after the first call ----

    /// The rest of an item's calls after its first one failed (or panicked): boxed, off
    /// the hot path.
    fn after_first<'a>(
        &'a self,
        kept: Option<S::In>,
        failure: Failure<S::Error>,
        epoch: Option<u64>,
        cx: &'a Context,
    ) -> Pin<Box<dyn Future<Output = Outcome<S>> + Send + 'a>> {
        if self.plain {
            return Box::pin(self.plain_failed(kept, failure, cx));
        }
        let admit = Admit {
            epoch,
            permit: None,
            started: None,
        };
        Box::pin(self.general(kept, Some((failure, admit)), cx))
    }

    /// A plain stage's failed call: a panic rebuilds the stage first.
    async fn plain_failed(
        &self,
        kept: Option<S::In>,
        failure: Failure<S::Error>,
        _cx: &Context,
    ) -> Outcome<S> {
        let mut meta = Meta {
            attempts: 1,
            first_failure: Some(Instant::now()),
            ..Meta::default()
        };
        if failure.is_panic() {
            meta.panics = 1;
            let mut counted = false;
            self.recover(&mut counted, &mut meta).await;
        }
        self.give_up(meta, failure, kept)
    }

    /// A copy of `item` for a later call or the dead letter, when one may be needed.
    #[inline]
    fn copy(&self, item: &S::In, again: bool) -> Option<S::In> {
        match self.clone_in {
            Some(clone) if again || self.keep => Some(clone(item)),
            _ => None,
        }
    }

    /// Whether a failed call may be followed by another one that is not an attempt (a
    /// waiting breaker's probe).
    fn waits(&self) -> bool {
        self.breaker.is_some() && self.mode == BreakerMode::Wait
    }

    /// Admission without waiting: a clean closed breaker (one load) and a rate token at
    /// hand. `None` when either would need more.
    #[inline]
    fn admit_at_once(&self) -> Option<Admit<'_>> {
        let epoch = match &self.breaker {
            None => None,
            Some(breaker) => Some(breaker.clean_epoch()?),
        };
        if self.limiter.is_some() && !self.take_token() {
            return None;
        }
        Some(Admit {
            epoch,
            permit: None,
            started: None,
        })
    }

    /// Spends one rate token, taking a new chunk from the limiter when none is left.
    #[inline]
    fn take_token(&self) -> bool {
        let left = self.tokens.load(Ordering::Relaxed);
        if left > 0 {
            self.tokens.store(left - 1, Ordering::Relaxed);
            return true;
        }
        let Some(limiter) = &self.limiter else {
            return true;
        };
        match limiter.try_acquire_many(limiter.burst()) {
            Ok(taken) => {
                self.tokens.store(taken - 1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Admission that may wait: for a breaker permit (wait mode), then a rate token.
    ///
    /// # Errors
    ///
    /// [`BreakerOpen`] in fail-fast mode.
    async fn admit(&self, cx: &Context) -> Result<Admit<'_>, BreakerOpen> {
        let mut admit = Admit {
            epoch: None,
            permit: None,
            started: None,
        };
        if let Some(breaker) = &self.breaker {
            match breaker.clean_epoch() {
                Some(epoch) => admit.epoch = Some(epoch),
                None => {
                    let permit = match breaker.try_acquire() {
                        Ok(permit) => permit,
                        Err(open) => match self.mode {
                            BreakerMode::FailFast => {
                                self.counters.record(Event::BreakerRejection);
                                tracing::debug!(stage = cx.stage(), "breaker open: call refused");
                                return Err(open);
                            }
                            BreakerMode::Wait => {
                                self.counters.record(Event::BreakerWait);
                                tracing::debug!(
                                    stage = cx.stage(),
                                    "breaker open: waiting for a permit"
                                );
                                breaker.acquire().await
                            }
                        },
                    };
                    admit.permit = Some(permit);
                }
            }
            if self.timed {
                admit.started = Some(Instant::now());
            }
        }
        if self.limiter.is_some() && !self.take_token() {
            self.counters.record(Event::RateWait);
            tracing::trace!(stage = cx.stage(), "waiting for rate limit");
            if let Some(limiter) = &self.limiter {
                limiter.until_ready().await;
            }
        }
        Ok(admit)
    }

    /// A success of a call the breaker admitted at once (`epoch`), kept in the tally.
    #[inline]
    fn succeeded(&self, epoch: Option<u64>) {
        let Some(epoch) = epoch else {
            return;
        };
        if self.tally_epoch.load(Ordering::Relaxed) == epoch {
            let n = self.tally_count.load(Ordering::Relaxed);
            self.tally_count.store(n + 1, Ordering::Relaxed);
        } else {
            // A new epoch: what was tallied before belongs to a window that is gone.
            self.tally_epoch.store(epoch, Ordering::Relaxed);
            self.tally_count.store(1, Ordering::Relaxed);
        }
    }

    /// Tells the breaker how an admitted call went.
    fn resolve(&self, admit: Admit<'_>, ok: bool, permanent: bool) {
        let Some(breaker) = &self.breaker else {
            return;
        };
        let elapsed = admit.started.map_or(Duration::ZERO, |t| t.elapsed());
        if let Some(epoch) = admit.epoch {
            if ok {
                self.succeeded(Some(epoch));
            } else if !permanent {
                breaker.fail_after(epoch, self.take_tally(epoch), elapsed);
            }
            return;
        }
        if let Some(permit) = admit.permit {
            if !ok && permanent {
                permit.ignore();
                return;
            }
            // Successes tallied before this call come first.
            self.end_batch();
            if ok {
                permit.success(elapsed);
            } else {
                permit.failure(elapsed);
            }
        }
    }

    /// Takes the tally of `epoch` (zero for another epoch).
    fn take_tally(&self, epoch: u64) -> u64 {
        let n = self.tally_count.load(Ordering::Relaxed);
        self.tally_count.store(0, Ordering::Relaxed);
        if self.tally_epoch.load(Ordering::Relaxed) == epoch {
            n
        } else {
            0
        }
    }

    /// Polls one call under panic capture and the deadline (the call's future is stored
    /// once, in the hand-written [`Guarded`]).
    #[inline]
    async fn run_call<F>(
        &self,
        call: std::thread::Result<F>,
        cx: &Context,
    ) -> Result<S::Output, Failure<S::Error>>
    where
        F: Future<Output = Result<S::Output, S::Error>>,
    {
        let caught = match call {
            Ok(call) => Guarded::new(call, self.timeout).await,
            Err(payload) => Caught::Panicked(payload),
        };
        self.settle(caught, cx)
    }

    /// A guarded call's end as a result.
    #[inline]
    fn settle(
        &self,
        caught: Caught<Result<S::Output, S::Error>>,
        cx: &Context,
    ) -> Result<S::Output, Failure<S::Error>> {
        match caught {
            Caught::Done(result) => result.map_err(Failure::Call),
            Caught::Panicked(payload) => Err(Failure::Panicked(self.caught(&*payload, cx))),
            Caught::Elapsed(after) => Err(Failure::Elapsed(self.elapsed(after, cx))),
        }
    }

    /// Every attempt after a failure, or after an admission that had to wait. `held` is
    /// the input (or its copy) while another call of it is possible; `first` a failed
    /// call already made.
    async fn general(
        &self,
        mut held: Option<S::In>,
        mut first: Option<(Failure<S::Error>, Admit<'_>)>,
        cx: &Context,
    ) -> Outcome<S> {
        let mut meta = Meta::default();
        let mut schedule: Option<Schedule> = None;
        let mut counted = false;
        let max = self.attempts();
        loop {
            let (result, admit) = match first.take() {
                Some((failure, admit)) => (Err(failure), admit),
                None => {
                    let admit = match self.admit(cx).await {
                        Ok(admit) => admit,
                        Err(open) => {
                            meta.attempts += 1;
                            meta.first_failure.get_or_insert_with(Instant::now);
                            return self.give_up(meta, Failure::BreakerOpen(open), held);
                        }
                    };
                    let n = meta.attempts + 1;
                    let numbered;
                    let cx_n = if n == 1 {
                        cx
                    } else {
                        numbered = cx.with_attempt(n);
                        &numbered
                    };
                    let probe = admit.permit.as_ref().is_some_and(Permit::is_probe);
                    let result = if S::BORROWS {
                        let call = match &held {
                            Some(item) => {
                                catch_unwind(AssertUnwindSafe(|| self.stage.call_ref(item, cx_n)))
                                    .map(Some)
                            }
                            None => Ok(None),
                        };
                        match call {
                            Ok(Some(call)) => self.run_call(Ok(call), cx_n).await,
                            Ok(None) => Err(gone()),
                            Err(payload) => Err(Failure::Panicked(self.caught(&*payload, cx_n))),
                        }
                    } else {
                        let again = n < max || probe;
                        let input = match (self.copy_of(&held, again), held.take()) {
                            (Some(copy), original) => {
                                held = original;
                                Some(copy)
                            }
                            (None, original) => original,
                        };
                        match input {
                            Some(input) => {
                                let call =
                                    catch_unwind(AssertUnwindSafe(|| self.stage.call(input, cx_n)));
                                self.run_call(call, cx_n).await
                            }
                            None => Err(gone()),
                        }
                    };
                    (result, admit)
                }
            };
            let probe = admit.permit.as_ref().is_some_and(Permit::is_probe);
            let failure = match result {
                Ok(output) => {
                    self.resolve(admit, true, false);
                    meta.attempts += 1;
                    return meta.into_outcome(Ok(output), None);
                }
                Err(failure) => failure,
            };
            let permanent = self.is_permanent(&failure);
            self.resolve(admit, false, permanent);
            meta.first_failure.get_or_insert_with(Instant::now);
            if failure.is_panic() {
                meta.panics += 1;
                self.recover(&mut counted, &mut meta).await;
            }
            let can_call = S::BORROWS || held.is_some();
            if probe && !permanent && meta.stop.is_none() && can_call {
                // A failed probe: back to waiting for the breaker, no attempt spent.
                meta.probes += 1;
                tracing::debug!(
                    stage = cx.stage(),
                    probes = meta.probes,
                    "probe failed; the item waits for the breaker again"
                );
                continue;
            }
            meta.attempts += 1;
            if permanent || meta.stop.is_some() || meta.attempts >= max || !can_call {
                return self.give_up(meta, failure, held);
            }
            // A custom schedule that ends stops the retries.
            let delay = schedule
                .get_or_insert_with(|| self.backoff.schedule())
                .next();
            let delay = delay.filter(|_| match &self.budget {
                Some(budget) if !budget.withdraw() => {
                    self.counters.record(Event::BudgetExhausted);
                    tracing::debug!(
                        stage = cx.stage(),
                        attempt = meta.attempts,
                        "retry budget exhausted"
                    );
                    false
                }
                _ => true,
            });
            let Some(delay) = delay else {
                return self.give_up(meta, failure, held);
            };
            self.counters.record(Event::Retry);
            tracing::debug!(
                stage = cx.stage(),
                attempt = meta.attempts,
                delay = ?delay,
                error = %chain(&failure),
                "retrying"
            );
            drop(failure);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }

    /// The item's last failure, after every policy inside `on_error` gave up on it.
    ///
    /// The slot of the fallback layer (the order becomes `on_error( fallback( retry +
    /// budget( breaker( rate( timeout( catch_panic( fn )))))))`): a fallback would be
    /// called here with the borrowed input (`held`, kept for it as for retries, one copy
    /// per item for a by-value stage) and the failure, and its output returned as the
    /// item's result. Every exit of a failed item that is not on the plain path goes
    /// through here; a configured fallback would make the engine leave the plain path
    /// (as any other policy does).
    #[inline]
    fn give_up(&self, meta: Meta, failure: Failure<S::Error>, held: Option<S::In>) -> Outcome<S> {
        meta.into_outcome(Err(failure), held)
    }

    /// A copy of the held input, if another call (or the dead letter) needs one.
    fn copy_of(&self, held: &Option<S::In>, again: bool) -> Option<S::In> {
        held.as_ref().and_then(|item| self.copy(item, again))
    }

    /// After a panicking call: the supervisor's verdict (once per item), then the rebuild
    /// of the stage's state.
    async fn recover(&self, counted: &mut bool, meta: &mut Meta) {
        let stage = self.counters.stage();
        if !*counted {
            *counted = true;
            let verdict = self
                .supervisor
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .on_panic(Instant::now());
            match verdict {
                Verdict::Escalate { restarts, within } => {
                    meta.stop = Some(format!(
                        "items panicked the stage {restarts} times within {within:?}; \
                         restart limit exceeded"
                    ));
                    return;
                }
                Verdict::Restart(after) => {
                    if !after.is_zero() {
                        tracing::warn!(stage, ?after, "waiting out the restart backoff");
                        tokio::time::sleep(after).await;
                    }
                }
            }
        }
        tracing::warn!(stage, "stage panicked; restarting");
        match catch_unwind(AssertUnwindSafe(|| self.stage.restart())) {
            Ok(Ok(())) => meta.restarts += 1,
            Ok(Err(error)) => meta.stop = Some(format!("restart failed: {}", chain(&*error))),
            Err(payload) => {
                let panic = Panicked::from_payload(&*payload);
                meta.stop = Some(format!("restart failed: panicked: {}", panic.message()));
            }
        }
    }

    /// Whether `failure` must not be retried (nor counted by the breaker). The stage's
    /// `is_permanent` and a `retry(when = ..)` predicate are user code: one that panics
    /// makes the failure permanent (the item goes to `on_error`), counted and traced.
    fn is_permanent(&self, failure: &Failure<S::Error>) -> bool {
        match catch_unwind(AssertUnwindSafe(|| self.classify(failure))) {
            Ok(permanent) => permanent,
            Err(payload) => {
                self.counters.record(Event::Panic);
                let message = crate::error::panic_message(&*payload);
                tracing::error!(
                    stage = self.counters.stage(),
                    message,
                    "retry predicate panicked; the error counts as permanent"
                );
                true
            }
        }
    }

    fn classify(&self, failure: &Failure<S::Error>) -> bool {
        match failure {
            Failure::Call(error) => {
                self.stage.is_permanent(error)
                    || crate::policy::permanent::marked_permanent(error)
                    || self
                        .retry_when
                        .as_ref()
                        .is_some_and(|when| !when.accepts(error))
            }
            Failure::BreakerOpen(_) => true,
            Failure::Panicked(_) | Failure::Elapsed(_) => false,
        }
    }

    fn caught(&self, payload: &(dyn Any + Send), cx: &Context) -> Panicked {
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

    fn elapsed(&self, after: Duration, cx: &Context) -> Elapsed {
        self.counters.record(Event::Timeout);
        tracing::debug!(
            stage = cx.stage(),
            attempt = cx.attempt(),
            after = ?after,
            "attempt timed out"
        );
        Elapsed::new(after)
    }
}

/// The failure of a call that cannot be made because the input is gone (never happens:
/// the engine keeps an input while another call of it is possible).
fn gone<E>() -> Failure<E> {
    Failure::Panicked(Panicked::new("the item's input is no longer held"))
}

/// One failed attempt, now.
fn failed<T, E, I>(error: E, input: Option<I>) -> CallOutcome<T, E, I> {
    CallOutcome {
        result: Err(error),
        rare: Some(Box::new(Rare {
            attempts: 1,
            probes: 0,
            panics: 0,
            restarts: 0,
            first_failure: Some(Instant::now()),
            stop: None,
            input,
        })),
    }
}

/// How a call was let through the breaker.
struct Admit<'a> {
    /// Admitted without a permit, while the breaker was clean in this epoch.
    epoch: Option<u64>,
    permit: Option<Permit<'a>>,
    started: Option<Instant>,
}

/// The counts of one item's calls.
#[derive(Default)]
struct Meta {
    attempts: u32,
    probes: u32,
    panics: u32,
    restarts: u32,
    first_failure: Option<Instant>,
    stop: Option<String>,
}

impl Meta {
    fn into_outcome<T, E, I>(self, result: Result<T, E>, input: Option<I>) -> CallOutcome<T, E, I> {
        let input = if result.is_err() { input } else { None };
        CallOutcome {
            result,
            rare: Some(Box::new(Rare {
                attempts: self.attempts.max(1),
                probes: self.probes,
                panics: self.panics,
                restarts: self.restarts,
                first_failure: self.first_failure,
                stop: self.stop,
                input,
            })),
        }
    }
}

/// How a guarded call ended.
enum Caught<T> {
    Done(T),
    Panicked(Box<dyn Any + Send>),
    Elapsed(Duration),
}

pin_project_lite::pin_project! {
    /// One call under panic capture, with a deadline armed only when the call is still
    /// pending after a poll (a ready call reads no clock). The deadline runs from the end
    /// of the first poll.
    struct Guarded<F> {
        #[pin]
        call: F,
        after: Option<Duration>,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F> Guarded<F> {
    #[inline]
    fn new(call: F, after: Option<Duration>) -> Self {
        Guarded {
            call,
            after,
            timer: None,
        }
    }
}

impl<F: Future> Future for Guarded<F> {
    type Output = Caught<F::Output>;

    #[inline]
    fn poll(self: Pin<&mut Self>, tcx: &mut TaskCx<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let call = this.call;
        match catch_unwind(AssertUnwindSafe(|| call.poll(tcx))) {
            Ok(Poll::Ready(output)) => return Poll::Ready(Caught::Done(output)),
            Ok(Poll::Pending) => {}
            Err(payload) => return Poll::Ready(Caught::Panicked(payload)),
        }
        let Some(after) = *this.after else {
            return Poll::Pending;
        };
        // Boxed: only pending calls pay for a timer, and the call's future stays small.
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        match timer.as_mut().poll(tcx) {
            Poll::Ready(()) => Poll::Ready(Caught::Elapsed(after)),
            Poll::Pending => Poll::Pending,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Policies::attempt`]. The first call of an item admitted at once
    /// is polled here by hand (the stage's own future under `catch_unwind`, a deadline
    /// armed only if it is pending, the outcome settled inline); everything else (a
    /// failure, a wait, a borrowing stage's calls) is the boxed general path.
    #[project = AttemptProj]
    enum Attempt<'a, S: Stage, F> {
        Call {
            #[pin]
            call: F,
            kept: Option<S::In>,
            // The breaker's epoch when it admitted the call without a permit.
            admit: Option<u64>,
            timer: LazyTimer,
            engine: &'a Policies<S>,
            cx: &'a Context,
        },
        Boxed {
            fut: Pin<Box<dyn Future<Output = Outcome<S>> + Send + 'a>>,
        },
    }
}

impl<'a, S, F> Future for Attempt<'a, S, F>
where
    S: Stage,
    F: Future<Output = Result<S::Output, S::Error>>,
{
    type Output = Outcome<S>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, tcx: &mut TaskCx<'_>) -> Poll<Outcome<S>> {
        let mut this = self;
        let (failure, kept, admit, engine, cx) = match this.as_mut().project() {
            AttemptProj::Boxed { fut } => return fut.as_mut().poll(tcx),
            AttemptProj::Call {
                call,
                kept,
                admit,
                timer,
                engine,
                cx,
            } => {
                let engine: &'a Policies<S> = engine;
                let failure = match catch_unwind(AssertUnwindSafe(|| call.poll(tcx))) {
                    Ok(Poll::Ready(Ok(output))) => {
                        // Admitted by a clean breaker: one more success in its tally.
                        if admit.is_some() {
                            engine.succeeded(*admit);
                        }
                        return Poll::Ready(CallOutcome::ok(output));
                    }
                    Ok(Poll::Ready(Err(error))) => Failure::Call(error),
                    Ok(Poll::Pending) => {
                        let Some(after) = engine.timeout else {
                            return Poll::Pending;
                        };
                        // Still pending: only now read the clock. Boxed, so only pending
                        // calls pay for a timer and the future stays small.
                        let sleep = timer
                            .0
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                        match sleep.as_mut().poll(tcx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(()) => Failure::Elapsed(engine.elapsed(after, cx)),
                        }
                    }
                    Err(payload) => Failure::Panicked(engine.caught(&*payload, cx)),
                };
                if engine.plain && !failure.is_panic() {
                    return Poll::Ready(failed(failure, kept.take()));
                }
                (failure, kept.take(), *admit, engine, *cx)
            }
        };
        Self::fail_over(this, tcx, engine.after_first(kept, failure, admit, cx))
    }
}

impl<'a, S, F> Attempt<'a, S, F>
where
    S: Stage,
    F: Future<Output = Result<S::Output, S::Error>>,
{
    /// The first call failed: the rest (the breaker's record, retries, a rebuild after a
    /// panic) runs boxed, after the call's future is dropped.
    #[cold]
    #[inline(never)]
    fn fail_over(
        mut self: Pin<&mut Self>,
        tcx: &mut TaskCx<'_>,
        fut: Pin<Box<dyn Future<Output = Outcome<S>> + Send + 'a>>,
    ) -> Poll<Outcome<S>> {
        self.set(Attempt::Boxed { fut });
        match self.project() {
            AttemptProj::Boxed { fut } => fut.as_mut().poll(tcx),
            AttemptProj::Call { .. } => Poll::Pending,
        }
    }
}

/// The deadline of a pending call, armed lazily; dropping an unarmed one is one test.
struct LazyTimer(Option<Pin<Box<tokio::time::Sleep>>>);

impl Drop for LazyTimer {
    #[inline]
    fn drop(&mut self) {
        if let Some(timer) = self.0.take() {
            drop_timer(timer);
        }
    }
}

#[cold]
#[inline(never)]
fn drop_timer(timer: Pin<Box<tokio::time::Sleep>>) {
    drop(timer);
}

impl<S: Stage + fmt::Debug> fmt::Debug for Policies<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policies")
            .field("stage", &self.stage)
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts())
            .field("breaker", &self.breaker)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
