//! Latency under an open-loop load: a paced source emits item `i` at its intended time
//! `i / rate` whatever the pipeline does (no coordinated omission), and the sink records
//! `arrival - intended` for every item in an hdrhistogram.
//!
//! The framework's map4 runs against a B-batch-shaped hand-written pipeline fed by the
//! same pacer, so the table can tell what the harness and tokio's scheduling cost from
//! what the framework adds.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pipeline_core::sink::{Sink, WriteError};
use pipeline_core::source::{Pulled, Source};
use pipeline_core::stage::map_fn;
use pipeline_core::{BoxError, Pipeline};
use tokio::sync::mpsc;

use crate::work::{BATCH, EDGE_ITEMS, Item, Res};

/// (intended send time in ns since the start, payload)
type Timed = (u64, u64);

/// The open-loop pacer: each call hands out everything whose intended time has come (up
/// to `max`). Between checks it yields to the runtime when the next item is due within
/// 2 ms and sleeps otherwise, so its own pacing adds no timer granularity at high rates.
///
/// Like any tokio-based input (a socket, a channel) it takes part in cooperative
/// scheduling: an always-ready source must not starve the tasks woken onto its worker
/// thread (tokio's LIFO slot is not stealable). `PIPELINE_BENCH_UNCOOPERATIVE=1` turns
/// that off, to see what an uncooperative source does.
struct Pacer {
    start: Instant,
    next: u64,
    total: u64,
    ns_per_item: f64,
    cooperative: bool,
}

impl Pacer {
    fn new(start: Instant, rate: f64, total: u64) -> Self {
        Pacer {
            start,
            next: 0,
            total,
            ns_per_item: 1e9 / rate,
            cooperative: std::env::var_os("PIPELINE_BENCH_UNCOOPERATIVE").is_none(),
        }
    }

    fn intended(&self, i: u64) -> u64 {
        (i as f64 * self.ns_per_item) as u64
    }

    /// The items due now (waiting for the first one); `None` at the end.
    async fn due(&mut self, max: usize) -> Option<Vec<Timed>> {
        if self.next >= self.total {
            return None;
        }
        if self.cooperative {
            tokio::task::coop::consume_budget().await;
        }
        loop {
            let now = self.start.elapsed().as_nanos() as u64;
            let due = ((now as f64 / self.ns_per_item) as u64 + 1).min(self.total);
            if due > self.next {
                let end = due.min(self.next + max as u64);
                let items = (self.next..end).map(|i| (self.intended(i), i)).collect();
                self.next = end;
                return Some(items);
            }
            let wait = self.intended(self.next).saturating_sub(now);
            if wait > 2_000_000 {
                tokio::time::sleep(Duration::from_nanos(wait - 1_000_000)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }
}

impl Source for Pacer {
    type Item = Timed;

    async fn pull(&mut self, max: usize) -> Result<Option<Pulled<Timed>>, BoxError> {
        Ok(self.due(max).await.map(Pulled::new))
    }

    fn name(&self) -> &str {
        "paced"
    }
}

/// Records every item's latency; one clock read per batch (all its items arrive at once).
struct Recorder {
    start: Instant,
    hist: Histogram<u64>,
    sum: u64,
    items: u64,
    writes: u64,
    /// Where the recorder goes at the end (from the framework's sink).
    out: Option<tokio::sync::oneshot::Sender<Recorder>>,
}

impl Recorder {
    fn new(start: Instant) -> Res<Self> {
        Ok(Recorder {
            start,
            hist: new_histogram()?,
            sum: 0,
            items: 0,
            writes: 0,
            out: None,
        })
    }

    fn record(&mut self, items: &mut Vec<Timed>) {
        let now = self.start.elapsed().as_nanos() as u64;
        self.writes += 1;
        self.items += items.len() as u64;
        for (t, v) in items.drain(..) {
            self.hist.saturating_record(now.saturating_sub(t).max(1));
            self.sum = self.sum.wrapping_add(v);
        }
    }

    fn measured(self, total: u64) -> Res<Measured> {
        let elapsed = self.start.elapsed();
        if self.items != total {
            return Err(format!("latency: the sink saw {} of {total} items", self.items).into());
        }
        std::hint::black_box(self.sum);
        Ok(Measured {
            achieved: total as f64 / elapsed.as_secs_f64(),
            batch: total as f64 / self.writes.max(1) as f64,
            hist: self.hist,
        })
    }
}

impl Sink for Recorder {
    type Item = Timed;

    async fn write(&mut self, items: &mut Vec<Timed>) -> Result<(), WriteError> {
        self.record(items);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), BoxError> {
        if let Some(out) = self.out.take() {
            let mut done = Recorder::new(self.start)?;
            std::mem::swap(self, &mut done);
            let _ = out.send(done);
        }
        Ok(())
    }
}

/// One latency run's result.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) hist: Histogram<u64>,
    /// Items per second actually achieved end to end.
    pub(crate) achieved: f64,
    /// Mean items per sink write: how full the batches were.
    pub(crate) batch: f64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("items", &self.items)
            .finish()
    }
}

pub(crate) fn new_histogram() -> Res<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 120_000_000_000, 3)?)
}

/// Which pipeline a latency run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The framework's map4.
    Framework,
    /// B-batch: a task per stage, mpsc of 256-item `Vec`s, 1024 items per edge.
    Hand,
}

/// Runs map4 (on `(intended, u64)` items) fed at `rate` items/s for `duration`.
pub(crate) async fn run(shape: Shape, rate: f64, duration: Duration) -> Res<Measured> {
    let total = ((rate * duration.as_secs_f64()) as u64).max(1);
    let start = Instant::now();
    let pacer = Pacer::new(start, rate, total);
    let mut recorder = Recorder::new(start)?;
    match shape {
        Shape::Framework => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            recorder.out = Some(tx);
            let report = Pipeline::builder("latency")
                .source(pacer)
                .stage(map_fn("s1", |(t, v): Timed| async move {
                    Ok::<_, Infallible>((t, v.s1()))
                }))
                .stage(map_fn("s2", |(t, v): Timed| async move {
                    Ok::<_, Infallible>((t, v.s2()))
                }))
                .stage(map_fn("s3", |(t, v): Timed| async move {
                    Ok::<_, Infallible>((t, v.s3()))
                }))
                .sink(recorder)
                .run()
                .await?;
            if report.delivered != total {
                return Err(format!("latency: delivered {} of {total}", report.delivered).into());
            }
            rx.await?.measured(total)
        }
        Shape::Hand => hand(pacer, recorder).await?.measured(total),
    }
}

async fn hand(mut pacer: Pacer, mut recorder: Recorder) -> Res<Recorder> {
    let cap = (EDGE_ITEMS / BATCH).max(1);
    let (tx0, rx0) = mpsc::channel::<Vec<Timed>>(cap);
    let (tx1, rx1) = mpsc::channel::<Vec<Timed>>(cap);
    let (tx2, rx2) = mpsc::channel::<Vec<Timed>>(cap);
    let (tx3, mut rx3) = mpsc::channel::<Vec<Timed>>(cap);
    async fn stage(
        mut rx: mpsc::Receiver<Vec<Timed>>,
        tx: mpsc::Sender<Vec<Timed>>,
        f: fn(u64) -> u64,
    ) {
        while let Some(batch) = rx.recv().await {
            let out: Vec<Timed> = batch.into_iter().map(|(t, v)| (t, f(v))).collect();
            if tx.send(out).await.is_err() {
                return;
            }
        }
    }
    let tasks = [
        tokio::spawn(async move {
            while let Some(batch) = pacer.due(BATCH).await {
                if tx0.send(batch).await.is_err() {
                    return;
                }
            }
        }),
        tokio::spawn(stage(rx0, tx1, u64::s1)),
        tokio::spawn(stage(rx1, tx2, u64::s2)),
        tokio::spawn(stage(rx2, tx3, u64::s3)),
    ];
    while let Some(mut batch) = rx3.recv().await {
        recorder.record(&mut batch);
    }
    for task in tasks {
        task.await?;
    }
    Ok(recorder)
}
