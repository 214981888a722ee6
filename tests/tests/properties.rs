//! Property tests over random chain shapes, capacities and concurrency: conservation
//! always; order kept where `ordered` (or single concurrency) and within a partition key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use pipeline_core::Builder;
use pipeline_core::prelude::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    /// Map with concurrency and an await that yields `yields` times; ordered or not.
    Map {
        concurrency: usize,
        ordered: bool,
        capacity: usize,
        yields: u8,
    },
    /// Drop items whose id is divisible by `modulo`.
    Filter { modulo: u64, capacity: usize },
    /// Copy each item `copies` times (0 = filter it out).
    Fan { copies: u8, capacity: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1usize..6, any::<bool>(), 1usize..40, 0u8..3).prop_map(
            |(concurrency, ordered, capacity, yields)| {
                Step::Map {
                    concurrency,
                    ordered,
                    capacity,
                    yields,
                }
            }
        ),
        (2u64..7, 1usize..40).prop_map(|(modulo, capacity)| Step::Filter { modulo, capacity }),
        (0u8..3, 1usize..40).prop_map(|(copies, capacity)| Step::Fan { copies, capacity }),
    ]
}

/// (source id, sequence within the item's children) so order can be checked.
type Item = (u64, u32);

fn apply(b: Builder<Item>, step: &Step) -> Builder<Item> {
    match *step {
        Step::Map {
            concurrency,
            ordered,
            capacity,
            yields,
        } => {
            let b = b
                .stage(stage::map_fn("map", move |item: Item| async move {
                    for _ in 0..(item.0 % u64::from(yields + 1)) {
                        tokio::task::yield_now().await;
                    }
                    Ok::<_, Infallible>(item)
                }))
                .concurrency(concurrency)
                .buffer(capacity);
            if ordered { b.ordered() } else { b }
        }
        Step::Filter { modulo, capacity } => b
            .stage(stage::filter_fn("filter", move |item: Item| async move {
                Ok::<_, Infallible>((item.0 % modulo != 0).then_some(item))
            }))
            .buffer(capacity),
        Step::Fan { copies, capacity } => b
            .stage(stage::flat_map_fn("fan", move |item: Item| async move {
                Ok::<_, Infallible>((0..u32::from(copies)).map(move |c| (item.0, item.1 * 4 + c)))
            }))
            .buffer(capacity),
    }
}

/// What a step does to the multiset of ids, and whether it keeps order.
fn expected(ids: &[u64], steps: &[Step]) -> BTreeMap<u64, usize> {
    let mut counts: BTreeMap<u64, usize> = ids.iter().map(|&id| (id, 1)).collect();
    for s in steps {
        match *s {
            Step::Map { .. } => {}
            Step::Filter { modulo, .. } => counts.retain(|id, _| id % modulo != 0),
            Step::Fan { copies, .. } => {
                for c in counts.values_mut() {
                    *c *= usize::from(copies);
                }
                counts.retain(|_, c| *c > 0);
            }
        }
    }
    counts
}

fn keeps_order(steps: &[Step]) -> bool {
    steps.iter().all(|s| match s {
        Step::Map {
            concurrency,
            ordered,
            ..
        } => *ordered || *concurrency == 1,
        _ => true,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn any_chain_conserves_items(n in 0u64..600, steps in prop::collection::vec(step(), 1..5), sink_cap in 1usize..50) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (sink, out) = sink::collect::<Item>();
        let ids: Vec<u64> = (0..n).collect();
        let report = rt.block_on(async {
            let mut b = Pipeline::builder("prop").source(source::iter(ids.iter().map(|&id| (id, 0u32)).collect::<Vec<_>>()));
            for s in &steps {
                b = apply(b, s);
            }
            b.sink(sink).buffer(sink_cap).run().await.unwrap()
        });
        let items = out.take();
        let mut got: BTreeMap<u64, usize> = BTreeMap::new();
        for (id, _) in &items {
            *got.entry(*id).or_default() += 1;
        }
        prop_assert_eq!(&got, &expected(&ids, &steps));
        prop_assert!(report.is_balanced(), "{}", report);
        prop_assert_eq!(report.emitted, n);
        prop_assert_eq!(report.delivered, got.len() as u64);
        if keeps_order(&steps) {
            prop_assert!(items.windows(2).all(|w| w[0] < w[1]), "order lost: {:?}", steps);
        }
    }

    #[test]
    fn partitions_keep_order_per_key(n in 1u64..2_000, lanes in 1usize..5, keys in 1u64..9, concurrency in 1usize..4) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        let (sink, out) = sink::collect::<u64>();
        let report = rt.block_on(async {
            Pipeline::builder("lanes")
                .source(source::iter(0..n))
                .partition_by(lanes, move |id| id % keys, move |lane| {
                    lane.stage(stage::map_fn("work", |id: u64| async move {
                        for _ in 0..(id % 3) {
                            tokio::task::yield_now().await;
                        }
                        Ok::<_, Infallible>(id)
                    }))
                    .concurrency(concurrency)
                    .ordered()
                    .buffer(7)
                })
                .batch(5, Duration::from_millis(1))
                .stage(stage::flat_map_fn("unbatch", |ids: Vec<u64>| async move { Ok::<_, Infallible>(ids) }))
                .sink(sink)
                .run()
                .await
                .unwrap()
        });
        let items = out.take();
        prop_assert_eq!(items.len() as u64, n);
        for k in 0..keys {
            let of_key: Vec<u64> = items.iter().copied().filter(|id| id % keys == k).collect();
            prop_assert!(of_key.windows(2).all(|w| w[0] < w[1]), "key {} out of order", k);
        }
        prop_assert!(report.is_balanced());
    }
}

#[tokio::test]
async fn the_topology_renders_as_mermaid_and_dot() {
    let (a, _) = sink::collect::<u64>();
    let (b, _) = sink::collect::<u64>();
    let pipeline = Pipeline::builder("graph")
        .source(source::iter(0..1u64))
        .stage(stage::map_fn("parse", |n: u64| async move {
            Ok::<_, Infallible>(n)
        }))
        .buffer(7)
        .tee(|t| t.sink(a).name("audit"))
        .sink(b)
        .build();
    let mermaid = pipeline.graph().to_mermaid();
    assert!(mermaid.starts_with("flowchart LR"));
    for name in [
        "parse",
        "tee",
        "audit",
        "collect",
        "iter",
        "dead_letter:log",
    ] {
        assert!(mermaid.contains(name), "{name} missing:\n{mermaid}");
    }
    assert!(mermaid.contains("\"7 block\""), "{mermaid}");
    let dot = pipeline.graph().to_dot();
    assert!(dot.starts_with("digraph pipeline {"));
    assert_eq!(pipeline.graph().edges().len(), 4, "{dot}");
    // A built pipeline still runs.
    let report = pipeline.run().await.unwrap();
    assert!(report.is_balanced());
}
