//! What `#[stage]` generates, checked through the `Stage` trait: every signature form
//! through `Stage::call`, every option through `Stage::options`, and the annotated
//! functions called directly, as written.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pipeline_core::options::{
    BreakerMode, BreakerOptions, OnError, RateOptions, RestartOptions, RetryOptions, Window,
};
use pipeline_core::prelude::*;
use pipeline_core::{Emitted, StageOptions};

#[derive(Debug, PartialEq, Eq)]
pub enum AppError {
    Transient,
    Invalid(String),
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Transient => f.write_str("try again"),
            AppError::Invalid(s) => write!(f, "invalid: {s}"),
        }
    }
}

impl std::error::Error for AppError {}

fn is_transient(error: &AppError) -> bool {
    matches!(error, AppError::Transient)
}

fn cx() -> Context {
    Context::new("test")
}

// ---- signatures and shapes ----

/// `Result<T, E>`: a map; input by reference.
#[stage]
async fn parse(line: &str) -> Result<u64, AppError> {
    line.trim()
        .parse()
        .map_err(|_| AppError::Invalid(line.to_owned()))
}

/// `Result<Option<T>, E>`: a filter.
#[stage]
async fn keep_even(n: u64) -> Result<Option<u64>, AppError> {
    Ok(n.is_multiple_of(2).then_some(n))
}

/// `flatten`: many outputs, infallible.
#[stage(flatten)]
async fn split(line: String) -> Vec<String> {
    line.split(',').map(str::to_owned).collect()
}

/// `flatten` with a `Result`.
#[stage(flatten)]
async fn repeat(n: u64) -> Result<std::iter::RepeatN<u64>, AppError> {
    Ok(std::iter::repeat_n(n, 3))
}

/// Infallible map.
#[stage]
async fn double(n: u64) -> u64 {
    n * 2
}

/// Infallible filter, plain `fn`.
#[stage]
fn non_empty(line: String) -> Option<String> {
    (!line.is_empty()).then_some(line)
}

/// Slices by reference become `Vec` inputs.
#[stage]
fn checksum(data: &[u8]) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

/// The context argument, anywhere in the list.
#[stage(name = "labelled")]
async fn label(cx: &Context, n: u64) -> String {
    format!("{}#{}:{n}", cx.stage(), cx.attempt())
}

#[derive(Debug)]
pub struct Db {
    factor: u64,
}

/// Shared state, given to `new`.
#[stage(concurrency = 4)]
async fn enrich(n: u64, #[state] db: &Db) -> Result<u64, AppError> {
    Ok(n * db.factor)
}

/// Shared unsized state.
#[stage]
fn prefix(line: String, #[state] text: &str) -> String {
    format!("{text}{line}")
}

#[derive(Debug, Default)]
pub struct Counter {
    seen: u64,
}

/// Mutable per-stage state from a factory; rebuilt by `restart`.
#[stage(restart(max = 3, within = "1m", backoff = "100ms"))]
async fn count(line: String, #[state] counter: &mut Counter) -> (u64, String) {
    counter.seen += 1;
    (counter.seen, line)
}

/// Everything at once, on the blocking pool.
#[stage(blocking)]
fn scale(
    n: u64,
    #[state] db: &Db,
    cx: &Context,
    #[state] total: &mut u64,
) -> Result<u64, AppError> {
    *total += n;
    Ok(n * db.factor + u64::from(cx.attempt()) + *total)
}

/// A panic on the blocking pool is a panic of the call.
#[stage(blocking)]
fn explode(n: u64) -> u64 {
    assert!(n < 10, "too big");
    n
}

/// `retry(when = path)` decides which errors are retried.
#[stage(retry(attempts = 3, when = is_transient))]
async fn flaky(n: u64) -> Result<u64, AppError> {
    if n == 0 {
        Err(AppError::Transient)
    } else {
        Err(AppError::Invalid(n.to_string()))
    }
}

/// ... or a closure.
#[stage(retry(attempts = 2, when = |e| matches!(e, AppError::Invalid(_))))]
async fn picky(n: u64) -> Result<u64, AppError> {
    Err(if n == 0 {
        AppError::Transient
    } else {
        AppError::Invalid(String::new())
    })
}

fn shape<S: Stage>(_: &S) -> &'static str {
    std::any::type_name::<S::Shape>()
}

#[tokio::test]
async fn map_by_reference() {
    assert_eq!(Parse.call(" 42 ".to_owned(), &cx()).await, Ok(42));
    assert_eq!(
        Parse.call("x".to_owned(), &cx()).await,
        Err(AppError::Invalid("x".into()))
    );
    assert!(shape(&Parse).ends_with("Map"));
}

#[tokio::test]
async fn filter() {
    assert_eq!(KeepEven.call(4, &cx()).await, Ok(Some(4)));
    assert_eq!(KeepEven.call(3, &cx()).await, Ok(None));
    assert!(shape(&KeepEven).ends_with("Filter"));
    let _: fn(Emitted<KeepEven>) -> u64 = |n| n;
}

#[tokio::test]
async fn flat_map() {
    let out = Split.call("a,b".to_owned(), &cx()).await.unwrap();
    assert_eq!(out, ["a", "b"]);
    assert!(shape(&Split).ends_with("FlatMap"));
    let _: fn(Emitted<Split>) -> String = |s| s;
    let out: Vec<u64> = Repeat.call(7, &cx()).await.unwrap().collect();
    assert_eq!(out, [7, 7, 7]);
}

#[tokio::test]
async fn infallible_forms() {
    let ok: Result<u64, std::convert::Infallible> = Double.call(21, &cx()).await;
    assert_eq!(ok, Ok(42));
    assert_eq!(NonEmpty.call(String::new(), &cx()).await, Ok(None));
    assert_eq!(NonEmpty.call("a".into(), &cx()).await, Ok(Some("a".into())));
    assert!(shape(&NonEmpty).ends_with("Filter"));
    assert_eq!(Checksum.call(vec![1, 2, 3], &cx()).await, Ok(6));
}

#[tokio::test]
async fn context_argument() {
    let cx = Context::new("labelled").with_attempt(2);
    assert_eq!(Label.call(5, &cx).await, Ok("labelled#2:5".to_owned()));
}

#[tokio::test]
async fn shared_state() {
    let stage = Enrich::new(Db { factor: 3 });
    assert_eq!(stage.call(5, &cx()).await, Ok(15));
    // An `Arc` the caller keeps works too.
    let db = Arc::new(Db { factor: 2 });
    let stage = Enrich::new(Arc::clone(&db));
    assert_eq!(stage.call(5, &cx()).await, Ok(10));
    // Shared state survives a restart.
    stage.restart().unwrap();
    assert_eq!(stage.call(5, &cx()).await, Ok(10));

    assert_eq!(
        Prefix::new("> ").call("hi".into(), &cx()).await,
        Ok("> hi".into())
    );
    assert_eq!(
        Prefix::new(String::from("$ "))
            .call("ls".into(), &cx())
            .await,
        Ok("$ ls".into())
    );
}

#[tokio::test]
async fn mutable_state_is_rebuilt_on_restart() {
    let builds = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&builds);
    let stage = Count::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        Counter::default()
    });
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert_eq!(stage.call("a".into(), &cx()).await, Ok((1, "a".into())));
    assert_eq!(stage.call("b".into(), &cx()).await, Ok((2, "b".into())));
    stage.restart().unwrap();
    assert_eq!(builds.load(Ordering::SeqCst), 2);
    assert_eq!(stage.call("c".into(), &cx()).await, Ok((1, "c".into())));

    // `S: Default` gives the stage a `Default` too.
    let stage = Count::default();
    assert_eq!(stage.call("a".into(), &cx()).await, Ok((1, "a".into())));
    assert!(format!("{stage:?}").starts_with("Count"));
}

#[tokio::test]
async fn a_fallible_state_factory_builds_at_the_start_and_its_errors_fail_start_and_restart() {
    let builds = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&builds);
    // Fails on the third build: the start and one restart succeed, the next restart fails.
    let stage = Count::new(move || match counted.fetch_add(1, Ordering::SeqCst) {
        0 | 1 => Ok(Counter::default()),
        _ => Err(AppError::Invalid("no counter".into())),
    });
    assert_eq!(
        builds.load(Ordering::SeqCst),
        0,
        "built at the start, not in `new`"
    );
    stage.on_start().await.unwrap();
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert_eq!(stage.call("a".into(), &cx()).await, Ok((1, "a".into())));
    stage.restart().unwrap();
    assert_eq!(stage.call("b".into(), &cx()).await, Ok((1, "b".into())));
    let error = stage.restart().unwrap_err().to_string();
    assert!(
        error.contains("`counter`") && error.contains("no counter"),
        "{error}"
    );
    // A failed rebuild is kept: the factory is not called again.
    assert!(stage.restart().is_err());
    assert_eq!(builds.load(Ordering::SeqCst), 3);

    // Without `on_start` (a stage called directly), the first call builds the state.
    let stage = Count::new(|| Ok::<_, AppError>(Counter { seen: 41 }));
    assert_eq!(stage.call("x".into(), &cx()).await, Ok((42, "x".into())));

    // A factory that fails, or panics, fails the start with the state's name.
    let stage = Count::new(|| Err::<Counter, _>(AppError::Transient));
    let error = stage.on_start().await.unwrap_err().to_string();
    assert_eq!(error, "building the state `counter` failed: try again");
    let stage = Count::new(|| -> Result<Counter, AppError> { panic!("no counter today") });
    let error = stage.on_start().await.unwrap_err().to_string();
    assert!(error.contains("panicked: no counter today"), "{error}");
    // An infallible factory built its state in `new`, so its start has nothing to do.
    Count::default().on_start().await.unwrap();
}

#[tokio::test]
async fn blocking_with_state_and_context() {
    let stage = Scale::new(Db { factor: 10 }, || 0);
    let cx = cx().with_attempt(2);
    assert_eq!(stage.call(1, &cx).await, Ok(10 + 2 + 1));
    assert_eq!(stage.call(1, &cx).await, Ok(10 + 2 + 2));
    stage.restart().unwrap();
    assert_eq!(stage.call(1, &cx).await, Ok(10 + 2 + 1));
}

#[tokio::test]
async fn blocking_panic_is_the_calls_panic() {
    assert_eq!(Explode.call(1, &cx()).await, Ok(1));
    let joined = tokio::spawn(async { Explode.call(11, &cx()).await }).await;
    let panic = joined.unwrap_err().into_panic();
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"too big"));
}

#[tokio::test]
async fn retry_when_marks_other_errors_permanent() {
    let transient = Flaky.call(0, &cx()).await.unwrap_err();
    let invalid = Flaky.call(1, &cx()).await.unwrap_err();
    assert!(!Flaky.is_permanent(&transient));
    assert!(Flaky.is_permanent(&invalid));

    assert!(Picky.is_permanent(&AppError::Transient));
    assert!(!Picky.is_permanent(&AppError::Invalid(String::new())));
    // Without `when`, every error is retryable.
    assert!(!Parse.is_permanent(&AppError::Invalid(String::new())));
}

#[tokio::test]
async fn functions_stay_callable_as_written() {
    assert_eq!(parse("7").await, Ok(7));
    assert_eq!(keep_even(3).await, Ok(None));
    assert_eq!(split("x".into()).await, ["x"]);
    assert_eq!(double(2).await, 4);
    assert_eq!(non_empty("a".into()), Some("a".into()));
    assert_eq!(checksum(&[1, 1]), 2);
    assert_eq!(label(&Context::new("l"), 1).await, "l#1:1");
    assert_eq!(enrich(2, &Db { factor: 2 }).await, Ok(4));
    assert_eq!(prefix("b".into(), "a"), "ab");
    let mut counter = Counter { seen: 41 };
    assert_eq!(count("x".into(), &mut counter).await, (42, "x".into()));
    let mut total = 0;
    assert_eq!(
        scale(1, &Db { factor: 1 }, &Context::new("s"), &mut total),
        Ok(3)
    );
    assert_eq!(explode(3), 3);
}

// ---- options ----

#[test]
fn name_defaults_to_the_function() {
    assert_eq!(Parse.options().name.as_deref(), Some("parse"));
    assert_eq!(Label.options().name.as_deref(), Some("labelled"));
}

#[test]
fn no_options_declared() {
    let mut expected = StageOptions::default();
    expected.name = Some("double".into());
    assert_eq!(Double.options(), expected);
}

#[stage(
    name = "everything",
    concurrency = 8,
    ordered,
    buffer = 256,
    timeout = "2s",
    retry(
        attempts = 5,
        backoff = "100ms",
        max_backoff = "10s",
        jitter,
        budget = 0.2
    ),
    breaker(
        failure_rate = 0.5,
        window = 20,
        min_calls = 10,
        slow_call = "1s",
        open_for = "30s",
        half_open = 3,
        mode = "wait"
    ),
    rate = "500/s",
    on_error = "dead_letter"
)]
async fn everything(order: u64) -> Result<u64, AppError> {
    Ok(order)
}

#[test]
fn every_option() {
    let o = Everything.options();
    assert_eq!(o.name.as_deref(), Some("everything"));
    assert_eq!(o.concurrency, Some(8));
    assert_eq!(o.ordered, Some(true));
    assert_eq!(o.buffer, Some(256));
    assert_eq!(o.timeout, Some(Duration::from_secs(2)));

    let mut retry = RetryOptions::new(5);
    retry.backoff = Duration::from_millis(100);
    retry.max_backoff = Duration::from_secs(10);
    retry.jitter = true;
    retry.budget = Some(0.2);
    assert_eq!(o.retry, Some(retry));

    let mut breaker = BreakerOptions::default();
    breaker.failure_rate = 0.5;
    breaker.window = Window::Count(20);
    breaker.min_calls = 10;
    breaker.slow_call = Some(Duration::from_secs(1));
    breaker.open_for = Duration::from_secs(30);
    breaker.half_open = 3;
    breaker.mode = BreakerMode::Wait;
    assert_eq!(o.breaker, Some(breaker));

    assert_eq!(o.rate, Some(RateOptions::new(500, Duration::from_secs(1))));
    assert_eq!(o.on_error, Some(OnError::DeadLetter));
    assert_eq!(o.restart, None);
}

#[stage(
    retry(attempts = 2, jitter = false),
    breaker(window = "30s", slow_call_rate = 0.8, mode = "fail_fast"),
    rate = "10/100ms",
    on_error = "drop",
    ordered = false
)]
async fn variants(n: u64) -> Result<u64, AppError> {
    Ok(n)
}

#[test]
fn option_variants() {
    let o = Variants.options();
    let mut retry = RetryOptions::new(2);
    retry.jitter = false;
    assert_eq!(o.retry, Some(retry));
    let mut breaker = BreakerOptions::default();
    breaker.window = Window::Time(Duration::from_secs(30));
    breaker.slow_call_rate = 0.8;
    breaker.mode = BreakerMode::FailFast;
    assert_eq!(o.breaker, Some(breaker));
    assert_eq!(
        o.rate,
        Some(RateOptions::new(10, Duration::from_millis(100)))
    );
    assert_eq!(o.on_error, Some(OnError::Drop));
    assert_eq!(o.ordered, Some(false));
}

#[stage(
    retry(attempts = 4, budget = 0.2, budget_floor = 5),
    rate(limit = "500/s", burst = 50)
)]
async fn budgeted(n: u64) -> Result<u64, AppError> {
    Ok(n)
}

#[stage(
    retry(attempts = 2, budget = 0.5, budget_floor = 0),
    rate(burst = 1, limit = "2/m")
)]
async fn floorless(n: u64) -> u64 {
    n
}

#[test]
fn retry_budget_floor_and_rate_burst() {
    let o = Budgeted.options();
    let mut retry = RetryOptions::new(4);
    retry.budget = Some(0.2);
    retry.budget_floor = 5;
    assert_eq!(o.retry, Some(retry));
    assert_eq!(
        o.rate,
        Some(RateOptions::new(500, Duration::from_secs(1)).with_burst(50))
    );

    let o = Floorless.options();
    assert_eq!(o.retry.as_ref().map(|r| r.budget_floor), Some(0));
    assert_eq!(
        o.rate,
        Some(RateOptions::new(2, Duration::from_secs(60)).with_burst(1))
    );
    // The short form sets no burst, and an unset floor keeps the default.
    assert_eq!(Variants.options().rate.and_then(|r| r.burst), None);
    assert_eq!(RetryOptions::new(1).budget_floor, 10);
    assert_eq!(Defaults.options().retry.map(|r| r.budget_floor), Some(10));
}

#[stage(breaker, rate = "60/m", on_error = "fail", retry(attempts = 1))]
async fn defaults(n: u64) -> u64 {
    n
}

#[stage(rate = "3600/h", timeout = "1m 30s")]
async fn hourly(n: u64) -> u64 {
    n
}

#[test]
fn option_defaults_and_units() {
    let o = Defaults.options();
    assert_eq!(o.breaker, Some(BreakerOptions::default()));
    assert_eq!(o.rate, Some(RateOptions::new(60, Duration::from_secs(60))));
    assert_eq!(o.on_error, Some(OnError::Fail));
    assert_eq!(o.retry, Some(RetryOptions::new(1)));

    let o = Hourly.options();
    assert_eq!(
        o.rate,
        Some(RateOptions::new(3600, Duration::from_secs(3600)))
    );
    assert_eq!(o.timeout, Some(Duration::from_secs(90)));
}

#[test]
fn restart_option() {
    let mut restart = RestartOptions::new(3, Duration::from_secs(60));
    restart.backoff = Duration::from_millis(100);
    assert_eq!(Count::default().options().restart, Some(restart));
}

#[test]
fn blocking_and_flatten_are_not_options() {
    // They shape the generated `call`, not the runtime's policies.
    assert_eq!(Explode.options().timeout, None);
    assert_eq!(Split.options().name.as_deref(), Some("split"));
}

mod renamed {
    // `crate = path` for a renamed or re-exported core.
    use pipeline_core as core_renamed;
    use pipeline_core::Stage as _;

    #[pipeline_core::stage(crate = core_renamed, name = "renamed")]
    async fn inner(n: u32) -> u32 {
        n + 1
    }

    #[tokio::test]
    async fn crate_option() {
        let cx = core_renamed::Context::new("r");
        assert_eq!(Inner.call(1, &cx).await, Ok(2));
        assert_eq!(Inner.options().name.as_deref(), Some("renamed"));
    }
}

mod faults {
    use pipeline_core::policy::{Fault, Permanent};
    use pipeline_core::prelude::*;

    use super::{AppError, cx, is_transient};

    /// A `Fault` error answers `is_permanent` by itself.
    #[stage]
    async fn checked(n: u64) -> Result<u64, Fault<AppError>> {
        match n {
            0 => Err(Permanent(AppError::Invalid("zero".into())).into()),
            1 => Err(AppError::Transient.into()),
            n => Ok(n),
        }
    }

    type Checked2Error = Fault<AppError>;

    /// ... also behind an alias, and together with `when`.
    #[stage(retry(attempts = 3, when = |e: &Checked2Error| is_transient(e.get_ref())))]
    async fn checked2(n: u64) -> Result<u64, Checked2Error> {
        Err(if n == 0 {
            Fault::permanent(AppError::Transient)
        } else if n == 1 {
            Fault::transient(AppError::Invalid(String::new()))
        } else {
            Fault::transient(AppError::Transient)
        })
    }

    #[tokio::test]
    async fn fault_errors_mark_themselves() {
        let permanent = Checked.call(0, &cx()).await.unwrap_err();
        let transient = Checked.call(1, &cx()).await.unwrap_err();
        assert!(Checked.is_permanent(&permanent));
        assert!(!Checked.is_permanent(&transient));

        for (n, expected) in [(0, true), (1, true), (2, false)] {
            let error = Checked2.call(n, &cx()).await.unwrap_err();
            assert_eq!(Checked2.is_permanent(&error), expected, "n = {n}");
        }
    }
}
