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
//! [`Pipeline::spawn`] runs on the caller's runtime and returns a [`PipelineHandle`]:
//! an ingest sender with backpressure ([`PipelineBuilder::ingest`]), a live
//! [`stats`](PipelineHandle::stats) snapshot, and graceful
//! [`shutdown`](PipelineHandle::shutdown) returning the report.
//!
//! # Panics in stages
//!
//! A panic inside a stage's call is caught: it fails that attempt of that item (which may
//! be retried or dead-lettered), the stage is restarted ([`Stage::restart`]) and nothing
//! else is affected. This needs unwinding: a program built with `panic = "abort"` aborts
//! instead (the pipeline logs a warning when it starts).
//!
//! | module | concept |
//! |---|---|
//! | [`stage`](mod@stage) | the [`Stage`] trait and closure stages |
//! | [`source`], [`sink`] | where items come from and go |
//! | [`options`] | what a stage declares: concurrency, buffer, overflow, policies |
//! | [`pipeline`] | builder, handle, report |
//! | [`ack`] | outcomes and source acknowledgements |
//! | [`stats`] | live counters and the metric names |
//! | [`graph`] | Mermaid / DOT rendering of the topology |
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
