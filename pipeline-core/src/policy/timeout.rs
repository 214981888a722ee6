//! [`Elapsed`]: the error of an attempt that missed its deadline.

use std::time::Duration;

/// The error of an attempt that did not finish within its deadline.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipeline_core::policy::Elapsed;
///
/// let e = Elapsed::new(Duration::from_millis(250));
/// assert_eq!(e.after(), Duration::from_millis(250));
/// assert_eq!(e.to_string(), "attempt timed out after 250ms");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("attempt timed out after {after:?}")]
pub struct Elapsed {
    after: Duration,
}

impl Elapsed {
    /// An expiry after `after`.
    pub fn new(after: Duration) -> Self {
        Elapsed { after }
    }

    /// The deadline that was missed.
    pub fn after(&self) -> Duration {
        self.after
    }
}
