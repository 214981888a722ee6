//! [`Failure`]: the error of a stage wrapped in policies.

use crate::policy::breaker::BreakerOpen;
use crate::policy::catch_panic::Panicked;
use crate::policy::timeout::Elapsed;

/// Why an attempt of a policy-wrapped stage failed: the stage's own error, or one of the
/// events the policies produce.
///
/// Every call through the policy engine ([`Policies`](crate::policy::Policies)) fails
/// with one flat `Failure<E>`, whichever policy produced the event.
///
/// `Display` and `source()` are transparent: a `Failure` reads as the error it holds, so
/// [`error::chain`](crate::error::chain) of a `Failure::Call` is the stage error's chain.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipeline_core::policy::{Elapsed, Failure};
///
/// let failure: Failure<std::io::Error> = Elapsed::new(Duration::from_secs(2)).into();
/// assert!(failure.is_elapsed());
/// assert_eq!(failure.to_string(), "attempt timed out after 2s");
///
/// let failure = Failure::Call(std::io::Error::other("disk full"));
/// assert_eq!(failure.call_error().map(|e| e.to_string()).as_deref(), Some("disk full"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Failure<E> {
    /// The stage returned this error.
    #[error(transparent)]
    Call(E),
    /// The attempt panicked; the panic was caught.
    #[error(transparent)]
    Panicked(Panicked),
    /// The attempt did not finish within its deadline; its future was dropped.
    #[error(transparent)]
    Elapsed(Elapsed),
    /// The circuit breaker refused the call (fail-fast mode only).
    #[error(transparent)]
    BreakerOpen(BreakerOpen),
}

impl<E> Failure<E> {
    /// The stage's own error, if that is what this is.
    pub fn call_error(&self) -> Option<&E> {
        match self {
            Failure::Call(e) => Some(e),
            _ => None,
        }
    }

    /// The stage's own error, by value, if that is what this is.
    pub fn into_call_error(self) -> Option<E> {
        match self {
            Failure::Call(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the attempt timed out.
    pub fn is_elapsed(&self) -> bool {
        matches!(self, Failure::Elapsed(_))
    }

    /// Whether the attempt panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, Failure::Panicked(_))
    }

    /// Whether an open breaker refused the call.
    pub fn is_breaker_open(&self) -> bool {
        matches!(self, Failure::BreakerOpen(_))
    }

    /// Maps the stage error, keeping the policy events.
    pub fn map_call<F, E2>(self, f: F) -> Failure<E2>
    where
        F: FnOnce(E) -> E2,
    {
        match self {
            Failure::Call(e) => Failure::Call(f(e)),
            Failure::Panicked(p) => Failure::Panicked(p),
            Failure::Elapsed(e) => Failure::Elapsed(e),
            Failure::BreakerOpen(b) => Failure::BreakerOpen(b),
        }
    }

    /// A short, stable name of the variant for metrics and dead letters: `call`,
    /// `panicked`, `elapsed` or `breaker_open`.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Call(_) => "call",
            Failure::Panicked(_) => "panicked",
            Failure::Elapsed(_) => "elapsed",
            Failure::BreakerOpen(_) => "breaker_open",
        }
    }
}

impl<E> From<Panicked> for Failure<E> {
    fn from(p: Panicked) -> Self {
        Failure::Panicked(p)
    }
}

impl<E> From<Elapsed> for Failure<E> {
    fn from(e: Elapsed) -> Self {
        Failure::Elapsed(e)
    }
}

impl<E> From<BreakerOpen> for Failure<E> {
    fn from(b: BreakerOpen) -> Self {
        Failure::BreakerOpen(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn call_is_transparent_and_keeps_the_chain() {
        let f: Failure<Outer> = Failure::Call(Outer(std::io::Error::other("root")));
        assert_eq!(f.to_string(), "outer");
        assert_eq!(crate::error::chain(&f), "outer: root");
        assert!(f.source().is_some());
        assert_eq!(f.kind(), "call");
    }

    #[test]
    fn map_call_keeps_events() {
        let f: Failure<u8> = Panicked::new("boom").into();
        let g: Failure<String> = f.map_call(|n| n.to_string());
        assert!(g.is_panic());
        let f: Failure<u8> = Failure::Call(7);
        assert_eq!(f.map_call(u32::from).into_call_error(), Some(7u32));
    }
}
