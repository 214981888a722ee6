//! Live counters per pipeline element, their snapshot ([`Stats`](crate::Stats)), and the metric names
//! they are exported under through the `metrics` facade.
//!
//! Counters are bumped once per batch, never per item (BENCHMARKS.md: per-batch counters
//! are free; per-item atomics are not).
//!
//! # Metrics
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `pipeline_items_total` | counter | `pipeline`, `stage`, `event` | items per `event`: `received`, `emitted`, `filtered`, `errored` (failed after retries), `dead_lettered`, `dropped` (`on_error = drop`) |
//! | `pipeline_overflow_total` | counter | `edge`, `policy` | items an edge's `WhenFull` policy dropped or dead-lettered |
//! | `pipeline_outcomes_total` | counter | `pipeline`, `outcome` | source items by final outcome |
//! | `pipeline_queue_depth` | gauge | `pipeline`, `stage` | items waiting in the stage's input edge |
//! | `pipeline_in_flight` | gauge | `pipeline`, `stage` | items inside the stage |
//! | `pipeline_source_lag`, `pipeline_source_pending` | gauge | `pipeline`, `stage` | a broker source's consumer lag and unacknowledged entries ([`Backlog`](crate::source::Backlog)) |
//! | `pipeline_source_errors_total` | counter | `pipeline`, `stage` | failed pulls of a source |
//! | `pipeline_restarts_total` | counter | `pipeline`, `stage` | stage restarts after a panic |
//! | `pipeline_stage_latency_seconds` | histogram | `pipeline`, `stage` | time of one call: a sampled batch's mean per call for stages (1 batch in 8), each write for sinks |
//! | `pipeline_panics_total` | counter | `pipeline`, `stage` | panics of user code outside stage calls: predicates, key fns, `pull`, ack callbacks, `write` / `flush` |
//! | `pipeline_retries_total`, `pipeline_timeouts_total`, `pipeline_panics_total`, ... | counter | `stage` | policy events; see [`policy`](crate::policy) |
//! | `pipeline_breaker_state` | gauge | `stage` | 0 closed, 1 open, 2 half-open |
//!
//! The [`Stats`](crate::Stats) snapshot needs no exporter.

use std::sync::atomic::{AtomicU64, Ordering};

use ::metrics::{Counter, Gauge, Histogram};

/// Metric name: items per stage and event.
pub const ITEMS_TOTAL: &str = "pipeline_items_total";
/// Metric name: source items by final outcome.
pub const OUTCOMES_TOTAL: &str = "pipeline_outcomes_total";
/// Metric name: queue depth of a stage's input edge.
pub const QUEUE_DEPTH: &str = "pipeline_queue_depth";
/// Metric name: items inside a stage.
pub const IN_FLIGHT: &str = "pipeline_in_flight";
/// Metric name: items dropped or dead-lettered by an edge's overflow policy.
pub const OVERFLOW_TOTAL: &str = "pipeline_overflow_total";
/// Metric name: restarts of a stage after a panic.
pub const RESTARTS_TOTAL: &str = "pipeline_restarts_total";
/// Metric name: panics of user code outside stage calls (predicates, key fns, `pull`,
/// ack callbacks, `write`/`flush`), per element. Stage calls count theirs under the same
/// name with a `stage` label only (see [`policy`](crate::policy)).
pub const PANICS_TOTAL: &str = "pipeline_panics_total";
/// Metric name: the time of one call per stage (seconds): the mean over a sampled batch
/// for stages, each write for sinks.
pub const LATENCY_SECONDS: &str = "pipeline_stage_latency_seconds";

/// One batch in this many is timed for [`LATENCY_SECONDS`].
pub(crate) const LATENCY_SAMPLE: u64 = 8;

/// Metric name: failed pulls of a source.
pub const SOURCE_ERRORS_TOTAL: &str = "pipeline_source_errors_total";

/// What kind of element a stats row describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A source.
    Source,
    /// A stage.
    Stage,
    /// A routing element: fan-out, route, partition, batch.
    Router,
    /// A sink.
    Sink,
    /// The dead-letter sink.
    DeadLetter,
}

/// Live counters of one element.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) concurrency: usize,
    pub(crate) received: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) emitted: AtomicU64,
    pub(crate) filtered: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) restarts: AtomicU64,
    /// Batches seen, for sampling latency.
    batches: AtomicU64,
    /// The snapshot the recent rate is measured from: (uptime, emitted, rate then).
    recent: std::sync::Mutex<(std::time::Duration, u64, f64)>,
    /// Panics of user code this element called outside a stage call (a predicate, a key
    /// fn, a source's `pull`, an ack callback, a sink's `write` or `flush`).
    pub(crate) panics: AtomicU64,
    metrics: Metrics,
}

#[derive(Debug)]
struct Metrics {
    received: Counter,
    emitted: Counter,
    filtered: Counter,
    errored: Counter,
    dead_lettered: Counter,
    dropped: Counter,
    restarts: Counter,
    panics: Counter,
    in_flight: Gauge,
    latency: Histogram,
}

impl Counters {
    pub(crate) fn new(pipeline: &str, name: &str, kind: Kind, concurrency: usize) -> Self {
        let labels = |event: &'static str| ::metrics::counter!(ITEMS_TOTAL, "pipeline" => pipeline.to_owned(), "stage" => name.to_owned(), "event" => event);
        Counters {
            name: name.to_owned(),
            kind,
            concurrency,
            received: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            emitted: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            recent: std::sync::Mutex::new((std::time::Duration::ZERO, 0, 0.0)),
            panics: AtomicU64::new(0),
            metrics: Metrics {
                received: labels("received"),
                emitted: labels("emitted"),
                filtered: labels("filtered"),
                errored: labels("errored"),
                dead_lettered: labels("dead_lettered"),
                dropped: labels("dropped"),
                restarts: ::metrics::counter!(RESTARTS_TOTAL, "pipeline" => pipeline.to_owned(), "stage" => name.to_owned()),
                latency: ::metrics::histogram!(LATENCY_SECONDS, "pipeline" => pipeline.to_owned(), "stage" => name.to_owned()),
                panics: ::metrics::counter!(PANICS_TOTAL, "pipeline" => pipeline.to_owned(), "stage" => name.to_owned()),
                in_flight: ::metrics::gauge!(IN_FLIGHT, "pipeline" => pipeline.to_owned(), "stage" => name.to_owned()),
            },
        }
    }

    #[inline]
    pub(crate) fn received(&self, n: usize) {
        if n > 0 {
            self.received.fetch_add(n as u64, Ordering::Relaxed);
            self.metrics.received.increment(n as u64);
        }
    }

    #[inline]
    pub(crate) fn completed(&self, n: usize) {
        if n > 0 {
            let done = self.completed.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            let got = self.received.load(Ordering::Relaxed);
            self.metrics.in_flight.set(got.saturating_sub(done) as f64);
        }
    }

    #[inline]
    pub(crate) fn emitted(&self, n: usize) {
        if n > 0 {
            self.emitted.fetch_add(n as u64, Ordering::Relaxed);
            self.metrics.emitted.increment(n as u64);
        }
    }

    #[inline]
    pub(crate) fn filtered(&self, n: usize) {
        if n > 0 {
            self.filtered.fetch_add(n as u64, Ordering::Relaxed);
            self.metrics.filtered.increment(n as u64);
        }
    }

    /// Items this element sent to the dead-letter sink.
    #[inline]
    pub(crate) fn dead_lettered(&self, n: usize) {
        if n > 0 {
            self.metrics.dead_lettered.increment(n as u64);
        }
    }

    /// Items this element dropped (`on_error = drop`).
    #[inline]
    pub(crate) fn dropped(&self, n: usize) {
        if n > 0 {
            self.metrics.dropped.increment(n as u64);
        }
    }

    /// User code this element called panicked (`what`: `"predicate"`, `"pull"`, ...).
    pub(crate) fn panicked(&self, what: &'static str, message: &str) {
        self.panics.fetch_add(1, Ordering::Relaxed);
        self.metrics.panics.increment(1);
        tracing::error!(element = %self.name, call = what, message, "user code panicked");
    }

    /// Starts timing a batch of `calls` calls, one batch in [`LATENCY_SAMPLE`]: a clock
    /// read per sampled batch, none for the others.
    #[inline]
    pub(crate) fn time_batch(&self, calls: usize) -> Option<(tokio::time::Instant, usize)> {
        let n = self.batches.fetch_add(1, Ordering::Relaxed);
        (n % LATENCY_SAMPLE == 0 && calls > 0).then(|| (tokio::time::Instant::now(), calls))
    }

    /// Records the mean call time of a batch [`time_batch`](Self::time_batch) sampled.
    #[inline]
    pub(crate) fn timed(&self, timing: Option<(tokio::time::Instant, usize)>) {
        if let Some((start, calls)) = timing {
            let secs = start.elapsed().as_secs_f64() / calls as f64;
            self.metrics.latency.record(secs);
        }
    }

    /// Records the time of one call (a sink's write).
    pub(crate) fn latency(&self, elapsed: std::time::Duration) {
        self.metrics.latency.record(elapsed.as_secs_f64());
    }

    /// Items per second emitted since the last snapshot taken at least a second ago;
    /// moves that mark forward when a second has passed. Read by `stats()` only.
    pub(crate) fn recent_rate(&self, emitted: u64, uptime: std::time::Duration) -> f64 {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let (at, then, rate) = *recent;
        let interval = uptime.saturating_sub(at);
        if interval >= std::time::Duration::from_secs(1) {
            let rate = emitted.saturating_sub(then) as f64 / interval.as_secs_f64();
            *recent = (uptime, emitted, rate);
            rate
        } else if at.is_zero() {
            // No interval yet: the average so far.
            let secs = uptime.as_secs_f64();
            if secs > 0.0 {
                emitted as f64 / secs
            } else {
                0.0
            }
        } else {
            rate
        }
    }

    pub(crate) fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.metrics.restarts.increment(1);
    }

    #[inline]
    pub(crate) fn errors(&self, n: usize) {
        if n > 0 {
            self.errors.fetch_add(n as u64, Ordering::Relaxed);
            self.metrics.errored.increment(n as u64);
        }
    }
}
