//! [`RunReport`]: the conservation ledger of a finished run.

use std::fmt;
use std::time::Duration;

use std::sync::atomic::Ordering;

use super::{Control, Row};
use crate::ack::Outcome;
use crate::policy::BreakerState;
use crate::stats::Kind;

/// What a finished run did. The outcome counts are in **source items** and form the
/// conservation ledger: `emitted == delivered + filtered + dropped + dead_lettered +
/// failed + abandoned` ([`is_balanced`](Self::is_balanced)).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct RunReport {
    /// The pipeline's name.
    pub pipeline: String,
    /// Source items emitted.
    pub emitted: u64,
    /// Delivered to a sink (for flat-mapped or fanned-out items: every descendant was).
    pub delivered: u64,
    /// Filtered out by a stage.
    pub filtered: u64,
    /// Dropped by an overflow policy or `on_error = drop`.
    pub dropped: u64,
    /// Written to the dead-letter sink.
    pub dead_lettered: u64,
    /// Failed (`on_error = fail`, or the dead-letter write failed).
    pub failed: u64,
    /// Never finished: in flight (or accepted by an ingest source) when a shutdown
    /// deadline passed, or held by a task that stopped.
    pub abandoned: u64,
    /// Wall time from spawn to the end (seconds, a float, in JSON).
    #[serde(with = "crate::wire::secs")]
    pub elapsed: Duration,
    /// Per-element counters at the end.
    pub stages: Vec<StageStats>,
    /// Why the pipeline stopped early, if it did.
    pub failure: Option<StageFailure>,
}

impl RunReport {
    /// The count of one outcome.
    pub fn count(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Delivered => self.delivered,
            Outcome::Filtered => self.filtered,
            Outcome::Dropped => self.dropped,
            Outcome::DeadLettered => self.dead_lettered,
            Outcome::Failed => self.failed,
            Outcome::Abandoned => self.abandoned,
        }
    }

    /// Source items with a final outcome.
    pub fn finished(&self) -> u64 {
        Outcome::ALL.iter().map(|o| self.count(*o)).sum()
    }

    /// Whether every emitted item has exactly one final outcome.
    pub fn is_balanced(&self) -> bool {
        self.finished() == self.emitted
    }

    /// The row of the element named `name`.
    pub fn stage(&self, name: &str) -> Option<&StageStats> {
        self.stages.iter().find(|s| s.name == name)
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pipeline `{}` ran {:.3}s: {} emitted = {} delivered + {} filtered + {} dropped + {} dead-lettered + {} failed + {} abandoned{}",
            self.pipeline,
            self.elapsed.as_secs_f64(),
            self.emitted,
            self.delivered,
            self.filtered,
            self.dropped,
            self.dead_lettered,
            self.failed,
            self.abandoned,
            if self.is_balanced() {
                ""
            } else {
                "  (UNBALANCED)"
            }
        )?;
        writeln!(
            f,
            "  {:<20} {:>10} {:>10} {:>10} {:>8}",
            "element", "received", "emitted", "filtered", "errors"
        )?;
        for s in &self.stages {
            writeln!(
                f,
                "  {:<20} {:>10} {:>10} {:>10} {:>8}",
                s.name, s.received, s.emitted, s.filtered, s.errors
            )?;
        }
        if let Some(failure) = &self.failure {
            writeln!(f, "  stopped by {failure}")?;
        }
        Ok(())
    }
}

/// The stage that stopped a pipeline, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StageFailure {
    /// The stage's name.
    pub stage: String,
    /// The error, with its source chain.
    pub error: String,
}

impl fmt::Display for StageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage `{}`: {}", self.stage, self.error)
    }
}

/// A run that stopped because of a failure. The report is complete and balanced all
/// the same.
#[derive(Debug, Clone, thiserror::Error)]
#[error("pipeline `{}` failed in {}", report.pipeline, failure)]
pub struct PipelineError {
    /// The stage and error that stopped the pipeline.
    pub failure: StageFailure,
    /// Everything the run did.
    pub report: Box<RunReport>,
}

/// A live snapshot of a running pipeline, from
/// [`PipelineHandle::stats`](crate::PipelineHandle::stats).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Time since the pipeline started (seconds, a float, in JSON).
    #[serde(with = "crate::wire::secs")]
    pub uptime: Duration,
    /// Source items emitted so far.
    pub emitted: u64,
    /// Source items with a final outcome so far.
    pub finished: u64,
    /// Source items emitted and not yet finished.
    pub in_flight: u64,
    /// One row per element in build order (the dead-letter sink first).
    pub stages: Vec<StageStats>,
}

impl Stats {
    /// The row of the element named `name`.
    pub fn stage(&self, name: &str) -> Option<&StageStats> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// One element's numbers in a [`Stats`] snapshot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct StageStats {
    /// The element's name.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Items taken from the input edge.
    pub received: u64,
    /// Items fully handled (calls finished, written, or routed).
    pub completed: u64,
    /// Items sent downstream (or written, for sinks).
    pub emitted: u64,
    /// Items filtered out.
    pub filtered: u64,
    /// Items that failed (after retries) or failed to write.
    pub errors: u64,
    /// Items inside the element now (`received - completed`).
    pub in_flight: u64,
    /// Configured concurrency.
    pub concurrency: usize,
    /// Items waiting in the input edge now.
    pub queue_depth: usize,
    /// Capacity of the input edge, in items.
    pub capacity: usize,
    /// Items the input edge's overflow policy dropped or dead-lettered.
    pub overflowed: u64,
    /// Emitted items per second, averaged over the uptime.
    pub rate: f64,
    /// Emitted items per second over the recent interval: since the snapshot taken at
    /// least a second before this one (the uptime's average until then).
    #[serde(default)]
    pub recent_rate: f64,
    /// Retried attempts.
    pub retries: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Attempts that panicked.
    pub panics: u64,
    /// Restarts after a panic.
    pub restarts: u64,
    /// The circuit breaker's state, if the stage has one.
    pub breaker: Option<BreakerState>,
    /// A broker source's consumer lag (entries not yet delivered), if it reports one.
    pub lag: Option<u64>,
    /// A broker source's delivered but unacknowledged entries, if it reports them.
    pub pending: Option<u64>,
}

pub(crate) fn snapshot(control: &Control, rows: &[Row], uptime: Duration) -> Stats {
    let emitted = control.ledger.emitted.load(Ordering::Acquire);
    let finished: u64 = control.ledger.counts().iter().sum();
    Stats {
        uptime,
        emitted,
        finished,
        in_flight: emitted.saturating_sub(finished),
        stages: rows.iter().map(|row| stage_stats(row, uptime)).collect(),
    }
}

fn stage_stats(row: &Row, uptime: Duration) -> StageStats {
    let c = &row.counters;
    let (queue_depth, capacity, overflowed) = row.input.as_ref().map_or((0, 0, 0), |p| p.read());
    let policy = row
        .policy
        .as_ref()
        .map(|p| p.snapshot())
        .unwrap_or_default();
    let received = c.received.load(Ordering::Relaxed);
    let completed = c.completed.load(Ordering::Relaxed);
    let emitted = c.emitted.load(Ordering::Relaxed);
    let secs = uptime.as_secs_f64();
    let recent_rate = c.recent_rate(emitted, uptime);
    StageStats {
        recent_rate,
        name: c.name.clone(),
        kind: c.kind,
        received,
        completed,
        emitted,
        filtered: c.filtered.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        in_flight: received.saturating_sub(completed),
        concurrency: c.concurrency,
        queue_depth,
        capacity,
        overflowed,
        rate: if secs > 0.0 {
            emitted as f64 / secs
        } else {
            0.0
        },
        retries: policy.retries,
        timeouts: policy.timeouts,
        panics: policy.panics + c.panics.load(Ordering::Relaxed),
        restarts: c.restarts.load(Ordering::Relaxed),
        breaker: row.breaker.as_ref().map(|b| b.state()),
        lag: row.backlog.as_ref().and_then(|b| b.lag()),
        pending: row.backlog.as_ref().and_then(|b| b.pending()),
    }
}
