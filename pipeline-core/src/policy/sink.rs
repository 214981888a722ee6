//! [`RetryWrites`]: retry with backoff and a waiting circuit breaker around a sink's
//! writes, per batch, so an outage of the sink's server backpressures the source instead
//! of dead-lettering every row.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::BoxError;
use crate::options::{BreakerOptions, RetryOptions};
use crate::policy::backoff::Backoff;
use crate::policy::breaker::{BreakerState, CircuitBreaker};
use crate::policy::counters::{Event, PolicyCounters};
use crate::sink::{Sink, WriteError};

/// Wraps `sink` so that a write that fails as a whole is retried (the same batch, with
/// `retry`'s backoff, up to `retry.attempts` attempts in all); add a waiting breaker with
/// [`with_breaker`](RetryWrites::with_breaker).
///
/// Only whole-batch failures ([`WriteError::all`]: a dropped connection, a server that
/// is down) are retried. A partial failure ([`WriteError::partial`]: rows the server
/// rejected) is final for those rows, which go to the dead letters at once. Each attempt
/// writes a copy of the batch, so the items must be `Clone` (one clone per item per
/// attempt).
///
/// With a breaker (its default mode waits), failures open it; while it is open the sink
/// waits for a permit instead of writing, so its input edge fills and the source waits
/// too: a long outage costs no dead letter. A failed half-open probe sends the batch back
/// to wait without spending an attempt. Waiting ends at the pipeline's shutdown deadline
/// like any other work (the batch is then `Abandoned`).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use pipeline_core::options::RetryOptions;
/// use pipeline_core::policy::retry_writes;
/// use pipeline_core::prelude::*;
/// use pipeline_core::sink::{Sink, WriteError};
///
/// /// A database that is down for its first two writes.
/// struct Flaky(AtomicU32);
/// impl Sink for Flaky {
///     type Item = u64;
///     async fn write(&mut self, items: &mut Vec<u64>) -> Result<(), WriteError> {
///         if self.0.fetch_add(1, Ordering::Relaxed) < 2 {
///             return Err(WriteError::all("connection refused"));
///         }
///         items.clear();
///         Ok(())
///     }
/// }
///
/// let mut retry = RetryOptions::new(5);
/// retry.backoff = Duration::from_millis(100);
/// let report = Pipeline::builder("db")
///     .source(source::iter(0..10u64))
///     .sink(retry_writes(Flaky(AtomicU32::new(0)), retry))
///     .run()
///     .await
///     .unwrap();
/// assert_eq!((report.delivered, report.dead_lettered), (10, 0));
/// # }
/// ```
pub fn retry_writes<K>(sink: K, retry: RetryOptions) -> RetryWrites<K>
where
    K: Sink,
    K::Item: Clone,
{
    let name: Arc<str> = Arc::from(sink.name());
    RetryWrites {
        backoff: Backoff::from_options(&retry),
        attempts: retry.attempts.max(1),
        breaker: None,
        counters: Arc::new(PolicyCounters::new(Arc::clone(&name))),
        sink,
        copy: Vec::new(),
    }
}

/// See [`retry_writes`].
pub struct RetryWrites<K: Sink> {
    sink: K,
    backoff: Backoff,
    attempts: u32,
    breaker: Option<Arc<CircuitBreaker>>,
    counters: Arc<PolicyCounters>,
    /// The batch as it arrived, for the next attempt.
    copy: Vec<K::Item>,
}

impl<K: Sink> RetryWrites<K> {
    /// Adds a circuit breaker around the writes (see [`BreakerOptions`]); in its default
    /// `wait` mode an open breaker makes the sink wait, so backpressure reaches the source.
    #[must_use]
    pub fn with_breaker(mut self, opts: &BreakerOptions) -> Self {
        let name = self.counters.stage().to_owned();
        let breaker = CircuitBreaker::new(name, opts).with_counters(Arc::clone(&self.counters));
        self.breaker = Some(Arc::new(breaker));
        self
    }

    /// The breaker, if any (its state, for a health check).
    pub fn breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.breaker.as_ref()
    }

    /// The retries, timeouts and breaker events of the writes.
    pub fn counters(&self) -> &Arc<PolicyCounters> {
        &self.counters
    }
}

impl<K: Sink + fmt::Debug> fmt::Debug for RetryWrites<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryWrites")
            .field("sink", &self.sink)
            .field("attempts", &self.attempts)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<K> Sink for RetryWrites<K>
where
    K: Sink,
    K::Item: Clone,
{
    type Item = K::Item;

    async fn write(&mut self, items: &mut Vec<K::Item>) -> Result<(), WriteError> {
        self.copy.clear();
        self.copy.append(items);
        let mut schedule = None;
        let mut attempt = 1;
        loop {
            // Waiting for a permit costs no attempt: while the breaker is open the sink
            // does not write, and upstream waits for it.
            let permit = match &self.breaker {
                Some(breaker) => match breaker.try_acquire() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        self.counters.record(Event::BreakerWait);
                        tracing::debug!(
                            sink = self.counters.stage(),
                            "breaker open: the sink waits"
                        );
                        Some(breaker.acquire().await)
                    }
                },
                None => None,
            };
            let probe = self
                .breaker
                .as_ref()
                .is_some_and(|b| b.state() == BreakerState::HalfOpen);
            let mut batch = self.copy.clone();
            let started = Instant::now();
            let written = self.sink.write(&mut batch).await;
            let took = started.elapsed();
            let error = match written {
                Ok(()) => {
                    if let Some(permit) = permit {
                        permit.success(took);
                    }
                    return Ok(());
                }
                // Rows the server rejected: final for them, and no sign of an outage.
                Err(e) if e.failed.is_some() => {
                    if let Some(permit) = permit {
                        permit.success(took);
                    }
                    return Err(e);
                }
                Err(e) => e,
            };
            if let Some(permit) = permit {
                permit.failure(took);
            }
            if probe {
                // A failed probe: back to waiting, no attempt spent.
                continue;
            }
            if attempt >= self.attempts {
                return Err(error);
            }
            let delay = schedule
                .get_or_insert_with(|| self.backoff.schedule())
                .next();
            let Some(delay) = delay else {
                return Err(error);
            };
            self.counters.record(Event::Retry);
            tracing::warn!(
                sink = self.counters.stage(),
                attempt,
                retry_in = ?delay,
                error = %crate::error::chain(&*error.error),
                "write failed; retrying the batch"
            );
            if delay > Duration::ZERO {
                tokio::time::sleep(delay).await;
            }
            attempt += 1;
        }
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send {
        self.sink.flush()
    }

    fn name(&self) -> &str {
        self.sink.name()
    }
}
