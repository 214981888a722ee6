//! The throughput workloads: the item types, the three cheap stage functions, the
//! framework's pipelines and the hand-written baselines (B-item, B-batch, B-fused), all on
//! the same runtime and item type.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, stream};
use pipeline_core::options::{BreakerOptions, RateOptions, RestartOptions, RetryOptions};
use pipeline_core::sink::{Sink, WriteError};
use pipeline_core::stage::map_fn;
use pipeline_core::{BoxError, Builder, Context, Map, Pipeline, Stage, source};
use tokio::sync::mpsc;

/// Any error of the harness.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
/// The harness's result.
pub(crate) type Res<T> = Result<T, Error>;
/// One timed run.
pub(crate) type Run = Pin<Box<dyn Future<Output = Res<Tally>> + Send>>;

/// Items per message in B-batch (and the framework's `MAX_BATCH`).
pub(crate) const BATCH: usize = 256;
/// The framework's default edge capacity, in items; B-batch gets the same in messages.
pub(crate) const EDGE_ITEMS: usize = 1024;
/// B-item's channel capacity, in items.
pub(crate) const ITEM_CHANNEL: usize = 1024;
/// In-flight calls of the io-bound workload.
pub(crate) const IO_CONCURRENCY: usize = 64;
/// The io-bound stage's timer.
pub(crate) const IO_SLEEP: Duration = Duration::from_millis(1);

/// What a sink saw: how many items and a checksum over them, so that every variant is
/// checked to do the same work and nothing is optimised away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) count: u64,
    pub(crate) sum: u64,
}

impl Tally {
    #[inline]
    fn add<T: Item>(&mut self, item: &T) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(item.weigh());
    }
}

/// An item type of the map4 workloads and its three cheap stage functions.
pub(crate) trait Item: Clone + Send + Sync + 'static + Sized {
    /// Builds item `i` (in the source).
    fn make(i: u64) -> Self;
    /// Stage 1.
    fn s1(self) -> Self;
    /// Stage 2.
    fn s2(self) -> Self;
    /// Stage 3.
    fn s3(self) -> Self;
    /// What the sink adds to its checksum.
    fn weigh(&self) -> u64;
}

impl Item for u64 {
    #[inline]
    fn make(i: u64) -> Self {
        i
    }
    #[inline]
    fn s1(self) -> Self {
        self.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    #[inline]
    fn s2(self) -> Self {
        self ^ (self >> 29)
    }
    #[inline]
    fn s3(self) -> Self {
        self.wrapping_add(1)
    }
    #[inline]
    fn weigh(&self) -> u64 {
        *self
    }
}

impl Item for String {
    fn make(i: u64) -> Self {
        use std::fmt::Write;
        let mut s = String::with_capacity(32);
        let _ = write!(s, "item-{i:016x}");
        s
    }
    #[inline]
    fn s1(mut self) -> Self {
        self.make_ascii_uppercase();
        self
    }
    #[inline]
    fn s2(mut self) -> Self {
        self.push('!');
        self
    }
    #[inline]
    fn s3(mut self) -> Self {
        self.pop();
        self
    }
    #[inline]
    fn weigh(&self) -> u64 {
        self.len() as u64 + u64::from(self.as_bytes().last().copied().unwrap_or(0))
    }
}

async fn a1<T: Item>(x: T) -> T {
    x.s1()
}
async fn a2<T: Item>(x: T) -> T {
    x.s2()
}
async fn a3<T: Item>(x: T) -> T {
    x.s3()
}

/// The item types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    U64,
    Str,
}

impl Ty {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Ty::U64 => "u64",
            Ty::Str => "String",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Ty> {
        match s {
            "u64" => Some(Ty::U64),
            "String" => Some(Ty::Str),
            _ => None,
        }
    }
}

/// Every timed variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum V {
    /// Task per stage, tokio mpsc bounded(1024), one item per send.
    BItem,
    /// Task per stage, tokio mpsc of `Vec<T>` batches of 256, 1024 items of capacity.
    BBatch,
    /// B-batch with plain (sync) stage fns mapped in place: BENCHMARKS.md's
    /// 27-instructions-per-item reference.
    BBatchSync,
    /// One fused `futures::Stream` with `.then` stages.
    BFused,
    /// The framework, policies off.
    Fw,
    /// The framework with timeout, retry, breaker and restart on every stage.
    FwGuarded,
    /// The framework with `#[stage]` fns (u64 only).
    FwMacro,
    /// The framework with hand-written `Stage` impls (u64 only).
    FwHand,
    /// The framework with `#[stage]` on plain (sync) fns (u64 only).
    FwSync,
    /// io-bound: the framework, one stage awaiting a 1 ms timer, concurrency 64.
    IoFw,
    /// io-bound: `buffer_unordered(64)` over the same awaits.
    IoHand,
    /// cpu-bound: one `#[stage]` plain fn doing ~20 µs of arithmetic per item,
    /// concurrency 1.
    Cpu1,
    /// The same fn with `concurrency = 2`: its calls run on worker tasks.
    Cpu2,
}

impl V {
    pub(crate) const ALL: [V; 13] = [
        V::BItem,
        V::BBatch,
        V::BBatchSync,
        V::BFused,
        V::Fw,
        V::FwGuarded,
        V::FwMacro,
        V::FwHand,
        V::FwSync,
        V::IoFw,
        V::IoHand,
        V::Cpu1,
        V::Cpu2,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            V::BItem => "B-item",
            V::BBatch => "B-batch",
            V::BBatchSync => "B-batch-sync",
            V::BFused => "B-fused",
            V::Fw => "map4",
            V::FwGuarded => "map4-guarded",
            V::FwMacro => "map4-macro",
            V::FwHand => "map4-hand",
            V::FwSync => "map4-sync",
            V::IoFw => "io-bound",
            V::IoHand => "io-hand",
            V::Cpu1 => "cpu-1",
            V::Cpu2 => "cpu-2",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<V> {
        V::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// The future of one run of `v` over `n` items of type `ty`.
pub(crate) fn run(v: V, ty: Ty, n: u64) -> Res<Run> {
    match ty {
        Ty::U64 => Ok(match v {
            V::FwMacro => Box::pin(fw_macro(n)),
            V::FwHand => Box::pin(fw_hand(n)),
            V::FwSync => Box::pin(fw_sync(n)),
            V::IoFw => Box::pin(io_fw(n)),
            V::IoHand => Box::pin(io_hand(n)),
            V::Cpu1 => Box::pin(cpu(n, false)),
            V::Cpu2 => Box::pin(cpu(n, true)),
            _ => map4::<u64>(v, n),
        }),
        Ty::Str => match v {
            V::FwMacro | V::FwHand | V::FwSync | V::IoFw | V::IoHand | V::Cpu1 | V::Cpu2 => {
                Err(format!("{} runs on u64 items only", v.name()).into())
            }
            _ => Ok(map4::<String>(v, n)),
        },
    }
}

fn map4<T: Item>(v: V, n: u64) -> Run {
    match v {
        V::BItem => Box::pin(b_item::<T>(n)),
        V::BBatch => Box::pin(b_batch::<T>(n)),
        V::BBatchSync => Box::pin(b_batch_sync::<T>(n)),
        V::BFused => Box::pin(b_fused::<T>(n)),
        V::FwGuarded => Box::pin(fw_map4::<T>(n, true)),
        _ => Box::pin(fw_map4::<T>(n, false)),
    }
}

// ---------------------------------------------------------------------------------------
// The framework.

/// A sink adding every item to a [`Tally`], handed back through `out` at the end.
pub(crate) struct TallySink<T> {
    tally: Tally,
    out: Arc<Mutex<Tally>>,
    _item: PhantomData<fn(T)>,
}

impl<T> TallySink<T> {
    pub(crate) fn new() -> (Self, Arc<Mutex<Tally>>) {
        let out = Arc::new(Mutex::new(Tally::default()));
        let sink = TallySink {
            tally: Tally::default(),
            out: Arc::clone(&out),
            _item: PhantomData,
        };
        (sink, out)
    }
}

impl<T: Item> Sink for TallySink<T> {
    type Item = T;

    async fn write(&mut self, items: &mut Vec<T>) -> Result<(), WriteError> {
        for item in items.drain(..) {
            self.tally.add(&item);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), BoxError> {
        *self.out.lock().unwrap_or_else(|p| p.into_inner()) = self.tally;
        Ok(())
    }
}

/// The policies of map4-guarded, set through the builder on the stage added last:
/// timeout, retry, circuit breaker, a rate limit that never binds (a billion calls per
/// second) and restart-after-panic (panic capture and the per-stage counters are always
/// on). No fault is ever injected.
pub(crate) fn guard<T: Clone + Send + 'static>(b: Builder<T>, on: bool) -> Builder<T> {
    if on {
        b.timeout(Duration::from_secs(5))
            .retry(RetryOptions::new(3))
            .breaker(BreakerOptions::default())
            .rate(RateOptions::new(1_000_000_000, Duration::from_secs(1)))
            .restart(RestartOptions::new(3, Duration::from_secs(60)))
    } else {
        b
    }
}

/// Runs a built pipeline to its end and checks that every item was delivered.
pub(crate) async fn finish<T: Item>(
    ready: pipeline_core::Ready,
    out: Arc<Mutex<Tally>>,
    n: u64,
) -> Res<Tally> {
    let report = ready.run().await?;
    let tally = *out.lock().unwrap_or_else(|p| p.into_inner());
    if report.delivered != n || tally.count != n {
        return Err(format!(
            "pipeline `{}` delivered {} (sink saw {}) of {n} items",
            report.pipeline, report.delivered, tally.count
        )
        .into());
    }
    Ok(tally)
}

async fn fw_map4<T: Item>(n: u64, guarded: bool) -> Res<Tally> {
    let (sink, out) = TallySink::<T>::new();
    let b = Pipeline::builder(if guarded { "map4-guarded" } else { "map4" })
        .source(source::iter((0..n).map(T::make)));
    let b = guard(
        b.stage(map_fn(
            "s1",
            |x: T| async move { Ok::<_, Infallible>(x.s1()) },
        )),
        guarded,
    );
    let b = guard(
        b.stage(map_fn(
            "s2",
            |x: T| async move { Ok::<_, Infallible>(x.s2()) },
        )),
        guarded,
    );
    let b = guard(
        b.stage(map_fn(
            "s3",
            |x: T| async move { Ok::<_, Infallible>(x.s3()) },
        )),
        guarded,
    );
    finish::<T>(b.sink(sink), out, n).await
}

// The same three stages, once from `#[stage]` fns and once as hand-written `Stage` impls.

#[pipeline_core::stage]
async fn mac_mul(x: u64) -> u64 {
    x.s1()
}

#[pipeline_core::stage]
async fn mac_shift(x: u64) -> u64 {
    x.s2()
}

#[pipeline_core::stage]
async fn mac_inc(x: u64) -> u64 {
    x.s3()
}

// The same with plain fns: the framework's sync-fn path.

#[pipeline_core::stage]
fn sync_mul(x: u64) -> u64 {
    x.s1()
}

#[pipeline_core::stage]
fn sync_shift(x: u64) -> u64 {
    x.s2()
}

#[pipeline_core::stage]
fn sync_inc(x: u64) -> u64 {
    x.s3()
}

macro_rules! hand_stage {
    ($ty:ident, $name:literal, $f:ident) => {
        #[derive(Debug, Clone, Copy)]
        struct $ty;

        impl Stage for $ty {
            type In = u64;
            type Output = u64;
            type Shape = Map;
            type Error = Infallible;

            async fn call(&self, item: u64, _cx: &Context) -> Result<u64, Infallible> {
                Ok(item.$f())
            }

            fn options(&self) -> pipeline_core::StageOptions {
                let mut options = pipeline_core::StageOptions::default();
                options.name = Some(std::borrow::Cow::Borrowed($name));
                options
            }
        }
    };
}

hand_stage!(HandMul, "hand_mul", s1);
hand_stage!(HandShift, "hand_shift", s2);
hand_stage!(HandInc, "hand_inc", s3);

async fn fw_macro(n: u64) -> Res<Tally> {
    let (sink, out) = TallySink::<u64>::new();
    let ready = Pipeline::builder("map4-macro")
        .source(source::iter(0..n))
        .stage(MacMul)
        .stage(MacShift)
        .stage(MacInc)
        .sink(sink);
    finish::<u64>(ready, out, n).await
}

async fn fw_hand(n: u64) -> Res<Tally> {
    let (sink, out) = TallySink::<u64>::new();
    let ready = Pipeline::builder("map4-hand")
        .source(source::iter(0..n))
        .stage(HandMul)
        .stage(HandShift)
        .stage(HandInc)
        .sink(sink);
    finish::<u64>(ready, out, n).await
}

async fn fw_sync(n: u64) -> Res<Tally> {
    let (sink, out) = TallySink::<u64>::new();
    let ready = Pipeline::builder("map4-sync")
        .source(source::iter(0..n))
        .stage(SyncMul)
        .stage(SyncShift)
        .stage(SyncInc)
        .sink(sink);
    finish::<u64>(ready, out, n).await
}

async fn io_fw(n: u64) -> Res<Tally> {
    let (sink, out) = TallySink::<u64>::new();
    let ready = Pipeline::builder("io-bound")
        .source(source::iter(0..n))
        .stage(map_fn("io", |x: u64| async move {
            tokio::time::sleep(IO_SLEEP).await;
            Ok::<_, Infallible>(x.s1())
        }))
        .concurrency(IO_CONCURRENCY)
        .sink(sink);
    finish::<u64>(ready, out, n).await
}

/// ~20 µs of dependent arithmetic: CPU-bound work no await can overlap.
fn crunch_work(x: u64) -> u64 {
    let mut h = x;
    for _ in 0..20_000 {
        h = std::hint::black_box(
            h.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407),
        );
    }
    std::hint::black_box(h)
}

#[pipeline_core::stage]
fn crunch_one(x: u64) -> u64 {
    crunch_work(x)
}

#[pipeline_core::stage(concurrency = 2)]
fn crunch_two(x: u64) -> u64 {
    crunch_work(x)
}

async fn cpu(n: u64, two: bool) -> Res<Tally> {
    let (sink, out) = TallySink::<u64>::new();
    let b = Pipeline::builder("cpu-bound").source(source::iter(0..n));
    let ready = if two {
        b.stage(CrunchTwo).sink(sink)
    } else {
        b.stage(CrunchOne).sink(sink)
    };
    finish::<u64>(ready, out, n).await
}

// ---------------------------------------------------------------------------------------
// The hand-written baselines.

fn check(tally: Tally, n: u64, what: &str) -> Res<Tally> {
    if tally.count == n {
        Ok(tally)
    } else {
        Err(format!("{what}: the sink saw {} of {n} items", tally.count).into())
    }
}

async fn io_hand(n: u64) -> Res<Tally> {
    let tally = stream::iter(0..n)
        .map(|x: u64| async move {
            tokio::time::sleep(IO_SLEEP).await;
            x.s1()
        })
        .buffer_unordered(IO_CONCURRENCY)
        .fold(Tally::default(), |mut t, x| async move {
            t.add(&x);
            t
        })
        .await;
    check(tally, n, "io-hand")
}

/// B-fused: one stream, three async `.then` stages, folded by the sink; runs on one core.
async fn b_fused<T: Item>(n: u64) -> Res<Tally> {
    let tally = stream::iter(0..n)
        .map(T::make)
        .then(a1::<T>)
        .then(a2::<T>)
        .then(a3::<T>)
        .fold(Tally::default(), |mut t, x| async move {
            t.add(&x);
            t
        })
        .await;
    check(tally, n, "B-fused")
}

async fn batch_stage<T, F, Fut>(mut rx: mpsc::Receiver<Vec<T>>, tx: mpsc::Sender<Vec<T>>, f: F)
where
    T: Item,
    F: Fn(T) -> Fut,
    Fut: Future<Output = T>,
{
    while let Some(batch) = rx.recv().await {
        let mut out = Vec::with_capacity(batch.len());
        for x in batch {
            out.push(f(x).await);
        }
        if tx.send(out).await.is_err() {
            return;
        }
    }
}

/// B-batch: a task per stage joined by tokio mpsc channels of `Vec<T>` batches of 256,
/// each holding 1024 items (4 batches), as the framework's edges do.
async fn b_batch<T: Item>(n: u64) -> Res<Tally> {
    let cap = (EDGE_ITEMS / BATCH).max(1);
    let (tx0, rx0) = mpsc::channel::<Vec<T>>(cap);
    let (tx1, rx1) = mpsc::channel::<Vec<T>>(cap);
    let (tx2, rx2) = mpsc::channel::<Vec<T>>(cap);
    let (tx3, mut rx3) = mpsc::channel::<Vec<T>>(cap);
    let tasks = [
        tokio::spawn(async move {
            let mut i = 0;
            while i < n {
                let end = (i + BATCH as u64).min(n);
                let batch: Vec<T> = (i..end).map(T::make).collect();
                if tx0.send(batch).await.is_err() {
                    return;
                }
                i = end;
            }
        }),
        tokio::spawn(batch_stage(rx0, tx1, a1::<T>)),
        tokio::spawn(batch_stage(rx1, tx2, a2::<T>)),
        tokio::spawn(batch_stage(rx2, tx3, a3::<T>)),
    ];
    let mut tally = Tally::default();
    while let Some(batch) = rx3.recv().await {
        for x in batch {
            tally.add(&x);
        }
    }
    for task in tasks {
        task.await?;
    }
    check(tally, n, "B-batch")
}

async fn sync_stage<T: Item>(
    mut rx: mpsc::Receiver<Vec<T>>,
    tx: mpsc::Sender<Vec<T>>,
    f: fn(T) -> T,
) {
    while let Some(batch) = rx.recv().await {
        // `into_iter().map().collect()` reuses the batch's allocation.
        let out: Vec<T> = batch.into_iter().map(f).collect();
        if tx.send(out).await.is_err() {
            return;
        }
    }
}

/// B-batch with plain stage fns, each batch mapped in place.
async fn b_batch_sync<T: Item>(n: u64) -> Res<Tally> {
    let cap = (EDGE_ITEMS / BATCH).max(1);
    let (tx0, rx0) = mpsc::channel::<Vec<T>>(cap);
    let (tx1, rx1) = mpsc::channel::<Vec<T>>(cap);
    let (tx2, rx2) = mpsc::channel::<Vec<T>>(cap);
    let (tx3, mut rx3) = mpsc::channel::<Vec<T>>(cap);
    let tasks = [
        tokio::spawn(async move {
            let mut i = 0;
            while i < n {
                let end = (i + BATCH as u64).min(n);
                let batch: Vec<T> = (i..end).map(T::make).collect();
                if tx0.send(batch).await.is_err() {
                    return;
                }
                i = end;
            }
        }),
        tokio::spawn(sync_stage(rx0, tx1, T::s1)),
        tokio::spawn(sync_stage(rx1, tx2, T::s2)),
        tokio::spawn(sync_stage(rx2, tx3, T::s3)),
    ];
    let mut tally = Tally::default();
    while let Some(batch) = rx3.recv().await {
        for x in batch {
            tally.add(&x);
        }
    }
    for task in tasks {
        task.await?;
    }
    check(tally, n, "B-batch-sync")
}

async fn item_stage<T, F, Fut>(mut rx: mpsc::Receiver<T>, tx: mpsc::Sender<T>, f: F)
where
    T: Item,
    F: Fn(T) -> Fut,
    Fut: Future<Output = T>,
{
    while let Some(x) = rx.recv().await {
        if tx.send(f(x).await).await.is_err() {
            return;
        }
    }
}

/// B-item: a task per stage joined by tokio mpsc bounded(1024), one item per send.
async fn b_item<T: Item>(n: u64) -> Res<Tally> {
    let (tx0, rx0) = mpsc::channel::<T>(ITEM_CHANNEL);
    let (tx1, rx1) = mpsc::channel::<T>(ITEM_CHANNEL);
    let (tx2, rx2) = mpsc::channel::<T>(ITEM_CHANNEL);
    let (tx3, mut rx3) = mpsc::channel::<T>(ITEM_CHANNEL);
    let tasks = [
        tokio::spawn(async move {
            for i in 0..n {
                if tx0.send(T::make(i)).await.is_err() {
                    return;
                }
            }
        }),
        tokio::spawn(item_stage(rx0, tx1, a1::<T>)),
        tokio::spawn(item_stage(rx1, tx2, a2::<T>)),
        tokio::spawn(item_stage(rx2, tx3, a3::<T>)),
    ];
    let mut tally = Tally::default();
    while let Some(x) = rx3.recv().await {
        tally.add(&x);
    }
    for task in tasks {
        task.await?;
    }
    check(tally, n, "B-item")
}
