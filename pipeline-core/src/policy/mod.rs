//! Policies around a stage's calls: timeout, retry with backoff and budget, circuit
//! breaker, rate limit, panic capture, all run by one engine, [`Policies`].
//!
//! # The fixed order
//!
//! Outermost first (DESIGN.md, "Policy order"):
//!
//! ```text
//! on_error( retry + budget( breaker( rate_limit( timeout( catch_panic( the fn ))))))
//! ```
//!
//! `on_error` is the runtime's; a `fallback` (given the borrowed input and the failure)
//! will sit between it and the retry. Waiting for a breaker permit or a rate token costs
//! no attempt and starts no timeout.
//!
//! # One engine, configured
//!
//! The policies are not wrappers that each implement [`Stage`](crate::Stage) (as tower's
//! layers each implement `Service`): composed that way, five nested futures of ~800 bytes
//! cost ~700 instructions per call and made a guarded pipeline run at 0.14x a plain one.
//! Instead [`Policies`] is the one seam between a stage task and its policies: its
//! [`attempt`](Policies::attempt) makes every call of the stage, with the plain fast path
//! inside it. The policies are configured by [`StageOptions`](crate::options::StageOptions)
//! (the `#[stage]` attribute and the builder's settings fill them in) and composed without
//! the macro by [`Policies::new`] and its `with_*` methods, which also share mechanisms
//! between stages:
//!
//! | policy | setting | mechanism | its event |
//! |---|---|---|---|
//! | retry | [`RetryOptions`](crate::options::RetryOptions) | [`Backoff`], [`RetryBudget`] | (returns the last error) |
//! | breaker | [`BreakerOptions`](crate::options::BreakerOptions) | [`CircuitBreaker`] | [`BreakerOpen`] (fail-fast only) |
//! | rate limit | [`RateOptions`](crate::options::RateOptions) | [`RateLimiter`] | none: it waits ([`Overloaded`] from `try_acquire`) |
//! | timeout | `timeout` | one `tokio::time::Sleep`, armed only for a pending call | [`Elapsed`] |
//! | panic capture | always on | `catch_unwind` around building and polling a call | [`Panicked`] |
//!
//! # Errors
//!
//! A call through the engine fails with one flat [`Failure<E>`]: the stage's own error,
//! or the event of a policy.
//!
//! # Permanent errors
//!
//! Every error is retryable unless [`Stage::is_permanent`](crate::Stage::is_permanent)
//! says otherwise, the error is a [`Fault::Permanent`] (built with `?` and [`Permanent`];
//! recognised for any stage, closures included), or a
//! [`RetryOptions::when`](crate::options::RetryOptions::when) predicate rejects it.
//! Permanent errors are not retried and not counted by the breaker. Among policy events,
//! [`BreakerOpen`] is permanent (fail-fast sends the item to `on_error` at once);
//! [`Elapsed`] and [`Panicked`] are retryable.
//!
//! # Panics and restarts
//!
//! A panic fails one attempt; the stage's state is rebuilt
//! ([`Stage::restart`](crate::Stage::restart)) after it, before the retry that follows; the restart
//! intensity counts once per item. See [`Policies`].
//!
//! # Observability
//!
//! The engine counts its events in the stage's [`PolicyCounters`] (only when an event
//! happens, never per item) and reports them to the `metrics` facade; each retry,
//! timeout, panic, exhausted budget and breaker transition also emits a `tracing` event
//! carrying the stage name.
//!
//! # Time
//!
//! Everything reads tokio's clock (`tokio::time::Instant`), so `tokio::time::pause` and
//! `#[tokio::test(start_paused = true)]` drive every policy.

mod backoff;
mod breaker;
mod budget;
mod catch_panic;
mod counters;
mod engine;
mod failure;
pub(crate) mod permanent;
mod rate;
mod sink;
mod timeout;

pub use backoff::{Backoff, Schedule};
pub use breaker::{BreakerOpen, BreakerState, CircuitBreaker, Permit};
pub use budget::RetryBudget;
pub use catch_panic::Panicked;
pub use counters::{PolicyCounters, PolicyCounts};
pub use engine::{CallOutcome, Policies};
pub(crate) use engine::{Outcome, Tried};
pub use failure::Failure;
pub use permanent::{Fault, Permanent};
pub use rate::{Overloaded, RateLimiter};
pub use sink::{RetryWrites, retry_writes};
pub use timeout::Elapsed;
