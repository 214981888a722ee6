//! [`DeadLetter`]: the record of an item that could not be processed.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// What the dead-letter sink receives for an item whose attempts are exhausted (or that
/// did not fit a [`WhenFull::DeadLetter`](crate::options::WhenFull::DeadLetter) edge).
///
/// The record is type-erased so one dead-letter sink serves every stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The stage (or edge) that gave up on the item.
    pub stage: String,
    /// The last error, with its `source()` chain joined by `": "`.
    pub error: String,
    /// Attempts made, the first included (0 for an overflow).
    pub attempts: u32,
    /// Calls made as half-open probes of a waiting circuit breaker that failed: not
    /// attempts (each sent the item back to wait), so counted apart.
    #[serde(default)]
    pub probes: u32,
    /// When the first attempt failed (wall clock, for people reading the record; RFC 3339
    /// in JSON).
    #[serde(with = "crate::wire::rfc3339")]
    pub first_failure: SystemTime,
    /// When the last attempt failed.
    #[serde(with = "crate::wire::rfc3339")]
    pub last_failure: SystemTime,
    /// The item as JSON when available (stages that opt into serde), else its `Debug` text,
    /// else `None`.
    pub item: Option<serde_json::Value>,
}

impl DeadLetter {
    /// A record for `stage` failing with `error` after `attempts` attempts, now.
    ///
    /// ```
    /// use pipeline_core::DeadLetter;
    /// let dl = DeadLetter::new("parse", "bad digit", 3);
    /// assert_eq!((dl.attempts, dl.probes), (3, 0));
    /// assert!(dl.item.is_none());
    /// ```
    pub fn new(stage: impl Into<String>, error: impl Into<String>, attempts: u32) -> Self {
        let now = SystemTime::now();
        DeadLetter {
            stage: stage.into(),
            error: error.into(),
            attempts,
            probes: 0,
            first_failure: now,
            last_failure: now,
            item: None,
        }
    }

    /// The same record carrying the item.
    #[must_use]
    pub fn with_item(mut self, item: serde_json::Value) -> Self {
        self.item = Some(item);
        self
    }
}
