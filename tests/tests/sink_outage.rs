//! Issue 11.7: a sink whose server is down backpressures to the source (retry with backoff
//! and a waiting breaker per batch) instead of dead-lettering every row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_core::options::{BreakerOptions, RetryOptions, Window};
use pipeline_core::policy::retry_writes;
use pipeline_core::prelude::*;
use pipeline_core::sink::{Sink, WriteError};
use tokio::time::Instant;

/// A database that refuses every write until `heals_at`, and rejects row 13 for good.
struct Database {
    heals_at: Instant,
    rows: Arc<Mutex<Vec<u64>>>,
    writes: Arc<Mutex<u64>>,
}

impl Sink for Database {
    type Item = u64;
    async fn write(&mut self, items: &mut Vec<u64>) -> Result<(), WriteError> {
        *self.writes.lock().unwrap() += 1;
        if Instant::now() < self.heals_at {
            return Err(WriteError::all("connection refused"));
        }
        let bad: Vec<usize> = (0..items.len()).filter(|&i| items[i] == 13).collect();
        self.rows
            .lock()
            .unwrap()
            .extend(items.drain(..).filter(|&n| n != 13));
        if bad.is_empty() {
            Ok(())
        } else {
            Err(WriteError::partial("check constraint", bad))
        }
    }
}

fn policies() -> (RetryOptions, BreakerOptions) {
    let mut retry = RetryOptions::new(3);
    retry.backoff = Duration::from_millis(100);
    retry.jitter = false;
    let mut breaker = BreakerOptions::default();
    breaker.window = Window::Count(4);
    breaker.min_calls = 2;
    breaker.open_for = Duration::from_secs(5);
    breaker.half_open = 1;
    (retry, breaker)
}

#[tokio::test(start_paused = true)]
async fn a_ten_minute_outage_backpressures_and_loses_nothing() {
    let rows = Arc::new(Mutex::new(Vec::new()));
    let writes = Arc::new(Mutex::new(0));
    let outage = Duration::from_secs(600);
    let (retry, breaker) = policies();
    let db = Database {
        heals_at: Instant::now() + outage,
        rows: Arc::clone(&rows),
        writes: Arc::clone(&writes),
    };
    let (dead, letters) = sink::collect();
    let handle = Pipeline::builder("outage")
        .source(source::iter(0..50_000u64))
        .sink(retry_writes(db, retry).with_breaker(&breaker))
        .buffer(256)
        .dead_letter(dead)
        .spawn();
    // Half-way through the outage: the source is held back, nothing is dead-lettered.
    tokio::time::sleep(outage / 2).await;
    let stats = handle.stats();
    assert!(stats.in_flight <= 256 + 256 + 256, "{}", stats.in_flight);
    assert_eq!(
        stats.emitted, stats.in_flight,
        "nothing finished while down"
    );
    assert!(letters.is_empty());
    // The breaker made the writes rare: about one probe per `open_for`.
    let probes = *writes.lock().unwrap();
    assert!(probes < 100, "{probes} writes during 300 s of outage");
    let report = handle.join().await.unwrap();
    assert!(report.is_balanced(), "{report}");
    // Only the row the server rejects for good is dead-lettered.
    assert_eq!(report.dead_lettered, 1, "{report}");
    assert_eq!(letters.take()[0].error, "check constraint");
    assert_eq!(report.delivered, 49_999);
    let mut got = rows.lock().unwrap().clone();
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), 49_999);
}

#[tokio::test(start_paused = true)]
async fn without_a_breaker_a_batch_is_retried_then_dead_lettered() {
    let rows = Arc::new(Mutex::new(Vec::new()));
    let writes = Arc::new(Mutex::new(0));
    let (retry, _) = policies();
    let db = Database {
        heals_at: Instant::now() + Duration::from_secs(3600),
        rows: Arc::clone(&rows),
        writes: Arc::clone(&writes),
    };
    let (dead, letters) = sink::collect();
    let report = Pipeline::builder("down")
        .source(source::iter(0..10u64))
        .sink(retry_writes(db, retry))
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    assert_eq!(report.dead_lettered, 10);
    assert_eq!(letters.len(), 10);
    // One batch, three attempts.
    assert_eq!(*writes.lock().unwrap(), 3);
    assert!(report.is_balanced());
}
