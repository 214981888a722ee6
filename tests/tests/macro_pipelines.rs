//! Pipelines built from `#[stage]` functions, end to end, with faults injected: every
//! option acts in a running pipeline, not only in `Stage::options`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_core::prelude::*;
use pipeline_core::{Health, Outcome, Pipeline, sink, source, testing};

#[derive(Debug, PartialEq, Eq)]
pub enum AppError {
    Transient(u64),
    Invalid(String),
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Transient(n) => write!(f, "transient failure on {n}"),
            AppError::Invalid(s) => write!(f, "invalid record {s:?}"),
        }
    }
}

impl std::error::Error for AppError {}

fn is_transient(e: &AppError) -> bool {
    matches!(e, AppError::Transient(_))
}

/// Attempts per item, shared by the flaky stage: the first attempt of every tenth item
/// fails with a transient error.
static ATTEMPTS: Mutex<Option<HashMap<u64, u32>>> = Mutex::new(None);

#[stage(retry(attempts = 3, backoff = "10ms", when = is_transient))]
async fn parse(line: &str) -> Result<u64, AppError> {
    line.trim()
        .parse()
        .map_err(|_| AppError::Invalid(line.to_owned()))
}

#[stage(concurrency = 4, ordered, retry(attempts = 2, backoff = "5ms", when = is_transient))]
async fn flaky(n: u64) -> Result<u64, AppError> {
    let attempt = {
        let mut map = ATTEMPTS.lock().unwrap();
        let counts = map.get_or_insert_with(HashMap::new);
        let c = counts.entry(n).or_insert(0);
        *c += 1;
        *c
    };
    tokio::time::sleep(Duration::from_millis(n % 7)).await;
    if n.is_multiple_of(10) && attempt == 1 {
        return Err(AppError::Transient(n));
    }
    Ok(n)
}

#[derive(Debug)]
pub struct Rates {
    factor: u64,
}

#[stage(concurrency = 8, timeout = "50ms")]
async fn enrich(n: u64, #[state] rates: &Rates) -> u64 {
    if n == 13 {
        // Too slow: times out on every attempt and is dead-lettered.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    n * rates.factor
}

#[stage]
fn drop_odd(n: u64) -> Option<u64> {
    n.is_multiple_of(2).then_some(n)
}

#[stage(flatten)]
async fn digits(n: u64) -> Vec<u8> {
    n.to_string().bytes().map(|b| b - b'0').collect()
}

#[tokio::test(start_paused = true)]
async fn a_chain_of_annotated_functions_runs_with_its_declared_policies() {
    let lines: Vec<String> = (0..200u64)
        .map(|n| {
            if n == 77 {
                "seventy-seven".to_owned()
            } else {
                n.to_string()
            }
        })
        .collect();
    let run = testing::run(lines, |b| {
        b.stage(Parse)
            .stage(Flaky)
            .stage(Enrich::new(Rates { factor: 3 }))
            .stage(DropOdd)
            .stage(Digits)
    })
    .await;
    let report = &run.report;
    assert!(report.is_balanced(), "{report}");
    // 77 is not a number (permanent: one attempt); 13 times out.
    let by_stage: HashMap<&str, &pipeline_core::DeadLetter> = run
        .dead_letters
        .iter()
        .map(|d| (d.stage.as_str(), d))
        .collect();
    assert_eq!(run.dead_letters.len(), 2, "{:?}", run.dead_letters);
    assert_eq!(
        by_stage["parse"].attempts, 1,
        "invalid input is not retried"
    );
    assert!(by_stage["parse"].error.contains("seventy-seven"));
    assert!(by_stage["enrich"].error.contains("timed out"));
    // Every tenth item failed once in `flaky` and was retried.
    assert_eq!(report.stage("flaky").unwrap().retries, 20);
    // Even n*3 (n even) are kept, then split into digits.
    let expected: Vec<u8> = (0..200u64)
        .filter(|n| *n != 77 && *n != 13)
        .map(|n| n * 3)
        .filter(|n| n % 2 == 0)
        .flat_map(|n| n.to_string().bytes().map(|b| b - b'0').collect::<Vec<_>>())
        .collect();
    // `flaky` is ordered and `enrich` is not, so compare as multisets.
    let mut got = run.delivered.clone();
    got.sort_unstable();
    let mut want = expected;
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(report.dead_lettered, 2);
    assert_eq!(report.count(Outcome::Failed), 0);
}

/// Mutable state: a running count, rebuilt after a panic.
#[derive(Debug, Default)]
pub struct Seen {
    count: u64,
}

static REBUILT: AtomicU64 = AtomicU64::new(0);

impl Seen {
    fn fresh() -> Seen {
        REBUILT.fetch_add(1, Ordering::SeqCst);
        Seen::default()
    }
}

#[stage(restart(max = 2, within = "1m"))]
async fn number(n: u64, #[state] seen: &mut Seen) -> (u64, u64) {
    seen.count += 1;
    assert!(n != 500 && n != 900, "injected panic on {n}");
    (seen.count, n)
}

#[tokio::test(start_paused = true)]
async fn mutable_state_is_rebuilt_after_a_panic_and_restarts_escalate() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.to_string().contains("injected panic") {
            default_hook(info);
        }
    }));
    let run = testing::run(0..1_000u64, |b| b.stage(Number::new(Seen::fresh))).await;
    // Two panics (500 and 900), within the limit of 2 restarts: both rebuilt the state.
    assert_eq!(
        REBUILT.load(Ordering::SeqCst),
        3,
        "initial build + 2 rebuilds"
    );
    assert_eq!(run.report.dead_lettered, 2);
    // The count restarted from 1 after each panic.
    let after_500 = run.delivered.iter().find(|(_, n)| *n == 501).unwrap();
    assert_eq!(after_500.0, 1, "state was rebuilt after the panic on 500");
    assert!(run.report.failure.is_none());

    // A third panic within the window escalates.
    let run = testing::run((0..1_000u64).chain([500, 900, 500]), |b| {
        b.stage(Number::new(Seen::fresh))
    })
    .await;
    let failure = run.report.failure.expect("escalated");
    assert_eq!(failure.stage, "number");
}

#[stage(blocking)]
fn checksum(data: Vec<u8>) -> u64 {
    // CPU work off the async workers.
    data.iter().map(|b| u64::from(*b)).sum()
}

#[stage(rate = "100/s", concurrency = 4)]
async fn call_api(n: u64) -> u64 {
    n
}

#[tokio::test(start_paused = true)]
async fn blocking_and_rate_limited_stages() {
    let start = tokio::time::Instant::now();
    let run = testing::run((0..250u64).map(|n| vec![n as u8; 4]), |b| {
        b.stage(Checksum).stage(CallApi)
    })
    .await;
    assert_eq!(run.delivered.len(), 250);
    assert!(
        start.elapsed() >= Duration::from_millis(1_400),
        "{:?}",
        start.elapsed()
    );
    assert!(run.report.is_balanced());
}

#[stage(
    concurrency = 2,
    breaker(
        failure_rate = 0.5,
        window = 4,
        min_calls = 4,
        open_for = "1s",
        half_open = 1
    ),
    retry(attempts = 20, backoff = "100ms")
)]
async fn fragile(n: u64, #[state] down: &AtomicU64) -> Result<u64, AppError> {
    if down.load(Ordering::SeqCst) == 1 {
        Err(AppError::Transient(n))
    } else {
        Ok(n)
    }
}

#[tokio::test(start_paused = true)]
async fn a_declared_breaker_degrades_health_and_recovers() {
    let down = std::sync::Arc::new(AtomicU64::new(1));
    let (sink, out) = sink::collect::<u64>();
    let handle = Pipeline::builder("breaker")
        .source(source::iter(0..100u64))
        .stage(Fragile::new(std::sync::Arc::clone(&down)))
        .sink(sink)
        .spawn();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(handle.health(), Health::Degraded);
    down.store(0, Ordering::SeqCst);
    let report = handle.join().await.unwrap();
    assert_eq!(out.len(), 100);
    assert_eq!(report.delivered, 100);
}

/// An item that counts its clones.
#[derive(Debug)]
pub struct Counted(u64);

static CLONES: AtomicU64 = AtomicU64::new(0);

impl Clone for Counted {
    fn clone(&self) -> Self {
        CLONES.fetch_add(1, Ordering::SeqCst);
        Counted(self.0)
    }
}

static BORROWED_CALLS: AtomicU64 = AtomicU64::new(0);
static OWNED_CALLS: AtomicU64 = AtomicU64::new(0);

/// Fails the first two attempts of every item.
#[stage(retry(attempts = 3, backoff = "1ms"))]
async fn borrowing(item: &Counted, cx: &Context) -> Result<u64, AppError> {
    BORROWED_CALLS.fetch_add(1, Ordering::SeqCst);
    if cx.attempt() < 3 {
        Err(AppError::Transient(item.0))
    } else {
        Ok(item.0)
    }
}

/// The same, taking the item by value.
#[stage(retry(attempts = 3, backoff = "1ms"))]
async fn owning(item: Counted, cx: &Context) -> Result<u64, AppError> {
    OWNED_CALLS.fetch_add(1, Ordering::SeqCst);
    if cx.attempt() < 3 {
        Err(AppError::Transient(item.0))
    } else {
        Ok(item.0)
    }
}

#[tokio::test(start_paused = true)]
async fn a_stage_that_borrows_its_input_is_retried_without_copies() {
    CLONES.store(0, Ordering::SeqCst);
    let run = testing::run((0..100).map(Counted), |b| b.stage(Borrowing)).await;
    assert_eq!(run.delivered.len(), 100);
    assert_eq!(
        BORROWED_CALLS.load(Ordering::SeqCst),
        300,
        "three attempts each"
    );
    assert_eq!(CLONES.load(Ordering::SeqCst), 0, "no copy kept for retries");

    // By value, every attempt that may be followed by another gets its own copy; the
    // last possible one takes the original.
    CLONES.store(0, Ordering::SeqCst);
    let run = testing::run((0..100).map(Counted), |b| b.stage(Owning)).await;
    assert_eq!(run.delivered.len(), 100);
    assert_eq!(OWNED_CALLS.load(Ordering::SeqCst), 300);
    assert_eq!(CLONES.load(Ordering::SeqCst), 200);
}

/// A connection that can fail to open; `opens` counts attempts to open one.
#[derive(Debug)]
pub struct Connection {
    id: u64,
}

#[derive(Debug)]
pub struct Unreachable;

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("database unreachable")
    }
}

impl std::error::Error for Unreachable {}

#[stage(restart(max = 3, within = "1m"))]
async fn store(n: u64, #[state] conn: &mut Connection) -> (u64, u64) {
    assert!(n != 5, "injected panic on {n}");
    (conn.id, n)
}

/// Runs 0..10 through `stage`, which must stop the pipeline; returns its error and what
/// was delivered.
async fn run_store(stage: Store) -> (pipeline_core::PipelineError, Vec<(u64, u64)>) {
    let (out, delivered) = sink::collect();
    let error = Pipeline::builder("etl")
        .source(source::iter(0..10u64))
        .stage(stage)
        .sink(out)
        .run()
        .await
        .expect_err("the pipeline stops");
    (error, delivered.take())
}

/// The run stopped on a failure of `store` whose error says each of `words`, and every
/// item it took in has an outcome.
fn assert_stopped_by_store(error: &pipeline_core::PipelineError, words: &[&str]) {
    assert_eq!(error.failure.stage, "store");
    for word in words {
        assert!(
            error.failure.error.contains(word),
            "{}",
            error.failure.error
        );
    }
    assert!(error.report.is_balanced(), "{}", error.report);
}

#[tokio::test(start_paused = true)]
async fn a_fallible_state_factory_that_fails_fails_the_start_naming_the_stage() {
    let opens = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&opens);
    let stage = Store::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        Err::<Connection, _>(Unreachable)
    });
    assert_eq!(
        opens.load(Ordering::SeqCst),
        0,
        "a fallible factory runs at the start"
    );
    let (error, delivered) = run_store(stage).await;
    assert_stopped_by_store(&error, &["on_start", "`conn`", "unreachable"]);
    assert_eq!(delivered.len(), 0);
    assert_eq!(opens.load(Ordering::SeqCst), 1);

    // A panicking factory is a failed start too, not a crash.
    let stage = Store::new(|| -> Result<Connection, Unreachable> { panic!("no driver") });
    let (error, _) = run_store(stage).await;
    assert_stopped_by_store(&error, &["panicked: no driver"]);
}

#[tokio::test(start_paused = true)]
async fn a_state_factory_failing_on_restart_stops_the_pipeline_naming_the_stage() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info.to_string();
        if !text.contains("injected panic") && !text.contains("unreachable") {
            default_hook(info);
        }
    }));
    // The first open succeeds; the reopen after the panic on 5 fails.
    let opens = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&opens);
    let stage = Store::new(move || match counted.fetch_add(1, Ordering::SeqCst) {
        0 => Ok(Connection { id: 7 }),
        _ => Err(Unreachable),
    });
    let (error, delivered) = run_store(stage).await;
    assert_stopped_by_store(&error, &["restart failed", "`conn`", "unreachable"]);
    assert_eq!(opens.load(Ordering::SeqCst), 2);
    assert!(delivered.iter().all(|(id, _)| *id == 7), "{delivered:?}");
    assert!(delivered.iter().any(|(_, n)| *n == 4), "{delivered:?}");
}

/// CPU-bound work: a few hundred microseconds of hashing, and the thread it ran on.
#[pipeline_core::stage(concurrency = 2)]
fn crunch(n: u64) -> Result<(u64, std::thread::ThreadId), std::io::Error> {
    if n == 77 {
        panic!("injected: crunch {n}");
    }
    let mut h = n;
    for _ in 0..200_000 {
        h = h.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    }
    std::hint::black_box(h);
    Ok((n, std::thread::current().id()))
}

#[test]
fn a_sync_stage_with_concurrency_runs_its_calls_on_several_workers() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.to_string().contains("injected") {
            default_hook(info);
        }
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (out, threads, dead) = runtime.block_on(async {
        let (sink, out) = pipeline_core::sink::collect();
        let (dead, letters) = pipeline_core::sink::collect();
        let report = pipeline_core::Pipeline::builder("cpu")
            .source(pipeline_core::source::iter(0..200u64))
            .stage(Crunch)
            .sink(sink)
            .dead_letter(dead)
            .run()
            .await
            .unwrap();
        assert!(report.is_balanced());
        let out: Vec<(u64, std::thread::ThreadId)> = out.take();
        let threads: std::collections::HashSet<_> = out.iter().map(|(_, t)| *t).collect();
        (out.len(), threads.len(), letters.len())
    });
    assert_eq!(
        (out, dead),
        (199, 1),
        "a panic on a worker costs its item only"
    );
    assert!(threads >= 2, "calls ran on {threads} thread(s)");
}
