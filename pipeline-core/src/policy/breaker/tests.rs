//! Resilience4j-style conformance table, plus the waiting and wrapper behaviour.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, advance};

use super::*;
use crate::context::Context;
use crate::options::StageOptions;
use crate::options::{BreakerMode, BreakerOptions, Window};
use crate::policy::{Failure, Fault, Permanent, Policies};
use crate::stage::{Map, Stage};

const SLOW: Duration = Duration::from_millis(100);

fn opts(window: Window, min_calls: u32, half_open: u32) -> BreakerOptions {
    BreakerOptions {
        failure_rate: 0.5,
        slow_call_rate: 0.5,
        slow_call: Some(SLOW),
        window,
        min_calls,
        open_for: Duration::from_secs(1),
        half_open,
        mode: BreakerMode::Wait,
    }
}

/// Runs a script against a fresh breaker. Tokens:
/// `s f S F i` acquire and resolve at once (success, failure, slow success, slow
/// failure, ignore); `p` acquire and hold; `ps pf pd` resolve the oldest held permit
/// (success, failure, drop); `!` a refused acquire; `+N` advance N ms; `=C =O =H` state.
async fn run(name: &str, o: BreakerOptions, script: &str) {
    let b = CircuitBreaker::new(name, &o);
    let mut held = std::collections::VecDeque::new();
    let fast = Duration::from_millis(1);
    let slow = SLOW + Duration::from_millis(1);
    for (i, token) in script.split_whitespace().enumerate() {
        let at = format!("case `{name}`, token {i} `{token}` in `{script}`");
        let take = || match b.try_acquire() {
            Ok(p) => p,
            Err(e) => panic!("{at}: refused ({e:?}), state {:?}", b.state()),
        };
        match token {
            "s" => take().success(fast),
            "f" => take().failure(fast),
            "S" => take().success(slow),
            "F" => take().failure(slow),
            "i" => take().ignore(),
            "p" => held.push_back(take()),
            "ps" | "pf" | "pd" => {
                let p = held
                    .pop_front()
                    .unwrap_or_else(|| panic!("{at}: none held"));
                match token {
                    "ps" => p.success(fast),
                    "pf" => p.failure(fast),
                    _ => drop(p),
                }
            }
            "!" => assert!(b.try_acquire().is_err(), "{at}: expected a refusal"),
            "=C" => assert_eq!(b.state(), BreakerState::Closed, "{at}"),
            "=O" => assert_eq!(b.state(), BreakerState::Open, "{at}"),
            "=H" => assert_eq!(b.state(), BreakerState::HalfOpen, "{at}"),
            t if t.starts_with('+') => {
                let ms: u64 = t[1..].parse().unwrap_or_else(|_| panic!("{at}: bad token"));
                advance(Duration::from_millis(ms)).await;
            }
            _ => panic!("{at}: unknown token"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn resilience4j_conformance_table() {
    let count = |n, min, half| opts(Window::Count(n), min, half);
    let time = |s, min, half| opts(Window::Time(Duration::from_secs(s)), min, half);
    let cases: &[(&str, BreakerOptions, &str)] = &[
        (
            "no evaluation before min_calls",
            count(10, 5, 1),
            "f f f f =C f =O !",
        ),
        (
            "below the threshold stays closed",
            count(10, 5, 1),
            "s s s f f =C s s s s f =C",
        ),
        (
            "the threshold itself opens (>=)",
            count(10, 4, 1),
            "s f s =C f =O",
        ),
        (
            "count window evicts old calls",
            {
                let mut o = count(4, 4, 1);
                o.failure_rate = 0.75;
                o
            },
            "f f s s =C f =C f =C f =O",
        ),
        (
            "min_calls is capped by the count window",
            count(3, 10, 1),
            "f f =C f =O",
        ),
        ("slow successes open", count(4, 4, 1), "S S s =C s =O"),
        ("slow failures count twice", count(4, 4, 1), "F s s =C s =C"),
        (
            "no slow tracking without slow_call",
            {
                let mut o = count(4, 4, 1);
                o.slow_call = None;
                o
            },
            "S S S S =C",
        ),
        (
            "ignored calls do not count",
            count(4, 4, 1),
            "i i i i i f s s =C f =O",
        ),
        (
            "open refuses until open_for",
            count(2, 2, 1),
            "f f =O ! +999 ! =O +1 p =H ps =C",
        ),
        (
            "half-open permits exactly n probes",
            count(2, 2, 2),
            "f f +1000 p p ! ps =H ! ps =C",
        ),
        (
            "half-open failure re-opens",
            count(2, 2, 2),
            "f f +1000 f =H s =O ! +999 ! +1 s s =C",
        ),
        (
            "half-open slow probes re-open",
            count(2, 2, 2),
            "f f +1000 S S =O",
        ),
        (
            "closing resets the window",
            count(4, 4, 4),
            "f f f f +1000 s s s f =C f f f =C f =O",
        ),
        (
            "a dropped probe frees its slot",
            count(2, 2, 1),
            "f f +1000 p =H ! pd s =C",
        ),
        (
            "an ignored probe frees its slot",
            count(2, 2, 1),
            "f f +1000 i =H s =C",
        ),
        (
            "stale results are discarded",
            count(4, 4, 1),
            "p f f f f =O +1000 p =H pf =H ps =C",
        ),
        (
            "time window: expired calls drop out",
            time(2, 3, 1),
            "f f +2000 f =C f =C f =O",
        ),
        (
            "time window: buckets are whole seconds",
            time(2, 3, 1),
            "f +1000 f +999 s =O",
        ),
        (
            "time window: min_calls not capped",
            time(1, 10, 1),
            "f f f f f f f f f =C f =O",
        ),
    ];
    for (name, o, script) in cases {
        run(name, o.clone(), script).await;
    }
}

#[tokio::test(start_paused = true)]
async fn refusals_say_when_to_come_back() {
    let b = CircuitBreaker::new("b", &opts(Window::Count(1), 1, 1));
    let opened = Instant::now();
    b.try_acquire().map(|p| p.failure(Duration::ZERO)).ok();
    let refused = b.try_acquire().err();
    assert_eq!(
        refused.and_then(|e| e.next_probe_at()),
        Some(opened + Duration::from_secs(1))
    );
    advance(Duration::from_secs(1)).await;
    let _probe = b.try_acquire();
    assert_eq!(b.try_acquire().err().map(|e| e.next_probe_at()), Some(None));
    assert_eq!(b.transitions(), 2);
    assert_eq!(b.counters().breaker_transitions(), 2);
}

#[tokio::test(start_paused = true)]
async fn waiters_sleep_until_open_for_then_queue_behind_the_probe() {
    let b = Arc::new(CircuitBreaker::new("b", &opts(Window::Count(1), 1, 1)));
    let start = Instant::now();
    b.force_open();
    // Waits through the open period and becomes the probe.
    let prober = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            let probe = b.acquire().await;
            let got = start.elapsed();
            tokio::time::sleep(Duration::from_millis(500)).await;
            probe.success(Duration::ZERO);
            got
        })
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    // Arrives while the only probe is out: waits for it to complete.
    let waiter = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            let permit = b.acquire().await;
            permit.success(Duration::ZERO);
            start.elapsed()
        })
    };
    // Bounded waits: in paused time a lost wake-up would otherwise hang the test.
    let limit = Duration::from_secs(60);
    let prober = tokio::time::timeout(limit, prober).await;
    assert_eq!(
        prober.ok().and_then(Result::ok),
        Some(Duration::from_secs(1))
    );
    let waiter = tokio::time::timeout(limit, waiter).await;
    assert_eq!(
        waiter.ok().and_then(Result::ok),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_and_a_cancelled_probe_do_not_wedge_half_open() {
    let b = CircuitBreaker::new("b", &opts(Window::Count(1), 1, 1));
    b.force_open();
    let gave_up = tokio::time::timeout(Duration::from_millis(10), b.acquire()).await;
    assert!(gave_up.is_err());
    advance(Duration::from_secs(1)).await;
    let call = async {
        let _probe = b.acquire().await;
        std::future::pending::<()>().await; // the call never finishes...
    };
    // ...and is cancelled by its timeout, dropping the unresolved probe.
    assert!(
        tokio::time::timeout(Duration::from_millis(10), call)
            .await
            .is_err()
    );
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let probe = tokio::time::timeout(Duration::from_millis(1), b.acquire()).await;
    assert!(probe.is_ok(), "the probe slot came back");
}

#[tokio::test(start_paused = true)]
async fn an_ignored_probe_wakes_a_waiter_at_once() {
    let b = Arc::new(CircuitBreaker::new("b", &opts(Window::Count(1), 1, 1)));
    b.force_open();
    advance(Duration::from_secs(1)).await;
    let start = Instant::now();
    let probe = b.try_acquire();
    assert!(probe.is_ok());
    let waiter = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            let limit = Duration::from_secs(60);
            let permit = tokio::time::timeout(limit, b.acquire()).await;
            permit
                .map(|p| p.success(Duration::ZERO))
                .is_ok()
                .then(|| start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    probe.map(Permit::ignore).ok(); // a permanent error: the slot goes back
    let waited = waiter.await.ok().flatten();
    assert_eq!(waited, Some(Duration::from_millis(300)));
    assert_eq!(b.state(), BreakerState::Closed);
}

/// Fails while `down`, with `permanent` errors for odd items.
struct Dep {
    down: std::sync::atomic::AtomicBool,
}

impl Stage for Dep {
    type In = u32;
    type Output = u32;
    type Shape = Map;
    type Error = Fault<std::io::Error>;
    async fn call(&self, n: u32, _cx: &Context) -> Result<u32, Self::Error> {
        if n % 2 == 1 {
            Err(Permanent(std::io::Error::other("bad item")))?;
        }
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::other("down").into());
        }
        Ok(n)
    }
    fn is_permanent(&self, e: &Self::Error) -> bool {
        e.is_permanent()
    }
}

/// The engine around `stage` with only a breaker.
fn guarded<S: Stage>(stage: S, o: &BreakerOptions) -> Policies<S> {
    let opts = StageOptions {
        name: Some("dep".into()),
        breaker: Some(o.clone()),
        ..StageOptions::default()
    };
    Policies::new(stage, &opts)
}

fn dep(down: bool) -> Dep {
    Dep {
        down: std::sync::atomic::AtomicBool::new(down),
    }
}

fn state<S: Stage>(p: &Policies<S>) -> Option<BreakerState> {
    p.breaker().map(|b| b.state())
}

#[tokio::test(start_paused = true)]
async fn engine_fail_fast_refuses_and_ignores_permanent_errors() {
    let mut o = opts(Window::Count(2), 2, 1);
    o.mode = BreakerMode::FailFast;
    let stage = guarded(dep(true), &o);
    let cx = Context::new("dep");
    for _ in 0..5 {
        assert!(stage.call(1, &cx).await.is_err()); // permanent: not counted
    }
    assert_eq!(state(&stage), Some(BreakerState::Closed));
    assert!(matches!(stage.call(2, &cx).await, Err(Failure::Call(_))));
    assert!(matches!(stage.call(2, &cx).await, Err(Failure::Call(_))));
    let out = stage.attempt(2, &cx).await;
    assert!(matches!(out.result, Err(Failure::BreakerOpen(_))));
    assert_eq!(out.attempts(), 1);
    assert_eq!(stage.counters().breaker_rejections(), 1);
}

#[tokio::test(start_paused = true)]
async fn engine_wait_mode_backpressures_then_resumes() {
    let stage = guarded(dep(true), &opts(Window::Count(2), 2, 1));
    let cx = Context::new("dep");
    let _ = stage.call(2, &cx).await;
    let _ = stage.call(2, &cx).await;
    assert_eq!(state(&stage), Some(BreakerState::Open));
    stage
        .get_ref()
        .down
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    // Waits the open period instead of failing; the probe succeeds and closes it.
    assert_eq!(stage.call(4, &cx).await.ok(), Some(4));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(state(&stage), Some(BreakerState::Closed));
    assert_eq!(stage.counters().breaker_waits(), 1);
}

#[tokio::test(start_paused = true)]
async fn engine_times_slow_calls() {
    struct Sleepy;
    impl Stage for Sleepy {
        type In = u64;
        type Output = u64;
        type Shape = Map;
        type Error = std::io::Error;
        async fn call(&self, ms: u64, _cx: &Context) -> Result<u64, std::io::Error> {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ms)
        }
    }
    let stage = guarded(Sleepy, &opts(Window::Count(1), 1, 1));
    let cx = Context::new("sleepy");
    assert!(stage.call(100, &cx).await.is_ok()); // exactly the threshold: not slow
    assert_eq!(state(&stage), Some(BreakerState::Closed));
    assert!(stage.call(101, &cx).await.is_ok()); // slow: 100% >= 50%
    assert_eq!(state(&stage), Some(BreakerState::Open));
}

/// The engine's hot path (a tally of successes while the window is clean, folded at
/// batch ends or before a failure) against one record per call: the same states, the
/// same transitions, after every call.
mod tally {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Success,
        Failure,
        Ignore,
        BatchEnd,
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => Just(Op::Success),
            3 => Just(Op::Failure),
            1 => Just(Op::Ignore),
            2 => Just(Op::BatchEnd),
            1 => (0u64..3000).prop_map(Op::Advance),
        ]
    }

    /// A caller with a tally, as the engine keeps one.
    struct Tallied {
        breaker: CircuitBreaker,
        epoch: u64,
        count: u64,
    }

    impl Tallied {
        fn fold(breaker: &CircuitBreaker, epoch: u64, count: &mut u64) {
            breaker.fold_successes(epoch, *count);
            *count = 0;
        }

        /// One call with outcome `op`; `false` if the breaker refused it.
        fn call(&mut self, op: Op) -> bool {
            if let Some(epoch) = self.breaker.clean_epoch() {
                match op {
                    Op::Success => {
                        if epoch != self.epoch {
                            self.epoch = epoch;
                            self.count = 0;
                        }
                        self.count += 1;
                    }
                    Op::Failure => {
                        let n = if epoch == self.epoch { self.count } else { 0 };
                        self.count = 0;
                        self.breaker.fail_after(epoch, n, Duration::ZERO);
                    }
                    _ => {}
                }
                return true;
            }
            let Ok(permit) = self.breaker.try_acquire() else {
                return false;
            };
            match op {
                Op::Ignore => permit.ignore(),
                Op::Success => {
                    Self::fold(&self.breaker, self.epoch, &mut self.count);
                    permit.success(Duration::ZERO);
                }
                _ => {
                    Self::fold(&self.breaker, self.epoch, &mut self.count);
                    permit.failure(Duration::ZERO);
                }
            }
            true
        }
    }

    async fn check(
        window: u32,
        min_calls: u32,
        rate: u32,
        ops: Vec<Op>,
    ) -> Result<(), TestCaseError> {
        let mut o = opts(Window::Count(window), min_calls, 1);
        o.slow_call = None;
        o.failure_rate = f64::from(rate) / 100.0;
        let reference = CircuitBreaker::new("per-call", &o);
        let mut tallied = Tallied {
            breaker: CircuitBreaker::new("tallied", &o),
            epoch: u64::MAX,
            count: 0,
        };
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::BatchEnd => Tallied::fold(&tallied.breaker, tallied.epoch, &mut tallied.count),
                Op::Advance(ms) => advance(Duration::from_millis(ms)).await,
                op => {
                    let admitted = match reference.try_acquire() {
                        Ok(permit) => {
                            match op {
                                Op::Success => permit.success(Duration::ZERO),
                                Op::Failure => permit.failure(Duration::ZERO),
                                _ => permit.ignore(),
                            }
                            true
                        }
                        Err(_) => false,
                    };
                    prop_assert_eq!(tallied.call(op), admitted, "step {}: admission", step);
                }
            }
            prop_assert_eq!(tallied.breaker.state(), reference.state(), "step {}", step);
            prop_assert_eq!(
                tallied.breaker.transitions(),
                reference.transitions(),
                "step {}: transitions",
                step
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn a_tally_opens_on_the_same_call_as_one_record_per_call(
            window in 1u32..8,
            min_calls in 0u32..8,
            rate in 1u32..=100,
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            rt.block_on(check(window, min_calls, rate, ops))?;
        }
    }
}
