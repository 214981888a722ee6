//! Test support for users (feature `testing`): run a pipeline or one stage over a list of
//! items and get every outcome back, inject seeded faults, run on paused time.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::convert::Infallible;
//! use pipeline_core::prelude::*;
//! use pipeline_core::testing;
//!
//! let run = testing::run(0..10u64, |b| {
//!     b.stage(stage::filter_fn("even", |n: u64| async move {
//!         Ok::<_, Infallible>((n % 2 == 0).then_some(n))
//!     }))
//! })
//! .await;
//! assert_eq!(run.delivered, vec![0, 2, 4, 6, 8]);
//! assert_eq!(run.report.filtered, 5);
//! assert!(run.dead_letters.is_empty());
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::context::Context;
use crate::dead_letter::DeadLetter;
use crate::pipeline::{Builder, Pipeline, RunReport};
use crate::stage::{Emitted, Stage};
use crate::{sink, source};

/// Everything a test run produced.
#[derive(Debug)]
#[non_exhaustive]
pub struct TestRun<T> {
    /// What reached the sink, in arrival order.
    pub delivered: Vec<T>,
    /// What reached the dead-letter sink.
    pub dead_letters: Vec<DeadLetter>,
    /// The run's report (outcome counts, per-stage counters). For a run stopped by
    /// `on_error = fail`, [`failure`](RunReport::failure) says why.
    pub report: RunReport,
}

/// Runs `items` through the stages `chain` adds, into a collecting sink and a collecting
/// dead-letter sink.
pub async fn run<I, T, U, L>(
    items: I,
    chain: impl FnOnce(Builder<T>) -> Builder<U, L>,
) -> TestRun<U>
where
    I: IntoIterator<Item = T>,
    I::IntoIter: Send + 'static,
    T: Send + 'static,
    U: Send + 'static,
    L: 'static,
{
    let (out, delivered) = sink::collect();
    let (dead, dead_letters) = sink::collect();
    let ready = chain(Pipeline::builder("test").source(source::iter(items)))
        .sink(out)
        .dead_letter(dead);
    let report = match ready.run().await {
        Ok(report) => report,
        Err(error) => *error.report,
    };
    TestRun {
        delivered: delivered.take(),
        dead_letters: dead_letters.take(),
        report,
    }
}

/// Runs `items` through one stage (with the options it declares).
pub async fn run_stage<S, I>(stage: S, items: I) -> TestRun<Emitted<S>>
where
    S: Stage,
    I: IntoIterator<Item = S::In>,
    I::IntoIter: Send + 'static,
{
    run(items, |b| b.stage(stage)).await
}

/// A current-thread runtime with tokio's clock paused: timers fire as soon as every task
/// is idle, so a test of minutes of timeouts and backoff runs in milliseconds.
///
/// # Panics
///
/// If the runtime cannot be built (the OS refused a resource).
pub fn paused_runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot build a test runtime: {e}"),
    }
}

/// A seeded plan of faults to inject into a stage's attempts: retryable errors,
/// permanent errors, panics and delays, each with a probability per attempt.
///
/// Whether an attempt fails depends only on the seed, the item's key and the attempt
/// number, so a failing seed reproduces exactly, whatever the scheduling.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::convert::Infallible;
/// use pipeline_core::prelude::*;
/// use pipeline_core::testing::{self, Faults};
///
/// let stage = Faults::new(7).errors(0.5).inject(
///     stage::map_fn("id", |n: u64| async move { Ok::<_, Infallible>(n) }),
///     |n: &u64| *n,
/// );
/// let run = testing::run_stage(stage, 0..100u64).await;
/// assert!(!run.dead_letters.is_empty());
/// assert_eq!(run.delivered.len() + run.dead_letters.len(), 100);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    seed: u64,
    error: f64,
    permanent: f64,
    panic: f64,
    delay: f64,
    delay_for: Duration,
}

impl Faults {
    /// No faults yet, with `seed`.
    pub fn new(seed: u64) -> Self {
        Faults {
            seed,
            error: 0.0,
            permanent: 0.0,
            panic: 0.0,
            delay: 0.0,
            delay_for: Duration::from_secs(1),
        }
    }

    /// Share of attempts failing with a retryable [`Injected::Error`].
    #[must_use]
    pub fn errors(mut self, p: f64) -> Self {
        self.error = p;
        self
    }

    /// Share of attempts failing with a permanent [`Injected::Permanent`].
    #[must_use]
    pub fn permanent(mut self, p: f64) -> Self {
        self.permanent = p;
        self
    }

    /// Share of attempts that panic.
    #[must_use]
    pub fn panics(mut self, p: f64) -> Self {
        self.panic = p;
        self
    }

    /// Share of attempts delayed by `by` (on tokio's clock) before the real call: with a
    /// shorter timeout, a timeout.
    #[must_use]
    pub fn delays(mut self, p: f64, by: Duration) -> Self {
        self.delay = p;
        self.delay_for = by;
        self
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Wraps `stage`; `key` identifies an item (its id) for the fault draw.
    pub fn inject<S, K>(self, stage: S, key: K) -> Faulty<S, K>
    where
        S: Stage,
        K: Fn(&S::In) -> u64 + Send + Sync + 'static,
    {
        Faulty {
            faults: self,
            stage,
            key,
        }
    }

    /// The fault for attempt `attempt` of the item with key `key`.
    pub fn draw(&self, key: u64, attempt: u32) -> Option<InjectedFault> {
        let r = unit(mix(self.seed
            ^ mix(key)
            ^ mix(u64::from(attempt).wrapping_mul(0x9e37))));
        let mut edge = self.panic;
        if r < edge {
            return Some(InjectedFault::Panic);
        }
        edge += self.permanent;
        if r < edge {
            return Some(InjectedFault::Permanent);
        }
        edge += self.error;
        if r < edge {
            return Some(InjectedFault::Error);
        }
        edge += self.delay;
        if r < edge {
            return Some(InjectedFault::Delay(self.delay_for));
        }
        None
    }
}

/// One injected fault (what [`Faults::draw`] picked for an attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFault {
    /// A retryable error.
    Error,
    /// A permanent error.
    Permanent,
    /// A panic inside the call.
    Panic,
    /// A delay before the real call.
    Delay(Duration),
}

/// splitmix64's finalizer: a good 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The error of a [`Faulty`] stage: an injected fault or the stage's own error.
#[derive(Debug)]
pub enum Injected<E> {
    /// An injected retryable error.
    Error,
    /// An injected permanent error.
    Permanent,
    /// The wrapped stage's own error.
    Stage(E),
}

impl<E: fmt::Display> fmt::Display for Injected<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Injected::Error => f.write_str("injected error"),
            Injected::Permanent => f.write_str("injected permanent error"),
            Injected::Stage(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Injected<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Injected::Stage(e) => Some(e),
            _ => None,
        }
    }
}

/// A stage with seeded faults; see [`Faults::inject`].
pub struct Faulty<S, K> {
    faults: Faults,
    stage: S,
    key: K,
}

impl<S: fmt::Debug, K> fmt::Debug for Faulty<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faulty")
            .field("faults", &self.faults)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl<S, K> Stage for Faulty<S, K>
where
    S: Stage,
    K: Fn(&S::In) -> u64 + Send + Sync + 'static,
{
    type In = S::In;
    type Output = S::Output;
    type Shape = S::Shape;
    type Error = Injected<S::Error>;

    const DEAD_LETTER_ITEM: Option<crate::stage::ShowFn<S::In>> = S::DEAD_LETTER_ITEM;
    const CLONE_IN: Option<crate::stage::CloneFn<S::In>> = S::CLONE_IN;

    fn call(
        &self,
        item: S::In,
        cx: &Context,
    ) -> impl Future<Output = Result<S::Output, Self::Error>> + Send {
        let fault = self.faults.draw((self.key)(&item), cx.attempt());
        async move {
            match fault {
                Some(InjectedFault::Panic) => panic!("injected panic"),
                Some(InjectedFault::Error) => return Err(Injected::Error),
                Some(InjectedFault::Permanent) => return Err(Injected::Permanent),
                Some(InjectedFault::Delay(d)) => tokio::time::sleep(d).await,
                None => {}
            }
            self.stage.call(item, cx).await.map_err(Injected::Stage)
        }
    }

    fn is_permanent(&self, error: &Self::Error) -> bool {
        match error {
            Injected::Permanent => true,
            Injected::Error => false,
            Injected::Stage(e) => self.stage.is_permanent(e),
        }
    }

    fn on_start(&self) -> impl Future<Output = Result<(), crate::error::BoxError>> + Send {
        self.stage.on_start()
    }

    fn on_stop(&self) -> impl Future<Output = Result<(), crate::error::BoxError>> + Send {
        self.stage.on_stop()
    }

    fn restart(&self) -> Result<(), crate::error::BoxError> {
        self.stage.restart()
    }

    fn options(&self) -> crate::StageOptions {
        self.stage.options()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_reproducible_and_near_their_rates() {
        let f = Faults::new(42).errors(0.05).panics(0.01).permanent(0.001);
        let draws: Vec<_> = (0..100_000u64).map(|k| f.draw(k, 1)).collect();
        let again: Vec<_> = (0..100_000u64).map(|k| f.draw(k, 1)).collect();
        assert_eq!(draws, again);
        let count = |x: InjectedFault| draws.iter().filter(|d| **d == Some(x)).count();
        assert!(
            (4_500..5_500).contains(&count(InjectedFault::Error)),
            "{}",
            count(InjectedFault::Error)
        );
        assert!((800..1_200).contains(&count(InjectedFault::Panic)));
        assert!((50..150).contains(&count(InjectedFault::Permanent)));
        // Another attempt of the same item draws independently.
        assert_ne!(
            draws,
            (0..100_000u64).map(|k| f.draw(k, 2)).collect::<Vec<_>>()
        );
    }
}
