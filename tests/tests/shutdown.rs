//! Invariant 7 (graceful shutdown): `shutdown()` stops the sources and drains; past a
//! tiny deadline the rest is abandoned, counted and not acked; no write after return.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_core::ack::Ack;
use pipeline_core::prelude::*;
use pipeline_core::sink::{Sink, WriteError};
use pipeline_core::source::{Pulled, Source};

/// An endless source whose acks count positive and negative outcomes.
struct Endless {
    next: u64,
    acked: Arc<AtomicU64>,
    nacked: Arc<AtomicU64>,
}

impl Source for Endless {
    type Item = u64;
    async fn pull(&mut self, max: usize) -> Result<Option<Pulled<u64>>, BoxError> {
        tokio::task::yield_now().await;
        let items: Vec<u64> = (self.next..self.next + max.min(8) as u64).collect();
        self.next += items.len() as u64;
        let (acked, nacked) = (Arc::clone(&self.acked), Arc::clone(&self.nacked));
        Ok(Some(Pulled::with_ack(
            items,
            Ack::new(move |outcomes: &[Outcome]| {
                for o in outcomes {
                    if o.is_ack() { &acked } else { &nacked }.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )))
    }
}

/// A sink taking `delay` per batch that records writes and whether any happened after
/// `closed` was set.
struct Recording {
    delay: Duration,
    written: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    late: Arc<AtomicBool>,
}

impl Sink for Recording {
    type Item = u64;
    async fn write(&mut self, items: &mut Vec<u64>) -> Result<(), WriteError> {
        tokio::time::sleep(self.delay).await;
        if self.closed.load(Ordering::SeqCst) {
            self.late.store(true, Ordering::SeqCst);
        }
        self.written.fetch_add(items.len() as u64, Ordering::SeqCst);
        items.clear();
        Ok(())
    }
}

struct Probe {
    acked: Arc<AtomicU64>,
    nacked: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    late: Arc<AtomicBool>,
}

fn endless(delay: Duration) -> (PipelineHandle, Probe) {
    let p = Probe {
        acked: Arc::default(),
        nacked: Arc::default(),
        written: Arc::default(),
        closed: Arc::default(),
        late: Arc::default(),
    };
    let handle = Pipeline::builder("endless")
        .source(Endless {
            next: 0,
            acked: Arc::clone(&p.acked),
            nacked: Arc::clone(&p.nacked),
        })
        .stage(stage::map_fn("id", |n: u64| async move {
            Ok::<_, Infallible>(n)
        }))
        .concurrency(4)
        .buffer(64)
        .sink(Recording {
            delay,
            written: Arc::clone(&p.written),
            closed: Arc::clone(&p.closed),
            late: Arc::clone(&p.late),
        })
        .buffer(64)
        .spawn();
    (handle, p)
}

#[tokio::test(start_paused = true)]
async fn generous_deadline_drains_everything() {
    let (handle, p) = endless(Duration::from_millis(1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = handle
        .shutdown_within(Duration::from_secs(60))
        .await
        .unwrap();
    assert!(report.emitted > 0);
    assert_eq!(report.delivered, report.emitted, "{report}");
    assert_eq!(report.abandoned, 0);
    assert_eq!(p.written.load(Ordering::SeqCst), report.emitted);
    assert_eq!(p.acked.load(Ordering::SeqCst), report.emitted);
    assert_eq!(p.nacked.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn tiny_deadline_abandons_the_rest_unacked() {
    let (handle, p) = endless(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let report = handle
        .shutdown_within(Duration::from_millis(10))
        .await
        .unwrap();
    p.closed.store(true, Ordering::SeqCst);
    assert!(report.is_balanced(), "{report}");
    assert!(report.abandoned > 0, "{report}");
    assert_eq!(report.delivered, p.written.load(Ordering::SeqCst));
    assert_eq!(p.acked.load(Ordering::SeqCst), report.delivered);
    assert_eq!(
        p.nacked.load(Ordering::SeqCst),
        report.abandoned,
        "abandoned items are not acked"
    );
    // Nothing is written after shutdown returned.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!p.late.load(Ordering::SeqCst));
    assert_eq!(p.written.load(Ordering::SeqCst), report.delivered);
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_items_already_accepted_by_ingest() {
    let (sink, out) = sink::collect::<u64>();
    let handle = Pipeline::builder("ingest")
        .ingest::<u64>(1_000)
        .stage(stage::map_fn("id", |n: u64| async move {
            Ok::<_, Infallible>(n)
        }))
        .sink(sink)
        .spawn();
    let ingest = handle.ingest::<u64>().unwrap();
    for n in 0..500 {
        ingest.try_send(n).unwrap();
    }
    let report = handle.shutdown().await.unwrap();
    assert_eq!(out.len(), 500, "accepted items are processed, not lost");
    assert_eq!(report.delivered, 500);
    assert!(
        ingest.send(1).await.is_err(),
        "a stopped pipeline refuses new items"
    );
}

#[tokio::test(start_paused = true)]
async fn the_host_signal_drives_shutdown() {
    let (handle, _p) = endless(Duration::from_millis(1));
    let signal = Arc::new(tokio::sync::Notify::new());
    let fire = Arc::clone(&signal);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        fire.notify_one();
    });
    let report = handle
        .shutdown_on(async move { signal.notified().await })
        .await
        .unwrap();
    assert!(report.emitted > 0);
    assert_eq!(report.delivered, report.emitted);
}

#[tokio::test]
async fn stats_and_health_describe_a_running_pipeline() {
    let written = Arc::new(Mutex::new(0u64));
    let w = Arc::clone(&written);
    let handle = Pipeline::builder("stats")
        .source(source::iter(0..1_000u64))
        .stage(stage::map_fn("double", |n: u64| async move {
            Ok::<_, Infallible>(n * 2)
        }))
        .sink(sink::for_each(move |_n: u64| {
            let w = Arc::clone(&w);
            async move {
                *w.lock().unwrap() += 1;
                Ok::<_, Infallible>(())
            }
        }))
        .spawn();
    assert_ne!(handle.health(), pipeline_core::Health::Finished);
    let stats = handle.stats();
    assert!(stats.stage("double").is_some());
    let report = handle.join().await.unwrap();
    assert_eq!(*written.lock().unwrap(), 1_000);
    let double = report.stage("double").unwrap();
    assert_eq!(
        (double.received, double.emitted, double.in_flight),
        (1_000, 1_000, 0)
    );
}

/// Records its lifecycle.
struct Hooked(Arc<Mutex<Vec<String>>>);

impl Stage for Hooked {
    type In = u64;
    type Output = u64;
    type Shape = pipeline_core::Map;
    type Error = Infallible;

    async fn call(&self, n: u64, _cx: &Context) -> Result<u64, Infallible> {
        self.0.lock().unwrap().push(format!("call {n}"));
        Ok(n)
    }

    async fn on_start(&self) -> Result<(), BoxError> {
        self.0.lock().unwrap().push("start".into());
        Ok(())
    }

    async fn on_stop(&self) -> Result<(), BoxError> {
        self.0.lock().unwrap().push("stop".into());
        Ok(())
    }
}

#[tokio::test]
async fn stage_hooks_run_once_around_the_items() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sink, out) = sink::collect::<u64>();
    Pipeline::builder("hooks")
        .source(source::iter(0..3u64))
        .stage(Hooked(Arc::clone(&log)))
        .sink(sink)
        .run()
        .await
        .unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(
        *log.lock().unwrap(),
        ["start", "call 0", "call 1", "call 2", "stop"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_abort_mid_batch_abandons_outputs_a_stage_still_holds() {
    let (acked, nacked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (sink, out) = sink::collect::<u64>();
    let handle = Pipeline::builder("held")
        .source(Endless {
            next: 0,
            acked: Arc::clone(&acked),
            nacked: Arc::clone(&nacked),
        })
        // One call at a time; every fifth item hangs while the outputs of the items
        // before it in the same batch are held by the stage.
        .stage(stage::map_fn("hang", |n: u64| async move {
            if n % 5 == 4 {
                tokio::time::sleep(Duration::from_secs(3_600)).await;
            }
            Ok::<_, Infallible>(n)
        }))
        .sink(sink)
        .spawn();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = handle
        .shutdown_within(Duration::from_millis(10))
        .await
        .unwrap();
    assert!(report.is_balanced(), "{report}");
    assert!(report.abandoned >= 4, "{report}");
    assert_eq!(out.len() as u64, report.delivered);
    assert_eq!(acked.load(Ordering::SeqCst), report.delivered);
    assert_eq!(nacked.load(Ordering::SeqCst), report.abandoned);
}
