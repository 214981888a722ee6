//! Policies around a stage's calls: timeout, retry with backoff and budget, circuit
//! breaker, rate limit, panic capture. Each is a small wrapper implementing
//! [`Stage`](crate::Stage), composed by wrapping like tower layers.
//!
//! # The fixed order
//!
//! Outermost first (DESIGN.md, "Policy order"):
//!
//! ```text
//! on_error( retry + budget( breaker( rate_limit( timeout( catch_panic( the fn ))))))
//! ```
//!
//! [`Policies`] (or [`layer`]) builds the whole stack from a
//! [`StageOptions`](crate::options::StageOptions), each layer a pass-through when its
//! option is `None`; `on_error` is the runtime's. Waiting for a breaker permit or a rate
//! token costs no attempt and starts no timeout.
//!
//! | layer | wrapper | mechanism | its event |
//! |---|---|---|---|
//! | retry | [`Retry`] | [`Backoff`], [`RetryBudget`] | (returns the last error) |
//! | breaker | [`Breaker`] | [`CircuitBreaker`] | [`BreakerOpen`] (fail-fast only) |
//! | rate limit | [`RateLimit`] | [`RateLimiter`] | none: it waits ([`Overloaded`] from `try_acquire`) |
//! | timeout | [`Timeout`] | one `tokio::time::Sleep`, armed lazily | [`Elapsed`] |
//! | panic capture | [`CatchPanic`] | `catch_unwind` | [`Panicked`] |
//!
//! # Errors compose without nesting
//!
//! [`CatchPanic`] turns a stage's `E` into [`Failure<E>`]; the wrappers above it keep
//! their inner error type and only require that it can be built from their own event
//! (`From<Elapsed>`, `From<BreakerOpen>`), which `Failure<E>` can. So a full stack fails
//! with one flat `Failure<E>`, not a `Failure<Failure<...>>` per layer.
//!
//! # Permanent errors
//!
//! Every error is retryable unless [`Stage::is_permanent`](crate::Stage::is_permanent)
//! says otherwise; a stage can return [`Fault<E>`] (built with `?` and [`Permanent`]) to
//! decide per error. Permanent errors are not retried and not counted by the breaker.
//! Among policy events, [`BreakerOpen`] is permanent (fail-fast sends the item to
//! `on_error` at once); [`Elapsed`] and [`Panicked`] are retryable.
//!
//! # Observability
//!
//! Each wrapper counts its events in the stage's shared [`Counters`] (only when an event
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
mod failure;
mod permanent;
mod rate;
mod retry;
mod stack;
mod timeout;

pub use backoff::{Backoff, Schedule};
pub use breaker::{Breaker, BreakerOpen, BreakerState, CircuitBreaker, Permit};
pub use budget::RetryBudget;
pub use catch_panic::{CatchPanic, Panicked};
pub use counters::{Counters, CountersSnapshot};
pub use failure::Failure;
pub use permanent::{Fault, Permanent};
pub use rate::{Overloaded, RateLimit, RateLimiter};
pub use retry::{Retry, RetryOutcome};
pub use stack::{Policies, Stack, layer};
pub use timeout::{Elapsed, Timeout};
