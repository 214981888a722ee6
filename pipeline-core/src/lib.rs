//! Typed async event pipelines over bounded, batched edges.
//!
//! A pipeline moves items from a [`source`] through [`Stage`]s to a [`sink`]. Stages are
//! joined by bounded edges whose capacity is counted in items, so a slow sink slows the
//! source and memory stays bounded; items travel between tasks in batches of whatever is
//! ready. Every item a source emits ends in exactly one [`Outcome`], and the
//! [`RunReport`] proves it: `emitted == delivered + filtered + dropped + dead_lettered +
//! failed + abandoned`.
//!
//! # A tour
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::convert::Infallible;
//! use pipeline_core::prelude::*;
//!
//! let lines = vec!["1", "2", "x", "40"].into_iter().map(String::from);
//! let (sink, out) = sink::collect();
//! let (dead, dead_letters) = sink::collect();
//! let report = Pipeline::builder("tour")
//!     .source(source::iter(lines))
//!     // A map that can fail: failures go to the dead-letter sink.
//!     .stage(stage::map_fn("parse", |l: String| async move { l.parse::<u64>() }))
//!     // A filter.
//!     .stage(stage::filter_fn("small", |n: u64| async move {
//!         Ok::<_, Infallible>((n < 10).then_some(n))
//!     }))
//!     .concurrency(4)
//!     .ordered()
//!     .sink(sink)
//!     .dead_letter(dead)
//!     .run()
//!     .await
//!     .unwrap();
//! assert_eq!(out.take(), vec![1, 2]);
//! assert_eq!(dead_letters.take()[0].stage, "parse");
//! assert_eq!((report.delivered, report.filtered, report.dead_lettered), (2, 1, 1));
//! assert!(report.is_balanced());
//! # }
//! ```
//!
//! # Embedding
//!
//! [`Pipeline::spawn`] runs on the caller's runtime and returns a [`PipelineHandle`], the
//! one owner of the run's [`RunReport`], and hands out [`PipelineControl`]s: cloneable,
//! `Send + Sync` views for a progress bar or an HTTP `/stats` handler (live
//! [`stats`](PipelineControl::stats), [`health`](PipelineControl::health), a
//! [`finished`](PipelineControl::finished) future, shutdown requests). An ingest source
//! ([`PipelineBuilder::ingest`]) takes events from request handlers: `send` waits under
//! backpressure, `try_send` answers `Full` at once, and with
//! [`IngestOptions::max_in_flight`](source::IngestOptions::max_in_flight) it answers
//! `Full` as soon as the pipeline holds that many unfinished events; `send_and_wait`
//! resolves with the event's [`Settled`](source::Settled) outcome and, when it failed,
//! the stage and the error.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use pipeline_core::prelude::*;
//! use pipeline_core::source::IngestOptions;
//!
//! let handle = Pipeline::builder("svc")
//!     .ingest::<String>(IngestOptions::buffer(256).max_in_flight(64))
//!     .stage(stage::map_fn("parse", |s: String| async move { s.parse::<u64>() }))
//!     .sink(sink::collect().0)
//!     .spawn();
//! let events = handle.ingest::<String>().unwrap();
//! let control = handle.control(); // clone it into your handlers
//! let answer = events.send_and_wait("x".into()).await.unwrap();
//! assert_eq!(answer.outcome, Outcome::DeadLettered);
//! assert_eq!(answer.reason.unwrap().stage, "parse");
//! assert_eq!(control.stats().finished, 1);
//! drop(events);
//! let report = handle.shutdown().await.unwrap();
//! assert!(report.is_balanced());
//! # }
//! ```
//!
//! # Panics in user code
//!
//! A panic inside a stage's call is caught: it fails that attempt of that item (which may
//! be retried or dead-lettered), the stage's state is rebuilt ([`Stage::restart`]) before
//! anything else runs, and nothing else is affected. Every other place the runtime calls
//! user code is guarded the same way: a flat-map's iterator, a `route` predicate or
//! `partition_by` key fn fail their item (through `on_error`, the element named); a sink's
//! `write` fails its batch (dead-lettered row by row); an ack callback's panic is counted
//! on its source and the outcomes stand; a panicking `Source::pull`, a failed `on_start` or
//! state factory, a failed `flush` end the run with a failure naming the element. Each
//! panic is counted (`pipeline_panics_total`, the element's `panics` in `stats()`) and
//! traced. This needs unwinding: a program built with `panic = "abort"` aborts instead
//! (the pipeline logs a warning when it starts).
//!
//! # Errors: two styles, one rule
//!
//! A stage's error is a concrete type (`Stage::Error: std::error::Error`): the policies
//! ask it whether it is permanent and dead letters render its source chain, so it must be
//! a real error type (an enum deriving `thiserror::Error`, [`error::Message`], or
//! [`policy::Fault`] to mark some permanent). Sources and sinks, which the runtime only
//! logs, counts and retries as a whole, return a [`BoxError`]: any error converts into it
//! with `?` or `.into()`.
//!
//! | module | concept |
//! |---|---|
//! | [`stage`](mod@stage) | the [`Stage`] trait and closure stages |
//! | [`source`], [`sink`] | where items come from and go (iterators, streams, ingest, blocking I/O) |
//! | [`options`] | what a stage declares: concurrency, buffer, overflow, policies |
//! | [`policy`] | timeout, retry and budget, circuit breaker, rate limit: the policy engine |
//! | [`context`] | what a stage call learns about its attempt |
//! | [`pipeline`] | builder, handle and control, report |
//! | [`ack`] | outcomes and source acknowledgements |
//! | [`dead_letter`] | the record of an item that could not be processed |
//! | [`stats`] | live counters and the metric names |
//! | [`graph`] | Mermaid / DOT rendering of the topology |
//! | [`error`] | `BoxError`, error chains |
//! | `testing` (feature `testing`) | run a chain over a list, inject faults, paused time |
//! | `axum` (feature `axum`) | responses for ingest answers and stats, a `/stats` router, serve-then-drain shutdown |
#![forbid(unsafe_code)]

pub mod ack;
#[cfg(feature = "axum")]
pub mod axum;
pub mod context;
pub mod dead_letter;
mod edge;
mod envelope;
pub mod error;
pub mod graph;
pub mod options;
pub mod pipeline;
pub mod policy;
pub mod sink;
pub mod source;
pub mod stage;
pub mod stats;
mod supervise;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
mod wire;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use ack::Outcome;
pub use context::Context;
pub use dead_letter::DeadLetter;
pub use error::BoxError;
pub use options::{OnError, StageOptions, WhenFull};
pub use pipeline::{
    Builder, DEFAULT_SHUTDOWN_DEADLINE, Health, Pipeline, PipelineBuilder, PipelineControl,
    PipelineError, PipelineHandle, Ready, RunReport, StageFailure, StageStats, Stats,
};
#[cfg(feature = "macros")]
pub use pipeline_macros::stage;
pub use stage::{Emitted, Filter, FlatMap, Map, Shape, Stage};

/// What most users import: `use pipeline_core::prelude::*;`.
pub mod prelude {
    pub use crate::context::Context;
    pub use crate::error::BoxError;
    pub use crate::options::{OnError, WhenFull};
    pub use crate::pipeline::{Pipeline, PipelineHandle, RunReport};
    pub use crate::stage::{Filter, FlatMap, Map, Stage};
    pub use crate::{Outcome, sink, source, stage};
}
