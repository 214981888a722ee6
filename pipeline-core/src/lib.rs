//! Typed async event pipelines over bounded, batched edges.
#![forbid(unsafe_code)]

pub mod ack;
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

pub use ack::Outcome;
pub use context::Context;
pub use dead_letter::DeadLetter;
pub use error::BoxError;
pub use options::{OnError, StageOptions, WhenFull};
pub use pipeline::{
    Builder, DEFAULT_SHUTDOWN_DEADLINE, Health, Pipeline, PipelineBuilder, PipelineError, PipelineHandle, Ready, RunReport,
    StageFailure,
};
pub use stage::{Emitted, Filter, FlatMap, Map, Shape, Stage};
pub use stats::{StageStats, Stats};

/// What most users import: `use pipeline_core::prelude::*;`.
pub mod prelude {
    pub use crate::context::Context;
    pub use crate::error::BoxError;
    pub use crate::options::{OnError, WhenFull};
    pub use crate::pipeline::{Pipeline, PipelineHandle, RunReport};
    pub use crate::stage::{Filter, FlatMap, Map, Stage};
    pub use crate::{Outcome, sink, source, stage};
}
