//! The engine on its own, in paused time: the order of the policies, what an attempt is,
//! retries, budget, deadlines, probes and restarts.

use super::*;
use crate::options::{BreakerOptions, RateOptions, RestartOptions, Window};
use crate::policy::{BreakerState, Fault, Permanent, PolicyCounts};
use crate::stage::Map;
use std::sync::atomic::{AtomicBool, AtomicU32};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn named(name: &'static str) -> StageOptions {
    StageOptions {
        name: Some(name.into()),
        ..StageOptions::default()
    }
}

fn retry(attempts: u32, jitter: bool) -> RetryOptions {
    let mut o = RetryOptions::new(attempts);
    o.backoff = ms(100);
    o.max_backoff = ms(1_000);
    o.jitter = jitter;
    o
}

/// Takes `work` ms per call; fails while `down`.
struct Dep {
    work: u64,
    down: AtomicBool,
    calls: AtomicU32,
}

impl Stage for Dep {
    type In = u32;
    type Output = u32;
    type Shape = Map;
    type Error = std::io::Error;
    const CLONE_IN: Option<fn(&u32) -> u32> = Some(u32::clone);
    async fn call(&self, n: u32, _cx: &Context) -> Result<u32, std::io::Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.work > 0 {
            tokio::time::sleep(ms(self.work)).await;
        }
        if self.down.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("connection refused"));
        }
        Ok(n)
    }
}

fn dep(work: u64, down: bool) -> Dep {
    Dep {
        work,
        down: AtomicBool::new(down),
        calls: AtomicU32::new(0),
    }
}

/// Records each call's start time and attempt number; then hangs (`hang`) or fails.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(Instant, u32)>>,
    hang: bool,
}

impl Stage for Recorder {
    type In = u32;
    type Output = u32;
    type Shape = Map;
    type Error = std::io::Error;
    const CLONE_IN: Option<fn(&u32) -> u32> = Some(u32::clone);
    async fn call(&self, n: u32, cx: &Context) -> Result<u32, std::io::Error> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((Instant::now(), cx.attempt()));
        }
        if self.hang {
            std::future::pending::<()>().await;
        }
        Err(std::io::Error::other(format!("failed {n}")))
    }
}

impl Recorder {
    fn calls(&self) -> Vec<(Instant, u32)> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

fn recorder(hang: bool, timeout: Option<Duration>, retry: RetryOptions) -> Policies<Recorder> {
    let opts = StageOptions {
        timeout,
        retry: Some(retry),
        ..named("rec")
    };
    Policies::new(
        Recorder {
            hang,
            ..Recorder::default()
        },
        &opts,
    )
}

#[tokio::test(start_paused = true)]
async fn no_options_means_a_plain_call() {
    let p = Policies::new(dep(3, false), &StageOptions::default());
    assert!(p.plain && p.breaker().is_none());
    let out = p.attempt(5, &Context::new("plain")).await;
    assert_eq!((out.probes(), out.attempts()), (0, 1));
    assert_eq!(out.result.ok(), Some(5));
    assert_eq!(p.counters().snapshot(), PolicyCounts::default());
    assert_eq!(p.into_inner().calls.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_fires_exactly_at_the_deadline_and_a_ready_call_arms_none() {
    let mut o = named("nap");
    o.timeout = Some(ms(100));
    let p = Policies::new(dep(1_000, false), &o);
    let start = Instant::now();
    let r = p.call(1, &Context::new("nap")).await;
    assert!(matches!(r, Err(Failure::Elapsed(e)) if e.after() == ms(100)));
    assert_eq!(start.elapsed(), ms(100));
    let p = Policies::new(dep(99, false), &o);
    assert!(p.call(1, &Context::new("nap")).await.is_ok());
    let p = Policies::new(dep(0, false), &o);
    assert!(p.call(1, &Context::new("nap")).await.is_ok());
    assert_eq!(p.counters().timeouts(), 0);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_rate_token_starts_no_timeout() {
    let mut o = named("rated");
    o.rate = Some(RateOptions::new(1, Duration::from_secs(1)));
    o.timeout = Some(ms(50));
    let p = Policies::new(dep(10, false), &o);
    let start = Instant::now();
    for n in 0..3 {
        assert_eq!(p.call(n, &Context::new("rated")).await.ok(), Some(n));
    }
    // Tokens at 0, 1 s, 2 s; each call 10 ms; no timeout although each waited ~1 s.
    assert_eq!(start.elapsed(), ms(2_010));
    let c = p.counters().snapshot();
    assert_eq!((c.timeouts, c.rate_waits), (0, 2));
    assert_eq!(p.counters().stage(), "rated");
}

#[tokio::test(start_paused = true)]
async fn rate_tokens_come_in_chunks_of_the_burst_and_keep_the_rate() {
    let mut o = named("chunks");
    o.rate = Some(RateOptions::new(10, Duration::from_secs(1)).with_burst(4));
    let p = Policies::new(dep(0, false), &o);
    let start = Instant::now();
    let mut times = Vec::new();
    for n in 0..20 {
        assert!(p.call(n, &Context::new("chunks")).await.is_ok());
        times.push(start.elapsed());
    }
    // A burst of 4 at once, then one per 100 ms: never faster than the limiter allows.
    assert!(times[..4].iter().all(Duration::is_zero), "{times:?}");
    assert_eq!(times[19], ms(1_600), "{times:?}");
    for (i, t) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .take_while(|u| **u - *t < ms(1_000))
            .count();
        assert!(within <= 4 + 10, "{within} calls in 1s from call {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_gaps_within_jitter_bounds_and_timeouts_fire_on_time() {
    for round in 0..20 {
        let p = recorder(true, Some(ms(50)), retry(6, true));
        let start = Instant::now();
        let out = p.attempt(round, &Context::new("rec")).await;
        assert!(matches!(out.result, Err(Failure::Elapsed(_))));
        assert_eq!(out.attempts(), 6);
        assert_eq!(out.first_failure(), Some(start + ms(50)));
        let calls = p.get_ref().calls();
        let attempts: Vec<u32> = calls.iter().map(|c| c.1).collect();
        assert_eq!(attempts, [1, 2, 3, 4, 5, 6]);
        for (k, pair) in calls.windows(2).enumerate() {
            let delay = pair[1].0 - pair[0].0 - ms(50);
            let nominal = ms(100 << k).min(ms(1_000));
            assert!(delay <= nominal, "gap {k}: {delay:?} > {nominal:?}");
        }
        assert_eq!(p.counters().timeouts(), 6);
        assert_eq!(p.counters().retries(), 5);
    }
}

#[tokio::test(start_paused = true)]
async fn without_jitter_the_gaps_are_exact() {
    let p = recorder(true, Some(ms(50)), retry(5, false));
    let start = Instant::now();
    let _ = p.attempt(1, &Context::new("rec")).await;
    let offsets: Vec<Duration> = p.get_ref().calls().iter().map(|c| c.0 - start).collect();
    // 50 ms attempt + 100, 200, 400, 800 ms delays.
    assert_eq!(offsets, [0, 150, 400, 850, 1_700].map(ms));
    assert_eq!(start.elapsed(), ms(1_750));
}

/// Permanent for 0 (through `Fault`, with no `is_permanent` override), else transient.
struct Strict(AtomicU32);
impl Stage for Strict {
    type In = u32;
    type Output = u32;
    type Shape = Map;
    type Error = Fault<std::io::Error>;
    const CLONE_IN: Option<fn(&u32) -> u32> = Some(u32::clone);
    async fn call(&self, n: u32, _cx: &Context) -> Result<u32, Self::Error> {
        self.0.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            Err(Permanent(std::io::Error::other("zero")))?;
        }
        Err(std::io::Error::other("flaky"))?
    }
}

#[tokio::test(start_paused = true)]
async fn permanent_faults_are_not_retried_without_an_override() {
    let opts = StageOptions {
        retry: Some(retry(4, false)),
        ..named("strict")
    };
    let p = Policies::new(Strict(AtomicU32::new(0)), &opts);
    let out = p.attempt(0, &Context::new("strict")).await;
    assert_eq!(out.attempts(), 1);
    let out = p.attempt(1, &Context::new("strict")).await;
    assert_eq!(out.attempts(), 4);
    assert_eq!(p.get_ref().0.load(Ordering::Relaxed), 5);
}

#[tokio::test(start_paused = true)]
async fn a_retry_when_predicate_makes_the_rest_permanent() {
    let opts = StageOptions {
        retry: Some(retry(4, false).retry_when(|e| e.to_string() != "failed 7")),
        ..named("when")
    };
    let p = Policies::new(Recorder::default(), &opts);
    assert_eq!(p.attempt(7, &Context::new("when")).await.attempts(), 1);
    assert_eq!(p.attempt(8, &Context::new("when")).await.attempts(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_of_a_dead_dependency() {
    let budget = Arc::new(RetryBudget::new(0.2).with_min_per_sec(0));
    let opts = StageOptions {
        retry: Some(retry(3, false)),
        ..named("rec")
    };
    let p = Policies::new(Recorder::default(), &opts)
        .with_backoff(Backoff::from_iter(std::iter::repeat(Duration::ZERO)))
        .with_budget(Some(budget));
    for n in 0..100 {
        let out = p.attempt(n, &Context::new("rec")).await;
        assert!(out.result.is_err(), "exactly one failed outcome per item");
    }
    // 100 first attempts buy 20 retries at 20%; nothing more without a floor.
    assert_eq!(p.counters().retries(), 20);
    assert_eq!(p.get_ref().calls().len(), 120);
    assert!(p.counters().budget_exhausted() >= 80);
}

#[tokio::test(start_paused = true)]
async fn a_custom_schedule_that_ends_stops_retrying() {
    let opts = StageOptions {
        retry: Some(retry(10, false)),
        ..named("rec")
    };
    let p =
        Policies::new(Recorder::default(), &opts).with_backoff(Backoff::from_iter([ms(5), ms(7)]));
    let start = Instant::now();
    let out = p.attempt(1, &Context::new("rec")).await;
    assert_eq!(out.attempts(), 3);
    assert_eq!(start.elapsed(), ms(12));
}

/// Panics on the first `panics` calls; counts calls since its last rebuild.
struct PanicFirst {
    panics: u32,
    calls: AtomicU32,
    since_rebuild: AtomicU32,
    rebuilds: AtomicU32,
    fail_rebuild: bool,
}

impl Stage for PanicFirst {
    type In = u32;
    type Output = u32;
    type Shape = Map;
    type Error = std::io::Error;
    const CLONE_IN: Option<fn(&u32) -> u32> = Some(u32::clone);
    async fn call(&self, n: u32, _cx: &Context) -> Result<u32, std::io::Error> {
        let since = self.since_rebuild.fetch_add(1, Ordering::SeqCst);
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.panics {
            panic!("injected panic {n}");
        }
        // Fresh state: this is the first call since the rebuild.
        assert_eq!(since, 0, "the retry ran on the state the panic left");
        Ok(n)
    }
    fn restart(&self) -> Result<(), crate::BoxError> {
        if self.fail_rebuild {
            return Err("cannot reconnect".into());
        }
        self.since_rebuild.store(0, Ordering::SeqCst);
        self.rebuilds.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn panic_first(panics: u32, fail_rebuild: bool) -> PanicFirst {
    PanicFirst {
        panics,
        calls: AtomicU32::new(0),
        since_rebuild: AtomicU32::new(0),
        rebuilds: AtomicU32::new(0),
        fail_rebuild,
    }
}

fn quiet() {
    std::panic::set_hook(Box::new(|_| {}));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_a_panic_runs_on_rebuilt_state_and_the_item_counts_once() {
    quiet();
    let opts = StageOptions {
        retry: Some(retry(3, false)),
        restart: Some(RestartOptions::new(1, Duration::from_secs(60))),
        ..named("p")
    };
    let p = Policies::new(panic_first(2, false), &opts);
    let out = p.attempt(9, &Context::new("p")).await;
    // Two panicking attempts, each followed by a rebuild; the third runs on fresh state.
    assert_eq!(out.result.as_ref().ok(), Some(&9));
    assert_eq!((out.attempts(), out.panics(), out.restarts()), (3, 2, 2));
    assert!(
        out.stop().is_none(),
        "one item is one restart: within max = 1"
    );
    assert_eq!(p.get_ref().rebuilds.load(Ordering::SeqCst), 2);
    assert_eq!(p.counters().panics(), 2);
    // A second panicking item exceeds the limit of one.
    let p2 = Policies::new(panic_first(u32::MAX, false), &opts);
    assert!(p2.attempt(1, &Context::new("p")).await.stop().is_none());
    let out = p2.attempt(2, &Context::new("p")).await;
    assert!(
        out.stop().is_some_and(|s| s.contains("restart limit")),
        "{:?}",
        out.stop()
    );
    assert_eq!(out.attempts(), 1, "no retry once the pipeline must stop");
}

#[tokio::test(start_paused = true)]
async fn a_failing_restart_stops_the_retries() {
    quiet();
    let opts = StageOptions {
        retry: Some(retry(3, false)),
        ..named("p")
    };
    let p = Policies::new(panic_first(1, true), &opts);
    let out = p.attempt(1, &Context::new("p")).await;
    assert!(out.result.as_ref().is_err_and(|e| e.is_panic()));
    assert_eq!(out.attempts(), 1);
    assert!(
        out.stop()
            .is_some_and(|s| s.contains("restart failed: cannot reconnect"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_plain_stage_is_rebuilt_after_a_panic_too() {
    quiet();
    let p = Policies::new(panic_first(1, false), &named("p"));
    assert!(p.plain);
    let out = p.attempt(1, &Context::new("p")).await;
    assert_eq!((out.attempts(), out.panics(), out.restarts()), (1, 1, 1));
    assert_eq!(p.call(2, &Context::new("p")).await.ok(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn without_a_copy_of_the_input_each_item_gets_one_attempt() {
    struct NotClone(u32);
    struct Take;
    impl Stage for Take {
        type In = NotClone;
        type Output = u32;
        type Shape = Map;
        type Error = std::io::Error;
        async fn call(&self, n: NotClone, _cx: &Context) -> Result<u32, std::io::Error> {
            Err(std::io::Error::other(n.0.to_string()))
        }
    }
    let opts = StageOptions {
        retry: Some(retry(5, false)),
        ..named("take")
    };
    let p = Policies::new(Take, &opts);
    assert_eq!(p.attempts(), 1);
    let out = p.attempt(NotClone(4), &Context::new("take")).await;
    assert_eq!(out.attempts(), 1);
    assert!(out.first_failure().is_some());
    assert_eq!(p.counters().retries(), 0);
}

#[tokio::test(start_paused = true)]
async fn breaker_waits_cost_no_attempt() {
    let mut o = named("wait");
    o.retry = Some(retry(2, false));
    o.breaker = Some(BreakerOptions {
        window: Window::Count(1),
        min_calls: 1,
        open_for: Duration::from_secs(5),
        half_open: 1,
        ..BreakerOptions::default()
    });
    let p = Policies::new(dep(0, false), &o);
    if let Some(b) = p.breaker() {
        b.force_open();
    }
    let out = p.attempt(1, &Context::new("wait")).await;
    assert_eq!(out.attempts(), 1, "the 5 s wait was not an attempt");
    assert_eq!(out.result.ok(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn failed_probes_spend_no_attempt_and_the_item_waits_out_a_long_outage() {
    let mut o = named("probe");
    let mut r = retry(2, false);
    r.backoff = ms(10);
    o.retry = Some(r);
    o.breaker = Some(BreakerOptions {
        window: Window::Count(2),
        min_calls: 2,
        open_for: Duration::from_secs(5),
        half_open: 1,
        ..BreakerOptions::default()
    });
    let p = Arc::new(Policies::new(dep(0, true), &o));
    if let Some(b) = p.breaker() {
        b.force_open();
    }
    let heal = {
        let p = Arc::clone(&p);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(600)).await;
            p.get_ref().down.store(false, Ordering::Relaxed);
        })
    };
    let start = Instant::now();
    let out = p.attempt(3, &Context::new("probe")).await;
    let _ = heal.await;
    assert_eq!(
        out.result.as_ref().ok(),
        Some(&3),
        "delivered after the heal, not given up"
    );
    assert_eq!(out.attempts(), 1);
    // A probe every 5 s for 600 s, every one failed: 120 probes, none an attempt.
    assert_eq!(out.probes(), 120);
    assert_eq!(start.elapsed(), Duration::from_secs(605));
    assert_eq!(p.breaker().map(|b| b.state()), Some(BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn fail_fast_gives_every_item_one_outcome_under_a_dead_dependency() {
    let mut o = named("dead");
    let mut r = retry(3, false);
    r.backoff = ms(10);
    r.budget = Some(0.2);
    o.retry = Some(r);
    o.timeout = Some(ms(100));
    o.breaker = Some(BreakerOptions {
        window: Window::Count(10),
        min_calls: 10,
        open_for: Duration::from_secs(1),
        half_open: 1,
        mode: BreakerMode::FailFast,
        ..BreakerOptions::default()
    });
    let p = Policies::new(dep(1, true), &o);
    let start = Instant::now();
    let items = 200u32;
    let mut failed = 0;
    for n in 0..items {
        let out = p.attempt(n, &Context::new("dead")).await;
        assert!(out.attempts() >= 1 && out.attempts() <= 3);
        failed += u32::from(out.result.is_err());
    }
    assert_eq!(failed, items, "exactly one (failed) outcome per item");
    let c = p.counters().snapshot();
    assert!(c.breaker_rejections > 0, "{c:?}");
    let secs = start.elapsed().as_secs() + 10;
    assert!(
        c.retries <= u64::from(items) / 5 + 10 * secs,
        "{c:?} over {secs}s"
    );
    // It heals: after `open_for` the probe succeeds and closes the breaker.
    p.get_ref().down.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(p.call(7, &Context::new("dead")).await.ok(), Some(7));
    assert_eq!(p.breaker().map(|b| b.state()), Some(BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn a_tallied_breaker_opens_on_the_same_call_as_one_record_per_call() {
    // 4-call window, 50%: s s f f opens on the 4th call whether the successes were
    // tallied (fast path) or recorded one by one.
    let mut o = named("tally");
    o.breaker = Some(BreakerOptions {
        window: Window::Count(4),
        min_calls: 4,
        open_for: Duration::from_secs(1),
        half_open: 1,
        mode: BreakerMode::FailFast,
        ..BreakerOptions::default()
    });
    let p = Policies::new(dep(0, false), &o);
    let cx = Context::new("tally");
    assert!(p.call(1, &cx).await.is_ok());
    assert!(p.call(2, &cx).await.is_ok());
    p.get_ref().down.store(true, Ordering::Relaxed);
    assert!(p.call(3, &cx).await.is_err());
    assert_eq!(p.breaker().map(|b| b.state()), Some(BreakerState::Closed));
    assert!(p.call(4, &cx).await.is_err());
    assert_eq!(p.breaker().map(|b| b.state()), Some(BreakerState::Open));
}
