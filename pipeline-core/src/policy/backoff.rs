//! [`Backoff`]: how long to wait before each retry.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::options::RetryOptions;

type MakeIter = dyn Fn() -> Box<dyn Iterator<Item = Duration> + Send> + Send + Sync;

/// A retry delay schedule: exponential (`base`, doubling, capped at `max`) or any
/// iterator of [`Duration`]s, optionally with full jitter.
///
/// A `Backoff` is configuration; each failing item draws its own [`Schedule`] from it
/// with [`schedule`](Self::schedule), so items do not share delay state. With jitter on,
/// every delay `d` becomes a uniform draw from `0..=d` ("full jitter"), from a small
/// splitmix64 generator seeded per schedule (random per process by default,
/// [`with_seed`](Self::with_seed) for reproducible tests).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipeline_core::policy::Backoff;
///
/// let ms = Duration::from_millis;
/// let backoff = Backoff::exponential(ms(100), ms(1000));
/// let delays: Vec<_> = backoff.schedule().take(6).collect();
/// assert_eq!(delays, [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
///
/// // Full jitter: each delay is drawn from 0..=nominal.
/// let jittered = backoff.with_jitter(true).with_seed(7);
/// for (d, nominal) in jittered.schedule().zip(delays) {
///     assert!(d <= nominal);
/// }
///
/// // Any `IntoIterator<Item = Duration> + Clone` is a schedule too (for example a
/// // `backon` builder's iterator); when it ends, retrying stops.
/// let fixed = Backoff::from_iter([ms(10), ms(50)]);
/// assert_eq!(fixed.schedule().collect::<Vec<_>>(), [ms(10), ms(50)]);
/// ```
#[derive(Clone)]
pub struct Backoff {
    kind: Kind,
    jitter: bool,
    /// Per-schedule seeds are drawn from this counter (shared by clones).
    seeds: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Kind {
    Exponential { base: Duration, max: Duration },
    Custom(Arc<MakeIter>),
}

impl Backoff {
    /// `base`, `2 * base`, `4 * base`, ... each capped at `max`; no jitter.
    pub fn exponential(base: Duration, max: Duration) -> Self {
        Backoff::with_kind(Kind::Exponential { base, max })
    }

    /// The schedule [`RetryOptions`] describe: exponential from `backoff`, capped at
    /// `max_backoff`, full jitter if `jitter`.
    /// A custom [`schedule`](RetryOptions::schedule), if set, is used as given.
    pub fn from_options(opts: &RetryOptions) -> Self {
        match &opts.schedule {
            Some(delays) => {
                let delays = delays.clone();
                Backoff::from_fn(move || delays.make())
            }
            None => Backoff::exponential(opts.backoff, opts.max_backoff).with_jitter(opts.jitter),
        }
    }

    /// Any iterable of delays, cloned afresh for each failing item. The schedule ends
    /// when the iterator does: no retry is made after its last delay.
    ///
    /// The name mirrors [`FromIterator::from_iter`], but this takes the iterable whole
    /// (it is cloned for every failing item) rather than collecting it.
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I>(delays: I) -> Self
    where
        I: IntoIterator<Item = Duration> + Clone + Send + Sync + 'static,
        I::IntoIter: Send + 'static,
    {
        Backoff::from_fn(move || delays.clone())
    }

    /// A schedule made by `make` for each failing item; for builders that produce a fresh
    /// iterator each time (`|| ExponentialBuilder::default().build()` with backon).
    pub fn from_fn<F, I>(make: F) -> Self
    where
        F: Fn() -> I + Send + Sync + 'static,
        I: IntoIterator<Item = Duration>,
        I::IntoIter: Send + 'static,
    {
        let make: Arc<MakeIter> = Arc::new(move || Box::new(make().into_iter()));
        Backoff::with_kind(Kind::Custom(make))
    }

    fn with_kind(kind: Kind) -> Self {
        // A random first seed per process, without a `rand` dependency: std's hasher keys
        // are random. Jitter exists to de-correlate processes, so a fixed default would
        // defeat it.
        let seed = RandomState::new().hash_one(0x5eed_u64);
        Backoff {
            kind,
            jitter: false,
            seeds: Arc::new(AtomicU64::new(seed)),
        }
    }

    /// Turns full jitter on or off.
    #[must_use]
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Seeds the jitter generator, for reproducible schedules. The `n`-th schedule drawn
    /// after this call is the same on every run.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seeds = Arc::new(AtomicU64::new(seed));
        self
    }

    /// Whether delays are jittered.
    pub fn jitter(&self) -> bool {
        self.jitter
    }

    /// The nominal (un-jittered) delay before retry number `retry` (0-based) of an
    /// exponential schedule; `None` for a custom schedule.
    pub fn nominal(&self, retry: u32) -> Option<Duration> {
        match &self.kind {
            Kind::Exponential { base, max } => Some(exponential(*base, *max, retry)),
            Kind::Custom(_) => None,
        }
    }

    /// A fresh schedule for one failing item: the delay before each of its retries.
    /// Exponential schedules never end; custom ones end with their iterator.
    pub fn schedule(&self) -> Schedule {
        let seed = self
            .seeds
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let delays = match &self.kind {
            Kind::Exponential { base, max } => Delays::Exponential {
                base: *base,
                max: *max,
                retry: 0,
            },
            Kind::Custom(make) => Delays::Custom(make()),
        };
        Schedule {
            delays,
            rng: self.jitter.then_some(SplitMix64(seed)),
        }
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Backoff");
        match &self.kind {
            Kind::Exponential { base, max } => d.field("base", base).field("max", max),
            Kind::Custom(_) => d.field("schedule", &"custom"),
        };
        d.field("jitter", &self.jitter).finish()
    }
}

/// `base * 2^retry`, capped at `max`, without overflow.
fn exponential(base: Duration, max: Duration, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
    base.checked_mul(factor).map_or(max, |d| d.min(max))
}

/// The delays of one failing item; an [`Iterator`] of [`Duration`].
pub struct Schedule {
    delays: Delays,
    rng: Option<SplitMix64>,
}

enum Delays {
    Exponential {
        base: Duration,
        max: Duration,
        retry: u32,
    },
    Custom(Box<dyn Iterator<Item = Duration> + Send>),
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let nominal = match &mut self.delays {
            Delays::Exponential { base, max, retry } => {
                let d = exponential(*base, *max, *retry);
                *retry = retry.saturating_add(1);
                d
            }
            Delays::Custom(iter) => iter.next()?,
        };
        Some(match &mut self.rng {
            Some(rng) => {
                let nanos = u64::try_from(nominal.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.up_to(nanos))
            }
            None => nominal,
        })
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("jitter", &self.rng.is_some())
            .finish_non_exhaustive()
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for jitter.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max` (Lemire's multiply-shift; bias below 2^-64 * max, negligible).
    fn up_to(&mut self, max: u64) -> u64 {
        let Some(span) = max.checked_add(1) else {
            return self.next_u64();
        };
        ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn exponential_doubles_and_caps_without_overflow() {
        let b = Backoff::exponential(ms(100), ms(10_000));
        let d: Vec<_> = b.schedule().take(10).collect();
        assert_eq!(d[..4], [ms(100), ms(200), ms(400), ms(800)]);
        assert_eq!(d[7], ms(10_000));
        // Far past any u32 shift: still the cap, no panic.
        let mut s = b.schedule();
        assert_eq!(s.nth(200), Some(ms(10_000)));
        assert_eq!(b.nominal(3), Some(ms(800)));
        let huge = Backoff::exponential(Duration::MAX, Duration::MAX);
        assert_eq!(huge.schedule().nth(5), Some(Duration::MAX));
    }

    #[test]
    fn cap_below_base_wins() {
        let b = Backoff::exponential(ms(500), ms(100));
        assert_eq!(b.schedule().next(), Some(ms(100)));
    }

    #[test]
    fn full_jitter_stays_in_bounds_and_spreads() {
        let b = Backoff::exponential(ms(100), ms(1_000))
            .with_jitter(true)
            .with_seed(42);
        let mut firsts = Vec::new();
        for _ in 0..1_000 {
            let s = b.schedule();
            for (i, d) in s.take(6).enumerate() {
                let nominal = b.nominal(i as u32).unwrap_or_default();
                assert!(d <= nominal, "{d:?} > {nominal:?}");
            }
            firsts.push(b.schedule().next().unwrap_or_default());
        }
        // Uniform on 0..=100ms: the mean is near 50ms, and both halves are hit.
        let mean = firsts.iter().sum::<Duration>() / firsts.len() as u32;
        assert!(mean > ms(40) && mean < ms(60), "mean {mean:?}");
        assert!(firsts.iter().any(|d| *d < ms(10)));
        assert!(firsts.iter().any(|d| *d > ms(90)));
    }

    #[test]
    fn seeded_schedules_are_reproducible() {
        let a = Backoff::exponential(ms(100), ms(1_000))
            .with_jitter(true)
            .with_seed(9);
        let b = a.clone().with_seed(9);
        let da: Vec<_> = a.schedule().take(5).collect();
        let db: Vec<_> = b.schedule().take(5).collect();
        assert_eq!(da, db);
        // Successive schedules differ from each other.
        let next: Vec<_> = a.schedule().take(5).collect();
        assert_ne!(da, next);
    }

    #[test]
    fn custom_schedules_restart_per_item_and_end() {
        let b = Backoff::from_iter(vec![ms(1), ms(2), ms(3)]);
        let mut s = b.schedule();
        assert_eq!(s.next(), Some(ms(1)));
        assert_eq!(b.schedule().collect::<Vec<_>>(), [ms(1), ms(2), ms(3)]);
        assert_eq!(s.by_ref().count(), 2);
        assert_eq!(s.next(), None);
        let c = Backoff::from_fn(|| (1..=2).map(ms));
        assert_eq!(c.schedule().collect::<Vec<_>>(), [ms(1), ms(2)]);
        assert_eq!(c.nominal(0), None);
    }

    #[test]
    fn from_options_matches_fields() {
        let mut o = RetryOptions::new(3);
        o.backoff = ms(10);
        o.max_backoff = ms(15);
        o.jitter = false;
        let b = Backoff::from_options(&o);
        assert!(!b.jitter());
        assert_eq!(
            b.schedule().take(3).collect::<Vec<_>>(),
            [ms(10), ms(15), ms(15)]
        );
    }

    #[test]
    fn up_to_covers_edges() {
        let mut r = SplitMix64(1);
        assert_eq!(r.up_to(0), 0);
        let _ = r.up_to(u64::MAX);
        assert!((0..1000).all(|_| r.up_to(3) <= 3));
    }
}
