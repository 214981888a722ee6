//! Plain-data settings a stage declares for itself ([`StageOptions`]) and the builder
//! overrides. The mechanisms that act on them live in [`crate::policy`], the edges
//! and the stage runner; this module only describes.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// Everything a stage can declare about how it runs. `None` means "not declared": the
/// builder's setting, if any, wins, then the stage's own, then the default.
///
/// The `#[stage]` macro fills this in from its attribute; a hand-written stage overrides
/// [`Stage::options`](crate::Stage::options).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipeline_core::options::{OnError, StageOptions};
///
/// let mut opts = StageOptions::default();
/// opts.name = Some("enrich".into());
/// opts.concurrency = Some(8);
/// opts.timeout = Some(Duration::from_secs(2));
/// opts.on_error = Some(OnError::Drop);
/// assert_eq!(opts.concurrency, Some(8));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct StageOptions {
    /// Name used in metrics, spans, dead letters and the topology graph.
    pub name: Option<Cow<'static, str>>,
    /// Items in flight inside this stage (default 1).
    pub concurrency: Option<usize>,
    /// Keep input order at the output when `concurrency > 1` (default: unordered).
    pub ordered: Option<bool>,
    /// Capacity of this stage's input edge, in items (default 1024).
    pub buffer: Option<usize>,
    /// What the input edge does when full (default [`WhenFull::Block`]).
    pub when_full: Option<WhenFull>,
    /// Deadline of one attempt.
    pub timeout: Option<Duration>,
    /// Retries of failed attempts.
    pub retry: Option<RetryOptions>,
    /// Circuit breaker around the stage's calls.
    pub breaker: Option<BreakerOptions>,
    /// Calls allowed per period.
    pub rate: Option<RateOptions>,
    /// What happens to an item whose attempts are exhausted (default
    /// [`OnError::DeadLetter`]).
    pub on_error: Option<OnError>,
    /// Supervision: how a panicking stage is rebuilt and when to give up.
    pub restart: Option<RestartOptions>,
}

impl StageOptions {
    /// Fills every field not set in `self` from `fallback`.
    #[must_use]
    pub fn or(self, fallback: StageOptions) -> StageOptions {
        StageOptions {
            name: self.name.or(fallback.name),
            concurrency: self.concurrency.or(fallback.concurrency),
            ordered: self.ordered.or(fallback.ordered),
            buffer: self.buffer.or(fallback.buffer),
            when_full: self.when_full.or(fallback.when_full),
            timeout: self.timeout.or(fallback.timeout),
            retry: self.retry.or(fallback.retry),
            breaker: self.breaker.or(fallback.breaker),
            rate: self.rate.or(fallback.rate),
            on_error: self.on_error.or(fallback.on_error),
            restart: self.restart.or(fallback.restart),
        }
    }
}

/// What an edge does with an item that arrives while it is full. Every drop is counted
/// and traced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum WhenFull {
    /// The sender waits for room: backpressure reaches the source. Nothing is lost.
    #[default]
    Block,
    /// The arriving items that do not fit are dropped (outcome `Dropped`); the sender
    /// never waits.
    DropNewest,
    /// The oldest queued items are dropped to make room (outcome `Dropped`); the sender
    /// never waits.
    DropOldest,
    /// The arriving items that do not fit go to the dead-letter sink; the sender never
    /// waits on the edge (it may wait on the dead-letter sink).
    DeadLetter,
}

/// What happens to an item whose attempts are exhausted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OnError {
    /// Send a [`DeadLetter`](crate::DeadLetter) record to the dead-letter sink; the item's
    /// outcome is `DeadLettered` once the sink confirmed the write.
    #[default]
    DeadLetter,
    /// Drop the item (outcome `Dropped`), counted and traced.
    Drop,
    /// Mark the item `Failed` and shut the pipeline down.
    Fail,
}

/// Retry settings: `attempts` counts every attempt, the first included.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryOptions {
    /// Attempts in all, the first included (so `1` means no retry).
    pub attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Upper bound of one delay.
    pub max_backoff: Duration,
    /// Full jitter: each delay is drawn uniformly from `0..=delay`.
    pub jitter: bool,
    /// Retry budget: retries allowed as a share of recent first attempts (e.g. `0.2`).
    pub budget: Option<f64>,
    /// The budget's floor: retries per second allowed whatever the share (default 10,
    /// as tower's budget), so the odd failure is retried even with little traffic.
    pub budget_floor: u32,
    /// Your own delays instead of the exponential ones (`backoff`, `max_backoff` and
    /// `jitter` are then not used).
    pub schedule: Option<Delays>,
    /// Which errors are worth another attempt; the others are permanent (not retried,
    /// not counted by the breaker). For any stage, closure stages included; the
    /// stage's own [`Stage::is_permanent`](crate::Stage::is_permanent) and a
    /// [`Fault::Permanent`](crate::policy::Fault) are permanent whatever it says.
    pub when: Option<RetryWhen>,
}

/// A predicate over a failed attempt's error: `true` if it is worth retrying. See
/// [`RetryOptions::when`] and [`RetryOptions::retry_when`].
#[derive(Clone)]
pub struct RetryWhen(Arc<Predicate>);

type Predicate = dyn Fn(&(dyn std::error::Error + 'static)) -> bool + Send + Sync;

impl RetryWhen {
    /// A predicate from `f`.
    ///
    /// ```
    /// use pipeline_core::options::RetryWhen;
    /// let when = RetryWhen::new(|e| e.to_string().contains("timeout"));
    /// assert!(when.accepts(&std::io::Error::other("timeout")));
    /// assert!(!when.accepts(&std::io::Error::other("bad input")));
    /// ```
    pub fn new<F>(f: F) -> Self
    where
        F: Fn(&(dyn std::error::Error + 'static)) -> bool + Send + Sync + 'static,
    {
        RetryWhen(Arc::new(f))
    }

    /// Whether `error` is worth another attempt.
    pub fn accepts(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        (self.0)(error)
    }
}

impl std::fmt::Debug for RetryWhen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetryWhen(..)")
    }
}

/// Two predicates are equal when they are the same one.
impl PartialEq for RetryWhen {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Delays between attempts from your own iterator: a fixed list, or a backon builder's.
/// It is made afresh for each failing item, and the retries stop when it ends.
///
/// ```
/// use std::time::Duration;
/// use pipeline_core::options::{Delays, RetryOptions};
///
/// let mut retry = RetryOptions::new(5);
/// retry.schedule = Some(Delays::new(|| [Duration::from_millis(10), Duration::from_secs(1)]));
/// let first: Vec<Duration> = retry.schedule.as_ref().unwrap().make().collect();
/// assert_eq!(first.len(), 2);
/// ```
#[derive(Clone)]
pub struct Delays(Arc<MakeDelays>);

type MakeDelays = dyn Fn() -> Box<dyn Iterator<Item = Duration> + Send> + Send + Sync;

impl Delays {
    /// Delays from `make`, called once per failing item.
    pub fn new<F, I>(make: F) -> Self
    where
        F: Fn() -> I + Send + Sync + 'static,
        I: IntoIterator<Item = Duration>,
        I::IntoIter: Send + 'static,
    {
        Delays(Arc::new(move || Box::new(make().into_iter())))
    }

    /// A fresh iterator of delays.
    pub fn make(&self) -> Box<dyn Iterator<Item = Duration> + Send> {
        (self.0)()
    }
}

impl std::fmt::Debug for Delays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Delays(..)")
    }
}

/// Two schedules are equal when they are the same one.
impl PartialEq for Delays {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl RetryOptions {
    /// `attempts` in all with defaults for the rest (100 ms backoff, 10 s cap, jitter on,
    /// no budget; a budget's floor is 10 retries per second).
    pub fn new(attempts: u32) -> Self {
        RetryOptions {
            attempts,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            jitter: true,
            budget: None,
            budget_floor: 10,
            schedule: None,
            when: None,
        }
    }

    /// The same settings, retrying only the errors `pred` accepts (downcast the `&dyn
    /// Error` to your error type to look inside it).
    ///
    /// ```
    /// use pipeline_core::options::RetryOptions;
    ///
    /// let retry = RetryOptions::new(3).retry_when(|e| {
    ///     e.downcast_ref::<std::io::Error>()
    ///         .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
    /// });
    /// let when = retry.when.as_ref().unwrap();
    /// assert!(!when.accepts(&std::io::Error::other("bad input")));
    /// ```
    #[must_use]
    pub fn retry_when<F>(mut self, pred: F) -> Self
    where
        F: Fn(&(dyn std::error::Error + 'static)) -> bool + Send + Sync + 'static,
    {
        self.when = Some(RetryWhen::new(pred));
        self
    }
}

/// Circuit-breaker settings, after Resilience4j.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerOptions {
    /// Failure rate (0..=1) at or above which the breaker opens.
    pub failure_rate: f64,
    /// Slow-call rate (0..=1) at or above which the breaker opens.
    pub slow_call_rate: f64,
    /// Calls slower than this count as slow (`None`: no slow-call tracking).
    pub slow_call: Option<Duration>,
    /// Size of the sliding window.
    pub window: Window,
    /// Calls needed in the window before rates are evaluated.
    pub min_calls: u32,
    /// How long the breaker stays open before letting probes through.
    pub open_for: Duration,
    /// Probes permitted in the half-open state.
    pub half_open: u32,
    /// What the stage does while the breaker is open.
    pub mode: BreakerMode,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        BreakerOptions {
            failure_rate: 0.5,
            slow_call_rate: 1.0,
            slow_call: None,
            window: Window::Count(100),
            min_calls: 100,
            open_for: Duration::from_secs(60),
            half_open: 10,
            mode: BreakerMode::Wait,
        }
    }
}

/// The breaker's sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `d`, in one-second buckets.
    Time(Duration),
}

/// What a stage does with items while its breaker is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BreakerMode {
    /// Wait for the breaker to let a probe through: the stage stops pulling input, so
    /// backpressure reaches the source. Nothing is dead-lettered because the breaker is open.
    #[default]
    Wait,
    /// Fail the attempt at once with `BreakerOpen`; exhausted items go to `on_error`.
    FailFast,
}

/// A rate: `calls` per `per`, with bursts of up to `burst` calls at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateOptions {
    /// Calls allowed per period.
    pub calls: u32,
    /// The period.
    pub per: Duration,
    /// Calls allowed at once after a quiet spell (`None`: `calls`, a whole period's worth).
    pub burst: Option<u32>,
}

impl RateOptions {
    /// `calls` per `per`, bursts of up to `calls`.
    pub fn new(calls: u32, per: Duration) -> Self {
        RateOptions {
            calls,
            per,
            burst: None,
        }
    }

    /// The same rate with bursts of at most `burst` calls (at least 1).
    ///
    /// ```
    /// use std::time::Duration;
    /// use pipeline_core::options::RateOptions;
    /// let rate = RateOptions::new(100, Duration::from_secs(1)).with_burst(5);
    /// assert_eq!(rate.burst, Some(5));
    /// ```
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }
}

/// Supervision after a panic: at most `max` restarts within `within`, waiting `backoff`
/// before each; one more stops the pipeline with an error naming the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestartOptions {
    /// Restarts allowed within the window.
    pub max: u32,
    /// The window.
    pub within: Duration,
    /// Delay before each restart.
    pub backoff: Duration,
}

impl RestartOptions {
    /// `max` restarts within `within`, no backoff.
    pub fn new(max: u32, within: Duration) -> Self {
        RestartOptions {
            max,
            within,
            backoff: Duration::ZERO,
        }
    }
}
