//! The settings inside `retry(...)`, `breaker(...)`, `rate(...)` and `restart(...)`.
//!
//! Each function is a table: one arm per setting, `name => e.value(slot, example,
//! parser)` (or `e.flag(slot)`). The arms look alike on purpose; what differs is the
//! slot, the example the messages show and the parser with its range.

use syn::meta::ParseNestedMeta;

use super::entry::Entry;
use super::values::{choice, duration, int, predicate, rate, share, window};
use super::{BREAKER, Breaker, Level, MODES, RATE, RESTART, RETRY, RateLimit, Restart, Retry};
use crate::ctxt::Ctxt;

pub(super) fn retry_setting(
    retry: &mut Retry,
    meta: &ParseNestedMeta<'_>,
    cx: &Ctxt,
) -> syn::Result<()> {
    Entry::read(meta, cx, Level::In("retry"), RETRY, |e| {
        let key = &e.key;
        match e.name().as_str() {
            "attempts" => e.value(&mut retry.attempts, "attempts = 3", |v| int(cx, key, v, 1)),
            "backoff" => e.value(&mut retry.backoff, "backoff = \"100ms\"", |v| {
                duration(cx, v, true)
            }),
            "max_backoff" => e.value(&mut retry.max_backoff, "max_backoff = \"10s\"", |v| {
                duration(cx, v, false)
            }),
            "jitter" => e.flag(&mut retry.jitter),
            "budget" => e.value(&mut retry.budget, "budget = 0.2", |v| {
                share(cx, key, v, "a share of recent first attempts")
            }),
            "budget_floor" => e.value(&mut retry.budget_floor, "budget_floor = 10", |v| {
                int(cx, key, v, 0)
            }),
            "when" => e.value(&mut retry.when, "when = is_transient", |v| predicate(cx, v)),
            _ => e.unknown(),
        }
    })
}

pub(super) fn breaker_setting(
    b: &mut Breaker,
    meta: &ParseNestedMeta<'_>,
    cx: &Ctxt,
) -> syn::Result<()> {
    Entry::read(meta, cx, Level::In("breaker"), BREAKER, |e| {
        let key = &e.key;
        match e.name().as_str() {
            "failure_rate" => e.value(&mut b.failure_rate, "failure_rate = 0.5", |v| {
                share(cx, key, v, "the share of failed calls")
            }),
            "slow_call_rate" => e.value(&mut b.slow_call_rate, "slow_call_rate = 0.8", |v| {
                share(cx, key, v, "the share of slow calls")
            }),
            "slow_call" => e.value(&mut b.slow_call, "slow_call = \"1s\"", |v| {
                duration(cx, v, false)
            }),
            "window" => e.value(&mut b.window, "window = 20", |v| window(cx, key, v)),
            "min_calls" => e.value(&mut b.min_calls, "min_calls = 10", |v| int(cx, key, v, 1)),
            "open_for" => e.value(&mut b.open_for, "open_for = \"30s\"", |v| {
                duration(cx, v, false)
            }),
            "half_open" => e.value(&mut b.half_open, "half_open = 3", |v| int(cx, key, v, 1)),
            "mode" => e.value(&mut b.mode, "mode = \"wait\"", |v| {
                choice(cx, key, v, MODES)
            }),
            _ => e.unknown(),
        }
    })
}

pub(super) fn rate_setting(
    r: &mut RateLimit,
    meta: &ParseNestedMeta<'_>,
    cx: &Ctxt,
) -> syn::Result<()> {
    Entry::read(meta, cx, Level::In("rate"), RATE, |e| {
        let key = &e.key;
        match e.name().as_str() {
            "limit" => e.value(&mut r.limit, "limit = \"500/s\"", |v| rate(cx, v)),
            "burst" => e.value(&mut r.burst, "burst = 50", |v| int(cx, key, v, 1)),
            _ => e.unknown(),
        }
    })
}

pub(super) fn restart_setting(
    r: &mut Restart,
    meta: &ParseNestedMeta<'_>,
    cx: &Ctxt,
) -> syn::Result<()> {
    Entry::read(meta, cx, Level::In("restart"), RESTART, |e| {
        let key = &e.key;
        match e.name().as_str() {
            "max" => e.value(&mut r.max, "max = 3", |v| int(cx, key, v, 0)),
            "within" => e.value(&mut r.within, "within = \"60s\"", |v| {
                duration(cx, v, false)
            }),
            "backoff" => e.value(&mut r.backoff, "backoff = \"1s\"", |v| {
                duration(cx, v, true)
            }),
            _ => e.unknown(),
        }
    })
}
