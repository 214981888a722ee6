//! Latency under an open-loop load: a paced source emits item `i` at its intended time
//! `i / rate` whatever the pipeline does (no coordinated omission), and the sink records
//! `arrival - intended` for every item in an hdrhistogram.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pipeline_core::sink::{Sink, WriteError};
use pipeline_core::source::{Pulled, Source};
use pipeline_core::stage::map_fn;
use pipeline_core::{BoxError, Pipeline};

use crate::work::{Item, Res};

/// (intended send time in ns since the start, payload)
type Timed = (u64, u64);

/// The open-loop source: at each pull, everything whose intended time has come (up to
/// `max`). It yields to the runtime between checks when the next item is due within 2 ms
/// and sleeps otherwise, so its own pacing adds no timer granularity at high rates.
struct Paced {
    start: Instant,
    next: u64,
    total: u64,
    ns_per_item: f64,
}

impl Paced {
    fn intended(&self, i: u64) -> u64 {
        (i as f64 * self.ns_per_item) as u64
    }
}

impl Source for Paced {
    type Item = Timed;

    async fn pull(&mut self, max: usize) -> Result<Option<Pulled<Timed>>, BoxError> {
        if self.next >= self.total {
            return Ok(None);
        }
        loop {
            let now = self.start.elapsed().as_nanos() as u64;
            let due = ((now as f64 / self.ns_per_item) as u64 + 1).min(self.total);
            if due > self.next {
                let end = due.min(self.next + max as u64);
                let items = (self.next..end).map(|i| (self.intended(i), i)).collect();
                self.next = end;
                return Ok(Some(Pulled::new(items)));
            }
            let wait = self.intended(self.next).saturating_sub(now);
            if wait > 2_000_000 {
                tokio::time::sleep(Duration::from_nanos(wait - 1_000_000)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }

    fn name(&self) -> &str {
        "paced"
    }
}

/// Records every item's latency; one clock read per batch (all its items arrive at once).
struct LatencySink {
    start: Instant,
    hist: Arc<Mutex<Histogram<u64>>>,
    sum: u64,
}

impl Sink for LatencySink {
    type Item = Timed;

    async fn write(&mut self, items: &mut Vec<Timed>) -> Result<(), WriteError> {
        let now = self.start.elapsed().as_nanos() as u64;
        let mut hist = self.hist.lock().unwrap_or_else(|p| p.into_inner());
        for (t, v) in items.drain(..) {
            hist.saturating_record(now.saturating_sub(t).max(1));
            self.sum = self.sum.wrapping_add(v);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), BoxError> {
        std::hint::black_box(self.sum);
        Ok(())
    }
}

/// One latency run's result.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) hist: Histogram<u64>,
    /// Items per second actually achieved end to end.
    pub(crate) achieved: f64,
}

pub(crate) fn new_histogram() -> Res<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 120_000_000_000, 3)?)
}

/// Runs map4 (on `(intended, u64)` items) fed at `rate` items/s for `duration`.
pub(crate) async fn run(rate: f64, duration: Duration) -> Res<Measured> {
    let total = ((rate * duration.as_secs_f64()) as u64).max(1);
    let hist = Arc::new(Mutex::new(new_histogram()?));
    let start = Instant::now();
    let source = Paced {
        start,
        next: 0,
        total,
        ns_per_item: 1e9 / rate,
    };
    let sink = LatencySink {
        start,
        hist: Arc::clone(&hist),
        sum: 0,
    };
    let report = Pipeline::builder("latency")
        .source(source)
        .stage(map_fn("s1", |(t, v): Timed| async move {
            Ok::<_, Infallible>((t, v.s1()))
        }))
        .stage(map_fn("s2", |(t, v): Timed| async move {
            Ok::<_, Infallible>((t, v.s2()))
        }))
        .stage(map_fn("s3", |(t, v): Timed| async move {
            Ok::<_, Infallible>((t, v.s3()))
        }))
        .sink(sink)
        .run()
        .await?;
    let elapsed = start.elapsed();
    if report.delivered != total {
        return Err(format!("latency: delivered {} of {total}", report.delivered).into());
    }
    let hist = std::mem::replace(
        &mut *hist.lock().unwrap_or_else(|p| p.into_inner()),
        new_histogram()?,
    );
    Ok(Measured {
        hist,
        achieved: total as f64 / elapsed.as_secs_f64(),
    })
}
