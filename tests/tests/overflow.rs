//! Overflow policies: each drop or dead letter is counted; a slow fan-out branch with a
//! dropping edge does not stall the rest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::time::Duration;

use pipeline_core::prelude::*;
use pipeline_core::sink::{Sink, WriteError};
use pipeline_core::{DeadLetter, WhenFull};

struct Slow(Duration);

impl Sink for Slow {
    type Item = u64;
    async fn write(&mut self, items: &mut Vec<u64>) -> Result<(), WriteError> {
        tokio::time::sleep(self.0).await;
        items.clear();
        Ok(())
    }
}

async fn run_with(policy: WhenFull) -> (RunReport, Vec<DeadLetter>) {
    let (dead, dead_out) = sink::collect();
    let report = Pipeline::builder("overflow")
        .source(source::iter(0..10_000u64))
        .stage(stage::map_fn("id", |n: u64| async move {
            Ok::<_, Infallible>(n)
        }))
        .sink(Slow(Duration::from_millis(10)))
        .buffer(16)
        .when_full(policy)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    (report, dead_out.take())
}

#[tokio::test(start_paused = true)]
async fn drop_newest_and_drop_oldest_count_what_they_drop() {
    for policy in [WhenFull::DropNewest, WhenFull::DropOldest] {
        let (report, dead) = run_with(policy).await;
        assert!(report.is_balanced(), "{report}");
        assert!(report.dropped > 0, "{policy:?}: {report}");
        assert_eq!(report.delivered + report.dropped, 10_000);
        assert!(dead.is_empty());
        assert_eq!(report.stage("sink").unwrap().overflowed, report.dropped);
    }
}

#[tokio::test(start_paused = true)]
async fn dead_letter_overflow_goes_to_the_dead_letter_sink() {
    let (report, dead) = run_with(WhenFull::DeadLetter).await;
    assert!(report.dead_lettered > 0);
    assert_eq!(dead.len() as u64, report.dead_lettered);
    assert!(
        dead.iter()
            .all(|d| d.error == "edge full" && d.attempts == 0)
    );
    assert_eq!(report.delivered + report.dead_lettered, 10_000);
}

#[tokio::test(start_paused = true)]
async fn block_loses_nothing() {
    let (report, _) = run_with(WhenFull::Block).await;
    assert_eq!(report.delivered, 10_000);
}

#[tokio::test(start_paused = true)]
async fn a_slow_dropping_branch_does_not_stall_the_main_path() {
    let (fast, fast_out) = sink::collect::<u64>();
    let report = Pipeline::builder("tee")
        .source(source::iter(0..5_000u64))
        .tee(|b| {
            b.sink(Slow(Duration::from_secs(1)))
                .buffer(8)
                .when_full(WhenFull::DropNewest)
        })
        .sink(fast)
        .run()
        .await
        .unwrap();
    assert_eq!(fast_out.len(), 5_000);
    // The slow branch wrote a few batches at most; the rest of its copies were dropped,
    // so the items whose copy was dropped take `Dropped` (worst wins).
    assert!(report.dropped > 4_000, "{report}");
    assert!(
        report.elapsed < Duration::from_secs(60),
        "the main path was not held back"
    );
    assert!(report.is_balanced());
}

#[tokio::test(start_paused = true)]
async fn settings_after_tee_shape_the_fan_out_edge() {
    let (a, _) = sink::collect::<u64>();
    let (b, _) = sink::collect::<u64>();
    let pipeline = Pipeline::builder("tee-edge")
        .source(source::iter(0..10u64))
        .tee(|t| t.sink(a))
        .buffer(4)
        .when_full(WhenFull::DropOldest)
        .sink(b)
        .build();
    let graph = pipeline.graph();
    let tee = graph.nodes().iter().find(|n| n.name == "tee").unwrap().id;
    let into_tee = graph.edges().iter().find(|e| e.to == tee).unwrap();
    assert_eq!(
        (into_tee.capacity, into_tee.when_full.as_str()),
        (4, "drop_oldest")
    );
    assert!(pipeline.run().await.unwrap().is_balanced());

    let (a, _) = sink::collect::<u64>();
    let (b, _) = sink::collect::<u64>();
    let pipeline = Pipeline::builder("route-edge")
        .source(source::iter(0..10u64))
        .route(|n| n % 2 == 0, |t| t.sink(a))
        .buffer(8)
        .when_full(WhenFull::DropNewest)
        .sink(b)
        .build();
    let graph = pipeline.graph();
    let route = graph.nodes().iter().find(|n| n.name == "route").unwrap().id;
    let into_route = graph.edges().iter().find(|e| e.to == route).unwrap();
    assert_eq!(
        (into_route.capacity, into_route.when_full.as_str()),
        (8, "drop_newest")
    );
}
