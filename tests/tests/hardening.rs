//! Issue 8 and 9: the promises hold wherever user code runs and whoever stops the
//! pipeline. Each test names the break it would have caught on the earlier main.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::time::Duration;

use pipeline_core::ack::Ack;
use pipeline_core::options::{OnError, RestartOptions};
use pipeline_core::prelude::*;
use pipeline_core::sink::{Sink, WriteError};
use pipeline_core::source::{IngestOptions, Pulled, Source, TrySendError};
use pipeline_core::{Health, PipelineControl, Stats};

/// A sink that never finishes a write: everything upstream of it stalls.
struct Stalled;

impl Sink for Stalled {
    type Item = u64;
    async fn write(&mut self, _items: &mut Vec<u64>) -> Result<(), WriteError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_forced_shutdown_counts_every_accepted_item() {
    // Before: with a stalled sink and 64 accepted, the report said 5 emitted.
    let handle = Pipeline::builder("accepted")
        .ingest::<u64>(64)
        .sink(Stalled)
        .buffer(1)
        .spawn();
    let ingest = handle.ingest::<u64>().unwrap();
    let mut accepted = 0;
    for n in 0..10_000u64 {
        match ingest.try_send(n) {
            Ok(()) => accepted += 1,
            Err(TrySendError::Full(_)) => break,
            Err(e) => panic!("{e}"),
        }
        tokio::task::yield_now().await;
    }
    assert!(accepted >= 64, "{accepted}");
    let report = handle
        .shutdown_within(Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(report.emitted, accepted);
    assert_eq!(report.abandoned, accepted, "{report}");
    assert!(report.is_balanced());
}

#[tokio::test(start_paused = true)]
async fn every_send_and_wait_caller_is_answered_and_counted() {
    // Before: 10k callers were told `Abandoned` 512 more times than the report counted.
    let handle = Pipeline::builder("waiters")
        .ingest::<u64>(256)
        .sink(Stalled)
        .buffer(1)
        .spawn();
    let ingest = handle.ingest::<u64>().unwrap();
    let mut callers = Vec::new();
    for n in 0..2_000u64 {
        let ingest = ingest.clone();
        callers.push(tokio::spawn(async move { ingest.send_and_wait(n).await }));
    }
    drop(ingest);
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let report = handle
        .shutdown_within(Duration::from_millis(10))
        .await
        .unwrap();
    let mut told_abandoned = 0;
    let mut refused = 0;
    for caller in callers {
        match caller.await.unwrap() {
            Ok(settled) => {
                assert_eq!(settled.outcome, Outcome::Abandoned);
                told_abandoned += 1;
            }
            Err(_closed) => refused += 1,
        }
    }
    assert_eq!(told_abandoned + refused, 2_000);
    assert_eq!(report.abandoned, told_abandoned, "{report}");
    assert_eq!(report.emitted, told_abandoned);
    assert!(report.is_balanced());
}

fn fatal(n: u64) -> Result<u64, std::io::Error> {
    if n == 3 {
        Err(std::io::Error::other("fatal"))
    } else {
        Ok(n)
    }
}

#[tokio::test(start_paused = true)]
async fn on_error_fail_with_a_stalled_sink_returns_within_the_deadline() {
    // Before: run() never returned.
    let start = tokio::time::Instant::now();
    let err = Pipeline::builder("fatal")
        .source(source::iter(0..10_000u64))
        .stage(stage::map_fn("check", |n: u64| async move { fatal(n) }))
        .on_error(OnError::Fail)
        .sink(Stalled)
        .shutdown_deadline(Duration::from_secs(5))
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.failure.stage, "check");
    assert!(
        start.elapsed() <= Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert!(err.report.is_balanced(), "{}", err.report);
    assert!(err.report.failed >= 1);
    assert!(err.report.abandoned > 0);
}

/// Panics on every call: each item costs a restart.
struct AlwaysPanics;

impl Stage for AlwaysPanics {
    type In = u64;
    type Output = u64;
    type Shape = Map;
    type Error = Infallible;
    async fn call(&self, n: u64, _cx: &Context) -> Result<u64, Infallible> {
        if n < u64::MAX {
            panic!("always {n}");
        }
        Ok(n)
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_escalation_with_a_stalled_sink_returns_within_the_deadline() {
    quiet_panics();
    let err = Pipeline::builder("escalate")
        .source(source::iter(0..10_000u64))
        .stage(AlwaysPanics)
        .name("bomb")
        .restart(RestartOptions::new(2, Duration::from_secs(60)))
        .sink(Stalled)
        .shutdown_deadline(Duration::from_secs(1))
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.failure.stage, "bomb");
    assert!(
        err.failure.error.contains("restart limit"),
        "{}",
        err.failure
    );
    assert!(err.report.is_balanced(), "{}", err.report);
}

/// Emits 0..limit in batches of 10, then panics in `pull`.
struct PanicsAt(u64, u64);

impl Source for PanicsAt {
    type Item = u64;
    async fn pull(&mut self, _max: usize) -> Result<Option<Pulled<u64>>, BoxError> {
        if self.0 >= self.1 {
            panic!("source gave up at {}", self.0);
        }
        let items: Vec<u64> = (self.0..self.0 + 10).collect();
        self.0 += 10;
        Ok(Some(Pulled::new(items)))
    }
    fn name(&self) -> &str {
        "flaky"
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_pull_ends_the_run_with_a_failure_naming_the_source() {
    // Before: run() returned Ok with a clean end.
    quiet_panics();
    let (sink, out) = sink::collect();
    let err = Pipeline::builder("pull")
        .source(PanicsAt(0, 50))
        .sink(sink)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.failure.stage, "flaky");
    assert!(err.failure.error.contains("source gave up at 50"));
    assert_eq!(out.len(), 50);
    assert_eq!(err.report.delivered, 50);
    assert!(err.report.is_balanced());
    assert_eq!(err.report.stage("flaky").unwrap().panics, 1);
}

/// Emits two batches whose ack callback panics on the first.
struct PanickyAck(u64);

impl Source for PanickyAck {
    type Item = u64;
    async fn pull(&mut self, _max: usize) -> Result<Option<Pulled<u64>>, BoxError> {
        self.0 += 1;
        match self.0 {
            1 => Ok(Some(Pulled::with_ack(
                vec![1, 2],
                Ack::new(|_: &[Outcome]| panic!("ack callback broke")),
            ))),
            2 => Ok(Some(Pulled::new(vec![3]))),
            _ => Ok(None),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_ack_callback_is_counted_and_the_outcomes_stand() {
    // Before: the panic ran inline in the sink's task and killed it.
    quiet_panics();
    let (sink, out) = sink::collect();
    let report = Pipeline::builder("ack")
        .source(PanickyAck(0))
        .sink(sink)
        .run()
        .await
        .unwrap();
    assert_eq!(out.take(), vec![1, 2, 3]);
    assert_eq!(report.delivered, 3);
    assert_eq!(report.stage("source").unwrap().panics, 1);
}

/// A stage whose start fails.
struct NoStart;

impl Stage for NoStart {
    type In = u64;
    type Output = u64;
    type Shape = Map;
    type Error = Infallible;
    async fn call(&self, n: u64, _cx: &Context) -> Result<u64, Infallible> {
        Ok(n)
    }
    async fn on_start(&self) -> Result<(), BoxError> {
        Err("database unreachable".into())
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_stops_the_pipeline_naming_the_stage() {
    let err = Pipeline::builder("start")
        .source(source::iter(0..100u64))
        .stage(NoStart)
        .name("db")
        .sink(sink::collect().0)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.failure.stage, "db");
    assert!(err.failure.error.contains("database unreachable"));
    assert_eq!(err.report.delivered, 0);
    assert!(err.report.is_balanced(), "{}", err.report);
}

#[tokio::test(start_paused = true)]
async fn admission_refuses_once_the_pipeline_holds_max_in_flight() {
    // Before: with ingest(64), ~3,000 events were accepted before `Full`.
    let handle = Pipeline::builder("admission")
        .ingest::<u64>(IngestOptions::buffer(64).max_in_flight(64))
        .stage(stage::map_fn("id", |n: u64| async move {
            Ok::<_, Infallible>(n)
        }))
        .sink(Stalled)
        .spawn();
    let ingest = handle.ingest::<u64>().unwrap();
    let mut accepted = 0u64;
    for n in 0..5_000u64 {
        match ingest.try_send(n) {
            Ok(()) => accepted += 1,
            Err(TrySendError::Full(_)) => {}
            Err(e) => panic!("{e}"),
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(accepted, 64);
    assert_eq!(ingest.in_flight(), Some(64));
    let report = handle
        .shutdown_within(Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(report.emitted, 64);
    assert!(report.is_balanced());
    // Every slot came back with the outcomes.
    assert_eq!(ingest.in_flight(), Some(0));
}

#[tokio::test(start_paused = true)]
async fn admission_slots_come_back_as_items_finish() {
    let handle = Pipeline::builder("flow")
        .ingest::<u64>(IngestOptions::buffer(8).max_in_flight(4))
        .sink(sink::collect().0)
        .spawn();
    let ingest = handle.ingest::<u64>().unwrap();
    for n in 0..1_000u64 {
        ingest.send(n).await.unwrap();
        assert!(ingest.in_flight().unwrap() <= 4);
    }
    drop(ingest);
    let report = handle.join().await.unwrap();
    assert_eq!(report.delivered, 1_000);
}

#[tokio::test(start_paused = true)]
async fn send_and_wait_says_which_stage_failed_and_why() {
    let (dead, letters) = sink::collect();
    let handle = Pipeline::builder("why")
        .ingest::<String>(16)
        .stage(stage::map_fn("parse", |s: String| async move {
            s.parse::<u64>()
        }))
        .sink(sink::collect().0)
        .dead_letter(dead)
        .spawn();
    let ingest = handle.ingest::<String>().unwrap();
    let good = ingest.send_and_wait("12".into()).await.unwrap();
    assert_eq!(good.outcome, Outcome::Delivered);
    assert!(good.reason.is_none());
    let bad = ingest.send_and_wait("x".into()).await.unwrap();
    assert_eq!(bad.outcome, Outcome::DeadLettered);
    let reason = bad.reason.unwrap();
    assert_eq!(reason.stage, "parse");
    assert_eq!(reason.error, "invalid digit found in string");
    drop(ingest);
    handle.join().await.unwrap();
    assert_eq!(letters.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_control_view_is_shared_and_stops_the_pipeline() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>(_: &T) {}
    let handle = Pipeline::builder("view")
        .ingest::<u64>(16)
        .sink(sink::collect().0)
        .spawn();
    let control: PipelineControl = handle.control();
    assert_shareable(&control);
    let ingest = handle.ingest::<u64>().unwrap();
    ingest.send(1).await.unwrap();
    let watcher = {
        let control = control.clone();
        tokio::spawn(async move {
            control.finished().await;
            control.health()
        })
    };
    assert_eq!(control.health(), Health::Running);
    control.shutdown();
    let report = handle.join().await.unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(watcher.await.unwrap(), Health::Finished);
    assert!(control.is_finished());
    // The ingest handle kept by the caller no longer feeds anything.
    assert!(ingest.send(2).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn stats_and_reports_read_back_from_json() {
    let (dead, _letters) = sink::collect();
    let run = Pipeline::builder("json")
        .source(source::iter(["1".to_string(), "x".to_string()]))
        .stage(stage::map_fn("parse", |s: String| async move {
            s.parse::<u64>()
        }))
        .sink(sink::collect().0)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    let json = serde_json::to_value(&run).unwrap();
    assert!(json["elapsed"].is_f64(), "{json}");
    assert_eq!(json["stages"][0]["kind"], "dead_letter");
    let back: RunReport = serde_json::from_value(json).unwrap();
    assert_eq!(back.dead_lettered, 1);
    assert_eq!(
        serde_json::to_value(Outcome::DeadLettered).unwrap(),
        "dead_lettered"
    );
    let outcome: Outcome = serde_json::from_str("\"dead_lettered\"").unwrap();
    assert_eq!(outcome.to_string(), "dead_lettered");
    let handle = Pipeline::builder("live")
        .source(source::iter(0..10u64))
        .sink(sink::collect().0)
        .spawn();
    let stats: Stats = handle.stats();
    let read: Stats = serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();
    assert_eq!(read.stages.len(), stats.stages.len());
    assert_eq!(read.stages[1].name, "iter");
    handle.join().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dead_letters_serialize_times_as_rfc3339() {
    let (dead, letters) = sink::collect();
    Pipeline::builder("dl")
        .source(source::iter(["x".to_string()]))
        .stage(stage::map_fn("parse", |s: String| async move {
            s.parse::<u64>()
        }))
        .sink(sink::collect().0)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    let letter = letters.take().remove(0);
    let json = serde_json::to_value(&letter).unwrap();
    let text = json["first_failure"].as_str().unwrap();
    assert!(text.ends_with('Z') && text.contains('T'), "{text}");
    let back: pipeline_core::DeadLetter = serde_json::from_value(json).unwrap();
    assert_eq!(back, letter);
}

/// Keeps the test output free of the panics these tests inject.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info.to_string();
            if !(text.contains("always") || text.contains("gave up") || text.contains("broke")) {
                default(info);
            }
        }));
    });
}

/// Emits `0..n` as its flat-map children, panicking when it reaches `at` (lazily, while
/// the runtime pulls the children).
struct Children {
    n: u64,
    at: u64,
}

impl Iterator for Children {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        self.n -= 1;
        if self.n == self.at {
            panic!("always: iterator at {}", self.at);
        }
        Some(self.n)
    }
}

/// A sink that panics on the batch holding `bad`, and in `flush` when asked.
struct Brittle {
    bad: u64,
    flush_panics: bool,
}

impl Sink for Brittle {
    type Item = u64;
    async fn write(&mut self, items: &mut Vec<u64>) -> Result<(), WriteError> {
        if items.contains(&self.bad) {
            panic!("always: write of {}", self.bad);
        }
        items.clear();
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), BoxError> {
        if self.flush_panics {
            panic!("always: flush");
        }
        Ok(())
    }
}

/// A dead-letter sink that panics.
struct BrokenDeadLetters;

impl Sink for BrokenDeadLetters {
    type Item = pipeline_core::DeadLetter;
    async fn write(&mut self, _: &mut Vec<pipeline_core::DeadLetter>) -> Result<(), WriteError> {
        panic!("always: dead-letter sink");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_at_every_user_call_site_costs_its_item_or_batch_only() {
    // One pipeline, a panic planted at each place the runtime calls user code on the item
    // path: the stage call, a flat-map iterator (first child and later), a route
    // predicate, a partition key fn, a sink write. Every other item is delivered, the
    // ledger balances, and each element names its panic.
    quiet_panics();
    let (dead, letters) = sink::collect();
    let (sink, out) = sink::collect::<u64>();
    let control_seen;
    let handle = Pipeline::builder("everywhere")
        .source(source::iter(0..200u64))
        .stage(stage::map_fn("call", |n: u64| async move {
            if n == 10 {
                panic!("always: call {n}");
            }
            Ok::<_, Infallible>(n)
        }))
        .stage(stage::flat_map_fn("expand", |n: u64| async move {
            // Item 20 panics on its first child, item 30 on its third.
            let at = match n {
                20 => 1,
                30 => 0,
                _ => u64::MAX,
            };
            Ok::<_, Infallible>(
                Children {
                    n: if n == 20 || n == 30 { 3 } else { 1 },
                    at,
                }
                .map(move |_| n),
            )
        }))
        .route(
            |n: &u64| {
                if *n == 40 {
                    panic!("always: predicate {n}");
                }
                n % 2 == 0
            },
            |b| b.sink(sink::collect::<u64>().0).name("evens"),
        )
        .partition_by(
            2,
            |n: &u64| {
                if *n == 51 {
                    panic!("always: key {n}");
                }
                *n
            },
            |lane| lane,
        )
        .sink(sink)
        .dead_letter(dead)
        .spawn();
    control_seen = handle.control();
    let report = handle.join().await.unwrap();
    assert!(report.is_balanced(), "{report}");
    assert_eq!(control_seen.health(), Health::Finished);
    let mut stages: Vec<String> = letters.take().into_iter().map(|l| l.stage).collect();
    stages.sort();
    assert_eq!(stages, ["call", "expand", "expand", "partition", "route"]);
    // 200 items: 5 dead-lettered; item 30's first two children were emitted and
    // delivered before its iterator panicked, so it is dead-lettered (worst wins).
    assert_eq!(report.dead_lettered, 5);
    assert_eq!(report.delivered, 195);
    let odd_delivered = out.take();
    assert!(odd_delivered.iter().all(|n| n % 2 == 1));
    assert!(!odd_delivered.contains(&51));
    for (element, panics) in [("call", 1), ("expand", 2), ("route", 1), ("partition", 1)] {
        assert_eq!(report.stage(element).unwrap().panics, panics, "{element}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_sink_write_dead_letters_that_batch_with_its_rows() {
    quiet_panics();
    let (dead, letters) = sink::collect();
    let report = Pipeline::builder("write")
        .source(source::iter(0..10u64))
        .sink(sink::show_items_as_json(Brittle {
            bad: 4,
            flush_panics: false,
        }))
        .buffer(1)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    let letters = letters.take();
    assert_eq!(letters.len() as u64, report.dead_lettered);
    assert!(letters.iter().any(|l| l.item == Some(serde_json::json!(4))));
    assert!(
        letters
            .iter()
            .all(|l| l.item.is_some() && l.error.contains("write of 4"))
    );
    assert_eq!(report.delivered + report.dead_lettered, 10);
    assert!(report.is_balanced());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_flush_is_a_failure_in_the_report() {
    quiet_panics();
    let err = Pipeline::builder("flush")
        .source(source::iter(0..10u64))
        .sink(Brittle {
            bad: u64::MAX,
            flush_panics: true,
        })
        .name("db")
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.failure.stage, "db");
    assert!(err.failure.error.contains("flush"), "{}", err.failure);
    assert_eq!(err.report.delivered, 10);
    assert!(err.report.is_balanced());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_dead_letter_sink_fails_the_items_and_nothing_else() {
    quiet_panics();
    let (sink, out) = sink::collect();
    let report = Pipeline::builder("dlq")
        .source(source::iter(["1", "x", "2"].map(String::from)))
        .stage(stage::map_fn("parse", |s: String| async move {
            s.parse::<u64>()
        }))
        .sink(sink)
        .dead_letter(BrokenDeadLetters)
        .run()
        .await
        .unwrap();
    assert_eq!(out.take(), vec![1, 2]);
    assert_eq!((report.delivered, report.failed), (2, 1));
    assert!(report.is_balanced());
}

/// A stage whose start panics.
struct StartPanics;

impl Stage for StartPanics {
    type In = u64;
    type Output = u64;
    type Shape = Map;
    type Error = Infallible;
    async fn call(&self, n: u64, _cx: &Context) -> Result<u64, Infallible> {
        Ok(n)
    }
    async fn on_start(&self) -> Result<(), BoxError> {
        panic!("always: on_start");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_on_start_fails_the_start() {
    quiet_panics();
    let err = Pipeline::builder("start")
        .source(source::iter(0..5u64))
        .stage(StartPanics)
        .sink(sink::collect().0)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.failure.stage, "StartPanics");
    assert!(err.failure.error.contains("on_start"));
    assert_eq!(err.report.failed, 5);
    assert!(err.report.is_balanced());
}

#[tokio::test]
async fn blocking_sources_and_sinks_run_off_the_async_workers() {
    use std::sync::{Arc, Mutex};
    quiet_panics();
    let opened = Arc::new(Mutex::new(0u32));
    let rows = Arc::new(Mutex::new(Vec::new()));
    let (o, r) = (Arc::clone(&opened), Arc::clone(&rows));
    let once = std::sync::atomic::AtomicBool::new(false);
    let sink = sink::blocking(
        move || {
            *o.lock().unwrap() += 1;
            Ok::<_, std::io::Error>(Vec::<u64>::new())
        },
        move |state: &mut Vec<u64>, batch: &mut Vec<u64>| {
            if batch.contains(&500) && !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                panic!("always: blocking write");
            }
            state.extend(batch.iter().copied());
            r.lock().unwrap().extend(batch.drain(..));
            Ok(())
        },
    );
    let (dead, letters) = sink::collect();
    let report = Pipeline::builder("blocking")
        .source(source::blocking_iter(0..2_000u64))
        .sink(sink)
        .buffer(100)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    assert!(report.is_balanced());
    assert_eq!(report.delivered + report.dead_lettered, 2_000);
    assert!(letters.len() as u64 == report.dead_lettered && report.dead_lettered > 0);
    assert_eq!(rows.lock().unwrap().len() as u64, report.delivered);
    // A panicking write drops its state: the next write opens a fresh one.
    assert!(*opened.lock().unwrap() >= 2);
}

/// A sink of groups that never finishes a write.
struct StalledGroups;

impl Sink for StalledGroups {
    type Item = Vec<u64>;
    async fn write(&mut self, _items: &mut Vec<Vec<u64>>) -> Result<(), WriteError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn capacity_counts_items_after_batch() {
    // Before: downstream of `batch` edges counted groups, so the default 1024-slot edge
    // held 102,400 rows of groups of 100.
    let handle = Pipeline::builder("groups")
        .source(source::iter(0..1_000_000u64))
        .batch(100, Duration::from_millis(10))
        .sink(StalledGroups)
        .spawn();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stats = handle.stats();
    // Bound: the batcher's input edge (1024) + its open group (100) + the sink's edge
    // (1024 rows' worth) + the group being written (100) + one source pull (256).
    let bound = 1024 + 100 + 1024 + 100 + 256;
    assert!(stats.in_flight <= bound, "{} > {bound}", stats.in_flight);
    assert!(
        stats.in_flight >= 1024,
        "the edges filled: {}",
        stats.in_flight
    );
    let sink_row = stats.stages.iter().find(|s| s.name == "sink").unwrap();
    assert!(
        sink_row.queue_depth <= 1024 + 100,
        "{}",
        sink_row.queue_depth
    );
    let report = handle
        .shutdown_within(Duration::from_millis(1))
        .await
        .unwrap();
    assert!(report.is_balanced(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_group_heavier_than_the_edge_still_passes() {
    let (sink, out) = sink::collect::<Vec<u64>>();
    let report = Pipeline::builder("heavy")
        .source(source::iter(0..1_000u64))
        .batch(500, Duration::from_millis(10))
        .sink(sink)
        .buffer(100)
        .run()
        .await
        .unwrap();
    assert_eq!(report.delivered, 1_000);
    assert_eq!(out.take().iter().map(Vec::len).sum::<usize>(), 1_000);
}

#[tokio::test(start_paused = true)]
async fn stats_show_a_recent_rate_beside_the_lifetime_average() {
    let handle = Pipeline::builder("rates")
        .ingest::<u64>(1_024)
        .sink(sink::collect().0)
        .spawn();
    let ingest = handle.ingest::<u64>().unwrap();
    let sink_rate = |s: &Stats| s.stage("collect").map(|r| (r.rate, r.recent_rate)).unwrap();
    // 1000 items in the first second, none in the next two.
    for n in 0..1_000u64 {
        ingest.send(n).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, recent) = sink_rate(&handle.stats());
    assert!(recent > 900.0, "{recent}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (average, recent) = sink_rate(&handle.stats());
    assert_eq!(recent, 0.0);
    assert!(average > 300.0 && average < 400.0, "{average}");
    drop(ingest);
    handle.join().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_panicking_retry_predicate_fails_its_item_only() {
    quiet_panics();
    let (dead, letters) = sink::collect();
    let (sink, out) = sink::collect();
    let retry = pipeline_core::options::RetryOptions::new(3).retry_when(|e| {
        if e.to_string().contains("boom") {
            panic!("always: predicate on {e}");
        }
        true
    });
    let report = Pipeline::builder("when")
        .source(source::iter(["1", "boom", "2"].map(String::from)))
        .stage(stage::map_fn("parse", |s: String| async move {
            if s == "boom" {
                Err(std::io::Error::other("boom"))
            } else {
                Ok(s)
            }
        }))
        .retry(retry)
        .sink(sink)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    assert_eq!(out.take(), ["1", "2"]);
    let letters = letters.take();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].attempts, 1,
        "a panicking predicate means no retry"
    );
    assert_eq!(report.stage("parse").unwrap().panics, 1);
    assert!(report.is_balanced());
}

/// A sink taking 1 ms per write.
struct Slowish;

impl Sink for Slowish {
    type Item = u64;
    async fn write(&mut self, items: &mut Vec<u64>) -> Result<(), WriteError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        items.clear();
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_senders_are_served_under_try_send_load() {
    // Admission is a FIFO semaphore: a freed slot goes to the longest waiting `send`.
    // (The starvation seen under a real multi-threaded load, where a freed slot woke
    // every waiter and a racing `try_send` took it, does not reproduce on one thread;
    // this checks the waiters keep being served.)
    let handle = Pipeline::builder("fair")
        .ingest::<u64>(IngestOptions::buffer(64).max_in_flight(4))
        .sink(Slowish)
        .spawn();
    let ingest = handle.ingest::<u64>().unwrap();
    let hammers: Vec<_> = (0..16u64)
        .map(|h| {
            let ingest = ingest.clone();
            tokio::spawn(async move {
                let mut accepted = 0u64;
                for n in 0..5_000u64 {
                    if ingest.try_send(h * 10_000 + n).is_ok() {
                        accepted += 1;
                    }
                    tokio::task::yield_now().await;
                }
                accepted
            })
        })
        .collect();
    let waited = tokio::time::timeout(Duration::from_secs(1), async {
        for n in 0..10u64 {
            let settled = ingest.send_and_wait(1_000_000 + n).await.unwrap();
            assert_eq!(settled.outcome, Outcome::Delivered);
        }
    })
    .await;
    assert!(waited.is_ok(), "send_and_wait starved behind try_send");
    let mut accepted = 0;
    for hammer in hammers {
        accepted += hammer.await.unwrap();
    }
    drop(ingest);
    let report = handle.join().await.unwrap();
    assert_eq!(report.delivered, accepted + 10);
}

/// An endless source whose `close` panics.
struct BadClose(u64);

impl Source for BadClose {
    type Item = u64;
    async fn pull(&mut self, _max: usize) -> Result<Option<Pulled<u64>>, BoxError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.0 += 1;
        Ok(Some(Pulled::new(vec![self.0])))
    }
    fn close(&mut self) -> bool {
        panic!("always: close");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_close_stops_its_source_and_the_rest_drains() {
    quiet_panics();
    let handle = Pipeline::builder("close")
        .source(BadClose(0))
        .sink(sink::collect().0)
        .spawn();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = handle.shutdown().await.unwrap();
    assert!(report.delivered > 0);
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.stage("source").unwrap().panics, 1);
}
