//! Property test: the breaker against a small, obviously-correct reference model, over
//! random sequences of acquires, waits, outcomes and time steps in paused time.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::options::{BreakerMode, BreakerOptions, Window};

const SLOW_CALL: Duration = Duration::from_millis(100);
/// How long a `Wait` op waits before giving up (longer than any `open_for` here).
const WAIT_LIMIT_MS: u64 = 10_000;

#[derive(Debug, Clone)]
struct Cfg {
    window: Window,
    min_calls: u32,
    failure_pct: u32,
    slow_pct: u32,
    slow_tracking: bool,
    open_for_ms: u64,
    half_open: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum How {
    Success,
    Failure,
    SlowSuccess,
    SlowFailure,
    Ignore,
    Drop,
}

#[derive(Debug, Clone)]
enum Op {
    /// `try_acquire` and keep the permit.
    Acquire,
    /// `try_acquire` and resolve at once.
    Call(How),
    /// `acquire().await`, given up after `WAIT_LIMIT_MS`; keep the permit.
    Wait,
    /// Resolve a held permit (index modulo the number held).
    Resolve(usize, How),
    Advance(u64),
}

fn cfg() -> impl Strategy<Value = Cfg> {
    let window = prop_oneof![
        (1u32..=6).prop_map(Window::Count),
        (1u64..=3).prop_map(|s| Window::Time(Duration::from_secs(s))),
    ];
    (
        window,
        0u32..=6,
        1u32..=100,
        1u32..=100,
        any::<bool>(),
        1u64..=3000,
        1u32..=3,
    )
        .prop_map(
            |(window, min_calls, failure_pct, slow_pct, slow_tracking, open_for_ms, half_open)| {
                Cfg {
                    window,
                    min_calls,
                    failure_pct,
                    slow_pct,
                    slow_tracking,
                    open_for_ms,
                    half_open,
                }
            },
        )
}

fn how() -> impl Strategy<Value = How> {
    prop_oneof![
        3 => Just(How::Success),
        3 => Just(How::Failure),
        1 => Just(How::SlowSuccess),
        1 => Just(How::SlowFailure),
        1 => Just(How::Ignore),
        1 => Just(How::Drop),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Acquire),
        6 => how().prop_map(Op::Call),
        1 => Just(Op::Wait),
        3 => (any::<usize>(), how()).prop_map(|(i, h)| Op::Resolve(i, h)),
        2 => prop_oneof![0u64..50, 0u64..1500, 0u64..4000].prop_map(Op::Advance),
    ]
}

/// The model: a list of every closed-state call, windows recomputed from scratch, all
/// rates in integer arithmetic.
#[derive(Debug)]
struct Model {
    cfg: Cfg,
    now: u64,
    epoch: u64,
    phase: MPhase,
    /// `(second, failed, slow)` of each call recorded since the breaker last closed.
    calls: Vec<(u64, bool, bool)>,
}

#[derive(Debug, Clone, PartialEq)]
enum MPhase {
    Closed,
    Open { until: u64 },
    HalfOpen { out: u32, done: Vec<(bool, bool)> },
}

impl Model {
    fn state(&self) -> BreakerState {
        match self.phase {
            MPhase::Closed => BreakerState::Closed,
            MPhase::Open { .. } => BreakerState::Open,
            MPhase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn go(&mut self, phase: MPhase) {
        if phase == MPhase::Closed {
            self.calls.clear();
        }
        self.phase = phase;
        self.epoch += 1;
    }

    fn open(&mut self) {
        let until = self.now + self.cfg.open_for_ms;
        self.go(MPhase::Open { until });
    }

    fn too_bad(&self, outcomes: &[(bool, bool)]) -> bool {
        let n = outcomes.len() as u32;
        let failed = outcomes.iter().filter(|o| o.0).count() as u32;
        let slow = outcomes.iter().filter(|o| o.1).count() as u32;
        n > 0
            && (failed * 100 >= self.cfg.failure_pct * n
                || (self.cfg.slow_tracking && slow * 100 >= self.cfg.slow_pct * n))
    }

    /// `Ok(epoch)` of a new permit, or `Err(next probe time)`.
    fn try_acquire(&mut self) -> Result<u64, Option<u64>> {
        match &mut self.phase {
            MPhase::Closed => Ok(self.epoch),
            MPhase::Open { until } if self.now >= *until => {
                self.go(MPhase::HalfOpen {
                    out: 1,
                    done: vec![],
                });
                Ok(self.epoch)
            }
            MPhase::Open { until } => Err(Some(*until)),
            MPhase::HalfOpen { out, done } => {
                if *out + (done.len() as u32) < self.cfg.half_open {
                    *out += 1;
                    Ok(self.epoch)
                } else {
                    Err(None)
                }
            }
        }
    }

    /// What a waiting `acquire` ends with (no one else acts while it waits).
    fn wait(&mut self) -> Option<u64> {
        match self.try_acquire() {
            Ok(epoch) => Some(epoch),
            Err(Some(until)) => {
                self.now = until;
                self.try_acquire().ok()
            }
            Err(None) => {
                self.now += WAIT_LIMIT_MS;
                None
            }
        }
    }

    fn resolve(&mut self, epoch: u64, how: How) {
        if epoch != self.epoch {
            return;
        }
        let ignored = matches!(how, How::Ignore | How::Drop);
        let failed = matches!(how, How::Failure | How::SlowFailure);
        let slow = self.cfg.slow_tracking && matches!(how, How::SlowSuccess | How::SlowFailure);
        match &mut self.phase {
            MPhase::Closed if !ignored => {
                self.calls.push((self.now / 1000, failed, slow));
                let second = self.now / 1000;
                let (window, min): (Vec<_>, u32) = match self.cfg.window {
                    Window::Count(n) => {
                        let skip = self.calls.len().saturating_sub(n as usize);
                        (self.calls[skip..].to_vec(), self.cfg.min_calls.min(n))
                    }
                    Window::Time(d) => {
                        let recent = self.calls.iter().filter(|c| second - c.0 < d.as_secs());
                        (recent.copied().collect(), self.cfg.min_calls)
                    }
                };
                let outcomes: Vec<_> = window.iter().map(|c| (c.1, c.2)).collect();
                if outcomes.len() as u32 >= min && self.too_bad(&outcomes) {
                    self.open();
                }
            }
            MPhase::HalfOpen { out, done } => {
                *out -= 1;
                if !ignored {
                    done.push((failed, slow));
                    if done.len() as u32 == self.cfg.half_open {
                        let done = done.clone();
                        if self.too_bad(&done) {
                            self.open();
                        } else {
                            self.go(MPhase::Closed);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn finish(permit: Permit<'_>, how: How) {
    let (fast, slow) = (
        Duration::from_millis(50),
        SLOW_CALL + Duration::from_millis(50),
    );
    match how {
        How::Success => permit.success(fast),
        How::Failure => permit.failure(fast),
        How::SlowSuccess => permit.success(slow),
        How::SlowFailure => permit.failure(slow),
        How::Ignore => permit.ignore(),
        How::Drop => drop(permit),
    }
}

async fn check(cfg: Cfg, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let opts = BreakerOptions {
        failure_rate: f64::from(cfg.failure_pct) / 100.0,
        slow_call_rate: f64::from(cfg.slow_pct) / 100.0,
        slow_call: cfg.slow_tracking.then_some(SLOW_CALL),
        window: cfg.window,
        min_calls: cfg.min_calls,
        open_for: Duration::from_millis(cfg.open_for_ms),
        half_open: cfg.half_open,
        mode: BreakerMode::Wait,
    };
    let start = Instant::now();
    let breaker = CircuitBreaker::new("model", &opts);
    let mut model = Model {
        cfg,
        now: 0,
        epoch: 0,
        phase: MPhase::Closed,
        calls: Vec::new(),
    };
    let ms = |t: Instant| (t - start).as_millis() as u64;
    let mut held: Vec<(Permit<'_>, u64)> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Acquire | Op::Call(_) => {
                let got = breaker.try_acquire();
                let want = model.try_acquire();
                match (got, want) {
                    (Ok(permit), Ok(epoch)) => match op {
                        Op::Call(how) => {
                            finish(permit, how);
                            model.resolve(epoch, how);
                        }
                        _ => held.push((permit, epoch)),
                    },
                    (Err(open), Err(until)) => {
                        prop_assert_eq!(open.next_probe_at().map(ms), until, "step {}", step);
                    }
                    (got, want) => {
                        return Err(TestCaseError::fail(format!(
                            "step {step} {op:?}: breaker {:?}, model {want:?}",
                            got.map(|_| "permit")
                        )));
                    }
                }
            }
            Op::Wait => {
                let limit = Duration::from_millis(WAIT_LIMIT_MS);
                let got = tokio::time::timeout(limit, breaker.acquire()).await.ok();
                let want = model.wait();
                prop_assert_eq!(got.is_some(), want.is_some(), "step {} wait", step);
                if let (Some(permit), Some(epoch)) = (got, want) {
                    held.push((permit, epoch));
                }
            }
            Op::Resolve(i, how) => {
                if !held.is_empty() {
                    let (permit, epoch) = held.remove(i % held.len());
                    finish(permit, how);
                    model.resolve(epoch, how);
                }
            }
            Op::Advance(d) => {
                tokio::time::advance(Duration::from_millis(d)).await;
                model.now += d;
            }
        }
        prop_assert_eq!(ms(Instant::now()), model.now, "step {}: clock", step);
        prop_assert_eq!(
            breaker.state(),
            model.state(),
            "step {}: {:?}",
            step,
            model.phase
        );
        prop_assert_eq!(
            breaker.transitions(),
            model.epoch,
            "step {}: transitions",
            step
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn breaker_matches_reference_model(cfg in cfg(), ops in prop::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        rt.block_on(check(cfg, ops))?;
    }
}
