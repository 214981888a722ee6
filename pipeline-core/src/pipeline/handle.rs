//! [`PipelineHandle`]: a pipeline running on the host's runtime, and [`PipelineControl`],
//! the cloneable view of it that request handlers and progress bars share.

use std::any::Any;
use std::future::Future;
use std::sync::{Arc, Mutex};
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

/// The deadline of [`PipelineHandle::shutdown`] and of the drain after a stage failed the
/// pipeline, unless the builder set another ([`Ready::shutdown_deadline`]): 30 seconds.
///
/// [`Ready::shutdown_deadline`]: crate::pipeline::Ready::shutdown_deadline
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Coarse health of a running pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// What the handle and every [`PipelineControl`] share.
#[derive(Debug)]
struct Running {
    control: Arc<Control>,
    rows: Vec<Row>,
    tracker: TaskTracker,
    started: Instant,
}

/// A running pipeline: the one owner that receives the [`RunReport`] (from
/// [`join`](Self::join), [`shutdown`](Self::shutdown), ...). Hand out
/// [`control`](Self::control) views to watch it and stop it from anywhere.
///
/// Dropping the handle detaches the pipeline: it runs until its sources end (or a
/// [`PipelineControl`] stops it).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use pipeline_core::prelude::*;
///
/// let handle = Pipeline::builder("svc")
///     .ingest::<u64>(64)
///     .sink(sink::collect().0)
///     .spawn();
/// let ingest = handle.ingest::<u64>().unwrap();
/// let control = handle.control(); // Clone + Send + Sync: give it to a /stats handler
/// ingest.send(7).await.unwrap();
/// assert_eq!(control.health(), Health::Running);
/// control.shutdown(); // from anywhere; the owner gets the report
/// let report = handle.join().await.unwrap();
/// assert_eq!(report.delivered, 1);
/// # }
/// # use pipeline_core::Health;
/// ```
#[derive(Debug)]
pub struct PipelineHandle {
    running: Arc<Running>,
    ingest: Option<Box<dyn Any + Send + Sync>>,
}

/// A cloneable, `Send + Sync` view of a running pipeline: live [`stats`](Self::stats),
/// [`health`](Self::health), a [`finished`](Self::finished) future, and graceful or
/// bounded shutdown requests. It does not receive the report: the [`PipelineHandle`]
/// does.
///
/// # Examples
///
/// A progress line while waiting for the end:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use pipeline_core::prelude::*;
///
/// let handle = Pipeline::builder("etl")
///     .source(source::iter(0..1_000u64))
///     .sink(sink::collect().0)
///     .spawn();
/// let control = handle.control();
/// let progress = tokio::spawn(async move {
///     while !control.is_finished() {
///         let _done = control.stats().finished; // draw a bar with it
///         tokio::select! {
///             () = control.finished() => {}
///             () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
///         }
///     }
/// });
/// let report = handle.join().await.unwrap();
/// progress.await.unwrap();
/// assert_eq!(report.delivered, 1_000);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PipelineControl {
    running: Arc<Running>,
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
        for task in core.tasks {
            let span = tracing::info_span!("stage", pipeline = %pipeline, stage = %task.name);
            let run = super::guard(task.name, task.run, Arc::clone(&core.control));
            let handle = tracker.spawn(run.instrument(span));
            // Sources are stopped through `Control::hard_stop`, so that they can count
            // what they had accepted; every other task is aborted.
            if !task.source {
                aborts.push(handle.abort_handle());
            }
        }
        tracker.close();
        // The builder's own dead-letter sender must go, or the dead-letter sink never ends.
        drop(core.dead_tx);
        tokio::spawn(watchdog(Arc::clone(&core.control), tracker.clone(), aborts));
        PipelineHandle {
            running: Arc::new(Running {
                control: core.control,
                rows: core.rows.into_iter().flatten().collect(),
                tracker,
                started: Instant::now(),
            }),
            ingest: core.ingest,
        }
    }

    /// Runs the pipeline until its sources end and everything drained.
    ///
    /// # Errors
    ///
    /// [`PipelineError`] when a stage with `on_error = fail` (or a panicking source, a
    /// failed start, an exceeded restart limit) stopped it; the error carries the full
    /// report.
    pub async fn run(self) -> Result<RunReport, PipelineError> {
        self.spawn().join().await
    }
}

/// Once a stop is asked for (a shutdown, or a stage failing the pipeline), gives the
/// tasks the shutdown deadline to drain, then stops what is left: sources through the
/// hard stop (they count what they accepted as `Abandoned`), every other task by abort.
/// So a pipeline whose sink is stalled still ends, whoever stopped it.
async fn watchdog(control: Arc<Control>, tracker: TaskTracker, aborts: Vec<AbortHandle>) {
    tokio::select! {
        () = tracker.wait() => return,
        () = control.stop.cancelled() => {}
    }
    let since = Instant::now();
    loop {
        let notified = control.deadline_moved.notified();
        let deadline = since + control.deadline();
        tokio::select! {
            () = tracker.wait() => return,
            () = notified => continue,
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    tracing::warn!(pipeline = %control.name, deadline = ?control.deadline(), "shutdown deadline passed; abandoning what is in flight");
    control.hard_stop.cancel();
    for task in &aborts {
        task.abort();
    }
}

impl Running {
    fn stats(&self) -> Stats {
        snapshot(&self.control, &self.rows, self.started.elapsed())
    }

    fn health(&self) -> Health {
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

    fn stop_within(&self, deadline: Duration) {
        self.control.shorten_deadline(deadline);
        self.control.stop.cancel();
    }

    fn report(&self) -> Result<RunReport, PipelineError> {
        let stats = self.stats();
        let counts = self.control.ledger.counts();
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

impl PipelineHandle {
    /// A sender into the pipeline's ingest source (see
    /// [`PipelineBuilder::ingest`](crate::PipelineBuilder::ingest)), if it has one of item
    /// type `T`.
    pub fn ingest<T: Send + 'static>(&self) -> Option<Ingest<T>> {
        self.ingest.as_ref()?.downcast_ref::<Ingest<T>>().cloned()
    }

    /// A cloneable view to watch and stop the pipeline from anywhere.
    pub fn control(&self) -> PipelineControl {
        PipelineControl {
            running: Arc::clone(&self.running),
        }
    }

    /// A live snapshot: per element received, emitted, in flight, queue depth, errors
    /// and rates; source items in flight.
    pub fn stats(&self) -> Stats {
        self.running.stats()
    }

    /// Coarse health.
    pub fn health(&self) -> Health {
        self.running.health()
    }

    /// Waits for the pipeline to end: by itself (its sources ended and everything
    /// drained), or after a shutdown asked for through a [`PipelineControl`], or after a
    /// stage failed it (then within the shutdown deadline).
    ///
    /// # Errors
    ///
    /// [`PipelineError`] when a failure stopped it (a stage with `on_error = fail`, a
    /// panicking source, a failed start, an exceeded restart limit).
    pub async fn join(mut self) -> Result<RunReport, PipelineError> {
        // Our ingest sender must not keep the source alive.
        self.ingest = None;
        self.running.tracker.wait().await;
        self.running.report()
    }

    /// Stops the sources, drains every item in flight, flushes the sinks and reports;
    /// waits at most the shutdown deadline ([`DEFAULT_SHUTDOWN_DEADLINE`] unless the
    /// builder set another).
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join).
    pub async fn shutdown(self) -> Result<RunReport, PipelineError> {
        self.running.control.stop.cancel();
        self.join().await
    }

    /// Stops the sources and drains for at most `deadline`; then stops every task: what
    /// is still in flight, and what an ingest source had accepted but not yet passed on,
    /// is counted `Abandoned` (and not acknowledged, so a broker redelivers it;
    /// `send_and_wait` callers are told). No sink write happens after this returns.
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join).
    pub async fn shutdown_within(self, deadline: Duration) -> Result<RunReport, PipelineError> {
        self.running.stop_within(deadline);
        self.join().await
    }

    /// Runs until the pipeline ends by itself or `signal` resolves, then shuts down
    /// gracefully. Pass `tokio::signal::ctrl_c()` or a SIGTERM stream's `recv()` to let
    /// the host's signals drive shutdown.
    ///
    /// A service should stop accepting requests before the pipeline stops (so nothing
    /// is refused half-way): run the server's graceful shutdown on the signal first, then
    /// call [`shutdown`](Self::shutdown) once the server returned, rather than passing the
    /// same signal to both.
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
            () = self.running.tracker.wait() => {}
            () = signal => {}
        }
        self.shutdown().await
    }
}

impl PipelineControl {
    /// A live snapshot, as [`PipelineHandle::stats`].
    pub fn stats(&self) -> Stats {
        self.running.stats()
    }

    /// Coarse health, as [`PipelineHandle::health`].
    pub fn health(&self) -> Health {
        self.running.health()
    }

    /// Whether every task has ended.
    pub fn is_finished(&self) -> bool {
        self.running.tracker.is_empty()
    }

    /// Resolves once every task has ended (the owner's report is then ready).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: waiting changes nothing.
    pub fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        let tracker = self.running.tracker.clone();
        async move { tracker.wait().await }
    }

    /// Asks for a graceful shutdown: the sources stop and everything in flight drains
    /// within the shutdown deadline. Returns at once; the owner's
    /// [`join`](PipelineHandle::join) returns the report.
    pub fn shutdown(&self) {
        self.running.control.stop.cancel();
    }

    /// Asks for a shutdown that abandons whatever is still in flight after `deadline`
    /// (a shorter deadline than one asked for earlier wins). Returns at once.
    pub fn shutdown_within(&self, deadline: Duration) {
        self.running.stop_within(deadline);
    }
}

/// The deadline, shortened by requests and read by the watchdog.
#[derive(Debug)]
pub(crate) struct Deadline(Mutex<Duration>);

impl Deadline {
    pub(crate) fn new(d: Duration) -> Self {
        Deadline(Mutex::new(d))
    }

    pub(crate) fn set(&self, d: Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = d;
    }

    pub(crate) fn get(&self) -> Duration {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets `d` if it is shorter; whether it changed.
    pub(crate) fn shorten(&self, d: Duration) -> bool {
        let mut cur = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if d < *cur {
            *cur = d;
            true
        } else {
            false
        }
    }
}
