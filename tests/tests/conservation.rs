//! Invariant 1 (conservation): every source item ends in exactly one final outcome, every
//! id reaches the sink exactly once when it should, and the report's ledger balances.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use pipeline_core::prelude::*;
use pipeline_core::{DeadLetter, Outcome};

fn ok<T>(t: T) -> Result<T, Infallible> {
    Ok(t)
}

/// Counts of each id in `items`.
fn counts(items: impl IntoIterator<Item = u64>) -> BTreeMap<u64, usize> {
    let mut map = BTreeMap::new();
    for id in items {
        *map.entry(id).or_insert(0) += 1;
    }
    map
}

#[tokio::test]
async fn map_filter_flat_map_account_for_every_item() {
    let (sink, out) = sink::collect::<u64>();
    let report = Pipeline::builder("shapes")
        .source(source::iter(0..10_000u64))
        .stage(stage::map_fn("inc", |n: u64| async move { ok(n + 1) }))
        // 1..=10_000; keep odd (5_000 filtered)
        .stage(stage::filter_fn("odd", |n: u64| async move {
            ok((n % 2 == 1).then_some(n))
        }))
        // each odd n -> n*10, n*10+1 (two children); multiples of 5 -> none
        .stage(stage::flat_map_fn("split", |n: u64| async move {
            ok(if n % 5 == 0 {
                vec![]
            } else {
                vec![n * 10, n * 10 + 1]
            })
        }))
        .concurrency(4)
        .sink(sink)
        .run()
        .await
        .unwrap();

    let got = counts(out.take());
    let expected: Vec<u64> = (1..=10_000u64)
        .filter(|n| n % 2 == 1 && n % 5 != 0)
        .flat_map(|n| [n * 10, n * 10 + 1])
        .collect();
    assert_eq!(got.len(), expected.len(), "every child exactly once");
    assert!(got.values().all(|&c| c == 1), "no duplicates");
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), {
        let mut e = expected.clone();
        e.sort_unstable();
        e
    });
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.emitted, 10_000);
    // odd and not a multiple of 5: 4_000 delivered; evens filtered (5_000); odd multiples
    // of 5 flat-map to nothing (1_000), which counts as filtered.
    assert_eq!(report.delivered, 4_000);
    assert_eq!(report.filtered, 6_000);
    assert_eq!(report.stage("split").unwrap().emitted, 8_000);
}

#[derive(Debug)]
struct Odd(u64);
impl std::fmt::Display for Odd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "odd input {}", self.0)
    }
}
impl std::error::Error for Odd {}

#[tokio::test]
async fn errors_are_dead_lettered_dropped_or_fail_the_pipeline() {
    let (dead, dead_out) = sink::collect::<DeadLetter>();
    let (sink, out) = sink::collect::<u64>();
    let report = Pipeline::builder("errors")
        .source(source::iter(0..100u64))
        .stage(stage::map_fn("even_only", |n: u64| async move {
            if n % 2 == 1 { Err(Odd(n)) } else { Ok(n) }
        }))
        .sink(sink)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    assert_eq!(out.len(), 50);
    let letters = dead_out.take();
    assert_eq!(letters.len(), 50);
    assert!(
        letters
            .iter()
            .all(|d| d.stage == "even_only" && d.error.starts_with("odd input"))
    );
    assert_eq!((report.delivered, report.dead_lettered), (50, 50));
    assert!(report.is_balanced());

    let (sink, out) = sink::collect::<u64>();
    let report = Pipeline::builder("drop")
        .source(source::iter(0..100u64))
        .stage(stage::map_fn("even_only", |n: u64| async move {
            if n % 2 == 1 { Err(Odd(n)) } else { Ok(n) }
        }))
        .on_error(OnError::Drop)
        .sink(sink)
        .run()
        .await
        .unwrap();
    assert_eq!(out.len(), 50);
    assert_eq!((report.delivered, report.dropped), (50, 50));

    let (sink, _out) = sink::collect::<u64>();
    let err = Pipeline::builder("fail")
        .source(source::iter(0..100_000u64))
        .stage(stage::map_fn("boom_at_10", |n: u64| async move {
            if n == 10 { Err(Odd(n)) } else { Ok(n) }
        }))
        .on_error(OnError::Fail)
        .sink(sink)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.failure.stage, "boom_at_10");
    assert_eq!(err.report.failed, 1);
    assert!(err.report.is_balanced(), "{}", err.report);
    assert!(err.report.emitted < 100_000, "the source stopped early");
}

#[tokio::test(start_paused = true)]
async fn tee_route_partition_merge_and_batch_conserve_items() {
    let (all, all_out) = sink::collect::<u64>();
    let (big, big_out) = sink::collect::<u64>();
    let (batches, batches_out) = sink::collect::<Vec<u64>>();
    let report = Pipeline::builder("graph")
        .source(source::iter(0..3_000u64))
        .merge(source::iter(3_000..5_000u64))
        .tee(|copy| copy.sink(all))
        .route(|n| *n >= 4_000, |b| b.sink(big))
        .partition_by(
            4,
            |n| n % 7,
            |lane| lane.stage(stage::map_fn("lane", |n: u64| async move { ok(n) })),
        )
        .batch(64, Duration::from_millis(5))
        .sink(batches)
        .run()
        .await
        .unwrap();

    assert_eq!(counts(all_out.take()), counts(0..5_000));
    assert_eq!(counts(big_out.take()), counts(4_000..5_000));
    let grouped = batches_out.take();
    assert!(grouped.iter().all(|g| !g.is_empty() && g.len() <= 64));
    assert_eq!(counts(grouped.into_iter().flatten()), counts(0..4_000));
    assert_eq!(report.emitted, 5_000);
    assert_eq!(report.delivered, 5_000);
    assert!(report.is_balanced(), "{report}");
}

#[tokio::test]
async fn a_batch_takes_the_worst_outcome_of_its_write() {
    // The sink fails every group containing a multiple of 100: each member of that
    // group is dead-lettered, the others are delivered.
    let sink = sink::for_each(|group: Vec<u64>| async move {
        if group.iter().any(|n| n % 100 == 0) {
            Err(std::io::Error::other("bad group"))
        } else {
            Ok(())
        }
    });
    let report = Pipeline::builder("groups")
        .source(source::iter(1..=1_000u64))
        .batch(10, Duration::from_secs(1))
        .sink(sink)
        .run()
        .await
        .unwrap();
    assert!(report.is_balanced());
    assert_eq!(report.emitted, 1_000);
    assert_eq!(report.dead_lettered % 10, 0);
    assert!(report.dead_lettered >= 100 && report.dead_lettered <= 200);
    assert_eq!(report.delivered + report.dead_lettered, 1_000);
    assert_eq!(report.count(Outcome::Failed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conservation_holds_on_a_multi_thread_runtime() {
    let (sink, out) = sink::collect::<u64>();
    let report = Pipeline::builder("mt")
        .source(source::iter(0..200_000u64))
        .stage(stage::map_fn("a", |n: u64| async move { ok(n) }))
        .concurrency(8)
        .buffer(64)
        .stage(stage::filter_fn("b", |n: u64| async move {
            ok((n % 3 != 0).then_some(n))
        }))
        .ordered()
        .concurrency(3)
        .buffer(16)
        .sink(sink)
        .run()
        .await
        .unwrap();
    let got = counts(out.take());
    assert_eq!(got, counts((0..200_000u64).filter(|n| n % 3 != 0)));
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.delivered + report.filtered, 200_000);
}

#[tokio::test]
async fn dead_letters_carry_the_item_where_the_stage_shows_items() {
    let (dead, letters) = sink::collect::<DeadLetter>();
    let (sink, _) = sink::collect::<u64>();
    Pipeline::builder("show")
        .source(source::iter(["1", "two", "3"].map(String::from)))
        .stage(stage::show_items_as_json(stage::map_fn(
            "parse",
            |s: String| async move { s.parse::<u64>() },
        )))
        .sink(sink)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    let letters = letters.take();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].item, Some(serde_json::json!("two")));
    assert_eq!(letters[0].error, "invalid digit found in string");

    // A JSON-lines dead-letter file holds the same record.
    let dir = std::env::temp_dir().join(format!("pipeline-dlq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dlq.jsonl");
    let (sink, _) = sink::collect::<u64>();
    Pipeline::builder("file")
        .source(source::iter(["x", "4"].map(String::from)))
        .stage(stage::show_items_as_debug(stage::map_fn(
            "parse",
            |s: String| async move { s.parse::<u64>() },
        )))
        .sink(sink)
        .dead_letter(sink::jsonl_file(&path))
        .run()
        .await
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let record: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(record["stage"], "parse");
    assert_eq!(record["item"], "\"x\"");
    assert_eq!(record["attempts"], 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
