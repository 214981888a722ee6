//! The [`Stage`] trait: one async step of a pipeline.

use std::future::Future;

use crate::context::Context;
use crate::error::BoxError;
use crate::options::StageOptions;

/// One async processing step: takes an `In`, yields zero, one or many outputs, or fails.
///
/// A stage is called once per attempt of each item; the framework owns the item between
/// calls. What a successful call yields is described by [`Stage::Shape`]:
///
/// | `Shape` | `Output` | items emitted |
/// |---|---|---|
/// | [`Map`] | `T` | exactly one `T` |
/// | [`Filter`] | `Option<T>` | the `T`, or none (the item is *filtered*) |
/// | [`FlatMap`] | `I: IntoIterator<Item = T>` | every `T`, pulled as the downstream edge has room |
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use pipeline_core::prelude::*;
///
/// struct Double;
///
/// impl Stage for Double {
///     type In = u64;
///     type Output = u64;
///     type Shape = Map;
///     type Error = Infallible;
///
///     async fn call(&self, item: u64, _cx: &Context) -> Result<u64, Infallible> {
///         Ok(item * 2)
///     }
/// }
/// # let _ = Double;
/// ```
///
/// # Cancel safety
///
/// The future returned by [`call`](Stage::call) is dropped, unfinished, when its attempt
/// times out or when a pipeline is shut down past its deadline. Write stages so that a
/// dropped call leaves no half-done state behind (or make the effect idempotent).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pipeline stage",
    label = "this type does not implement `Stage`",
    note = "annotate an `async fn` with `#[stage]`, use `stage::map_fn` (or `filter_fn`, `flat_map_fn`), or implement `Stage` by hand"
)]
pub trait Stage: Send + Sync + 'static {
    /// The item this stage consumes.
    type In: Send + 'static;
    /// What one successful call returns; see [`Stage::Shape`].
    type Output: Send + 'static;
    /// How `Output` becomes items: [`Map`], [`Filter`] or [`FlatMap`].
    type Shape: Shape<Self::Output>;
    /// The error of a failed attempt.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Process one item (one attempt).
    fn call(
        &self,
        item: Self::In,
        cx: &Context,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;

    /// How a dead letter of this stage shows the failed input, when it should: the runtime
    /// then keeps a copy of each input while it is processed (one clone per item) and, if
    /// the item is dead-lettered, puts `f(&item)` in [`DeadLetter::item`](crate::DeadLetter::item).
    /// `None` (the default) keeps nothing and costs nothing.
    ///
    /// [`show_items_as_json`] and [`show_items_as_debug`] set it for any stage.
    const DEAD_LETTER_ITEM: Option<ShowFn<Self::In>> = None;

    /// Whether the stage only borrows its input ([`call_ref`](Self::call_ref)): a
    /// `#[stage]` fn taking `&T`. Then the runtime keeps the one item and every attempt
    /// borrows it: nothing is cloned for retries or dead letters. Such a stage's input
    /// must be `Sync` (its calls' futures hold a reference to it); set this only together
    /// with `call_ref`.
    const BORROWS: bool = false;

    /// How to copy an input for a second attempt (retries, a waiting breaker's probes) or
    /// for its dead letter, for a stage that takes its input by value: `Some(clone)`
    /// lets the policy engine retry it. The `#[stage]` macro sets it when `retry` is
    /// given (and the input is by value); the builder's [`retry`](crate::Builder::retry)
    /// supplies it too. `None` (the default) costs nothing and needs no `Clone`: a stage
    /// whose options ask for retries without a way to copy its input gets one attempt
    /// per item, and an error event at build time.
    const CLONE_IN: Option<CloneFn<Self::In>> = None;

    /// One attempt with a borrowed input. The runtime calls it instead of
    /// [`call`](Self::call) when [`BORROWS`](Self::BORROWS) is `true`. The default copies
    /// the input with [`CLONE_IN`](Self::CLONE_IN) and calls `call`.
    ///
    /// # Panics
    ///
    /// The default panics when there is no `CLONE_IN` (a stage that sets `BORROWS`
    /// without implementing `call_ref`); the panic is caught and fails that attempt.
    fn call_ref<'a>(
        &'a self,
        item: &'a Self::In,
        cx: &'a Context,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send + 'a {
        let copy = Self::CLONE_IN.map(|clone| clone(item));
        async move {
            match copy {
                Some(item) => self.call(item, cx).await,
                None => panic!(
                    "`Stage::BORROWS` is set but `call_ref` is not implemented and there is \
                     no `Stage::CLONE_IN`"
                ),
            }
        }
    }

    /// Whether `error` must not be retried. Permanent errors skip the remaining attempts
    /// and do not count as circuit-breaker failures. Default: every error is retryable.
    fn is_permanent(&self, error: &Self::Error) -> bool {
        let _ = error;
        false
    }

    /// Runs once when the stage's task starts, before its first item: open connections,
    /// warm caches. Default: nothing.
    ///
    /// # Errors
    ///
    /// An error (or a panic) fails the start: the pipeline stops with a failure naming
    /// the stage, and the items that reach the stage are marked `Failed`.
    fn on_start(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }

    /// Runs once when the stage's task ends, after its last item (its input closed and
    /// everything it emitted was sent): flush, close. Not run when the task is aborted by a
    /// shutdown past its deadline. Default: nothing.
    ///
    /// # Errors
    ///
    /// An error (or a panic) is a failure in the run's report, naming the stage.
    fn on_stop(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }

    /// Called by the policy engine after every call that panicked, before the stage is
    /// used again (so before the retry that follows the panic): rebuild per-stage mutable
    /// state here. Shared state given at construction survives. The restart limit
    /// ([`RestartOptions`](crate::options::RestartOptions)) counts once per item, however
    /// many of its attempts panicked.
    ///
    /// # Errors
    ///
    /// An error (or a panic) fails the restart: the pipeline stops with a failure naming
    /// the stage, as when the restart limit is exceeded.
    fn restart(&self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Options this stage declares for itself (the `#[stage]` macro fills them in).
    /// Builder settings override them.
    fn options(&self) -> StageOptions {
        StageOptions::default()
    }
}

/// Renders a stage input for its dead letter; see [`Stage::DEAD_LETTER_ITEM`].
pub type ShowFn<T> = fn(&T) -> Option<serde_json::Value>;

/// Copies a stage input for another attempt; see [`Stage::CLONE_IN`].
pub type CloneFn<T> = fn(&T) -> T;

/// An input a retry can copy: any `Clone` type. Retrying a stage that takes its input by
/// value needs one copy of the input per attempt that may be followed by another, so the
/// builder's [`retry`](crate::Builder::retry) (and `#[stage(retry(..))]` on a by-value
/// input) asks for this.
///
/// ```
/// fn retryable<T: pipeline_core::stage::RetryInput>() {}
/// retryable::<String>();
/// ```
#[diagnostic::on_unimplemented(
    message = "a retry of this stage needs to copy its input, but `{Self}` is not `Clone`",
    label = "this input is not `Clone`, so a retry cannot call the stage again with it",
    note = "derive or implement `Clone` for the input, wrap it in an `Arc`, or take it by reference (`&T`) in a `#[stage]` fn so every attempt borrows the one item"
)]
pub trait RetryInput: Clone {}
impl<T: Clone> RetryInput for T {}

/// `Clone::clone` for a [`RetryInput`], as a plain function pointer (what
/// [`Stage::CLONE_IN`] holds).
pub fn clone_input<T: RetryInput>(item: &T) -> T {
    item.clone()
}

/// A stage's default name: its type's name without module path or generics
/// (`my_app::Enrich<Db>` -> `Enrich`).
pub(crate) fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let head = full.split('<').next().unwrap_or(full);
    head.rsplit("::").next().unwrap_or(head)
}

/// The item type a stage emits downstream.
pub type Emitted<S> = <<S as Stage>::Shape as Shape<<S as Stage>::Output>>::Item;

/// How a stage's `Output` turns into emitted items. Implemented by [`Map`], [`Filter`] and
/// [`FlatMap`]; sealed.
pub trait Shape<O>: sealed::Sealed + Send + Sync + 'static {
    /// The emitted item type.
    type Item: Send + 'static;
    /// Whether one output can hold more than one item (flat-map), so the runtime must
    /// be ready to send part of them before pulling the rest.
    const MANY: bool = false;
    /// The iterator over emitted items.
    type Iter: Iterator<Item = Self::Item> + Send;
    /// Turns one output into its items.
    fn items(output: O) -> Self::Iter;
}

/// Shape of a stage that emits exactly one item per call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Map;
/// Shape of a stage returning `Option<T>`: `None` filters the item out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter;
/// Shape of a stage returning any `IntoIterator`: each element is emitted.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlatMap;

impl<T: Send + 'static> Shape<T> for Map {
    type Item = T;
    type Iter = std::iter::Once<T>;
    #[inline]
    fn items(output: T) -> Self::Iter {
        std::iter::once(output)
    }
}

impl<T: Send + 'static> Shape<Option<T>> for Filter {
    type Item = T;
    type Iter = std::option::IntoIter<T>;
    #[inline]
    fn items(output: Option<T>) -> Self::Iter {
        output.into_iter()
    }
}

impl<I> Shape<I> for FlatMap
where
    I: IntoIterator + Send + 'static,
    I::Item: Send + 'static,
    I::IntoIter: Send,
{
    type Item = I::Item;
    type Iter = I::IntoIter;
    const MANY: bool = true;
    #[inline]
    fn items(output: I) -> Self::Iter {
        output.into_iter()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_type_names() {
        struct Local;
        assert_eq!(super::short_type_name::<Local>(), "Local");
        assert_eq!(super::short_type_name::<Vec<u8>>(), "Vec");
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Map {}
    impl Sealed for super::Filter {}
    impl Sealed for super::FlatMap {}
}

/// A stage from an async closure returning `Result<T, E>`: one output per item ([`Map`]).
///
/// ```
/// use std::convert::Infallible;
/// let parse = pipeline_core::stage::map_fn("parse", |line: String| async move {
///     Ok::<_, std::num::ParseIntError>(line.trim().parse::<u64>()?)
/// });
/// # let _ = parse;
/// ```
pub fn map_fn<F, I, O, E, Fut>(name: &'static str, f: F) -> FnStage<F, Map, I>
where
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send,
{
    FnStage::new(name, f)
}

/// A stage from an async closure returning `Result<Option<T>, E>`: `None` filters ([`Filter`]).
///
/// ```
/// let evens = pipeline_core::stage::filter_fn("evens", |n: u64| async move {
///     Ok::<_, std::convert::Infallible>((n % 2 == 0).then_some(n))
/// });
/// # let _ = evens;
/// ```
pub fn filter_fn<F, I, O, E, Fut>(name: &'static str, f: F) -> FnStage<F, Filter, I>
where
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<O>, E>> + Send,
{
    FnStage::new(name, f)
}

/// A stage from an async closure returning `Result<impl IntoIterator, E>`: each element is
/// emitted ([`FlatMap`]).
///
/// ```
/// let words = pipeline_core::stage::flat_map_fn("words", |line: String| async move {
///     Ok::<_, std::convert::Infallible>(
///         line.split_whitespace().map(str::to_owned).collect::<Vec<_>>(),
///     )
/// });
/// # let _ = words;
/// ```
pub fn flat_map_fn<F, I, O, E, Fut>(name: &'static str, f: F) -> FnStage<F, FlatMap, I>
where
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send,
{
    FnStage::new(name, f)
}

/// A stage made from a closure; see [`map_fn`], [`filter_fn`] and [`flat_map_fn`].
///
/// A closure returning [`Fault`](crate::policy::Fault) decides per error whether it is
/// permanent (`Err(Permanent(e))?` is not retried), as a `#[stage]` fn does;
/// [`retry_when`](Self::retry_when) gives a predicate over its own error type.
pub struct FnStage<F, K, I> {
    name: &'static str,
    f: F,
    when: Option<crate::options::RetryWhen>,
    _shape: std::marker::PhantomData<fn(I) -> K>,
}

impl<F, K, I> FnStage<F, K, I> {
    fn new(name: &'static str, f: F) -> Self {
        FnStage {
            name,
            f,
            when: None,
            _shape: std::marker::PhantomData,
        }
    }

    /// Retries only the errors `pred` accepts; the others are permanent (not retried,
    /// not counted by the breaker), like `#[stage(retry(when = pred))]`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use pipeline_core::options::RetryOptions;
    /// use pipeline_core::prelude::*;
    ///
    /// let fetch = stage::map_fn("fetch", |n: u64| async move {
    ///     Err::<u64, _>(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{n}")))
    /// })
    /// .retry_when(|e: &std::io::Error| e.kind() != std::io::ErrorKind::NotFound);
    /// let (dead, letters) = sink::collect();
    /// Pipeline::builder("when")
    ///     .source(source::iter([1u64]))
    ///     .stage(fetch)
    ///     .retry(RetryOptions::new(5))
    ///     .sink(sink::collect().0)
    ///     .dead_letter(dead)
    ///     .run()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(letters.take()[0].attempts, 1); // `NotFound` is not retried
    /// # }
    /// ```
    #[must_use]
    pub fn retry_when<O, E, Fut>(
        mut self,
        pred: impl Fn(&E) -> bool + Send + Sync + 'static,
    ) -> Self
    where
        F: Fn(I) -> Fut,
        Fut: Future<Output = Result<O, E>>,
        E: std::error::Error + 'static,
    {
        self.when = Some(crate::options::RetryWhen::new(move |e| {
            e.downcast_ref::<E>().is_none_or(&pred)
        }));
        self
    }
}

impl<F, K, I> std::fmt::Debug for FnStage<F, K, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnStage")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<F, K, I, O, E, Fut> Stage for FnStage<F, K, I>
where
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send,
    K: Shape<O>,
    I: Send + 'static,
    O: Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    type In = I;
    type Output = O;
    type Shape = K;
    type Error = E;

    fn call(&self, item: I, _cx: &Context) -> impl Future<Output = Result<O, E>> + Send {
        (self.f)(item)
    }

    fn is_permanent(&self, error: &E) -> bool {
        self.when.as_ref().is_some_and(|when| !when.accepts(error))
    }

    fn options(&self) -> StageOptions {
        StageOptions {
            name: Some(self.name.into()),
            ..StageOptions::default()
        }
    }
}

/// A stage whose dead letters carry the failed input as JSON.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use pipeline_core::prelude::*;
///
/// let parse = stage::show_items_as_json(stage::map_fn("parse", |s: String| async move {
///     s.parse::<u64>()
/// }));
/// let (dead, letters) = sink::collect();
/// Pipeline::builder("json")
///     .source(source::iter(["12".to_string(), "x".to_string()]))
///     .stage(parse)
///     .sink(sink::collect().0)
///     .dead_letter(dead)
///     .run()
///     .await
///     .unwrap();
/// assert_eq!(letters.take()[0].item, Some(serde_json::json!("x")));
/// # }
/// ```
pub fn show_items_as_json<S>(stage: S) -> ShowItems<S, AsJson>
where
    S: Stage,
    S::In: serde::Serialize + Clone,
{
    ShowItems {
        stage,
        _how: std::marker::PhantomData,
    }
}

/// A stage whose dead letters carry the failed input's `Debug` text.
///
/// ```
/// let stage = pipeline_core::stage::show_items_as_debug(pipeline_core::stage::map_fn(
///     "id",
///     |n: u64| async move { Ok::<_, std::convert::Infallible>(n) },
/// ));
/// # let _ = stage;
/// ```
pub fn show_items_as_debug<S>(stage: S) -> ShowItems<S, AsDebug>
where
    S: Stage,
    S::In: std::fmt::Debug + Clone,
{
    ShowItems {
        stage,
        _how: std::marker::PhantomData,
    }
}

/// See [`show_items_as_json`] and [`show_items_as_debug`]. The runtime keeps a copy of
/// each input while it is processed (one clone per item; none for a stage that borrows
/// its input), so the input must be `Clone`.
pub struct ShowItems<S, How> {
    stage: S,
    _how: std::marker::PhantomData<fn() -> How>,
}

impl<S: std::fmt::Debug, How> std::fmt::Debug for ShowItems<S, How> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ShowItems").field(&self.stage).finish()
    }
}

/// Dead letters show items as JSON.
#[derive(Debug)]
pub enum AsJson {}
/// Dead letters show items as their `Debug` text.
#[derive(Debug)]
pub enum AsDebug {}

/// How [`ShowItems`] renders an item.
pub trait ShowItem<T>: Send + Sync + 'static {
    /// The rendering.
    fn show(item: &T) -> Option<serde_json::Value>;
}

impl<T: serde::Serialize> ShowItem<T> for AsJson {
    fn show(item: &T) -> Option<serde_json::Value> {
        serde_json::to_value(item).ok()
    }
}

impl<T: std::fmt::Debug> ShowItem<T> for AsDebug {
    fn show(item: &T) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(format!("{item:?}")))
    }
}

impl<S: Stage, How: ShowItem<S::In>> Stage for ShowItems<S, How>
where
    S::In: Clone,
{
    type In = S::In;
    type Output = S::Output;
    type Shape = S::Shape;
    type Error = S::Error;

    const DEAD_LETTER_ITEM: Option<ShowFn<Self::In>> = Some(How::show);
    const BORROWS: bool = S::BORROWS;
    const CLONE_IN: Option<CloneFn<Self::In>> = Some(<S::In as Clone>::clone);

    fn call(
        &self,
        item: S::In,
        cx: &Context,
    ) -> impl Future<Output = Result<S::Output, S::Error>> + Send {
        self.stage.call(item, cx)
    }

    fn call_ref<'a>(
        &'a self,
        item: &'a S::In,
        cx: &'a Context,
    ) -> impl Future<Output = Result<S::Output, S::Error>> + Send + 'a {
        self.stage.call_ref(item, cx)
    }

    fn is_permanent(&self, error: &S::Error) -> bool {
        self.stage.is_permanent(error)
    }

    fn on_start(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        self.stage.on_start()
    }

    fn on_stop(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        self.stage.on_stop()
    }

    fn restart(&self) -> Result<(), BoxError> {
        self.stage.restart()
    }

    fn options(&self) -> StageOptions {
        self.stage.options()
    }
}
