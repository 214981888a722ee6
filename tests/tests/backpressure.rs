//! Invariants 2 and 3 (bounded memory, end-to-end backpressure) and 8 (deterministic
//! time): under a slow sink, items in flight stay within the edges' capacities plus
//! stage concurrency, asserted continuously, and the source is seen waiting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pipeline_core::prelude::*;
use pipeline_core::sink::{Sink, WriteError};
use pipeline_core::source::{Pulled, Source};

/// A sink taking 10 ms (tokio time) per batch.
struct Slow;

impl Sink for Slow {
    type Item = u64;
    async fn write(&mut self, items: &mut Vec<u64>) -> Result<(), WriteError> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        items.clear();
        Ok(())
    }
}

/// Counts how many items were pulled, so a test can see the source being held back.
struct Counting {
    next: u64,
    end: u64,
    pulled: Arc<AtomicU64>,
}

impl Source for Counting {
    type Item = u64;
    async fn pull(&mut self, max: usize) -> Result<Option<Pulled<u64>>, BoxError> {
        if self.next >= self.end {
            return Ok(None);
        }
        let stop = self.end.min(self.next + max as u64);
        let items: Vec<u64> = (self.next..stop).collect();
        self.pulled.fetch_add(items.len() as u64, Ordering::SeqCst);
        self.next = stop;
        Ok(Some(Pulled::new(items)))
    }
}

#[tokio::test(start_paused = true)]
async fn in_flight_stays_bounded_and_the_source_waits_for_a_slow_sink() {
    const N: u64 = 20_000;
    const CAP: usize = 32;
    const CONCURRENCY: usize = 4;
    let pulled = Arc::new(AtomicU64::new(0));
    let handle = Pipeline::builder("slow")
        .source(Counting {
            next: 0,
            end: N,
            pulled: Arc::clone(&pulled),
        })
        .stage(stage::map_fn("a", |n: u64| async move {
            Ok::<_, Infallible>(n)
        }))
        .concurrency(CONCURRENCY)
        .buffer(CAP)
        .stage(stage::map_fn("b", |n: u64| async move {
            Ok::<_, Infallible>(n)
        }))
        .buffer(CAP)
        .sink(Slow)
        .buffer(CAP)
        .spawn();

    // The bound: items queued in the three edges, plus what each task holds in hand:
    // the source's pulled batch, each stage's input batch and outbox, its concurrent
    // calls, and the sink's batch being written. Each held batch is at most the
    // capacity of the edge it came from.
    let edges = 3 * CAP;
    let held = CAP /* source batch */ + 2 * (2 * CAP) /* stages: input + outbox */
        + CONCURRENCY + CAP /* sink batch */;
    let bound = (edges + held) as u64;

    let mut max_seen = 0;
    let mut samples = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(3)).await;
        let stats = handle.stats();
        max_seen = max_seen.max(stats.in_flight);
        assert!(
            stats.in_flight <= bound,
            "in flight {} > bound {bound}",
            stats.in_flight
        );
        for s in &stats.stages {
            assert!(
                s.capacity == 0 || s.queue_depth <= s.capacity,
                "{} queue {} > {}",
                s.name,
                s.queue_depth,
                s.capacity
            );
        }
        // Backpressure reaches the source: it has pulled no more than what is finished
        // plus the bound.
        let pulled_now = pulled.load(Ordering::SeqCst);
        assert!(pulled_now <= stats.finished + bound);
        samples += 1;
        if stats.finished == N {
            break;
        }
    }
    let report = handle.join().await.unwrap();
    assert_eq!(report.delivered, N);
    assert!(report.is_balanced());
    assert!(
        samples > 100,
        "the sink was slow for long enough to sample ({samples})"
    );
    // The edges filled up: the pipeline really ran against its limits.
    assert!(max_seen >= 2 * CAP as u64, "max in flight {max_seen}");
    // At 10 ms per batch of at most 32, 20_000 items take at least 6 s of tokio time.
    assert!(report.elapsed >= Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn a_full_ingest_answers_try_send_with_full_and_send_waits() {
    let handle = Pipeline::builder("ingest")
        .ingest::<u64>(4)
        .stage(stage::map_fn("id", |n: u64| async move {
            Ok::<_, Infallible>(n)
        }))
        .buffer(4)
        .sink(Slow)
        .buffer(4)
        .spawn();
    let ingest = handle.ingest::<u64>().unwrap();
    assert!(handle.ingest::<String>().is_none(), "wrong item type");
    let mut full = None;
    for n in 0..1_000u64 {
        match ingest.try_send(n) {
            Ok(()) => {}
            Err(pipeline_core::source::TrySendError::Full(item)) => {
                full = Some(item);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        tokio::task::yield_now().await;
    }
    let item = full.expect("the pipeline filled up");
    // The item came back with the error; `send` waits for room and then takes it.
    ingest.send(item).await.unwrap();
    let settled = ingest.send_and_wait(10_000).await.unwrap();
    assert_eq!(settled.outcome, Outcome::Delivered);
    assert!(settled.reason.is_none());
    drop(ingest);
    let report = handle.join().await.unwrap();
    assert_eq!(report.emitted, item + 2);
    assert_eq!(report.delivered, item + 2);
}
