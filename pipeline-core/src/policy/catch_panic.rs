//! [`Panicked`]: the error of an attempt that panicked (the engine catches panics
//! around building and polling every call).

use std::any::Any;

/// The error of an attempt that panicked.
///
/// # Examples
///
/// ```
/// use pipeline_core::policy::Panicked;
///
/// let p = Panicked::new("index out of bounds");
/// assert_eq!(p.message(), "index out of bounds");
/// assert_eq!(p.to_string(), "stage panicked: index out of bounds");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stage panicked: {message}")]
pub struct Panicked {
    message: String,
}

impl Panicked {
    /// A panic with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Panicked {
            message: message.into(),
        }
    }

    /// Reads the message of a caught panic's payload (`&str` or `String`, as `panic!`
    /// makes them; other payloads get a placeholder).
    pub fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic payload of an unknown type".to_owned()
        };
        Panicked { message }
    }

    /// The panic message.
    pub fn message(&self) -> &str {
        &self.message
    }
}
