//! Assembly: the builder wires sources, stages and sinks into tasks joined by edges; the
//! handle runs them and reports.

mod builder;
mod handle;
mod outbox;
mod report;
mod runner;
mod tasks;

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::ack::Ledger;
use crate::dead_letter::DeadLetter;
use crate::edge::{EdgeProbe, EdgeRx, EdgeTx};
use crate::graph::Graph;
use crate::stats::Counters;

pub use builder::{Builder, HasSink, Pipeline, PipelineBuilder, Ready};
pub use handle::{DEFAULT_SHUTDOWN_DEADLINE, Health, PipelineControl, PipelineHandle};
pub use report::{PipelineError, RunReport, StageFailure, StageStats, Stats};

/// Items per message between tasks, at most. Batches are whatever is ready, never padded.
pub(crate) const MAX_BATCH: usize = 256;

/// Default capacity of an edge, in items.
pub(crate) const DEFAULT_CAPACITY: usize = 1024;

/// What every task of one pipeline shares.
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) name: String,
    pub(crate) ledger: Arc<Ledger>,
    /// Cancelled to stop the sources (shutdown, or a stage with `on_error = fail`).
    pub(crate) stop: CancellationToken,
    /// Cancelled when the shutdown deadline has passed: sources stop at once and count
    /// what they had accepted as `Abandoned`.
    pub(crate) hard_stop: CancellationToken,
    /// How long a stopping pipeline may drain.
    pub(crate) deadline: handle::Deadline,
    pub(crate) deadline_moved: Notify,
    pub(crate) failure: Mutex<Option<StageFailure>>,
}

impl Control {
    pub(crate) fn new(name: String, deadline: Duration) -> Self {
        Control {
            ledger: Arc::new(Ledger::new(&name)),
            name,
            stop: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            deadline: handle::Deadline::new(deadline),
            deadline_moved: Notify::new(),
            failure: Mutex::new(None),
        }
    }

    pub(crate) fn deadline(&self) -> Duration {
        self.deadline.get()
    }

    /// Shortens the drain deadline (a longer one than the current is ignored).
    pub(crate) fn shorten_deadline(&self, deadline: Duration) {
        if self.deadline.shorten(deadline) {
            self.deadline_moved.notify_waiters();
        }
    }

    /// Records why the pipeline must stop (the first reason wins) and stops the sources.
    pub(crate) fn fail(&self, stage: &str, error: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            tracing::error!(pipeline = %self.name, stage, %error, "pipeline failing");
            *failure = Some(StageFailure {
                stage: stage.to_owned(),
                error,
            });
        }
        drop(failure);
        self.stop.cancel();
    }
}

/// One row of `stats()`: an element's counters and its input edge.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) counters: Arc<Counters>,
    pub(crate) input: Option<EdgeProbe>,
    /// A stage's policy event counters.
    pub(crate) policy: Option<Arc<crate::policy::PolicyCounters>>,
    /// A stage's circuit breaker.
    pub(crate) breaker: Option<Arc<crate::policy::CircuitBreaker>>,
    /// A broker source's lag and pending gauges.
    pub(crate) backlog: Option<crate::source::Backlog>,
}

impl Row {
    pub(crate) fn new(counters: Arc<Counters>, input: Option<EdgeProbe>) -> Self {
        Row {
            counters,
            input,
            policy: None,
            breaker: None,
            backlog: None,
        }
    }
}

/// One task of the pipeline.
pub(crate) struct Task {
    pub(crate) name: String,
    pub(crate) run: BoxFuture<'static, ()>,
    /// Sources end through `Control::hard_stop` instead of being aborted.
    pub(crate) source: bool,
}

impl Task {
    pub(crate) fn new(
        name: impl Into<String>,
        run: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Task {
            name: name.into(),
            run: Box::pin(run),
            source: false,
        }
    }
}

/// The backstop around every task: user code the task calls is guarded where it is
/// called, so a panic reaching this far is one nobody foresaw. The task's items are then
/// marked `Abandoned` as they unwind (every batch does that when dropped), and the
/// pipeline stops with a failure naming the element, never as a clean end.
pub(crate) async fn guard(name: String, run: BoxFuture<'static, ()>, control: Arc<Control>) {
    if let Err(payload) = AssertUnwindSafe(run).catch_unwind().await {
        let panic = crate::policy::Panicked::from_payload(&*payload);
        control.fail(&name, format!("panicked: {}", panic.message()));
    }
}

/// The pipeline under construction.
pub(crate) struct Core {
    pub(crate) control: Arc<Control>,
    pub(crate) tasks: Vec<Task>,
    pub(crate) graph: Graph,
    pub(crate) rows: Vec<Option<Row>>,
    pub(crate) dead_tx: EdgeTx<DeadLetter>,
    pub(crate) dead_rx: Option<EdgeRx<DeadLetter>>,
    pub(crate) ingest: Option<Box<dyn Any + Send + Sync>>,
    /// How to copy the input of the stage at node `n` for its retries, when the builder's
    /// `retry` supplied it (`fn(&In) -> In`, erased).
    pub(crate) copies: std::collections::HashMap<usize, Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("name", &self.control.name)
            .field("tasks", &self.tasks.len())
            .finish()
    }
}
