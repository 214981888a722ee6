//! The expansion of `#[stage]` is clean under `clippy::pedantic`: CI's
//! `cargo clippy --workspace --all-targets -- -D warnings` compiles this file with the
//! lints below denied, over every signature form and option the macro knows.
#![deny(clippy::pedantic, clippy::all, warnings)]

use std::collections::BTreeSet;
use std::fmt;

use pipeline_core::policy::Fault;
use pipeline_core::prelude::*;

/// A stage error.
#[derive(Debug)]
pub struct Invalid;

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid")
    }
}

impl std::error::Error for Invalid {}

/// Shared state.
#[derive(Debug)]
pub struct Db {
    /// Added to every result.
    pub offset: u64,
}

fn is_transient(_: &Invalid) -> bool {
    false
}

/// Every option.
///
/// # Errors
///
/// When `line` is not a number.
#[stage(
    name = "all",
    concurrency = 16,
    ordered,
    buffer = 100_000,
    timeout = "1500ms",
    retry(attempts = 5, backoff = "100ms", max_backoff = "10s", jitter, budget = 0.25, when = is_transient),
    breaker(failure_rate = 0.5, slow_call_rate = 0.75, slow_call = "1s", window = 100_000,
            min_calls = 10, open_for = "30s", half_open = 3, mode = "fail_fast"),
    rate = "100000/s",
    on_error = "fail",
)]
pub async fn all(line: &str, #[state] db: &Db, cx: &Context) -> Result<Option<u64>, Invalid> {
    let _ = cx.attempt();
    tokio::task::yield_now().await;
    line.parse::<u64>()
        .map(|n| Some(n + db.offset))
        .map_err(|_| Invalid)
}

/// Per-stage state and supervision.
#[stage(restart(max = 3, within = "1m", backoff = "250ms"), flatten)]
pub fn dedup(ids: Vec<u64>, #[state] seen: &mut BTreeSet<u64>) -> Vec<u64> {
    ids.into_iter().filter(|id| seen.insert(*id)).collect()
}

/// A blocking plain function with every kind of argument.
///
/// # Errors
///
/// Never, in fact.
#[stage(blocking, retry(attempts = 2, when = |e| matches!(e, Invalid)))]
pub fn crunch(
    data: &[u8],
    #[state] db: &Db,
    #[state] scratch: &mut Vec<u8>,
    cx: &Context,
) -> Result<u64, Invalid> {
    scratch.clear();
    scratch.extend_from_slice(data);
    Ok(scratch.iter().map(|&b| u64::from(b)).sum::<u64>() + db.offset + u64::from(cx.attempt()))
}

/// A plain, infallible map with shared unsized state.
#[stage(breaker, rate = "60/m")]
fn greet(name: &str, #[state] greeting: &str) -> String {
    format!("{greeting}, {name}")
}

#[test]
fn expansions_are_used() {
    let _ = All::new(Db { offset: 1 }).options();
    let _ = Dedup::default().options();
    let _ = Crunch::new(Db { offset: 0 }, Vec::new).options();
    let _ = Greet::new("hello").options();
}

/// A `Fault` error and a `when` predicate together.
///
/// # Errors
///
/// Always.
#[stage(retry(attempts = 3, when = |e: &Fault<Invalid>| !e.is_permanent()))]
pub async fn faulty(n: u64) -> Result<u64, Fault<Invalid>> {
    tokio::task::yield_now().await;
    Err(Fault::transient(Invalid)).map(|()| n)
}

#[test]
fn fault_stage() {
    assert!(!Faulty.is_permanent(&Fault::transient(Invalid)));
}
