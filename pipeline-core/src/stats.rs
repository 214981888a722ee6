//! Live counters per pipeline element, their snapshot ([`Stats`]), and the metric names
//! they are exported under through the `metrics` facade.
//!
//! Counters are bumped once per batch, never per item (BENCHMARKS.md: per-batch counters
//! are free; per-item atomics are not).
//!
//! # Metrics
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `pipeline_items_total` | counter | `pipeline`, `stage`, `event` | items per `event`: `received`, `emitted`, `filtered`, `errored`, `dropped`, `dead_lettered`, `failed` |
//! | `pipeline_outcomes_total` | counter | `pipeline`, `outcome` | source items by final outcome |
//! | `pipeline_queue_depth` | gauge | `pipeline`, `stage` | items waiting in the stage's input edge |
//! | `pipeline_in_flight` | gauge | `pipeline`, `stage` | items inside the stage |
//! | `pipeline_source_errors_total` | counter | `pipeline`, `stage` | failed pulls of a source |
//!
//! The [`Stats`] snapshot needs no exporter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::metrics::{Counter, Gauge};

/// Metric name: items per stage and event.
pub const ITEMS_TOTAL: &str = "pipeline_items_total";
/// Metric name: source items by final outcome.
pub const OUTCOMES_TOTAL: &str = "pipeline_outcomes_total";
/// Metric name: queue depth of a stage's input edge.
pub const QUEUE_DEPTH: &str = "pipeline_queue_depth";
/// Metric name: items inside a stage.
pub const IN_FLIGHT: &str = "pipeline_in_flight";
/// Metric name: failed pulls of a source.
pub const SOURCE_ERRORS_TOTAL: &str = "pipeline_source_errors_total";

/// What kind of element a stats row describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
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
    metrics: Metrics,
}

#[derive(Debug)]
struct Metrics {
    received: Counter,
    emitted: Counter,
    filtered: Counter,
    errored: Counter,
    in_flight: Gauge,
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
            metrics: Metrics {
                received: labels("received"),
                emitted: labels("emitted"),
                filtered: labels("filtered"),
                errored: labels("errored"),
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

    #[inline]
    pub(crate) fn errors(&self, n: usize) {
        if n > 0 {
            self.errors.fetch_add(n as u64, Ordering::Relaxed);
            self.metrics.errored.increment(n as u64);
        }
    }
}

/// A live snapshot of a running pipeline, from [`PipelineHandle::stats`](crate::PipelineHandle::stats).
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Time since the pipeline started.
    pub uptime: Duration,
    /// Source items emitted so far.
    pub emitted: u64,
    /// Source items with a final outcome so far.
    pub finished: u64,
    /// Source items emitted and not yet finished.
    pub in_flight: u64,
    /// One row per element, sources first, in build order.
    pub stages: Vec<StageStats>,
}

impl Stats {
    /// The row of the element named `name`.
    pub fn stage(&self, name: &str) -> Option<&StageStats> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// One element's numbers in a [`Stats`] snapshot.
#[derive(Debug, Clone, serde::Serialize)]
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
}

impl Counters {
    pub(crate) fn snapshot(&self, edge: (usize, usize, u64), uptime: Duration) -> StageStats {
        let received = self.received.load(Ordering::Relaxed);
        let completed = self.completed.load(Ordering::Relaxed);
        let emitted = self.emitted.load(Ordering::Relaxed);
        let secs = uptime.as_secs_f64();
        StageStats {
            name: self.name.clone(),
            kind: self.kind,
            received,
            completed,
            emitted,
            filtered: self.filtered.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            in_flight: received.saturating_sub(completed),
            concurrency: self.concurrency,
            queue_depth: edge.0,
            capacity: edge.1,
            overflowed: edge.2,
            rate: if secs > 0.0 {
                emitted as f64 / secs
            } else {
                0.0
            },
        }
    }
}
