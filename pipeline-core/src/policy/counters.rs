//! [`PolicyCounters`]: the per-stage event counts of the policy engine.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Event counts of one stage's policies, shared through an `Arc` by the stage's [`Policies`](crate::policy::Policies)
/// (and its breaker) and read by the runtime for its `stats()` snapshot.
///
/// Each field moves only when its event happens (a retry, a timeout, ...), never per item
/// on the happy path. Every increment is also reported to the [`metrics`] facade under the
/// names below, labelled `stage`, so the host's exporter sees them without polling:
///
/// | counter | metric |
/// |---|---|
/// | [`retries`](Self::retries) | `pipeline_retries_total` |
/// | [`budget_exhausted`](Self::budget_exhausted) | `pipeline_retry_budget_exhausted_total` |
/// | [`timeouts`](Self::timeouts) | `pipeline_timeouts_total` |
/// | [`panics`](Self::panics) | `pipeline_panics_total` |
/// | [`breaker_transitions`](Self::breaker_transitions) | `pipeline_breaker_transitions_total` (+ gauge `pipeline_breaker_state`: 0 closed, 1 open, 2 half-open) |
/// | [`breaker_rejections`](Self::breaker_rejections) | `pipeline_breaker_rejections_total` |
/// | [`breaker_waits`](Self::breaker_waits) | `pipeline_breaker_waits_total` |
/// | [`rate_waits`](Self::rate_waits) | `pipeline_rate_waits_total` |
///
/// # Examples
///
/// ```
/// use pipeline_core::policy::PolicyCounters;
///
/// let counters = PolicyCounters::new("enrich");
/// assert_eq!(counters.stage(), "enrich");
/// assert_eq!(counters.snapshot().retries, 0);
/// ```
pub struct PolicyCounters {
    stage: Arc<str>,
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    timeouts: AtomicU64,
    panics: AtomicU64,
    breaker_transitions: AtomicU64,
    breaker_rejections: AtomicU64,
    breaker_waits: AtomicU64,
    rate_waits: AtomicU64,
}

/// A plain copy of [`PolicyCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PolicyCounts {
    /// Attempts started again after a retryable failure.
    pub retries: u64,
    /// Retries refused because the retry budget was empty.
    pub budget_exhausted: u64,
    /// Attempts that hit their deadline.
    pub timeouts: u64,
    /// Attempts that panicked.
    pub panics: u64,
    /// Circuit-breaker state changes.
    pub breaker_transitions: u64,
    /// Calls refused at once by an open breaker (fail-fast mode).
    pub breaker_rejections: u64,
    /// Calls that had to wait for a breaker permit (wait mode).
    pub breaker_waits: u64,
    /// Calls that had to wait for a rate-limit token.
    pub rate_waits: u64,
}

/// One kind of policy event; selects the counter and the metric name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Retry,
    BudgetExhausted,
    Timeout,
    Panic,
    BreakerTransition,
    BreakerRejection,
    BreakerWait,
    RateWait,
}

impl PolicyCounters {
    /// Zeroed counters for the stage named `stage`.
    pub fn new(stage: impl Into<Arc<str>>) -> Self {
        PolicyCounters {
            stage: stage.into(),
            retries: AtomicU64::new(0),
            budget_exhausted: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            breaker_transitions: AtomicU64::new(0),
            breaker_rejections: AtomicU64::new(0),
            breaker_waits: AtomicU64::new(0),
            rate_waits: AtomicU64::new(0),
        }
    }

    /// The stage these counters belong to.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    pub(crate) fn stage_arc(&self) -> &Arc<str> {
        &self.stage
    }

    /// Retries started so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Retries refused by an empty retry budget so far.
    pub fn budget_exhausted(&self) -> u64 {
        self.budget_exhausted.load(Ordering::Relaxed)
    }

    /// Attempts timed out so far.
    pub fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }

    /// Attempts that panicked so far.
    #[inline]
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Circuit-breaker transitions so far.
    pub fn breaker_transitions(&self) -> u64 {
        self.breaker_transitions.load(Ordering::Relaxed)
    }

    /// Calls refused by an open breaker in fail-fast mode so far.
    pub fn breaker_rejections(&self) -> u64 {
        self.breaker_rejections.load(Ordering::Relaxed)
    }

    /// Calls that waited for a breaker permit so far.
    pub fn breaker_waits(&self) -> u64 {
        self.breaker_waits.load(Ordering::Relaxed)
    }

    /// Calls that waited for a rate-limit token so far.
    pub fn rate_waits(&self) -> u64 {
        self.rate_waits.load(Ordering::Relaxed)
    }

    /// Every counter at once (each read on its own; not an atomic snapshot of all).
    pub fn snapshot(&self) -> PolicyCounts {
        PolicyCounts {
            retries: self.retries(),
            budget_exhausted: self.budget_exhausted(),
            timeouts: self.timeouts(),
            panics: self.panics(),
            breaker_transitions: self.breaker_transitions(),
            breaker_rejections: self.breaker_rejections(),
            breaker_waits: self.breaker_waits(),
            rate_waits: self.rate_waits(),
        }
    }

    /// Counts one `event`: the atomic, then the metric.
    pub(crate) fn record(&self, event: Event) {
        let (cell, name) = match event {
            Event::Retry => (&self.retries, "pipeline_retries_total"),
            Event::BudgetExhausted => (
                &self.budget_exhausted,
                "pipeline_retry_budget_exhausted_total",
            ),
            Event::Timeout => (&self.timeouts, "pipeline_timeouts_total"),
            Event::Panic => (&self.panics, "pipeline_panics_total"),
            Event::BreakerTransition => (
                &self.breaker_transitions,
                "pipeline_breaker_transitions_total",
            ),
            Event::BreakerRejection => (
                &self.breaker_rejections,
                "pipeline_breaker_rejections_total",
            ),
            Event::BreakerWait => (&self.breaker_waits, "pipeline_breaker_waits_total"),
            Event::RateWait => (&self.rate_waits, "pipeline_rate_waits_total"),
        };
        cell.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(name, "stage" => Arc::clone(&self.stage)).increment(1);
    }
}

impl fmt::Debug for PolicyCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyCounters")
            .field("stage", &self.stage)
            .field("counts", &self.snapshot())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_moves_only_its_counter() {
        let c = PolicyCounters::new("s");
        c.record(Event::Retry);
        c.record(Event::Retry);
        c.record(Event::Panic);
        let snap = c.snapshot();
        assert_eq!(snap.retries, 2);
        assert_eq!(snap.panics, 1);
        assert_eq!(snap.timeouts, 0);
        assert_eq!(snap.rate_waits, 0);
    }
}
