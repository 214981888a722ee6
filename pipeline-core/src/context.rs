//! [`Context`]: what a stage may learn about the attempt it is running.

use std::sync::Arc;

/// Facts about the current attempt, passed by reference to every [`Stage::call`](crate::Stage::call).
///
/// # Examples
///
/// ```
/// use pipeline_core::Context;
///
/// let cx = Context::new("parse");
/// assert_eq!(cx.stage(), "parse");
/// assert_eq!(cx.attempt(), 1);
/// assert_eq!(cx.with_attempt(2).attempt(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct Context {
    stage: Arc<str>,
    attempt: u32,
}

impl Context {
    /// A context for the first attempt in stage `stage`.
    pub fn new(stage: impl Into<Arc<str>>) -> Self {
        Context {
            stage: stage.into(),
            attempt: 1,
        }
    }

    /// The same context for attempt `attempt` (1-based).
    #[must_use]
    pub fn with_attempt(&self, attempt: u32) -> Self {
        Context {
            stage: Arc::clone(&self.stage),
            attempt,
        }
    }

    /// The stage's name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// Which attempt this is, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}
