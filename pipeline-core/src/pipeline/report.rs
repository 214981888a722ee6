//! [`RunReport`]: the conservation ledger of a finished run.

use std::fmt;
use std::time::Duration;

use crate::ack::Outcome;
use crate::stats::StageStats;

/// What a finished run did. The outcome counts are in **source items** and form the
/// conservation ledger: `emitted == delivered + filtered + dropped + dead_lettered +
/// failed + abandoned` ([`is_balanced`](Self::is_balanced)).
#[derive(Debug, Clone, serde::Serialize)]
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
    /// Still in flight when a shutdown deadline passed.
    pub abandoned: u64,
    /// Wall time from spawn to the end.
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
