//! RELIABILITY.md tests 2, 4, 6, 7 and the breaker's wait mode, on whole pipelines in
//! paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_core::options::{BreakerOptions, RateOptions, RestartOptions, RetryOptions, Window};
use pipeline_core::prelude::*;
use pipeline_core::sink::{Sink, WriteError};
use pipeline_core::testing;
use pipeline_core::{Health, Outcome};

#[derive(Debug)]
struct Down;
impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dependency down")
    }
}
impl std::error::Error for Down {}

fn quiet_injected_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<&str>().copied().unwrap_or("");
        if !msg.starts_with("injected") && !msg.starts_with("poison") {
            default_hook(info);
        }
    }));
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_within_jitter_bounds_and_timeouts_fire_on_time() {
    let calls: Arc<Mutex<Vec<(u32, tokio::time::Instant)>>> = Arc::default();
    let log = Arc::clone(&calls);
    let mut retry = RetryOptions::new(4);
    retry.backoff = Duration::from_millis(100);
    retry.max_backoff = Duration::from_millis(250);
    retry.jitter = true;
    let start = tokio::time::Instant::now();
    let run = testing::run([1u64], move |b| {
        b.stage(stage::map_fn("hang", move |n: u64| {
            let log = Arc::clone(&log);
            async move {
                let attempt = log.lock().unwrap().len() as u32 + 1;
                log.lock()
                    .unwrap()
                    .push((attempt, tokio::time::Instant::now()));
                // Hangs: only the timeout ends an attempt.
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(n)
            }
        }))
        .timeout(Duration::from_millis(50))
        .retry(retry)
    })
    .await;
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 4, "four attempts in all");
    // Gap i = 50 ms timeout + a full-jitter delay in 0..=min(100 * 2^i, 250) ms.
    for (i, pair) in calls.windows(2).enumerate() {
        let gap = pair[1].1 - pair[0].1;
        let cap = Duration::from_millis((100u64 << i).min(250));
        assert!(gap >= Duration::from_millis(50), "gap {i}: {gap:?}");
        assert!(
            gap <= Duration::from_millis(50) + cap,
            "gap {i}: {gap:?} > 50ms + {cap:?}"
        );
    }
    let dl = &run.dead_letters[0];
    assert_eq!((dl.attempts, dl.stage.as_str()), (4, "hang"));
    assert!(dl.error.contains("timed out"), "{}", dl.error);
    assert!(start.elapsed() <= Duration::from_millis(4 * 50 + 100 + 200 + 250 + 10));
    assert_eq!(run.report.stage("hang").unwrap().timeouts, 4);
}

#[tokio::test(start_paused = true)]
async fn retry_budget_caps_retries_when_everything_fails_and_nothing_is_lost() {
    let calls = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&calls);
    let mut retry = RetryOptions::new(5);
    retry.backoff = Duration::from_millis(1);
    retry.jitter = false;
    retry.budget = Some(0.2);
    let run = testing::run(0..2_000u64, move |b| {
        b.stage(stage::map_fn("down", move |_n: u64| {
            c.fetch_add(1, Ordering::Relaxed);
            async { Err::<u64, _>(Down) }
        }))
        .concurrency(8)
        .retry(retry)
    })
    .await;
    let report = &run.report;
    let retries = report.stage("down").unwrap().retries;
    // Without a budget: 4 retries per item = 8_000. With 20% of recent calls plus a
    // small floor per second, far fewer.
    assert!(retries < 2_000 * 4 / 2, "retries {retries}");
    assert!(
        retries >= 2_000 / 5 / 2,
        "the budget allowed some retries ({retries})"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 2_000 + retries);
    assert_eq!(
        report.dead_lettered, 2_000,
        "nothing lost: every item dead-lettered"
    );
    assert!(report.is_balanced());
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_waits_instead_of_dumping_items() {
    let down = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&down);
    let mut breaker = BreakerOptions::default();
    breaker.window = Window::Count(10);
    breaker.min_calls = 5;
    breaker.failure_rate = 0.5;
    breaker.open_for = Duration::from_secs(1);
    breaker.half_open = 1;
    let mut retry = RetryOptions::new(50);
    retry.backoff = Duration::from_millis(100);
    retry.max_backoff = Duration::from_millis(100);
    retry.jitter = false;
    let (sink, out) = sink::collect::<u64>();
    let handle = Pipeline::builder("outage")
        .source(source::iter(0..500u64))
        .stage(stage::map_fn("call", move |n: u64| {
            let down = flag.load(Ordering::SeqCst);
            async move { if down { Err(Down) } else { Ok(n) } }
        }))
        .concurrency(4)
        .buffer(16)
        .breaker(breaker)
        .retry(retry)
        .sink(sink)
        .spawn();
    // Ten seconds of outage: the breaker opens and the stage stops pulling input.
    let mut degraded = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        degraded |= handle.health() == Health::Degraded;
        let stats = handle.stats();
        assert!(
            stats.in_flight <= 16 + 4 + 16 + 16 + 1024 + 256,
            "{}",
            stats.in_flight
        );
    }
    assert!(degraded, "health showed the open breaker");
    let during = handle.stats();
    assert!(
        during.emitted < 500,
        "the source was held back ({} emitted)",
        during.emitted
    );
    assert_eq!(
        during.stage("call").unwrap().errors,
        0,
        "nothing given up during the outage"
    );
    down.store(false, Ordering::SeqCst);
    let report = handle.join().await.unwrap();
    assert_eq!(report.delivered, 500, "{report}");
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(out.len(), 500);
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_spaces_calls() {
    let start = tokio::time::Instant::now();
    let run = testing::run(0..300u64, |b| {
        b.stage(stage::map_fn("api", |n: u64| async move {
            Ok::<_, Infallible>(n)
        }))
        .concurrency(8)
        .rate(RateOptions::new(100, Duration::from_secs(1)))
    })
    .await;
    assert_eq!(run.delivered.len(), 300);
    // 100 at once (the burst), then 100 per second.
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() <= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

/// Mutable per-stage state: counts calls since the last restart, panics on poison.
struct Stateful {
    since_restart: AtomicU64,
    restarts: Arc<AtomicU64>,
}

impl Stage for Stateful {
    type In = u64;
    type Output = u64;
    type Shape = Map;
    type Error = Infallible;

    async fn call(&self, n: u64, _cx: &Context) -> Result<u64, Infallible> {
        self.since_restart.fetch_add(1, Ordering::SeqCst);
        if n % 1_000 == 999 {
            panic!("poison {n}");
        }
        Ok(n)
    }

    fn restart(&self) -> Result<(), BoxError> {
        self.since_restart.store(0, Ordering::SeqCst);
        self.restarts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_costs_one_attempt_of_one_item_and_rebuilds_the_stage() {
    quiet_injected_panics();
    let restarts = Arc::new(AtomicU64::new(0));
    let stage = Stateful {
        since_restart: AtomicU64::new(0),
        restarts: Arc::clone(&restarts),
    };
    let mut retry = RetryOptions::new(3);
    retry.backoff = Duration::from_millis(1);
    let run = testing::run(0..100_000u64, |b| {
        b.stage(stage).name("stateful").retry(retry)
    })
    .await;
    // 100 poison items, each panicking on all 3 attempts, then dead-lettered.
    assert_eq!(run.report.dead_lettered, 100);
    assert_eq!(run.delivered.len(), 99_900, "good items unaffected");
    assert!(
        run.dead_letters
            .iter()
            .all(|d| d.attempts == 3 && d.error.contains("poison"))
    );
    assert_eq!(
        restarts.load(Ordering::SeqCst),
        300,
        "one restart per panic"
    );
    let row = run.report.stage("stateful").unwrap();
    assert_eq!((row.panics, row.restarts), (300, 300));
}

#[tokio::test(start_paused = true)]
async fn too_many_restarts_stop_the_pipeline_naming_the_stage() {
    quiet_injected_panics();
    let stage = Stateful {
        since_restart: AtomicU64::new(0),
        restarts: Arc::default(),
    };
    let (sink, _) = sink::collect::<u64>();
    let err = Pipeline::builder("escalate")
        .source(source::iter(0..1_000_000u64))
        .stage(stage)
        .name("fragile")
        .restart(RestartOptions::new(2, Duration::from_secs(3_600)))
        .sink(sink)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.failure.stage, "fragile");
    assert!(
        err.failure.error.contains("restart limit"),
        "{}",
        err.failure.error
    );
    assert!(err.report.is_balanced(), "{}", err.report);
    assert!(err.report.emitted < 1_000_000, "the sources stopped");
    assert_eq!(err.report.dead_lettered, 3);
}

/// A sink that panics before writing a batch containing a multiple of 500, or after
/// writing one containing a multiple of 777.
struct Panicky {
    written: Arc<Mutex<Vec<u64>>>,
}

impl Sink for Panicky {
    type Item = u64;
    async fn write(&mut self, items: &mut Vec<u64>) -> Result<(), WriteError> {
        if items.iter().any(|n| n % 500 == 499) {
            panic!("injected panic before the write");
        }
        self.written.lock().unwrap().extend(items.iter().copied());
        if items.iter().any(|n| n % 777 == 776) {
            panic!("injected panic after the write");
        }
        items.clear();
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn sink_panics_before_and_after_the_write_are_contained() {
    quiet_injected_panics();
    let written = Arc::new(Mutex::new(Vec::new()));
    let (dead, dead_out) = sink::collect();
    let report = Pipeline::builder("panicky-sink")
        .source(source::iter(0..10_000u64))
        .stage(stage::map_fn("id", |n: u64| async move {
            Ok::<_, Infallible>(n)
        }))
        .buffer(32)
        .sink(Panicky {
            written: Arc::clone(&written),
        })
        .buffer(32)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    assert!(report.is_balanced());
    assert!(report.dead_lettered > 0);
    assert_eq!(report.delivered + report.dead_lettered, 10_000);
    let letters = dead_out.take();
    assert!(letters.iter().all(|d| d.error.contains("sink panicked")));
    let written = written.lock().unwrap();
    // Panic after the write: those items were written and also dead-lettered
    // (at-least-once). Every delivered item was written.
    assert!(written.len() as u64 >= report.delivered);
    assert_eq!(report.count(Outcome::Failed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_custom_schedule_sets_the_delays_and_ends_the_retries() {
    let calls: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let log = Arc::clone(&calls);
    let mut retry = RetryOptions::new(10);
    retry.schedule = Some(pipeline_core::options::Delays::new(|| {
        [Duration::from_millis(10), Duration::from_millis(50)]
    }));
    let run = testing::run([7u64], move |b| {
        b.stage(stage::map_fn("down", move |_n: u64| {
            log.lock().unwrap().push(tokio::time::Instant::now());
            async { Err::<u64, _>(Down) }
        }))
        .retry(retry)
    })
    .await;
    let calls = calls.lock().unwrap();
    // Two delays: three attempts, although ten were allowed.
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[1] - calls[0], Duration::from_millis(10));
    assert_eq!(calls[2] - calls[1], Duration::from_millis(50));
    assert_eq!(run.dead_letters[0].attempts, 3);
}

/// State that must be fresh for every call after a panic: counts calls since the last
/// rebuild and records what the call after each rebuild saw.
struct Fragile {
    since_rebuild: AtomicU64,
    rebuilds: Arc<AtomicU64>,
    /// `since_rebuild` as seen by each retry that followed a panic.
    seen_by_retries: Arc<Mutex<Vec<u64>>>,
}

impl Stage for Fragile {
    type In = u64;
    type Output = u64;
    type Shape = Map;
    type Error = Infallible;

    async fn call(&self, n: u64, cx: &Context) -> Result<u64, Infallible> {
        let since = self.since_rebuild.fetch_add(1, Ordering::SeqCst);
        if n == 7 && cx.attempt() == 1 {
            panic!("injected panic on the first attempt of {n}");
        }
        if n == 7 {
            self.seen_by_retries.lock().unwrap().push(since);
        }
        Ok(n)
    }

    fn restart(&self) -> Result<(), BoxError> {
        self.since_rebuild.store(0, Ordering::SeqCst);
        self.rebuilds.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_a_panic_runs_on_rebuilt_state_and_one_item_is_one_restart() {
    quiet_injected_panics();
    let rebuilds = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stage = Fragile {
        since_rebuild: AtomicU64::new(0),
        rebuilds: Arc::clone(&rebuilds),
        seen_by_retries: Arc::clone(&seen),
    };
    let mut retry = RetryOptions::new(3);
    retry.backoff = Duration::from_millis(1);
    let run = testing::run(0..20u64, |b| {
        b.stage(stage)
            .name("fragile")
            .retry(retry)
            .restart(RestartOptions::new(1, Duration::from_secs(3_600)))
    })
    .await;
    // Delivered on its retry; nothing failed; the pipeline did not stop.
    assert!(run.report.failure.is_none(), "{}", run.report);
    assert_eq!(run.delivered.len(), 20);
    assert!(run.delivered.contains(&7));
    assert!(run.dead_letters.is_empty());
    // The state was rebuilt once, before the retry: the retry was its first call.
    assert_eq!(rebuilds.load(Ordering::SeqCst), 1);
    assert_eq!(*seen.lock().unwrap(), [0]);
    let row = run.report.stage("fragile").unwrap();
    assert_eq!((row.panics, row.restarts, row.retries), (1, 1, 1));
    assert!(run.report.is_balanced());
}

/// Panics on every attempt of the items in `bad`.
struct Poisoned {
    bad: &'static [u64],
}

impl Stage for Poisoned {
    type In = u64;
    type Output = u64;
    type Shape = Map;
    type Error = Infallible;

    async fn call(&self, n: u64, _cx: &Context) -> Result<u64, Infallible> {
        assert!(!self.bad.contains(&n), "injected panic on {n}");
        Ok(n)
    }
}

#[tokio::test(start_paused = true)]
async fn restart_intensity_counts_items_not_attempts() {
    quiet_injected_panics();
    let mut retry = RetryOptions::new(4);
    retry.backoff = Duration::from_millis(1);
    // One item panicking on all four attempts is one restart: within `max = 1`.
    let run = testing::run(0..50u64, |b| {
        b.stage(Poisoned { bad: &[10] })
            .name("poisoned")
            .retry(retry.clone())
            .restart(RestartOptions::new(1, Duration::from_secs(3_600)))
    })
    .await;
    assert!(run.report.failure.is_none(), "{}", run.report);
    assert_eq!(run.report.dead_lettered, 1);
    assert_eq!(run.dead_letters[0].attempts, 4);
    let row = run.report.stage("poisoned").unwrap();
    assert_eq!(
        (row.panics, row.restarts),
        (4, 4),
        "rebuilt after every panic"
    );
    // A second panicking item exceeds it: the pipeline stops naming the stage.
    let run = testing::run(0..50u64, |b| {
        b.stage(Poisoned { bad: &[10, 20] })
            .name("poisoned")
            .retry(retry)
            .restart(RestartOptions::new(1, Duration::from_secs(3_600)))
    })
    .await;
    let failure = run.report.failure.as_ref().expect("the pipeline stopped");
    assert_eq!(failure.stage, "poisoned");
    assert!(failure.error.contains("restart limit"), "{}", failure.error);
    assert!(run.report.is_balanced(), "{}", run.report);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_breaker_never_dumps_through_an_outage_far_longer_than_its_attempts() {
    let down = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&down);
    let mut breaker = BreakerOptions::default();
    breaker.window = Window::Count(5);
    breaker.min_calls = 5;
    breaker.open_for = Duration::from_secs(5);
    breaker.half_open = 1;
    let mut retry = RetryOptions::new(10);
    retry.backoff = Duration::from_millis(100);
    retry.max_backoff = Duration::from_millis(100);
    retry.jitter = false;
    let (sink, out) = sink::collect::<u64>();
    let (dead, letters) = sink::collect();
    let handle = Pipeline::builder("long-outage")
        .source(source::iter(0..200u64))
        .stage(stage::map_fn("call", move |n: u64| {
            let down = flag.load(Ordering::SeqCst);
            async move { if down { Err(Down) } else { Ok(n) } }
        }))
        .concurrency(4)
        .breaker(breaker)
        .retry(retry)
        .sink(sink)
        .dead_letter(dead)
        .spawn();
    // 600 s of outage: 10 attempts x 5 s open would be spent after ~50 s if probes
    // counted as attempts.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let during = handle.stats();
    assert_eq!(during.stage("call").unwrap().errors, 0, "nothing given up");
    assert_ne!(
        during.stage("call").unwrap().breaker,
        Some(pipeline_core::policy::BreakerState::Closed)
    );
    down.store(false, Ordering::SeqCst);
    let report = handle.join().await.unwrap();
    assert_eq!(report.dead_lettered, 0, "{report}");
    assert!(letters.take().is_empty());
    assert_eq!(report.delivered, 200, "{report}");
    assert_eq!(out.len(), 200);
    assert!(report.is_balanced(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_closure_returning_a_permanent_fault_is_not_retried() {
    use pipeline_core::policy::{Fault, Permanent};
    let calls = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&calls);
    let mut retry = RetryOptions::new(5);
    retry.backoff = Duration::from_millis(1);
    let run = testing::run(0..10u64, move |b| {
        b.stage(stage::map_fn("check", move |n: u64| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    3 => Err(Permanent(Down))?,
                    4 => Err(Down)?,
                    _ => Ok::<_, Fault<Down>>(n),
                }
            }
        }))
        .retry(retry)
    })
    .await;
    let mut letters = run.dead_letters.clone();
    letters.sort_by_key(|d| d.attempts);
    let attempts: Vec<u32> = letters.iter().map(|d| d.attempts).collect();
    assert_eq!(
        attempts,
        [1, 5],
        "the permanent fault once, the transient one five times"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 8 + 1 + 5);
    assert_eq!(run.report.stage("check").unwrap().retries, 4);
}

#[tokio::test(start_paused = true)]
async fn a_closure_stage_takes_a_retry_predicate() {
    let mut retry = RetryOptions::new(5);
    retry.backoff = Duration::from_millis(1);
    let run = testing::run(0..10u64, move |b| {
        b.stage(
            stage::map_fn("pred", |n: u64| async move {
                if n % 2 == 0 {
                    Err(std::io::Error::new(std::io::ErrorKind::NotFound, "gone"))
                } else {
                    Ok(n)
                }
            })
            .retry_when(|e: &std::io::Error| e.kind() != std::io::ErrorKind::NotFound),
        )
        .retry(retry)
    })
    .await;
    assert_eq!(run.dead_letters.len(), 5);
    assert!(run.dead_letters.iter().all(|d| d.attempts == 1));
    assert_eq!(run.report.stage("pred").unwrap().retries, 0);
}

/// Counts its hooks; shows its items in dead letters; fails odd items.
struct Hooked {
    started: Arc<AtomicU64>,
    stopped: Arc<AtomicU64>,
}

impl Stage for Hooked {
    type In = u64;
    type Output = u64;
    type Shape = Map;
    type Error = Down;

    async fn call(&self, n: u64, _cx: &Context) -> Result<u64, Down> {
        if n % 2 == 1 { Err(Down) } else { Ok(n) }
    }

    async fn on_start(&self) -> Result<(), BoxError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn on_stop(&self) -> Result<(), BoxError> {
        self.stopped.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn hooks_and_dead_letter_items_survive_every_policy() {
    let started = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(AtomicU64::new(0));
    let stage = stage::show_items_as_json(Hooked {
        started: Arc::clone(&started),
        stopped: Arc::clone(&stopped),
    });
    let mut retry = RetryOptions::new(2);
    retry.backoff = Duration::from_millis(1);
    let run = testing::run(0..20u64, |b| {
        b.stage(stage)
            .name("hooked")
            .timeout(Duration::from_secs(1))
            .retry(retry)
            .breaker(BreakerOptions::default())
            .rate(RateOptions::new(1_000, Duration::from_secs(1)))
            .restart(RestartOptions::new(3, Duration::from_secs(60)))
            .concurrency(2)
    })
    .await;
    assert_eq!(started.load(Ordering::SeqCst), 1, "on_start ran");
    assert_eq!(stopped.load(Ordering::SeqCst), 1, "on_stop ran");
    assert_eq!(run.delivered.len(), 10);
    assert_eq!(run.dead_letters.len(), 10);
    assert!(
        run.dead_letters.iter().all(|d| d.attempts == 2
            && d.item
                .as_ref()
                .and_then(|v| v.as_u64())
                .is_some_and(|n| n % 2 == 1)),
        "{:?}",
        run.dead_letters
    );
}

#[tokio::test(start_paused = true)]
async fn dead_letters_report_attempts_and_probes_apart() {
    use pipeline_core::policy::{Fault, Permanent};
    let calls = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&calls);
    let mut breaker = BreakerOptions::default();
    breaker.window = Window::Count(1);
    breaker.min_calls = 1;
    breaker.half_open = 1;
    breaker.open_for = Duration::from_secs(1);
    let mut retry = RetryOptions::new(2);
    retry.backoff = Duration::from_millis(10);
    retry.jitter = false;
    let run = testing::run([7u64], move |b| {
        b.stage(stage::map_fn("probed", move |_n: u64| {
            // Calls 1-3 fail (the first opens the breaker; 2 and 3 are failed probes),
            // the 4th, a probe too, fails for good.
            let call = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if call < 4 {
                    Err(Down)?;
                }
                Err::<u64, Fault<Down>>(Permanent(Down).into())
            }
        }))
        .breaker(breaker)
        .retry(retry)
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let dl = &run.dead_letters[0];
    assert_eq!((dl.attempts, dl.probes), (2, 2), "{dl:?}");
    assert!(run.report.is_balanced());
}
