//! Invariant 5 (no silent loss): every drop, dead letter, timeout, retry, breaker
//! transition and restart increments a metric and emits a tracing event. A capturing
//! `metrics` recorder and a capturing `tracing` layer watch one pipeline that does all
//! of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use pipeline_core::options::{BreakerMode, BreakerOptions, RestartOptions, RetryOptions, Window};
use pipeline_core::prelude::*;
use pipeline_core::sink::{Sink, WriteError};
use tracing_subscriber::layer::SubscriberExt;

/// Counter totals by metric name and labels, and how often each gauge and histogram was
/// written.
#[derive(Default, Clone)]
struct Metrics(Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>);

struct Cell(Arc<AtomicU64>);

impl CounterFn for Cell {
    fn increment(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn absolute(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

impl metrics::GaugeFn for Cell {
    fn increment(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn decrement(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn set(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl metrics::HistogramFn for Cell {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Metrics {
    fn cell(&self, key: &Key) -> Arc<AtomicU64> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let id = format!("{}{{{}}}", key.name(), labels.join(","));
        Arc::clone(self.0.lock().unwrap().entry(id).or_default())
    }

    /// Names with at least one write so far.
    fn written(&self) -> std::collections::BTreeSet<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, v)| v.load(Ordering::Relaxed) > 0)
            .filter_map(|(k, _)| k.split('{').next().map(str::to_owned))
            .collect()
    }

    /// The total of every counter named `name` whose labels include `label` (`k=v`).
    fn total(&self, name: &str, label: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains(label))
            .map(|(_, v)| v.load(Ordering::Relaxed))
            .sum()
    }
}

impl Recorder for Metrics {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Cell(self.cell(key))))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Cell(self.cell(key))))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Cell(self.cell(key))))
    }
}

/// Tracing event messages, in order.
#[derive(Default, Clone)]
struct Events(Arc<Mutex<Vec<String>>>);

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0.lock().unwrap().push(m.0);
    }
}

impl Events {
    fn count(&self, message: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.contains(message))
            .count()
    }
}

#[derive(Debug)]
struct Bad(&'static str);
impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for Bad {}

/// A sink taking 1 s per batch: its small dropping edge overflows.
struct Slow;
impl Sink for Slow {
    type Item = u64;
    async fn write(&mut self, items: &mut Vec<u64>) -> Result<(), WriteError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        items.clear();
        Ok(())
    }
}

/// The tests here install thread-local recorders and subscribers; run one at a time so
/// tracing's global callsite interest is never computed while another test races it.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn every_loss_and_policy_event_is_counted_and_traced() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.to_string().contains("injected") {
            default_hook(info);
        }
    }));
    let metrics = Metrics::default();
    let events = Events::default();
    let subscriber = tracing_subscriber::registry().with(events.clone());
    let recorder = metrics.clone();
    let report = tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || {
            pipeline_core::testing::paused_runtime().block_on(async {
                let mut retry = RetryOptions::new(2);
                retry.backoff = Duration::from_millis(1);
                let mut breaker = BreakerOptions::default();
                breaker.window = Window::Count(4);
                breaker.min_calls = 4;
                breaker.open_for = Duration::from_millis(100);
                breaker.mode = BreakerMode::FailFast;
                let (dead, _letters) = sink::collect();
                Pipeline::builder("observed")
                    .source(source::iter(0..400u64))
                    // Every tenth item fails (retried, then dead-lettered); item 5 hangs
                    // (timeouts); item 7 panics (restart).
                    .stage(stage::map_fn("flaky", |n: u64| async move {
                        if n == 5 {
                            std::future::pending::<()>().await;
                        }
                        assert!(n != 7, "injected panic");
                        if n % 10 == 9 {
                            Err(Bad("bad record"))
                        } else {
                            Ok(n)
                        }
                    }))
                    .timeout(Duration::from_millis(50))
                    .retry(retry)
                    .restart(RestartOptions::new(10, Duration::from_secs(60)))
                    // Items 100..120 always fail here, in a row: the breaker opens.
                    .stage(stage::map_fn("guarded", |n: u64| async move {
                        if (100..120).contains(&n) {
                            Err(Bad("dependency down"))
                        } else {
                            Ok(n)
                        }
                    }))
                    .breaker(breaker)
                    .on_error(OnError::Drop)
                    .sink(Slow)
                    .buffer(8)
                    .when_full(WhenFull::DropNewest)
                    .dead_letter(dead)
                    .run()
                    .await
                    .unwrap()
            })
        })
    });
    assert!(report.is_balanced(), "{report}");

    // Retries, timeouts, panics, restarts.
    assert!(metrics.total("pipeline_retries_total", "stage=flaky") > 0);
    assert!(events.count("retrying") > 0);
    assert_eq!(metrics.total("pipeline_timeouts_total", "stage=flaky"), 2);
    assert_eq!(events.count("attempt timed out"), 2);
    assert_eq!(metrics.total("pipeline_panics_total", "stage=flaky"), 2);
    assert_eq!(metrics.total("pipeline_restarts_total", "stage=flaky"), 2);
    assert_eq!(events.count("stage panicked; restarting"), 2);
    // Dead letters.
    let dead = metrics.total("pipeline_items_total", "event=dead_lettered");
    assert_eq!(dead, report.dead_lettered);
    assert!(dead > 0);
    assert_eq!(events.count("item dead-lettered") as u64, dead);
    // Breaker transitions and `on_error = drop`.
    assert!(metrics.total("pipeline_breaker_transitions_total", "stage=guarded") > 0);
    assert!(events.count("breaker opened") > 0);
    let dropped_by_stage = metrics.total("pipeline_items_total", "event=dropped");
    assert!(dropped_by_stage > 0);
    assert_eq!(events.count("item dropped") as u64, dropped_by_stage);
    // Overflow drops at the sink's edge.
    let overflow = metrics.total("pipeline_overflow_total", "policy=drop_newest");
    assert!(overflow > 0);
    assert!(events.count("edge full: items dropped") > 0);
    assert_eq!(report.dropped, dropped_by_stage + overflow);
    // The final outcomes.
    assert_eq!(
        metrics.total("pipeline_outcomes_total", "outcome=dropped"),
        report.dropped
    );
    assert_eq!(
        metrics.total("pipeline_outcomes_total", "outcome=delivered"),
        report.delivered
    );
}

/// A hand-written stage without a declared name: it is named after its type.
struct Sleepy;

impl Stage for Sleepy {
    type In = u64;
    type Output = u64;
    type Shape = Map;
    type Error = std::convert::Infallible;

    async fn call(&self, n: u64, _cx: &Context) -> Result<u64, std::convert::Infallible> {
        if n == 0 {
            std::future::pending::<()>().await;
        }
        Ok(n)
    }
}

#[test]
fn policy_metrics_carry_the_stage_name_the_report_shows() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let metrics = Metrics::default();
    let recorder = metrics.clone();
    let report = metrics::with_local_recorder(&recorder, || {
        pipeline_core::testing::paused_runtime().block_on(async {
            let (sink, _) = sink::collect::<u64>();
            Pipeline::builder("named")
                .source(source::iter(0..3u64))
                .stage(Sleepy)
                .timeout(Duration::from_millis(5))
                .sink(sink)
                .run()
                .await
                .unwrap()
        })
    });
    let row = report.stages.iter().find(|s| s.timeouts > 0).unwrap();
    assert_eq!(row.name, "Sleepy");
    assert_eq!(metrics.total("pipeline_timeouts_total", "stage=Sleepy"), 1);
    assert_eq!(
        metrics.total("pipeline_items_total", "stage=Sleepy,event=received"),
        3
    );
}

/// Emits 0..1000 in batches of 10, one batch per millisecond; fails its third pull and
/// reports a backlog.
struct Steady {
    next: u64,
    pulls: u32,
    backlog: pipeline_core::source::Backlog,
}

impl pipeline_core::source::Source for Steady {
    type Item = u64;
    async fn pull(
        &mut self,
        _max: usize,
    ) -> Result<Option<pipeline_core::source::Pulled<u64>>, BoxError> {
        self.pulls += 1;
        if self.pulls == 3 {
            return Err("connection reset".into());
        }
        if self.next >= 1_000 {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let items: Vec<u64> = (self.next..self.next + 10).collect();
        self.next += 10;
        self.backlog.set_lag(1_000 - self.next);
        self.backlog.set_pending(10);
        Ok(Some(pipeline_core::source::Pulled::new(items)))
    }
    fn backlog(&self) -> Option<pipeline_core::source::Backlog> {
        Some(self.backlog.clone())
    }
}

#[test]
fn every_documented_metric_is_emitted_while_the_pipeline_runs() {
    // Before: `pipeline_outcomes_total` was counted only when the report was built, and
    // `pipeline_queue_depth` and a latency histogram were never emitted.
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.to_string().contains("injected") {
            default_hook(info);
        }
    }));
    let metrics = Metrics::default();
    let recorder = metrics.clone();
    let mid_run = metrics::with_local_recorder(&recorder, || {
        pipeline_core::testing::paused_runtime().block_on(async {
            let mut retry = RetryOptions::new(2);
            retry.backoff = Duration::from_millis(1);
            let mut breaker = BreakerOptions::default();
            // A breaker that stays closed: its state gauge is still reported.
            breaker.window = Window::Count(20);
            breaker.min_calls = 20;
            let handle = Pipeline::builder("live")
                .source(Steady {
                    next: 0,
                    pulls: 0,
                    backlog: pipeline_core::source::Backlog::new(),
                })
                .stage(stage::map_fn("work", |n: u64| async move {
                    if n == 5 {
                        std::future::pending::<()>().await;
                    }
                    assert!(n != 7, "injected panic");
                    if n % 10 == 9 {
                        Err(Bad("bad record"))
                    } else {
                        Ok(n)
                    }
                }))
                .timeout(Duration::from_millis(20))
                .retry(retry)
                .breaker(breaker)
                .restart(RestartOptions::new(10, Duration::from_secs(60)))
                .route(
                    |n: &u64| {
                        assert!(*n != 11, "injected predicate panic");
                        false
                    },
                    |b| b.sink(sink::collect::<u64>().0),
                )
                .sink(Slow)
                .buffer(8)
                .when_full(WhenFull::DropNewest)
                .spawn();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let seen = metrics.written();
            assert!(!handle.control().is_finished(), "still running");
            let report = handle.join().await.unwrap();
            assert!(report.is_balanced());
            seen
        })
    });
    for name in [
        "pipeline_items_total",
        "pipeline_overflow_total",
        "pipeline_outcomes_total",
        "pipeline_queue_depth",
        "pipeline_in_flight",
        "pipeline_source_lag",
        "pipeline_source_pending",
        "pipeline_source_errors_total",
        "pipeline_restarts_total",
        "pipeline_stage_latency_seconds",
        "pipeline_panics_total",
        "pipeline_retries_total",
        "pipeline_timeouts_total",
        "pipeline_breaker_state",
    ] {
        assert!(
            mid_run.contains(name),
            "{name} not emitted during the run: {mid_run:?}"
        );
    }
}
