//! The typed builder: `Pipeline::builder(name).source(..).stage(..).sink(..)`.
//!
//! Each element is kept pending until the next one is added, so settings written after it
//! (`.stage(Parse).concurrency(4)`) still apply; the chain is wired backwards from the
//! sink when the pipeline is built. Every stage is erased into a task once, at build time,
//! so the builder's type is `Builder<Out, LastIn>` whatever the chain's length (`LastIn`,
//! the input of the stage added last, lets [`Builder::retry`] ask for `Clone` only where a
//! retry needs a copy of the input).

use std::any::Any;
use std::borrow::Cow;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::handle::DEFAULT_SHUTDOWN_DEADLINE;
use super::runner::StageTask;
use super::tasks::{self, SinkRole};
use super::{Control, Core, DEFAULT_CAPACITY, MAX_BATCH, Row, Task};
use crate::dead_letter::DeadLetter;
use crate::edge::{EdgeRx, EdgeTx, edge};
use crate::graph::Graph;
use crate::options::{
    BreakerOptions, OnError, RateOptions, RestartOptions, RetryOptions, StageOptions, WhenFull,
};
use crate::policy::Policies;
use crate::sink::{self, Sink};
use crate::source::{self, Source};
use crate::stage::{Emitted, RetryInput, Stage};
use crate::stats::{Counters, Kind};

/// Wires the pending element to the edge it sends into; returns the node ids feeding it.
/// Wires the sink (the last element) and everything upstream of it.
type Finish = Box<dyn FnOnce(&mut Core, StageOptions) + Send>;

/// Sets up the dead-letter sink's task.
type DeadLetterSetup = Box<dyn FnOnce(&mut Core) + Send>;

type Pending<T> = Box<dyn FnOnce(&mut Core, StageOptions, EdgeTx<T>) -> Vec<usize> + Send>;

/// Entry point: `Pipeline::builder(name)`, and a built pipeline ready to run.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::convert::Infallible;
/// use pipeline_core::prelude::*;
///
/// let (sink, out) = sink::collect();
/// let report = Pipeline::builder("demo")
///     .source(source::iter(1..=5u64))
///     .stage_fn("square", |n: u64| async move { Ok::<_, Infallible>(n * n) })
///     .sink(sink)
///     .run()
///     .await
///     .unwrap();
/// assert_eq!(out.take(), vec![1, 4, 9, 16, 25]);
/// assert_eq!(report.delivered, 5);
/// # }
/// ```
pub struct Pipeline {
    pub(crate) core: Core,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.core.control.name)
            .field("tasks", &self.core.tasks.len())
            .finish()
    }
}

impl Pipeline {
    /// Starts a pipeline called `name` (used in metrics, spans and reports).
    pub fn builder(name: impl Into<String>) -> PipelineBuilder {
        let name = name.into();
        let (dead_tx, dead_rx) = edge(&name, "dead_letter", DEFAULT_CAPACITY, WhenFull::Block);
        let mut core = Core {
            control: Arc::new(Control::new(name, DEFAULT_SHUTDOWN_DEADLINE)),
            tasks: Vec::new(),
            graph: Graph::default(),
            rows: Vec::new(),
            dead_tx,
            dead_rx: Some(dead_rx),
            ingest: None,
            copies: std::collections::HashMap::new(),
        };
        // Node 0 is the dead-letter sink; its task is made by `build`.
        core.reserve("dead_letter", Kind::DeadLetter);
        PipelineBuilder { core }
    }

    /// The topology, to render with [`Graph::to_mermaid`] or [`Graph::to_dot`].
    pub fn graph(&self) -> &Graph {
        &self.core.graph
    }
}

impl Core {
    /// Reserves a node (and its stats row) in build order.
    fn reserve(&mut self, name: &str, kind: Kind) -> usize {
        self.rows.push(None);
        self.graph.node(name, kind)
    }

    fn counters(&self, name: &str, kind: Kind, concurrency: usize) -> Arc<Counters> {
        Arc::new(Counters::new(&self.control.name, name, kind, concurrency))
    }

    /// An input edge for `node`, fed by whatever `upstream` wires into it.
    fn input<T: Send + 'static>(
        &mut self,
        node: usize,
        name: &str,
        capacity: usize,
        when_full: WhenFull,
        upstream: impl FnOnce(&mut Core, EdgeTx<T>) -> Vec<usize>,
    ) -> crate::edge::EdgeRx<T> {
        let (mut tx, rx) = edge(&self.control.name, name, capacity, when_full);
        if when_full == WhenFull::DeadLetter {
            tx.set_overflow(self.dead_tx.clone());
        }
        for from in upstream(self, tx) {
            self.graph
                .edge(from, node, capacity, when_full_name(when_full));
        }
        rx
    }
}

impl Core {
    /// Wires element `node` named `name`: its input edge fed by `upstream`, its counters
    /// and its stats row.
    #[allow(clippy::too_many_arguments)]
    fn element<T: Send + 'static>(
        &mut self,
        node: usize,
        name: &str,
        kind: Kind,
        concurrency: usize,
        capacity: usize,
        when_full: WhenFull,
        upstream: impl FnOnce(&mut Core, EdgeTx<T>) -> Vec<usize>,
    ) -> (EdgeRx<T>, Arc<Counters>) {
        self.graph.rename(node, name);
        let rx = self.input(node, name, capacity, when_full, upstream);
        let counters = self.counters(name, kind, concurrency);
        if let Some(row) = self.rows.get_mut(node) {
            *row = Some(Row::new(Arc::clone(&counters), Some(rx.probe())));
        }
        (rx, counters)
    }
}

impl Core {
    /// What a router does with an item its predicate or key fn panicked on.
    fn reject(&self, settings: &StageOptions, counters: Arc<Counters>) -> tasks::Reject {
        tasks::Reject {
            on_error: settings.on_error.unwrap_or_default(),
            dead_tx: self.dead_tx.clone(),
            control: Arc::clone(&self.control),
            counters,
        }
    }
}

fn when_full_name(w: WhenFull) -> &'static str {
    match w {
        WhenFull::Block => "block",
        WhenFull::DropNewest => "drop_newest",
        WhenFull::DropOldest => "drop_oldest",
        WhenFull::DeadLetter => "dead_letter",
    }
}

/// A pipeline without a source yet.
pub struct PipelineBuilder {
    core: Core,
}

impl std::fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("core", &self.core)
            .finish()
    }
}

fn source_link<S: Source>(node: usize, source: S) -> Pending<S::Item> {
    Box::new(
        move |core: &mut Core, settings: StageOptions, tx: EdgeTx<S::Item>| {
            let name = source.name().to_owned();
            core.graph.rename(node, &name);
            let counters = core.counters(&name, Kind::Source, 1);
            let mut row = Row::new(Arc::clone(&counters), None);
            row.backlog = source.backlog();
            if let Some(backlog) = &row.backlog {
                backlog.bind(&core.control.name, &name);
            }
            core.rows[node] = Some(row);
            let max = tx.capacity().min(MAX_BATCH);
            let control = Arc::clone(&core.control);
            let mut task = Task::new(
                name,
                tasks::source(source, tx, max, settings.restart, control, counters),
            );
            task.source = true;
            core.tasks.push(task);
            vec![node]
        },
    )
}

impl PipelineBuilder {
    /// Reads items from `source`.
    pub fn source<S: Source>(mut self, source: S) -> Builder<S::Item> {
        let node = self.core.reserve("source", Kind::Source);
        Builder::new(self.core, source_link(node, source))
    }

    /// Reads items sent through an [`Ingest`](crate::source::Ingest) handle, which
    /// [`PipelineHandle::ingest`](crate::PipelineHandle::ingest) hands out once spawned.
    /// The source ends when every handle is dropped (the pipeline's own included: it
    /// goes with the `PipelineHandle`) or at shutdown.
    ///
    /// `options` is the buffer size or [`IngestOptions`](crate::source::IngestOptions)
    /// with an admission bound (`max_in_flight`).
    pub fn ingest<T: Send + 'static>(
        mut self,
        options: impl Into<source::IngestOptions>,
    ) -> Builder<T> {
        let (ingest, source) = source::ingest::<T>(options);
        self.core.ingest = Some(Box::new(ingest) as Box<dyn Any + Send + Sync>);
        self.source(source)
    }
}

/// A pipeline whose items are `T` at its current end. Add stages, routing and a sink.
///
/// Settings methods ([`concurrency`](Self::concurrency), [`buffer`](Self::buffer),
/// [`timeout`](Self::timeout), ...) apply to the element added last and override what the
/// stage declares itself.
///
/// `L` is the input type of the stage added last (`T` after anything else), so that
/// [`retry`](Self::retry) can ask for `L: Clone`: items themselves need only
/// `Send + 'static`.
#[must_use = "a builder does nothing until it has a sink and is run"]
pub struct Builder<T, L = T> {
    core: Core,
    pending: Pending<T>,
    settings: StageOptions,
    /// The node of the stage added last, if the element added last is a stage.
    last: Option<usize>,
    _last_in: PhantomData<fn() -> L>,
}

impl<T, L> std::fmt::Debug for Builder<T, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder").field("core", &self.core).finish()
    }
}

impl<T: Send + 'static> Builder<T> {
    fn new(core: Core, pending: Pending<T>) -> Self {
        Builder {
            core,
            pending,
            settings: StageOptions::default(),
            last: None,
            _last_in: PhantomData,
        }
    }

    /// A builder whose first element's input edge is handed to `slot` (a branch or a lane
    /// starting at router `node`).
    fn entry(core: Core, node: usize, slot: &Slot<T>) -> Builder<T> {
        let fill = Arc::clone(slot);
        Builder::new(
            core,
            Box::new(
                move |_core: &mut Core, _settings: StageOptions, tx: EdgeTx<T>| {
                    put_slot(&fill, tx);
                    vec![node]
                },
            ),
        )
    }
}

impl<T: Send + 'static, L: 'static> Builder<T, L> {
    /// Closes the pending element over its settings.
    fn upstream(self) -> (Core, impl FnOnce(&mut Core, EdgeTx<T>) -> Vec<usize> + Send) {
        let Builder {
            core,
            pending,
            settings,
            ..
        } = self;
        (core, move |core: &mut Core, tx: EdgeTx<T>| {
            pending(core, settings, tx)
        })
    }

    /// Adds a stage. Its input type must be `T`; the builder continues with what it emits.
    ///
    /// The stage runs inside the policies its options declare (timeout, retry, breaker,
    /// rate limit; panics are always caught), in the fixed order of [`crate::policy`].
    /// Items need only be `Send + 'static`. A retry calls the stage again with the same
    /// input: a stage that borrows its input ([`Stage::BORROWS`], a `#[stage]` fn taking
    /// `&T`, whose input is then `Sync`) lends the one item to every attempt; any other
    /// is given a copy per attempt that may be followed by another, which is why
    /// [`retry`](Self::retry) asks for `Clone` (as `#[stage(retry(..))]` does on a
    /// by-value input).
    pub fn stage<S: Stage<In = T>>(mut self, stage: S) -> Builder<Emitted<S>, T> {
        let node = self.core.reserve("stage", Kind::Stage);
        let (core, upstream) = self.upstream();
        let pending: Pending<Emitted<S>> = Box::new(move |core, settings, tx| {
            let mut opts = settings.or(stage.options());
            let name: Arc<str> = match &opts.name {
                Some(n) => Arc::from(&**n),
                None => Arc::from(crate::stage::short_type_name::<S>()),
            };
            // One name for the stage's rows, spans and every metric label, policies' too.
            opts.name = Some(name.to_string().into());
            let concurrency = opts.concurrency.unwrap_or(1).max(1);
            let (rx, counters) = core.element(
                node,
                &name,
                Kind::Stage,
                concurrency,
                opts.buffer.unwrap_or(DEFAULT_CAPACITY),
                opts.when_full.unwrap_or_default(),
                upstream,
            );
            // The builder's `retry` left a copy function for this node.
            let copy = core
                .copies
                .remove(&node)
                .and_then(|copy| copy.downcast::<crate::stage::CloneFn<S::In>>().ok())
                .map(|copy| *copy);
            let stage = Policies::build(stage, &opts, copy);
            if let Some(Some(row)) = core.rows.get_mut(node) {
                row.policy = Some(Arc::clone(stage.counters()));
                row.breaker = stage.breaker().cloned();
            }
            let task = StageTask {
                stage,
                name: Arc::clone(&name),
                tx,
                dead_tx: core.dead_tx.clone(),
                concurrency,
                ordered: opts.ordered.unwrap_or(false),
                on_error: opts.on_error.unwrap_or_default(),
                counters,
                control: Arc::clone(&core.control),
            };
            core.tasks.push(Task::new(name.to_string(), task.run(rx)));
            vec![node]
        });
        let mut next = Builder::new(core, pending);
        next.last = Some(node);
        Builder {
            core: next.core,
            pending: next.pending,
            settings: next.settings,
            last: next.last,
            _last_in: PhantomData,
        }
    }

    /// Adds a stage from an async closure with one output per item; see
    /// [`stage::map_fn`](crate::stage::map_fn).
    pub fn stage_fn<F, O, E, Fut>(self, name: &'static str, f: F) -> Builder<O, T>
    where
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send,
        O: Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        self.stage(crate::stage::map_fn(name, f))
    }

    /// Also reads from `source`: its items join this stream.
    pub fn merge<S: Source<Item = T>>(mut self, source: S) -> Builder<T> {
        let node = self.core.reserve("source", Kind::Source);
        let other = source_link(node, source);
        let (core, upstream) = self.upstream();
        let pending: Pending<T> = Box::new(move |core, settings, tx| {
            let mut from = upstream(core, tx.clone());
            from.extend(other(core, settings, tx));
            from
        });
        Builder::new(core, pending)
    }

    /// Copies every item into `branch` (which must end in a sink) and continues with the
    /// items here. The branch has its own bounded edges: by default (`Block`) the slower
    /// side sets the pace; give the branch's first element a
    /// [`when_full`](Self::when_full) policy to keep it from stalling the rest.
    ///
    /// An item's outcome is the worst over both sides. `.buffer(n)` / `.when_full(p)`
    /// right after `tee` set the fan-out's own input edge (default 256 items, `Block`).
    pub fn tee(mut self, branch: impl FnOnce(Builder<T>) -> Ready) -> Builder<T>
    where
        T: Clone,
    {
        let node = self.core.reserve("tee", Kind::Router);
        let (core, upstream) = self.upstream();
        let (core, branch_tx) = split_off(core, node, branch);
        let pending: Pending<T> = Box::new(move |core, settings, tx| {
            let (rx, counters) = core.element(
                node,
                "tee",
                Kind::Router,
                1,
                settings.buffer.unwrap_or(MAX_BATCH),
                settings.when_full.unwrap_or_default(),
                upstream,
            );
            let outputs: Vec<EdgeTx<T>> = take_slot(&branch_tx).into_iter().chain([tx]).collect();
            core.tasks
                .push(Task::new("tee", tasks::tee(rx, outputs, counters)));
            vec![node]
        });
        Builder::new(core, pending)
    }

    /// Sends the items for which `pred` is true into `branch` (which must end in a sink);
    /// the rest continue here. `.buffer(n)` / `.when_full(p)` right after `route` set the
    /// router's input edge (default 256 items, `Block`); `.on_error(..)` there says what
    /// happens to an item the predicate panicked on (default: dead-lettered).
    pub fn route(
        mut self,
        pred: impl Fn(&T) -> bool + Send + 'static,
        branch: impl FnOnce(Builder<T>) -> Ready,
    ) -> Builder<T> {
        let node = self.core.reserve("route", Kind::Router);
        let (core, upstream) = self.upstream();
        let (core, branch_tx) = split_off(core, node, branch);
        let pending: Pending<T> = Box::new(move |core, settings, tx| {
            let (rx, counters) = core.element(
                node,
                "route",
                Kind::Router,
                1,
                settings.buffer.unwrap_or(MAX_BATCH),
                settings.when_full.unwrap_or_default(),
                upstream,
            );
            if let Some(matched) = take_slot(&branch_tx) {
                let reject = core.reject(&settings, counters);
                core.tasks.push(Task::new(
                    "route",
                    tasks::route(rx, pred, matched, tx, reject),
                ));
            }
            vec![node]
        });
        Builder::new(core, pending)
    }

    /// Splits the stream into `lanes` lanes by `key`: items with equal keys take the same
    /// lane, so each lane keeps their order (with ordered or single-concurrency stages).
    /// `lane` builds each lane's stages; the lanes join again after it. Settings right
    /// after `partition_by` (`.concurrency(n)`, `.buffer(n)`, ...) apply to the last
    /// element of every lane; the partitioner's own input edge holds 256 items and blocks
    /// when full. An item whose key fn panics is dead-lettered.
    pub fn partition_by<K, U, V>(
        mut self,
        lanes: usize,
        key: impl Fn(&T) -> K + Send + 'static,
        lane: impl Fn(Builder<T>) -> Builder<U, V>,
    ) -> Builder<U>
    where
        K: Hash + 'static,
        U: Send + 'static,
    {
        let node = self.core.reserve("partition", Kind::Router);
        let (mut core, upstream) = self.upstream();
        let mut slots = Vec::new();
        let mut lane_ends: Vec<(Pending<U>, StageOptions)> = Vec::new();
        for _ in 0..lanes.max(1) {
            let slot: Slot<T> = Arc::new(Mutex::new(None));
            let end = lane(Builder::entry(core, node, &slot));
            core = end.core;
            lane_ends.push((end.pending, end.settings));
            slots.push(slot);
        }
        let pending: Pending<U> = Box::new(move |core, settings, tx| {
            let mut from = Vec::new();
            for (pending, own) in lane_ends {
                from.extend(pending(core, own.or(settings.clone()), tx.clone()));
            }
            let txs: Vec<EdgeTx<T>> = slots.iter().filter_map(take_slot).collect();
            let (rx, counters) = core.element(
                node,
                "partition",
                Kind::Router,
                1,
                MAX_BATCH,
                WhenFull::Block,
                upstream,
            );
            let reject = core.reject(&StageOptions::default(), counters);
            core.tasks.push(Task::new(
                "partition",
                tasks::partition(rx, key, txs, reject),
            ));
            from
        });
        Builder::new(core, pending)
    }

    /// Groups items into `Vec`s of up to `size`, emitted when full or `within` after a
    /// group's first item. Every member of a group takes the group's outcome.
    pub fn batch(mut self, size: usize, within: Duration) -> Builder<Vec<T>> {
        let node = self.core.reserve("batch", Kind::Router);
        let (core, upstream) = self.upstream();
        let pending: Pending<Vec<T>> = Box::new(move |core, settings, tx| {
            let name = settings.name.as_deref().unwrap_or("batch").to_owned();
            let (rx, counters) = core.element(
                node,
                &name,
                Kind::Router,
                size,
                settings.buffer.unwrap_or(DEFAULT_CAPACITY),
                settings.when_full.unwrap_or_default(),
                upstream,
            );
            core.tasks.push(Task::new(
                name,
                tasks::batch(rx, tx, size, within, counters),
            ));
            vec![node]
        });
        Builder::new(core, pending)
    }

    /// Ends the chain in `sink`.
    pub fn sink<K: Sink<Item = T>>(mut self, sink: K) -> Ready {
        let node = self.core.reserve("sink", Kind::Sink);
        let (core, upstream) = self.upstream();
        let finish: Finish = Box::new(move |core, settings| {
            let name = settings.name.as_deref().unwrap_or(sink.name()).to_owned();
            let (rx, counters) = core.element(
                node,
                &name,
                Kind::Sink,
                1,
                settings.buffer.unwrap_or(DEFAULT_CAPACITY),
                settings.when_full.unwrap_or_default(),
                upstream,
            );
            let dead_tx = Some(core.dead_tx.clone());
            core.tasks.push(Task::new(
                name,
                tasks::sink(
                    sink,
                    rx,
                    dead_tx,
                    SinkRole::Output,
                    Arc::clone(&core.control),
                    counters,
                ),
            ));
        });
        Ready {
            core,
            finish,
            settings: StageOptions::default(),
            dead: None,
        }
    }

    /// Not callable: a pipeline needs a sink first. Present so that `.run()` on a chain
    /// without one says so ("this pipeline has no sink yet") instead of "no method".
    pub fn run(self) -> impl Future<Output = Result<super::RunReport, super::PipelineError>>
    where
        Self: HasSink,
    {
        self.into_ready().run()
    }

    /// Not callable: a pipeline needs a sink first (see [`run`](Self::run)).
    pub fn spawn(self) -> super::PipelineHandle
    where
        Self: HasSink,
    {
        self.into_ready().spawn()
    }

    /// Names the element added last.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.settings.name = Some(name.into());
        self
    }

    /// Items in flight inside the stage added last.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.settings.concurrency = Some(n);
        self
    }

    /// Keeps input order at the output of the stage added last.
    pub fn ordered(mut self) -> Self {
        self.settings.ordered = Some(true);
        self
    }

    /// Capacity of the input edge of the element added last, in items.
    pub fn buffer(mut self, items: usize) -> Self {
        self.settings.buffer = Some(items);
        self
    }

    /// Overflow policy of the input edge of the element added last.
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.settings.when_full = Some(policy);
        self
    }

    /// What happens to items whose attempts are exhausted in the stage added last.
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.settings.on_error = Some(on_error);
        self
    }

    /// Per-attempt timeout of the stage added last.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.settings.timeout = Some(after);
        self
    }

    /// Retries of the stage added last. A retry calls the stage again with a copy of its
    /// input, so the stage's input `L` must be `Clone` (a `#[stage]` fn that borrows its
    /// input needs no copy: give it `retry(..)` in its attribute, or set
    /// [`StageOptions::retry`] through [`options`](Self::options)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use pipeline_core::options::RetryOptions;
    /// use pipeline_core::prelude::*;
    ///
    /// let flaky = std::sync::atomic::AtomicU32::new(0);
    /// let (sink, out) = sink::collect();
    /// Pipeline::builder("retry")
    ///     .source(source::iter([String::from("a")]))
    ///     .stage_fn("flaky", move |s: String| {
    ///         let first = flaky.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0;
    ///         async move { if first { Err(std::io::Error::other("once")) } else { Ok(s) } }
    ///     })
    ///     .retry(RetryOptions::new(2))
    ///     .sink(sink)
    ///     .run()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(out.take(), ["a"]);
    /// # }
    /// ```
    pub fn retry(mut self, retry: RetryOptions) -> Self
    where
        L: RetryInput,
    {
        self.settings.retry = Some(retry);
        if let Some(node) = self.last {
            let copy: crate::stage::CloneFn<L> = crate::stage::clone_input::<L>;
            self.core.copies.insert(node, Box::new(copy));
        }
        self
    }

    /// Circuit breaker of the stage added last.
    pub fn breaker(mut self, breaker: BreakerOptions) -> Self {
        self.settings.breaker = Some(breaker);
        self
    }

    /// Rate limit of the stage added last.
    pub fn rate(mut self, rate: RateOptions) -> Self {
        self.settings.rate = Some(rate);
        self
    }

    /// Supervision of the stage added last: how often items may panic it before the
    /// pipeline stops (its state is rebuilt after every panicking call, before the
    /// retry that follows).
    pub fn restart(mut self, restart: RestartOptions) -> Self {
        self.settings.restart = Some(restart);
        self
    }

    /// Every setting at once for the element added last; fields left `None` keep
    /// earlier settings.
    pub fn options(mut self, options: StageOptions) -> Self {
        self.settings = options.or(self.settings);
        self
    }
}

/// Implemented by no builder: it marks [`Builder::run`] and [`Builder::spawn`] as needing
/// a sink, with a message that says so.
#[diagnostic::on_unimplemented(
    message = "this pipeline has no sink yet",
    label = "`run` and `spawn` need a sink",
    note = "end the chain with `.sink(..)` (for example `.sink(sink::collect().0)`), then call `.run()` or `.spawn()`"
)]
pub trait HasSink: sealed::Sealed {
    #[doc(hidden)]
    fn into_ready(self) -> Ready;
}

mod sealed {
    pub trait Sealed {}
}

type Slot<T> = Arc<Mutex<Option<EdgeTx<T>>>>;

fn put_slot<T>(slot: &Slot<T>, tx: EdgeTx<T>) {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
}

fn take_slot<T>(slot: &Slot<T>) -> Option<EdgeTx<T>> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Builds `branch` off `node` now; its entry edge waits in the returned slot.
fn split_off<T: Send + 'static>(
    core: Core,
    node: usize,
    branch: impl FnOnce(Builder<T>) -> Ready,
) -> (Core, Slot<T>) {
    let slot: Slot<T> = Arc::new(Mutex::new(None));
    let fill = Arc::clone(&slot);
    let start = Builder::new(
        core,
        Box::new(
            move |_core: &mut Core, _settings: StageOptions, tx: EdgeTx<T>| {
                put_slot(&fill, tx);
                vec![node]
            },
        ),
    );
    let ready = branch(start);
    let Ready {
        mut core,
        finish,
        settings,
        ..
    } = ready;
    finish(&mut core, settings);
    (core, slot)
}

/// A pipeline with a sink: set the dead-letter sink, then [`run`](Self::run),
/// [`spawn`](Self::spawn) or [`build`](Self::build) it.
#[must_use = "a pipeline does nothing until it is run or spawned"]
pub struct Ready {
    core: Core,
    finish: Finish,
    settings: StageOptions,
    dead: Option<DeadLetterSetup>,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready").field("core", &self.core).finish()
    }
}

impl Ready {
    /// Names the sink.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.settings.name = Some(name.into());
        self
    }

    /// Capacity of the sink's input edge, in items.
    pub fn buffer(mut self, items: usize) -> Self {
        self.settings.buffer = Some(items);
        self
    }

    /// Overflow policy of the sink's input edge.
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.settings.when_full = Some(policy);
        self
    }

    /// Where dead letters go (default: [`sink::log`], a `warn` event each). An item is
    /// `DeadLettered` once this sink confirmed its record; if the write fails, `Failed`.
    pub fn dead_letter<K: Sink<Item = DeadLetter>>(mut self, sink: K) -> Self {
        self.dead = Some(Box::new(move |core: &mut Core| {
            dead_letter_task(core, sink)
        }));
        self
    }

    /// How long a stopping pipeline may drain before what is left is abandoned: after
    /// [`PipelineHandle::shutdown`](crate::PipelineHandle::shutdown) and after a stage
    /// failed the pipeline (`on_error = fail`, a restart limit, a failed start). Default
    /// [`DEFAULT_SHUTDOWN_DEADLINE`] (30 s).
    pub fn shutdown_deadline(self, deadline: Duration) -> Self {
        self.core.control.deadline.set(deadline);
        self
    }

    /// Wires every element into tasks, ready to run.
    pub fn build(self) -> Pipeline {
        let Ready {
            mut core,
            finish,
            settings,
            dead,
        } = self;
        finish(&mut core, settings);
        match dead {
            Some(dead) => dead(&mut core),
            None => dead_letter_task(&mut core, sink::log::<DeadLetter>()),
        }
        Pipeline { core }
    }

    /// Builds and runs the pipeline to its end on the current runtime; see
    /// [`Pipeline::run`].
    ///
    /// # Errors
    ///
    /// As [`Pipeline::run`].
    pub async fn run(self) -> Result<super::RunReport, super::PipelineError> {
        self.build().run().await
    }

    /// Builds and spawns the pipeline on the current runtime; see [`Pipeline::spawn`].
    pub fn spawn(self) -> super::PipelineHandle {
        self.build().spawn()
    }
}

fn dead_letter_task<K: Sink<Item = DeadLetter>>(core: &mut Core, sink: K) {
    let Some(rx) = core.dead_rx.take() else {
        return;
    };
    let name = format!("dead_letter:{}", sink.name());
    core.graph.rename(0, &name);
    let counters = core.counters(&name, Kind::DeadLetter, 1);
    core.rows[0] = Some(Row::new(Arc::clone(&counters), Some(rx.probe())));
    core.tasks.push(Task::new(
        name,
        tasks::sink(
            sink,
            rx,
            None,
            SinkRole::DeadLetter,
            Arc::clone(&core.control),
            counters,
        ),
    ));
}
