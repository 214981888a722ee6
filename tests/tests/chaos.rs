//! RELIABILITY.md test 1, the chaos ledger: 4 stages, small edges, concurrency 8, and per
//! attempt 5% retryable errors, 1% panics, 1% timeouts, 0.1% permanent errors, on paused
//! time. Every id is delivered or dead-lettered exactly once, every dead letter has its
//! reason, stage and attempts, and nothing is left in flight.
//!
//! 100k items by default; `PIPELINE_CHAOS_ITEMS=1000000` for the long run. The seed is
//! printed and `PIPELINE_CHAOS_SEED` reproduces a run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use pipeline_core::options::RetryOptions;
use pipeline_core::prelude::*;
use pipeline_core::testing::{self, Faults};
use pipeline_core::{DeadLetter, Outcome};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn chaos_ledger_balances() {
    // Injected panics are expected by the thousand: keep their messages out of the log.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let injected = info.payload().downcast_ref::<&str>() == Some(&"injected panic");
        if !injected {
            default_hook(info);
        }
    }));

    let items = env_u64("PIPELINE_CHAOS_ITEMS", 100_000);
    let seed = env_u64("PIPELINE_CHAOS_SEED", 0x0005_eed0_c4a5);
    eprintln!("chaos: {items} items, seed {seed} (PIPELINE_CHAOS_SEED to reproduce)");

    let run = testing::paused_runtime().block_on(async move {
        let faults = |stage: u64| {
            Faults::new(seed ^ stage)
                .errors(0.05)
                .panics(0.01)
                .delays(0.01, Duration::from_secs(5))
                .permanent(0.001)
        };
        let step = |name: &'static str, n: u64| {
            faults(n).inject(
                stage::map_fn(name, |id: u64| async move { Ok::<_, Infallible>(id) }),
                |id: &u64| *id,
            )
        };
        let mut retry = RetryOptions::new(4);
        retry.backoff = Duration::from_millis(10);
        retry.max_backoff = Duration::from_millis(200);
        testing::run(0..items, |b| {
            let mut b = b;
            for (n, name) in ["parse", "enrich", "score", "format"]
                .into_iter()
                .enumerate()
            {
                b = b
                    .stage(step(name, n as u64))
                    .name(name)
                    .concurrency(8)
                    .buffer(64)
                    .timeout(Duration::from_secs(1))
                    .retry(retry.clone());
            }
            b
        })
        .await
    });

    let report = &run.report;
    let stats = |name: &str| report.stage(name).expect("stage row");
    let retries: u64 = ["parse", "enrich", "score", "format"]
        .iter()
        .map(|s| stats(s).retries)
        .sum();
    let restarts: u64 = ["parse", "enrich", "score", "format"]
        .iter()
        .map(|s| stats(s).restarts)
        .sum();
    let timeouts: u64 = ["parse", "enrich", "score", "format"]
        .iter()
        .map(|s| stats(s).timeouts)
        .sum();
    eprintln!(
        "chaos: emitted {} delivered {} dead-lettered {} retries {retries} timeouts {timeouts} restarts {restarts}",
        report.emitted, report.delivered, report.dead_lettered
    );

    assert_eq!(report.emitted, items);
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.delivered + report.dead_lettered, items, "{report}");
    assert_eq!(
        report.count(Outcome::Abandoned) + report.count(Outcome::Failed),
        0
    );

    // Zero duplicates, zero missing: the sink and the dead letters partition the ids.
    let mut seen: HashMap<u64, usize> = HashMap::with_capacity(items as usize);
    for id in &run.delivered {
        *seen.entry(*id).or_default() += 1;
    }
    assert_eq!(
        seen.len(),
        run.delivered.len(),
        "a delivered id was duplicated"
    );
    assert_eq!(run.dead_letters.len() as u64, report.dead_lettered);
    assert!(seen.values().all(|&c| c == 1));
    assert_eq!(seen.len() as u64 + run.dead_letters.len() as u64, items);

    // Every dead letter says where, why and after how many attempts.
    let stage_names = ["parse", "enrich", "score", "format"];
    for DeadLetter {
        stage,
        error,
        attempts,
        ..
    } in &run.dead_letters
    {
        assert!(stage_names.contains(&stage.as_str()), "{stage}");
        assert!(!error.is_empty());
        assert!((1..=4).contains(attempts), "{attempts}");
    }
    // Permanent errors end an item at once, before its attempts run out.
    assert!(
        run.dead_letters
            .iter()
            .any(|d| d.error.contains("permanent") && d.attempts < 4)
    );
    // The faults really happened.
    assert!(retries > items / 10, "retries {retries}");
    assert!(timeouts > items / 100, "timeouts {timeouts}");
    assert!(restarts > items / 100, "restarts {restarts}");
    // ~0.1% permanent per stage, and the rest are rare 4-in-a-row failures.
    assert!(report.dead_lettered > 0 && report.dead_lettered < items / 50);
}
