//! [`PipelineHandle`]: a pipeline running on the host's runtime.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::builder::Pipeline;
use super::report::{PipelineError, RunReport, Stats, snapshot};
use super::{Control, Row};
use crate::ack::Outcome;
use crate::source::Ingest;
use crate::stats::OUTCOMES_TOTAL;

/// The default deadline of [`PipelineHandle::shutdown`].
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Coarse health of a running pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Health {
    /// Running normally.
    Running,
    /// Running, but a circuit breaker is open or half-open: a dependency is down and
    /// the stage waits (or fails fast).
    Degraded,
    /// Stopping: a shutdown was asked for or a stage failed.
    Stopping,
    /// Every task has ended.
    Finished,
}

/// A running pipeline. Dropping the handle detaches the pipeline: it runs until its
/// sources end.
#[derive(Debug)]
pub struct PipelineHandle {
    control: Arc<Control>,
    rows: Vec<Row>,
    tracker: TaskTracker,
    aborts: Vec<AbortHandle>,
    started: Instant,
    ingest: Option<Box<dyn Any + Send + Sync>>,
}

impl Pipeline {
    /// Runs every task on the current tokio runtime and returns a handle.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn spawn(self) -> PipelineHandle {
        let core = self.core;
        if cfg!(panic = "abort") {
            tracing::warn!(
                pipeline = %core.control.name,
                "built with panic = \"abort\": a panicking stage aborts the process; panic isolation is off"
            );
        }
        let tracker = TaskTracker::new();
        let pipeline = core.control.name.clone();
        let mut aborts = Vec::with_capacity(core.tasks.len());
        for (name, task) in core.tasks {
            let span = tracing::info_span!("stage", pipeline = %pipeline, stage = %name);
            aborts.push(tracker.spawn(task.instrument(span)).abort_handle());
        }
        tracker.close();
        // The builder's own dead-letter sender must go, or the dead-letter sink never ends.
        drop(core.dead_tx);
        PipelineHandle {
            control: core.control,
            rows: core.rows.into_iter().flatten().collect(),
            tracker,
            aborts,
            started: Instant::now(),
            ingest: core.ingest,
        }
    }

    /// Runs the pipeline until its sources end and everything drained.
    ///
    /// # Errors
    ///
    /// [`PipelineError`] when a stage with `on_error = fail` stopped it; the error carries
    /// the full report.
    pub async fn run(self) -> Result<RunReport, PipelineError> {
        self.spawn().join().await
    }
}

impl PipelineHandle {
    /// A sender into the pipeline's ingest source (see
    /// [`PipelineBuilder::ingest`](crate::PipelineBuilder::ingest)), if it has one of item
    /// type `T`.
    pub fn ingest<T: Send + 'static>(&self) -> Option<Ingest<T>> {
        self.ingest.as_ref()?.downcast_ref::<Ingest<T>>().cloned()
    }

    /// A live snapshot: per element received, emitted, in flight, queue depth, errors
    /// and rates; source items in flight.
    pub fn stats(&self) -> Stats {
        snapshot(&self.control, &self.rows, self.started.elapsed())
    }

    /// Coarse health.
    pub fn health(&self) -> Health {
        if self.tracker.is_empty() {
            Health::Finished
        } else if self.control.stop.is_cancelled() {
            Health::Stopping
        } else if self.rows.iter().any(|r| {
            r.breaker
                .as_ref()
                .is_some_and(|b| b.state() != crate::policy::BreakerState::Closed)
        }) {
            Health::Degraded
        } else {
            Health::Running
        }
    }

    /// Waits for the pipeline to end by itself (its sources ended and everything drained).
    ///
    /// # Errors
    ///
    /// [`PipelineError`] when a stage with `on_error = fail` stopped it.
    pub async fn join(mut self) -> Result<RunReport, PipelineError> {
        // Our ingest sender must not keep the source alive.
        self.ingest = None;
        self.tracker.wait().await;
        self.report()
    }

    /// Stops the sources, drains every item in flight, flushes the sinks and reports;
    /// waits at most [`DEFAULT_SHUTDOWN_DEADLINE`].
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join).
    pub async fn shutdown(self) -> Result<RunReport, PipelineError> {
        self.shutdown_within(DEFAULT_SHUTDOWN_DEADLINE).await
    }

    /// Stops the sources and drains for at most `deadline`; then aborts every task: what
    /// is still in flight is counted `Abandoned` (and not acknowledged, so a broker
    /// redelivers it). No sink write happens after this returns.
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join).
    pub async fn shutdown_within(mut self, deadline: Duration) -> Result<RunReport, PipelineError> {
        self.ingest = None;
        self.control.stop.cancel();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(pipeline = %self.control.name, ?deadline, "shutdown deadline passed; abandoning what is in flight");
            for task in &self.aborts {
                task.abort();
            }
            self.tracker.wait().await;
        }
        self.report()
    }

    /// Runs until the pipeline ends by itself or `signal` resolves, then shuts down
    /// gracefully. Pass `tokio::signal::ctrl_c()` or a SIGTERM stream's `recv()` to let
    /// the host's signals drive shutdown.
    ///
    /// ```no_run
    /// # async fn demo(handle: pipeline_core::PipelineHandle) {
    /// use tokio::signal::unix::{signal, SignalKind};
    /// let mut term = signal(SignalKind::terminate()).expect("signal handler");
    /// let report = handle.shutdown_on(async move { term.recv().await; }).await;
    /// # let _ = report;
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join).
    pub async fn shutdown_on(
        self,
        signal: impl Future<Output = ()>,
    ) -> Result<RunReport, PipelineError> {
        tokio::select! {
            () = self.tracker.wait() => {}
            () = signal => {}
        }
        self.shutdown().await
    }

    fn report(&self) -> Result<RunReport, PipelineError> {
        let stats = self.stats();
        let counts = self.control.ledger.counts();
        for outcome in Outcome::ALL {
            let n = counts[outcome as usize];
            if n > 0 {
                ::metrics::counter!(OUTCOMES_TOTAL, "pipeline" => self.control.name.clone(), "outcome" => outcome.as_str()).increment(n);
            }
        }
        let failure = self
            .control
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let report = RunReport {
            pipeline: self.control.name.clone(),
            emitted: stats.emitted,
            delivered: counts[Outcome::Delivered as usize],
            filtered: counts[Outcome::Filtered as usize],
            dropped: counts[Outcome::Dropped as usize],
            dead_lettered: counts[Outcome::DeadLettered as usize],
            failed: counts[Outcome::Failed as usize],
            abandoned: counts[Outcome::Abandoned as usize],
            elapsed: stats.uptime,
            stages: stats.stages,
            failure: failure.clone(),
        };
        if !report.is_balanced() {
            tracing::error!(pipeline = %report.pipeline, %report, "ledger does not balance");
        }
        match failure {
            None => Ok(report),
            Some(failure) => Err(PipelineError {
                failure,
                report: Box::new(report),
            }),
        }
    }
}
