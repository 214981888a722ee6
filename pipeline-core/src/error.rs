//! Error types shared by the whole crate.

use std::fmt;

/// A boxed error, as stages, sinks and sources report them across type erasure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Renders an error and its `source()` chain as `outer: inner: root`. A source whose
/// message the text already holds (thiserror's `#[error("... {source}")]` style) is not
/// repeated.
///
/// # Examples
///
/// ```
/// let err = std::io::Error::other("disk full");
/// assert_eq!(pipeline_core::error::chain(&err), "disk full");
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("write failed: {0}")]
/// struct Write(#[source] std::io::Error);
/// let err = Write(std::io::Error::other("disk full"));
/// assert_eq!(pipeline_core::error::chain(&err), "write failed: disk full");
/// ```
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let message = inner.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = inner.source();
    }
    text
}

/// The message of a caught panic (`panic!`'s text), or a placeholder for other payloads.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic payload of an unknown type".to_owned()
    }
}

/// A `String` message usable as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message(pub String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}
