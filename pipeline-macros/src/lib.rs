//! The `#[stage]` attribute of [`pipeline-core`]: an ordinary function becomes a pipeline
//! stage, with its concurrency, timeout, retries, circuit breaker and rate limit declared
//! next to the code.
//!
//! Use it through the core, which re-exports it behind its default `macros` feature:
//!
//! ```
//! use pipeline_core::prelude::*;
//!
//! #[stage(concurrency = 8, timeout = "2s", retry(attempts = 3))]
//! async fn enrich(id: u64) -> u64 {
//!     id * 2
//! }
//! # let _ = Enrich;
//! ```
//!
//! Everything is documented on [`macro@stage`].
//!
//! [`pipeline-core`]: https://docs.rs/pipeline-core

use proc_macro::TokenStream;

mod ast;
mod attr;
mod ctxt;
mod expand;
mod fallback;
mod valid;

/// Turns a function into a pipeline stage.
///
/// ```
/// use pipeline_core::prelude::*;
///
/// # #[derive(Debug, Clone)] pub struct Order { id: u64 }
/// # #[derive(Debug)] pub struct Enriched { id: u64, name: String }
/// # pub struct Db;
/// # impl Db { async fn name(&self, _: u64) -> Result<String, DbError> { Ok("x".into()) } }
/// # #[derive(Debug, thiserror::Error)] #[error("db")] pub struct DbError;
/// #[stage(concurrency = 8, timeout = "2s", retry(attempts = 5, backoff = "100ms"))]
/// async fn enrich(order: Order, #[state] db: &Db) -> Result<Enriched, DbError> {
///     let name = db.name(order.id).await?;
///     Ok(Enriched { id: order.id, name })
/// }
///
/// // The function stays callable as written, and next to it is the stage type:
/// let stage = Enrich::new(Db);
/// assert_eq!(stage.options().concurrency, Some(8));
/// ```
///
/// The function is emitted unchanged (less the `#[state]` markers on its arguments), so
/// it can be unit-tested directly. Next to it the macro generates the stage type named
/// after it in UpperCamelCase (`enrich` -> `Enrich`), with the function's visibility: a
/// unit struct when there is no `#[state]` argument, otherwise a struct built with
/// `new(state...)`. The type implements `Stage`: `call` calls the function, `options`
/// returns what the attribute declared. The runtime applies the policies from there;
/// settings given to the builder override the attribute's.
///
/// # The function
///
/// **Input.** Exactly one argument is the item:
///
/// - by value, `order: Order`: `Stage::In` is `Order`; with `retry`, `Order` must be
///   `Clone` (each attempt that may be followed by another gets a copy; the error points
///   at `retry` otherwise);
/// - by reference, `order: &Order`: `Stage::In` is still `Order`, and the function borrows
///   the item the framework keeps: the stage sets `Stage::BORROWS` and implements
///   `Stage::call_ref`, so every retry borrows the same item and nothing is cloned (a
///   `blocking` fn is the exception: its input moves to another thread). `&str` and
///   `&[T]` make `In` a `String` and a `Vec<T>`.
///
/// The input must be owned data (`Send + 'static`): no borrowed lifetimes inside.
///
/// **Context.** An argument of type `&Context` (in any position) receives the attempt's
/// `Context`: the stage's name, the attempt number.
///
/// **State.** Arguments marked `#[state]` are not part of the item:
///
/// - `#[state] db: &Db` is **shared state**, given once to `Enrich::new(db)` (as a `Db`
///   or an `Arc<Db>`; `&str` state takes a `String` or a `&str`), shared by every call
///   and kept across restarts. It must be `Send + Sync`.
/// - `#[state] seen: &mut Seen` is **per-stage mutable state**. `new` takes a factory
///   (`|| Seen::new()`, or `Seen::default`), which builds it once at construction and
///   again each time the stage restarts after a panic. The state is locked for a whole
///   call, so such a stage runs one item at a time. When every state argument is
///   mutable and `Default`, the stage implements `Default` too (`Count::default()`).
///   Per-stage state is lost on a restart: keep what must outlive the run (totals, a
///   summary) in shared state, as [below](#reading-results-out-of-a-stage).
///
/// **State that can fail to build.** The factory may also return `Result<S, E>` (with
/// `E` convertible into `BoxError`, as any `std::error::Error + Send + Sync` is):
/// `Store::new(|| Connection::open(&path))`. Such a factory runs when the pipeline
/// starts (`Stage::on_start`), not in `new`, and again on every restart. An error, or a
/// panic, in it fails the start, or the restart, and the pipeline stops with an error
/// that names the stage and the state (``building the state `conn` failed: ...``).
///
/// ```
/// use pipeline_core::prelude::*;
/// use pipeline_core::{Pipeline, sink, source};
///
/// # #[derive(Debug)] pub struct Connection;
/// # impl Connection {
/// #     fn open(url: &str) -> std::io::Result<Connection> {
/// #         Err(std::io::Error::other(format!("cannot reach {url}")))
/// #     }
/// #     fn write(&mut self, _: u64) {}
/// # }
/// #[stage]
/// async fn store(n: u64, #[state] conn: &mut Connection) -> u64 {
///     conn.write(n);
///     n
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let (out, _) = sink::collect();
/// let error = Pipeline::builder("load")
///     .source(source::iter(0..3u64))
///     .stage(Store::new(|| Connection::open("db:5432")))
///     .sink(out)
///     .run()
///     .await
///     .unwrap_err();
/// assert_eq!(error.failure.stage, "store");
/// assert!(error.failure.error.contains("cannot reach db:5432"));
/// # });
/// ```
///
/// **Return type.** The shape of the stage follows from it:
///
/// | returns | `Stage::Shape` | emits |
/// |---|---|---|
/// | `Result<T, E>` | `Map` | one `T`, or fails with `E` |
/// | `Result<Option<T>, E>` | `Filter` | the `T`, or nothing (the item is filtered) |
/// | `T` | `Map` | one `T`; `Stage::Error` is `Infallible` |
/// | `Option<T>` | `Filter` | the `T` or nothing; `Infallible` |
/// | with `flatten`: `I` or `Result<I, E>` | `FlatMap` | every item of `I: IntoIterator` |
///
/// `E` must implement `std::error::Error + Send + Sync + 'static`; write `Result<T, E>`
/// in full (the macro cannot see through aliases such as `io::Result<T>`).
///
/// **Plain `fn`.** A non-`async` function is accepted for short CPU work and runs on the
/// async worker that calls it. With `blocking` it runs on tokio's blocking pool instead
/// (`spawn_blocking`), for long computations or blocking I/O; a panic there is a panic of
/// the attempt, as for any stage. Either way a call runs to completion once started, so
/// `timeout` is rejected on a plain `fn`: it could never fire.
///
/// # Reading results out of a stage
///
/// A stage's outputs go downstream; an aggregate over the whole run (totals, counts, a
/// summary) lives in **shared state** the caller keeps a handle to: give `new` an `Arc`,
/// keep a clone, and read it after the run. Per-stage `&mut` state is the wrong place:
/// it is rebuilt, and its contents lost, whenever the stage restarts.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use pipeline_core::prelude::*;
/// use pipeline_core::{Pipeline, sink, source};
///
/// #[derive(Debug, Default)]
/// pub struct Totals {
///     count: u64,
///     sum: u64,
/// }
///
/// #[stage]
/// fn tally(n: u64, #[state] totals: &Mutex<Totals>) -> u64 {
///     let mut totals = totals.lock().unwrap();
///     totals.count += 1;
///     totals.sum += n;
///     n
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let totals = Arc::new(Mutex::new(Totals::default()));
/// let (out, _) = sink::collect();
/// Pipeline::builder("sum")
///     .source(source::iter(1..=4u64))
///     .stage(Tally::new(Arc::clone(&totals)))
///     .sink(out)
///     .run()
///     .await
///     .unwrap();
/// let totals = totals.lock().unwrap();
/// assert_eq!((totals.count, totals.sum), (4, 10));
/// # });
/// ```
///
/// # What is generated
///
/// For `#[stage(timeout = "2s")] async fn enrich(order: Order, #[state] db: &Db) ->
/// Result<Enriched, DbError>`, this (paths shortened; the real code names everything
/// through `pipeline_core::__private`, adds `where` clauses that check the types, and
/// keeps shared state behind a pointer whose thread safety is checked once, in `new`):
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use pipeline_core::prelude::*;
/// # use pipeline_core::StageOptions;
/// # pub struct Order; pub struct Enriched; pub struct Db;
/// # #[derive(Debug, thiserror::Error)] #[error("db")] pub struct DbError;
/// # async fn enrich(order: Order, db: &Db) -> Result<Enriched, DbError> { Ok(Enriched) }
/// pub struct Enrich {
///     db: Arc<Db>,
/// }
///
/// impl Enrich {
///     pub fn new(db: impl Into<Arc<Db>>) -> Self {
///         Enrich { db: db.into() }
///     }
/// }
///
/// impl Stage for Enrich {
///     type In = Order;
///     type Output = Enriched;
///     type Shape = Map;
///     type Error = DbError;
///
///     fn call(
///         &self,
///         item: Order,
///         _cx: &Context,
///     ) -> impl Future<Output = Result<Enriched, DbError>> + Send {
///         async move { enrich(item, &self.db).await }
///     }
///
///     fn options(&self) -> StageOptions {
///         let mut options = StageOptions::default();
///         options.name = Some("enrich".into());
///         options.timeout = Some(Duration::from_secs(2));
///         options
///     }
/// }
/// ```
///
/// A fallible stage also gets `is_permanent`: an error of type
/// `pipeline_core::policy::Fault<E>` says itself whether it is permanent (also behind a
/// type alias), `retry(when = ..)` marks the errors it rejects, any other error is
/// retryable. Per-stage state adds `on_start`, where a fallible factory builds the first
/// state, and `restart`, which rebuilds it. A `Debug` impl is generated too (unit structs derive `Debug`, `Clone`, `Copy` and
/// `Default`).
///
/// # Options
///
/// Each option fills one field of `StageOptions`; each
/// example below checks that the attribute and the hand-written value agree. Unset
/// options stay `None` (the runtime's defaults: concurrency 1, input edge of 1024 items,
/// `on_error = "dead_letter"`, no retry, no timeout, no breaker, no rate limit).
///
/// Durations are strings in [humantime]'s syntax: `"250ms"`, `"2s"`, `"1m 30s"`, `"1h"`,
/// `"7d"` (units `ns`, `us`, `ms`, `s`, `m`, `h`, `d`, `w`). Month and year units are
/// rejected: `M` is a month there, not a minute. Rates are `"N/s"`, `"N/m"`, `"N/h"`, or
/// `"N/<duration>"` such as `"10/100ms"`. Everything is checked at compile time.
///
/// ## `name`, `concurrency`, `ordered`, `buffer`, `timeout`
///
/// `name` (default: the function's name) is used in metrics, spans and dead letters.
/// `concurrency` is the number of items in flight in this stage. On a plain (CPU-bound)
/// `fn`, `concurrency` above 1 runs each call on a runtime worker task (a spawn per call,
/// panics still caught), so that many calls use that many cores of a multi-thread
/// runtime: measured 1.8x at `concurrency = 2` on 2 cores for ~20 µs calls
/// (`pipeline-bench --only cpu`); below a few microseconds per call the spawn costs more
/// than it gains, so keep cheap fns at concurrency 1. `ordered` keeps input
/// order at the output (it needs `concurrency` above 1; retries then stall the output
/// head-of-line). `buffer` is the capacity of the input edge, in items. `timeout` bounds
/// each attempt of an `async fn` (a plain `fn` cannot be cancelled, so `timeout` is
/// rejected there).
///
/// ```
/// # use std::time::Duration;
/// # use pipeline_core::prelude::*;
/// # use pipeline_core::StageOptions;
/// #[stage(name = "fetch-page", concurrency = 8, ordered, buffer = 256, timeout = "2s")]
/// async fn fetch(url: String) -> usize {
///     url.len()
/// }
///
/// let mut options = StageOptions::default();
/// options.name = Some("fetch-page".into());
/// options.concurrency = Some(8);
/// options.ordered = Some(true);
/// options.buffer = Some(256);
/// options.timeout = Some(Duration::from_secs(2));
/// assert_eq!(Fetch.options(), options);
/// ```
///
/// ## `retry(attempts, backoff, max_backoff, jitter, budget, budget_floor, when)`
///
/// `attempts` (required) counts every attempt, the first included. The rest default as
/// in `RetryOptions::new`: `backoff =
/// "100ms"` (doubled for each retry), `max_backoff = "10s"`, `jitter` on (`jitter =
/// false` turns it off), no `budget`. A `budget` is the share of recent first attempts
/// that may be retried, from `0.0` to `1.0`, shared by the stage's items, so a failing
/// dependency cannot cause a retry storm; `budget_floor` (default 10, only with a
/// `budget`) is the retries per second allowed whatever the share, so the odd failure is
/// still retried when traffic is low. Every error is retryable unless `when = predicate`
/// says otherwise: a function `fn(&E) -> bool` (or a closure) returning `true` for the
/// errors worth retrying; the others are permanent, which also keeps them out of the
/// breaker's failure count. A `Fault<E>` error (`pipeline_core::policy`) marks itself:
/// `Permanent(e)` is never retried, with or without `when`.
///
/// ```
/// # use std::time::Duration;
/// # use pipeline_core::prelude::*;
/// # use pipeline_core::options::RetryOptions;
/// # #[derive(Debug, thiserror::Error)] pub enum HttpError { #[error("timeout")] Timeout, #[error("404")] NotFound }
/// fn is_transient(error: &HttpError) -> bool {
///     matches!(error, HttpError::Timeout)
/// }
///
/// #[stage(retry(attempts = 5, backoff = "200ms", max_backoff = "5s", budget = 0.2,
///               budget_floor = 5, when = is_transient))]
/// async fn fetch(url: String) -> Result<usize, HttpError> {
///     Ok(url.len())
/// }
///
/// // Without the macro: this value, in `Stage::options` or on the builder
/// // (`.stage(Fetch).retry(retry)`).
/// let mut retry = RetryOptions::new(5);
/// retry.backoff = Duration::from_millis(200);
/// retry.max_backoff = Duration::from_secs(5);
/// retry.budget = Some(0.2);
/// retry.budget_floor = 5;
/// assert_eq!(Fetch.options().retry, Some(retry));
///
/// // `when` is, without the macro, `Stage::is_permanent`:
/// //     fn is_permanent(&self, error: &HttpError) -> bool { !is_transient(error) }
/// assert!(Fetch.is_permanent(&HttpError::NotFound));
/// assert!(!Fetch.is_permanent(&HttpError::Timeout));
/// ```
///
/// ## `breaker(failure_rate, slow_call_rate, slow_call, window, min_calls, open_for, half_open, mode)`
///
/// A circuit breaker after Resilience4j. Unset settings take
/// `BreakerOptions::default`; `breaker` alone
/// turns it on with all defaults. `window = 20` counts the last 20 calls; `window =
/// "30s"` the calls of the last 30 seconds. `mode = "wait"` (default) stops pulling input
/// while the breaker is open, so backpressure reaches the source and nothing is
/// dead-lettered for it; `mode = "fail_fast"` fails those attempts at once.
///
/// ```
/// # use std::time::Duration;
/// # use pipeline_core::prelude::*;
/// # use pipeline_core::options::{BreakerMode, BreakerOptions, Window};
/// #[stage(breaker(failure_rate = 0.5, window = 20, min_calls = 10, slow_call = "1s",
///                 open_for = "30s", half_open = 3, mode = "fail_fast"))]
/// async fn fetch(url: String) -> usize {
///     url.len()
/// }
///
/// let mut breaker = BreakerOptions::default();
/// breaker.failure_rate = 0.5;
/// breaker.window = Window::Count(20);
/// breaker.min_calls = 10;
/// breaker.slow_call = Some(Duration::from_secs(1));
/// breaker.open_for = Duration::from_secs(30);
/// breaker.half_open = 3;
/// breaker.mode = BreakerMode::FailFast;
/// assert_eq!(Fetch.options().breaker, Some(breaker));
/// ```
///
/// ## `rate`, `rate(limit, burst)`, `on_error`
///
/// `rate = "500/s"` limits calls per period, in bursts of up to the period's calls (500
/// at once). `rate(limit = "500/s", burst = 50)` also bounds the burst: at most 50 calls
/// at once, the rest spread over the period. `on_error` decides what happens to an item whose
/// attempts are exhausted: `"dead_letter"` (default), `"drop"` (counted), or `"fail"`
/// (the item fails and the pipeline shuts down).
///
/// ```
/// # use std::time::Duration;
/// # use pipeline_core::prelude::*;
/// # use pipeline_core::options::{OnError, RateOptions};
/// #[stage(rate = "500/s", on_error = "drop")]
/// async fn notify(user: u64) -> u64 {
///     user
/// }
///
/// #[stage(rate(limit = "500/s", burst = 50))]
/// async fn page(user: u64) -> u64 {
///     user
/// }
///
/// assert_eq!(Notify.options().rate, Some(RateOptions::new(500, Duration::from_secs(1))));
/// assert_eq!(Notify.options().on_error, Some(OnError::Drop));
/// // Without the macro, on the builder: `.stage(Page).rate(rate)`.
/// let rate = RateOptions::new(500, Duration::from_secs(1)).with_burst(50);
/// assert_eq!(Page.options().rate, Some(rate));
/// ```
///
/// ## `restart(max, within, backoff)`
///
/// Supervision of a stage with per-stage mutable state: after a panic the state is
/// rebuilt from its factory, waiting `backoff` (default none) first; more than `max`
/// restarts `within` the window stop the pipeline with an error naming the stage, and so
/// does a factory that fails or panics while rebuilding.
/// `restart` is only accepted on a stage with a `#[state] s: &mut S` argument: a panic in
/// any other stage costs one attempt of one item and there is nothing to rebuild.
///
/// ```
/// # use std::time::Duration;
/// # use pipeline_core::prelude::*;
/// # use pipeline_core::options::RestartOptions;
/// #[stage(restart(max = 3, within = "60s", backoff = "1s"))]
/// async fn dedup(id: u64, #[state] seen: &mut std::collections::HashSet<u64>) -> Option<u64> {
///     seen.insert(id).then_some(id)
/// }
///
/// let mut restart = RestartOptions::new(3, Duration::from_secs(60));
/// restart.backoff = Duration::from_secs(1);
/// let stage = Dedup::default(); // or Dedup::new(HashSet::new), any factory
/// assert_eq!(stage.options().restart, Some(restart));
/// ```
///
/// Without the macro, `restart` is `Stage::restart`, which the generated code
/// implements by rebuilding every per-stage state and returning the first factory error;
/// a fallible factory's first build is in `Stage::on_start`.
///
/// ## `blocking`, `flatten`, `crate`
///
/// These shape the generated code rather than the options. `blocking` (plain `fn` only)
/// runs each call on tokio's blocking pool; `timeout` cannot be combined with it, since a
/// blocking call cannot be cancelled and a retry would run beside the timed-out attempt.
/// `flatten` makes the stage a `FlatMap` over the returned `IntoIterator`. `crate =
/// path` names the core when it is renamed or re-exported (`crate = my_app::pipeline`).
///
/// ```
/// # use pipeline_core::prelude::*;
/// #[stage(blocking, flatten)]
/// fn tokenize(text: String) -> Vec<String> {
///     text.split_whitespace().map(str::to_owned).collect()
/// }
///
/// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
/// let words = Tokenize.call("a b".to_owned(), &Context::new("tokenize")).await;
/// assert_eq!(words.unwrap(), ["a", "b"]);
/// # });
/// ```
///
/// # Error messages
///
/// Every mistake is reported at once, on the token that is wrong, and the function is
/// still emitted, so the rest of the crate keeps compiling against it. What they mean:
///
/// | message starts with | cause and fix |
/// |---|---|
/// | ``unknown option `x` `` | a misspelled or unsupported option; the message lists the valid ones and suggests the closest |
/// | ``unknown `retry` setting `x` `` | the same, inside `retry(..)`, `breaker(..)`, `rate(..)` or `restart(..)` |
/// | ``` `budget` is a setting of `retry(...)` ``` | a setting written at the top level; move it inside the parentheses |
/// | ``duplicate option `x` `` | an option given twice; keep one |
/// | ``` `x` takes a value ``` / ``takes settings in parentheses`` / ``is a flag`` | the option's form is wrong (`timeout = "2s"`, `retry(attempts = 3)`, `ordered`) |
/// | ``invalid duration`` | not a humantime duration; write a number and a unit, `"250ms"` |
/// | ``` `M` in `"5M"` means months ``` / ``month units`` / ``year units`` | month and year units are rejected; write `m` for minutes, or days |
/// | ``invalid rate`` | write `"500/s"`, `"60/m"`, `"3600/h"` or `"10/100ms"` |
/// | ``` `rate` needs `limit` ``` | `rate(burst = N)` alone: add `limit = "500/s"` |
/// | ``` `budget_floor` has no effect without `budget` ``` | add `budget = 0.2`, or remove `budget_floor` |
/// | ``` `ordered` has no effect without `concurrency` above 1 ``` | add `concurrency = N` or remove `ordered` |
/// | ``` `blocking` is for a plain `fn` ``` | remove `blocking` from the `async fn` |
/// | ``` `timeout` cannot be used with `blocking` ``` | a blocking call cannot be cancelled; drop one of them |
/// | ``` `timeout` has no effect on a plain `fn` ``` | a plain call cannot be cancelled: remove `timeout`, or make the function `async` |
/// | ``` `restart` has no effect here ``` | the stage has no `&mut` state to rebuild |
/// | ``a stage with mutable state ... runs one item at a time`` | remove `concurrency`, or share the state as `&S` with interior locking |
/// | ``` `when` has no effect ``` | the function returns no `Result` |
/// | ``` `retry` needs `attempts` ``` / ``` `restart` needs `max` and `within` ``` | add the required settings |
/// | ``` `#[stage]` goes on a function with a body ``` | the attribute is on a `struct`, an `impl` or another item: put it on a function |
/// | ``` `#[stage]` goes on a free function, not a method ``` | move the function out of the `impl`; pass `self`'s data as `#[state]` |
/// | ``generic functions cannot be stages`` | write a non-generic function (it may call the generic one) |
/// | ``a stage takes exactly one input`` | mark extra arguments `#[state]`, or take a struct or tuple |
/// | ``a `#[state]` argument is a reference`` | write `&S` (shared) or `&mut S` (per-stage) |
/// | ``a stage input must be owned`` / ``a stage output must be owned`` | no borrowed lifetimes in items: `String`, not `Cow<'a, str>` |
/// | ``a stage function returns its output`` | add a return type |
/// | ``cannot see the error type of `io::Result<T>` `` | write `Result<T, io::Error>` in full |
/// | ``` `BoxError` does not implement `std::error::Error` ``` (or `String`, `anyhow::Error`) | use a concrete error type (an enum deriving `thiserror::Error`, or `pipeline_core::error::Message`) |
/// | ``a state factory returns `X`, which is not the state `S` `` / ``cannot build the state`` | give `new` a `Fn() -> S` or a `Fn() -> Result<S, E>` |
/// | ``the trait `std::error::Error` is not implemented for `E` `` | the error type must implement `std::error::Error + Send + Sync + 'static` |
/// | ``` `Rc<..>` cannot be sent between threads safely ``` (on an argument type) | the input or `&mut` state is not thread-safe: `Arc`, `Mutex`, owned data |
/// | ``the stage state `S` cannot be shared between threads`` | a `#[state] s: &S` that is not `Send + Sync`: `Mutex` instead of `RefCell`, atomics instead of `Cell`, `Arc` instead of `Rc` |
/// | ``` `T` is not iterable, so a `flatten` stage cannot emit its items ``` | return a `Vec<T>` or another `IntoIterator`, or remove `flatten` |
/// | ``future cannot be sent between threads safely`` (on the function's name) | a non-`Send` value is held across an `.await` in the body; the note shows which |
///
/// The type checks behind the last rows are `where` clauses on the generated impl; rustc
/// adds a "see issue #48214" hint to them, which can be ignored.
///
/// [humantime]: https://docs.rs/humantime
#[proc_macro_attribute]
pub fn stage(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::run(args.into(), input.into()).into()
}
