//! Typed async event pipelines over bounded, batched edges.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod context;
pub mod error;
pub mod options;
pub mod policy;
pub mod stage;

pub use context::Context;
pub use error::BoxError;
pub use options::StageOptions;
pub use stage::{Emitted, FlatMap, Filter, Map, Shape, Stage};

/// What most users import: `use pipeline_core::prelude::*;`.
pub mod prelude {
    pub use crate::context::Context;
    pub use crate::error::BoxError;
    pub use crate::stage::{FlatMap, Filter, Map, Stage};
}
