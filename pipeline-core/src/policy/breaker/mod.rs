//! [`CircuitBreaker`] with Resilience4j's semantics on tokio's clock.

mod window;

#[cfg(all(test, pipeline_loom))]
mod loom_tests;
#[cfg(all(test, not(pipeline_loom)))]
mod model;
#[cfg(all(test, not(pipeline_loom)))]
mod tests;

use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::options::{BreakerOptions, Window};
use crate::policy::counters::{Event, PolicyCounters};
use crate::sync::{AtomicU64, Mutex, MutexGuard};
use window::{FAILED, SLOW, SlidingWindow, Totals};

/// The state of a [`CircuitBreaker`]. As a gauge (`pipeline_breaker_state`): 0, 1, 2; in
/// JSON `"closed"`, `"open"`, `"half_open"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass and are recorded.
    Closed = 0,
    /// Calls are refused until `open_for` has elapsed.
    Open = 1,
    /// A fixed number of probe calls pass; their outcome decides the next state.
    HalfOpen = 2,
}

/// The low bits of [`CircuitBreaker`]'s word: the state (2 bits), then [`CLEAN`].
const STATE_MASK: u64 = 3;
/// Set while the breaker is closed with a count window holding no failure and no slow
/// call, and thresholds above zero: then no success can change its state, so callers
/// may keep successes in a tally and fold them in later ([`CircuitBreaker::clean_epoch`]).
const CLEAN: u64 = 4;
/// The epoch sits above the state and the clean bit.
const EPOCH_SHIFT: u32 = 3;

impl BreakerState {
    fn from_bits(bits: u64) -> Self {
        match bits & 3 {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }
}

/// The breaker refused a call.
///
/// # Examples
///
/// ```
/// use pipeline_core::options::BreakerOptions;
/// use pipeline_core::policy::CircuitBreaker;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let breaker = CircuitBreaker::new("db", &BreakerOptions::default());
/// breaker.force_open();
/// let refused = breaker.try_acquire().unwrap_err();
/// assert!(refused.next_probe_at().is_some());
/// assert_eq!(refused.to_string(), "circuit breaker is open");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is open")]
pub struct BreakerOpen {
    until: Option<Instant>,
}

impl BreakerOpen {
    /// When the breaker will let a probe through: the end of the open period, or `None`
    /// when it is half-open with every probe in flight (a probe slot frees up when one
    /// of them completes).
    pub fn next_probe_at(&self) -> Option<Instant> {
        self.until
    }
}

/// A circuit breaker following Resilience4j's semantics, reading tokio's clock so
/// `tokio::time::pause` drives it.
///
/// States: **closed** (calls pass and are recorded in a sliding window), **open** (calls
/// are refused for `open_for`), **half-open** (exactly `half_open` probe calls pass; when
/// all of them have completed, their rates decide: below both thresholds -> closed with
/// a fresh window, otherwise open again).
///
/// In the closed state, once the window holds at least `min_calls` calls (for a count
/// window, at most its size), each recorded call checks the failure rate and the
/// slow-call rate; either at or above its threshold opens the breaker. A call is slow
/// when it took strictly longer than `slow_call`; a slow failure counts as both. A time
/// window of `d` counts the calls of the current second of the breaker's age and the
/// `d - 1` before it (`d` rounded up to whole seconds).
///
/// Where we differ from Resilience4j, on purpose:
/// - A result that arrives after the breaker changed state (a call admitted while closed
///   that finishes after the breaker opened) is discarded, so the half-open verdict is
///   made on the probes alone.
/// - The open -> half-open move happens when someone asks for a permit after `open_for`
///   (Resilience4j's default, with no automatic transition); [`acquire`](Self::acquire)
///   sleeps until then, so waiting callers see it on time.
/// - Probes that are ignored (permanent errors) or dropped unresolved (cancelled calls)
///   free their slot for another probe, so a cancelled call never wedges half-open.
/// - Zero `half_open` counts as 1 and a zero-sized count window as 1 call.
///
/// Ask for a [`Permit`] before each call ([`try_acquire`](Self::try_acquire) refuses at
/// once, [`acquire`](Self::acquire) waits), then resolve it with the call's outcome.
///
/// # Cost
///
/// In the closed state `try_acquire` is one atomic load; resolving a permit takes one
/// short lock (and one clock read with a time-based window). The lock is never held
/// across an await. The policy engine goes further on the hot path: while the breaker is
/// closed with a count window that holds no failure (and slow calls are not tracked), no
/// success can change its state, so a call costs one atomic load and successes are kept
/// in a tally folded into the window once per batch, or at once before a failure is
/// recorded, so the breaker opens on the same call as it would with one record per call.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipeline_core::options::{BreakerOptions, Window};
/// use pipeline_core::policy::{BreakerState, CircuitBreaker};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut opts = BreakerOptions::default();
/// opts.window = Window::Count(4);
/// opts.min_calls = 4;
/// opts.open_for = Duration::from_secs(30);
/// opts.half_open = 1;
/// let breaker = CircuitBreaker::new("db", &opts);
///
/// for _ in 0..2 {
///     breaker.try_acquire().unwrap().success(Duration::ZERO);
///     breaker.try_acquire().unwrap().failure(Duration::ZERO);
/// }
/// assert_eq!(breaker.state(), BreakerState::Open); // 50% failures >= 50%
/// assert!(breaker.try_acquire().is_err());
///
/// let probe = breaker.acquire().await; // sleeps the 30 s of paused time
/// assert_eq!(breaker.state(), BreakerState::HalfOpen);
/// probe.success(Duration::ZERO);
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// assert_eq!(breaker.transitions(), 3);
/// # }
/// ```
pub struct CircuitBreaker {
    cfg: Config,
    /// `(epoch << 2) | state`: read without the lock by the closed-state fast path.
    word: AtomicU64,
    core: Mutex<Core>,
    notify: Notify,
    counters: Arc<PolicyCounters>,
    transitions: AtomicU64,
    origin: Instant,
}

#[derive(Debug)]
struct Config {
    opts: BreakerOptions,
    min_calls: u32,
    half_open: u32,
    time_window: bool,
    /// Successes may be tallied while the window is clean (see [`CLEAN`]).
    tally: bool,
}

#[derive(Debug)]
struct Core {
    /// Bumped on every transition; permits of older epochs are stale.
    epoch: u64,
    phase: Phase,
    window: SlidingWindow,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        /// Probe slots not handed out.
        idle: u32,
        in_flight: u32,
        /// Outcomes of the completed probes.
        done: Totals,
    },
}

impl Phase {
    fn state(&self) -> BreakerState {
        match self {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Ignore,
}

/// A transition made under the lock, announced after it is released.
#[derive(Debug, Clone, Copy)]
struct Change {
    to: Phase,
    rates: Totals,
}

impl CircuitBreaker {
    /// A closed breaker named `name` (the stage name in its events and metrics).
    pub fn new(name: impl Into<Arc<str>>, opts: &BreakerOptions) -> Self {
        let origin = Instant::now();
        let (window, min_calls, time_window) = match opts.window {
            Window::Count(n) => (SlidingWindow::count(n), opts.min_calls.min(n.max(1)), false),
            Window::Time(d) => (SlidingWindow::time(d, origin), opts.min_calls, true),
        };
        let tally = !time_window
            && opts.slow_call.is_none()
            && opts.failure_rate > 0.0
            && opts.failure_rate.is_finite();
        let breaker = CircuitBreaker {
            cfg: Config {
                opts: opts.clone(),
                min_calls,
                half_open: opts.half_open.max(1),
                time_window,
                tally,
            },
            word: AtomicU64::new(BreakerState::Closed as u64 | if tally { CLEAN } else { 0 }),
            core: Mutex::new(Core {
                epoch: 0,
                phase: Phase::Closed,
                window,
            }),
            notify: Notify::new(),
            counters: Arc::new(PolicyCounters::new(name)),
            transitions: AtomicU64::new(0),
            origin,
        };
        breaker.set_gauge(BreakerState::Closed);
        breaker
    }

    /// The same breaker counting its transitions into `counters` (shared with a stage's
    /// other policies), and named after them.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use pipeline_core::options::BreakerOptions;
    /// use pipeline_core::policy::{CircuitBreaker, PolicyCounters};
    ///
    /// let counters = Arc::new(PolicyCounters::new("db"));
    /// let breaker = CircuitBreaker::new("db", &BreakerOptions::default())
    ///     .with_counters(Arc::clone(&counters));
    /// breaker.force_open();
    /// assert_eq!(counters.breaker_transitions(), 1);
    /// ```
    #[must_use]
    pub fn with_counters(mut self, counters: Arc<PolicyCounters>) -> Self {
        self.counters = counters;
        self.set_gauge(self.state());
        self
    }

    /// The current state. An open breaker whose `open_for` has elapsed reads `Open`
    /// until the next permit request moves it to half-open.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_bits(self.word.load(Ordering::Acquire))
    }

    /// How many state changes this breaker has made.
    pub fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }

    /// The settings it was built from.
    pub fn options(&self) -> &BreakerOptions {
        &self.cfg.opts
    }

    /// The counters its transitions go to.
    pub fn counters(&self) -> &Arc<PolicyCounters> {
        &self.counters
    }

    /// Takes a permit for one call, or refuses at once.
    ///
    /// # Errors
    ///
    /// [`BreakerOpen`] while open (before `open_for` has elapsed) or half-open with
    /// every probe slot taken.
    pub fn try_acquire(&self) -> Result<Permit<'_>, BreakerOpen> {
        let word = self.word.load(Ordering::Acquire);
        if BreakerState::from_bits(word) == BreakerState::Closed {
            return Ok(Permit::new(self, word >> EPOCH_SHIFT, false));
        }
        let mut core = self.lock();
        let (result, next) = match &mut core.phase {
            Phase::Closed => (Ok(false), None),
            Phase::Open { until } => {
                let until = *until;
                if Instant::now() >= until {
                    let probe = Phase::HalfOpen {
                        idle: self.cfg.half_open - 1,
                        in_flight: 1,
                        done: Totals::default(),
                    };
                    (Ok(true), Some(probe))
                } else {
                    (Err(BreakerOpen { until: Some(until) }), None)
                }
            }
            Phase::HalfOpen {
                idle, in_flight, ..
            } => {
                if *idle > 0 {
                    *idle -= 1;
                    *in_flight += 1;
                    (Ok(true), None)
                } else {
                    (Err(BreakerOpen { until: None }), None)
                }
            }
        };
        let change = next.map(|phase| self.enter(&mut core, phase, Totals::default()));
        let epoch = core.epoch;
        drop(core);
        if let Some(change) = change {
            self.announce(change);
        }
        result.map(|probe| Permit::new(self, epoch, probe))
    }

    /// Waits for a permit: while open, sleeps (on tokio's clock) until `open_for` has
    /// elapsed; while half-open with every probe out, until a probe completes.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped wait holds nothing; no permit is taken until it returns.
    pub async fn acquire(&self) -> Permit<'_> {
        if let Ok(permit) = self.try_acquire() {
            return permit;
        }
        loop {
            // Register for wake-ups before looking, so a release in between is not lost.
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            match self.try_acquire() {
                Ok(permit) => return permit,
                Err(BreakerOpen { until: Some(until) }) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = notified => {}
                    }
                }
                Err(BreakerOpen { until: None }) => notified.await,
            }
        }
    }

    /// Opens the breaker now, for `open_for` (an operator's or a test's override).
    pub fn force_open(&self) {
        let until = Instant::now() + self.cfg.opts.open_for;
        let mut core = self.lock();
        let change = self.enter(&mut core, Phase::Open { until }, Totals::default());
        drop(core);
        self.announce(change);
    }

    /// Closes the breaker now with an empty window.
    pub fn reset(&self) {
        let mut core = self.lock();
        core.window.reset();
        let change = self.enter(&mut core, Phase::Closed, Totals::default());
        drop(core);
        self.announce(change);
    }

    /// The epoch of a closed breaker whose window is clean ([`CLEAN`]): a call may then
    /// go ahead without a permit, and its success be kept in a tally for
    /// [`fold_successes`](Self::fold_successes). One atomic load.
    #[inline]
    pub(crate) fn clean_epoch(&self) -> Option<u64> {
        let word = self.word.load(Ordering::Acquire);
        (word & (STATE_MASK | CLEAN) == CLEAN).then_some(word >> EPOCH_SHIFT)
    }

    /// Records `successes` calls admitted in closed epoch `epoch` (stale ones are
    /// dropped: the window they belong to is gone).
    pub(crate) fn fold_successes(&self, epoch: u64, successes: u64) {
        if successes > 0 {
            self.finish_with(epoch, successes, Outcome::Ignore, Duration::ZERO);
        }
    }

    /// Records a failure of a call admitted in closed epoch `epoch`, after the
    /// `successes` tallied before it.
    pub(crate) fn fail_after(&self, epoch: u64, successes: u64, elapsed: Duration) {
        self.finish_with(epoch, successes, Outcome::Failure, elapsed);
    }

    fn finish(&self, epoch: u64, outcome: Outcome, elapsed: Duration) {
        self.finish_with(epoch, 0, outcome, elapsed);
    }

    /// Records, for a permit of `epoch`: first `successes` tallied closed-state successes,
    /// then `outcome`.
    fn finish_with(&self, epoch: u64, successes: u64, outcome: Outcome, elapsed: Duration) {
        let word = self.word.load(Ordering::Acquire);
        let closed = BreakerState::from_bits(word) == BreakerState::Closed;
        if word >> EPOCH_SHIFT != epoch || (closed && outcome == Outcome::Ignore && successes == 0)
        {
            return; // stale, or nothing to record
        }
        let opts = &self.cfg.opts;
        let slow = outcome != Outcome::Ignore && opts.slow_call.is_some_and(|t| elapsed > t);
        let bits = if outcome == Outcome::Failure {
            FAILED
        } else {
            0
        } | if slow { SLOW } else { 0 };
        let clock = if closed && self.cfg.time_window {
            Instant::now()
        } else {
            self.origin
        };
        let mut core = self.lock();
        if core.epoch != epoch {
            return;
        }
        let mut released = false;
        let Core { phase, window, .. } = &mut *core;
        let (next, rates) = match phase {
            Phase::Closed => {
                let mut next = None;
                let mut totals = Totals::default();
                // Tallied successes come first, in the order they happened.
                if successes > 0 && self.cfg.tally && window.record_successes(successes) {
                    // A clean window: successes cannot trip it.
                    totals = window.totals();
                } else {
                    for _ in 0..successes {
                        totals = window.record(0, clock);
                        if totals.calls >= self.cfg.min_calls && self.tripped(&totals) {
                            next = Some(self.open_phase());
                            break;
                        }
                    }
                }
                if next.is_none() && outcome != Outcome::Ignore {
                    totals = window.record(bits, clock);
                    let trip = totals.calls >= self.cfg.min_calls && self.tripped(&totals);
                    next = trip.then(|| self.open_phase());
                }
                (next, totals)
            }
            Phase::Open { .. } => (None, Totals::default()), // no permits in open epochs
            Phase::HalfOpen {
                idle,
                in_flight,
                done,
            } => {
                *in_flight = in_flight.saturating_sub(1);
                if outcome == Outcome::Ignore {
                    *idle += 1;
                    released = true;
                    (None, *done)
                } else {
                    done.add(bits);
                    let done = *done;
                    if done.calls >= self.cfg.half_open {
                        if self.tripped(&done) {
                            (Some(self.open_phase()), done)
                        } else {
                            (Some(Phase::Closed), done)
                        }
                    } else {
                        (None, done)
                    }
                }
            }
        };
        let change = next.map(|phase| {
            if matches!(phase, Phase::Closed) {
                core.window.reset();
            }
            self.enter(&mut core, phase, rates)
        });
        if change.is_none() && matches!(core.phase, Phase::Closed) {
            // The window changed: publish whether it is still clean.
            let word = self.word_of(&core);
            self.word.store(word, Ordering::Release);
        }
        drop(core);
        match change {
            Some(change) => self.announce(change),
            None if released => self.notify.notify_waiters(),
            None => {}
        }
    }

    /// The word for `core`: epoch, clean bit, state.
    fn word_of(&self, core: &Core) -> u64 {
        let state = core.phase.state() as u64;
        let clean = matches!(core.phase, Phase::Closed)
            && self.cfg.tally
            && core.window.totals().failures == 0
            && core.window.totals().slow == 0;
        (core.epoch << EPOCH_SHIFT) | if clean { CLEAN } else { 0 } | state
    }

    fn open_phase(&self) -> Phase {
        Phase::Open {
            until: Instant::now() + self.cfg.opts.open_for,
        }
    }

    fn tripped(&self, t: &Totals) -> bool {
        if t.calls == 0 {
            return false;
        }
        let opts = &self.cfg.opts;
        let calls = f64::from(t.calls);
        f64::from(t.failures) / calls >= opts.failure_rate
            || (opts.slow_call.is_some() && f64::from(t.slow) / calls >= opts.slow_call_rate)
    }

    /// Moves to `phase` under the lock; the caller announces the change after unlocking.
    fn enter(&self, core: &mut Core, phase: Phase, rates: Totals) -> Change {
        core.phase = phase;
        core.epoch += 1;
        let bits = self.word_of(core);
        self.word.store(bits, Ordering::Release);
        self.transitions.fetch_add(1, Ordering::Relaxed);
        Change { to: phase, rates }
    }

    fn announce(&self, change: Change) {
        let stage = self.counters.stage();
        let Totals {
            calls,
            failures,
            slow,
        } = change.rates;
        match change.to {
            Phase::Open { .. } => tracing::warn!(
                stage, calls, failures, slow, open_for = ?self.cfg.opts.open_for, "breaker opened"
            ),
            Phase::HalfOpen { .. } => tracing::info!(stage, "breaker half-open"),
            Phase::Closed => tracing::info!(stage, calls, failures, slow, "breaker closed"),
        }
        self.counters.record(Event::BreakerTransition);
        self.set_gauge(change.to.state());
        self.notify.notify_waiters();
    }

    fn set_gauge(&self, state: BreakerState) {
        metrics::gauge!("pipeline_breaker_state", "stage" => Arc::clone(self.counters.stage_arc()))
            .set(f64::from(state as u8));
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // Every update under the lock is a few plain stores; a panic elsewhere cannot
        // leave it half-done, so a poisoned lock is still consistent.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("stage", &self.counters.stage())
            .field("state", &self.state())
            .field("options", &self.cfg.opts)
            .finish_non_exhaustive()
    }
}

/// Leave to make one call through a [`CircuitBreaker`]. Resolve it with the call's
/// outcome; dropping it unresolved (a cancelled call) counts as [`ignore`](Self::ignore).
#[must_use = "resolve the permit with success(), failure() or ignore()"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    epoch: u64,
    probe: bool,
    resolved: bool,
}

impl<'a> Permit<'a> {
    fn new(breaker: &'a CircuitBreaker, epoch: u64, probe: bool) -> Self {
        Permit {
            breaker,
            epoch,
            probe,
            resolved: false,
        }
    }

    /// Whether this permit is a half-open probe (not a call of a closed breaker). The
    /// policy engine does not count a failed probe as an attempt of its item.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The call succeeded after `elapsed` (slow if longer than `slow_call`).
    pub fn success(self, elapsed: Duration) {
        self.resolve(Outcome::Success, elapsed);
    }

    /// The call failed after `elapsed` (also slow if longer than `slow_call`).
    pub fn failure(self, elapsed: Duration) {
        self.resolve(Outcome::Failure, elapsed);
    }

    /// The call's outcome says nothing about the dependency (a permanent error): it is
    /// not recorded, and a half-open probe slot is given back.
    pub fn ignore(self) {
        self.resolve(Outcome::Ignore, Duration::ZERO);
    }

    fn resolve(mut self, outcome: Outcome, elapsed: Duration) {
        self.resolved = true;
        self.breaker.finish(self.epoch, outcome, elapsed);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.resolved {
            self.breaker
                .finish(self.epoch, Outcome::Ignore, Duration::ZERO);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("epoch", &self.epoch)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}
