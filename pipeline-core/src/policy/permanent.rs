//! Marking errors permanent: [`Fault`] and [`Permanent`].

/// A stage error that says whether the attempt may be retried.
///
/// Every error is retryable by default ([`Stage::is_permanent`](crate::Stage::is_permanent)
/// returns `false`). Users cannot implement our traits on foreign error types, so a stage
/// that must tell the two apart declares `Fault<E>` as its error and answers
/// `is_permanent` from it. `?` on an `E` gives a transient fault; `?` on a
/// [`Permanent`]`(e)` gives a permanent one.
///
/// Permanent errors are not retried by the policy engine ([`Policies`](crate::policy::Policies))
/// and are not counted by the circuit breaker (neither failure nor success); they go to
/// the stage's `on_error` at once. The engine recognises a `Fault` by itself, whatever
/// the stage (a closure stage from [`stage::map_fn`](crate::stage::map_fn) included); a
/// hand-written stage may still answer [`Stage::is_permanent`](crate::Stage::is_permanent)
/// from it, as below (the `#[stage]` macro writes that override when the function
/// returns `Fault`).
///
/// # Examples
///
/// ```
/// use pipeline_core::policy::{Fault, Permanent};
/// use pipeline_core::prelude::*;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("bad input: {0}")]
/// struct BadInput(String);
///
/// struct Parse;
///
/// impl Stage for Parse {
///     type In = String;
///     type Output = u64;
///     type Shape = Map;
///     type Error = Fault<BadInput>;
///
///     async fn call(&self, line: String, _cx: &Context) -> Result<u64, Fault<BadInput>> {
///         // A malformed line will never parse: do not retry it.
///         let n = line.trim().parse().map_err(|_| Permanent(BadInput(line.clone())))?;
///         Ok(n)
///     }
///
///     fn is_permanent(&self, error: &Fault<BadInput>) -> bool {
///         error.is_permanent()
///     }
/// }
///
/// let fault: Fault<BadInput> = Permanent(BadInput("x".into())).into();
/// assert!(fault.is_permanent());
/// assert_eq!(fault.to_string(), "bad input: x");
/// let fault: Fault<BadInput> = BadInput("y".into()).into();
/// assert!(!fault.is_permanent());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault<E> {
    /// May succeed if tried again (the default for `?` on an `E`).
    Transient(E),
    /// Will fail however often it is tried.
    Permanent(E),
}

/// What a permanent [`Fault`] answers to the (deprecated, but stable and object-safe)
/// `Error::description`: the mark by which the policy engine recognises a permanent
/// fault behind any `&dyn Error`, so a closure stage returning `Fault` needs no
/// `is_permanent` override (generic code cannot ask "is this `E` a `Fault<_>`?").
const PERMANENT_MARK: &str = "pipeline_core::policy::Fault::Permanent";

/// Whether `error` is a [`Fault::Permanent`] (seen through `dyn Error`).
pub(crate) fn marked_permanent(error: &(dyn std::error::Error + 'static)) -> bool {
    #[allow(deprecated)]
    let mark = error.description();
    mark == PERMANENT_MARK
}

// `Display` and `source` are transparent, as `#[error(transparent)]` would make them.
impl<E: std::fmt::Display> std::fmt::Display for Fault<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get_ref().fmt(f)
    }
}

impl<E: std::error::Error> std::error::Error for Fault<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.get_ref().source()
    }

    #[allow(deprecated)]
    fn description(&self) -> &str {
        match self {
            Fault::Permanent(_) => PERMANENT_MARK,
            Fault::Transient(e) => e.description(),
        }
    }
}

impl<E> Fault<E> {
    /// A retryable fault.
    pub fn transient(error: E) -> Self {
        Fault::Transient(error)
    }

    /// A fault that must not be retried.
    pub fn permanent(error: E) -> Self {
        Fault::Permanent(error)
    }

    /// Whether this fault must not be retried.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Fault::Permanent(_))
    }

    /// The error, whichever kind it is.
    pub fn get_ref(&self) -> &E {
        match self {
            Fault::Transient(e) | Fault::Permanent(e) => e,
        }
    }

    /// The error, by value.
    pub fn into_inner(self) -> E {
        match self {
            Fault::Transient(e) | Fault::Permanent(e) => e,
        }
    }
}

impl<E> From<E> for Fault<E> {
    fn from(error: E) -> Self {
        Fault::Transient(error)
    }
}

/// Marks an error as permanent: `Err(Permanent(e))?` in a stage whose error is
/// [`Fault<E>`] returns `Fault::Permanent(e)`. See [`Fault`] for how the policies treat it.
///
/// # Examples
///
/// ```
/// use pipeline_core::policy::{Fault, Permanent};
///
/// fn check(n: i64) -> Result<i64, Fault<std::io::Error>> {
///     if n < 0 {
///         Err(Permanent(std::io::Error::other("negative")))?;
///     }
///     Ok(n)
/// }
/// assert!(check(-1).unwrap_err().is_permanent());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permanent<E>(pub E);

impl<E> From<Permanent<E>> for Fault<E> {
    fn from(p: Permanent<E>) -> Self {
        Fault::Permanent(p.0)
    }
}
