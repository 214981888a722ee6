//! Sources: where items come from. Built-ins: [`iter`], [`stream`] and [`ingest`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::ack::{Ack, Outcome, Reason};
use crate::error::BoxError;

/// Items a source pulled in one go, with an optional acknowledgement that runs once every
/// descendant of every item reached its final outcome.
#[derive(Debug)]
pub struct Pulled<T> {
    /// The items, in order.
    pub items: Vec<T>,
    /// Runs with one outcome per item; `None` for sources that need no acks (they pay
    /// nothing for tracking beyond one record per batch).
    pub ack: Option<Ack>,
}

impl<T> Pulled<T> {
    /// Items that need no acknowledgement.
    pub fn new(items: Vec<T>) -> Self {
        Pulled { items, ack: None }
    }

    /// Items acknowledged through `ack`.
    pub fn with_ack(items: Vec<T>, ack: Ack) -> Self {
        Pulled {
            items,
            ack: Some(ack),
        }
    }
}

/// Produces the items a pipeline processes.
///
/// The runtime calls [`pull`](Source::pull) in a loop until it returns `Ok(None)` or the
/// pipeline shuts down. An `Err` is a failure of the source itself (a dropped connection):
/// the runtime counts it, traces it, waits with backoff and pulls again.
///
/// # Cancel safety
///
/// `pull` must be cancel safe: on shutdown the runtime drops a pending `pull`, and items it
/// had already taken from its own input would be lost.
///
/// # Examples
///
/// ```
/// use pipeline_core::source::{Pulled, Source};
/// use pipeline_core::BoxError;
///
/// /// Counts from 0 to `end`.
/// struct Count { next: u64, end: u64 }
///
/// impl Source for Count {
///     type Item = u64;
///     async fn pull(&mut self, max: usize) -> Result<Option<Pulled<u64>>, BoxError> {
///         if self.next >= self.end {
///             return Ok(None);
///         }
///         let stop = self.end.min(self.next + max as u64);
///         let items = (self.next..stop).collect();
///         self.next = stop;
///         Ok(Some(Pulled::new(items)))
///     }
/// }
/// # let _ = Count { next: 0, end: 3 };
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pipeline source",
    note = "use `source::iter`, `source::stream`, `source::ingest`, or implement `Source`"
)]
pub trait Source: Send + 'static {
    /// The item type.
    type Item: Send + 'static;

    /// Up to `max` items; `Ok(None)` once the source is exhausted.
    fn pull(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Option<Pulled<Self::Item>>, BoxError>> + Send;

    /// Stops taking new input, on shutdown. Return `true` if later pulls still return
    /// what the source had already accepted (then ending with `Ok(None)`), `false` if the
    /// runtime should stop pulling at once (the default).
    fn close(&mut self) -> bool {
        false
    }

    /// A name for metrics and the topology graph.
    fn name(&self) -> &str {
        "source"
    }

    /// What the source had accepted but not yet handed over when its task ends (an
    /// ingest buffer, a broker client's prefetch): called once, at the end. The items are
    /// counted `Abandoned` and their ack, if any, runs with `Abandoned` (so a broker
    /// redelivers them and a `send_and_wait` caller is told). Default: nothing.
    fn drain(&mut self) -> Option<Pulled<Self::Item>> {
        None
    }

    /// Live gauges of what waits outside the pipeline (a broker's consumer lag and
    /// pending entries), shown in `stats()` and exported as metrics. Asked for once, when
    /// the pipeline is built. Default: none.
    fn backlog(&self) -> Option<Backlog> {
        None
    }
}

/// What a broker source reports about the log it reads: entries not yet delivered to
/// this consumer group (`lag`) and entries delivered but not yet acknowledged
/// (`pending`). A cloneable handle: the source keeps one and sets the numbers as it
/// learns them; the pipeline shows them in its `stats()` row for the source and as the
/// gauges `pipeline_source_lag` and `pipeline_source_pending`.
///
/// ```
/// use pipeline_core::source::Backlog;
///
/// let backlog = Backlog::new();
/// assert_eq!(backlog.lag(), None);
/// backlog.set_lag(42);
/// backlog.set_pending(7);
/// assert_eq!((backlog.lag(), backlog.pending()), (Some(42), Some(7)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Backlog(Arc<BacklogCells>);

#[derive(Debug)]
struct BacklogCells {
    lag: AtomicU64,
    pending: AtomicU64,
    gauges: OnceLock<(::metrics::Gauge, ::metrics::Gauge)>,
}

impl Default for BacklogCells {
    fn default() -> Self {
        BacklogCells {
            lag: AtomicU64::new(UNKNOWN),
            pending: AtomicU64::new(UNKNOWN),
            gauges: OnceLock::new(),
        }
    }
}

/// Not reported yet.
const UNKNOWN: u64 = u64::MAX;

impl Backlog {
    /// Gauges with nothing reported yet.
    pub fn new() -> Self {
        Backlog::default()
    }

    /// Entries not yet delivered to this consumer (group).
    pub fn set_lag(&self, entries: u64) {
        self.0
            .lag
            .store(entries.min(UNKNOWN - 1), Ordering::Relaxed);
        if let Some((lag, _)) = self.0.gauges.get() {
            lag.set(entries as f64);
        }
    }

    /// Entries delivered but not yet acknowledged.
    pub fn set_pending(&self, entries: u64) {
        self.0
            .pending
            .store(entries.min(UNKNOWN - 1), Ordering::Relaxed);
        if let Some((_, pending)) = self.0.gauges.get() {
            pending.set(entries as f64);
        }
    }

    /// The last lag reported, if any.
    pub fn lag(&self) -> Option<u64> {
        known(self.0.lag.load(Ordering::Relaxed))
    }

    /// The last pending count reported, if any.
    pub fn pending(&self) -> Option<u64> {
        known(self.0.pending.load(Ordering::Relaxed))
    }

    /// Registers the metric gauges under the pipeline's and the source's names.
    pub(crate) fn bind(&self, pipeline: &str, source: &str) {
        let gauge = |name: &'static str| ::metrics::gauge!(name, "pipeline" => pipeline.to_owned(), "stage" => source.to_owned());
        let _ = self
            .0
            .gauges
            .set((gauge(SOURCE_LAG), gauge(SOURCE_PENDING)));
    }
}

fn known(v: u64) -> Option<u64> {
    (v != UNKNOWN).then_some(v)
}

/// Metric name: a broker source's consumer lag.
pub const SOURCE_LAG: &str = "pipeline_source_lag";
/// Metric name: a broker source's delivered but unacknowledged entries.
pub const SOURCE_PENDING: &str = "pipeline_source_pending";

/// A source over any iterator.
///
/// ```
/// let src = pipeline_core::source::iter(0..10u64);
/// # let _ = src;
/// ```
pub fn iter<I>(items: I) -> Iter<I::IntoIter>
where
    I: IntoIterator,
    I::IntoIter: Send + 'static,
    I::Item: Send + 'static,
{
    Iter(items.into_iter())
}

/// See [`iter`].
#[derive(Debug)]
pub struct Iter<I>(I);

impl<I> Source for Iter<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    type Item = I::Item;

    async fn pull(&mut self, max: usize) -> Result<Option<Pulled<I::Item>>, BoxError> {
        let items: Vec<_> = self.0.by_ref().take(max).collect();
        Ok((!items.is_empty()).then(|| Pulled::new(items)))
    }

    fn name(&self) -> &str {
        "iter"
    }
}

/// A source over a blocking iterator (a `csv::Reader`'s records, lines of a file, rows
/// of a database cursor): each pull takes up to a batch of items on tokio's blocking
/// pool, so the async workers never wait on I/O. A panic in the iterator is a panic of
/// the source's `pull` (the run ends with a failure naming the source).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::io::BufRead;
/// use pipeline_core::prelude::*;
///
/// let file = std::io::Cursor::new("a\nb\nc\n"); // a `BufReader<File>` in real use
/// let (sink, lines) = sink::collect();
/// Pipeline::builder("lines")
///     .source(source::blocking_iter(file.lines().map_while(Result::ok)))
///     .sink(sink)
///     .run()
///     .await
///     .unwrap();
/// assert_eq!(lines.take(), ["a", "b", "c"]);
/// # }
/// ```
pub fn blocking_iter<I>(items: I) -> BlockingIter<I::IntoIter>
where
    I: IntoIterator,
    I::IntoIter: Send + 'static,
    I::Item: Send + 'static,
{
    BlockingIter {
        iter: Some(items.into_iter()),
        reading: None,
    }
}

/// See [`blocking_iter`].
pub struct BlockingIter<I: Iterator> {
    /// The iterator, while no read is under way.
    iter: Option<I>,
    /// A read under way on the blocking pool, kept across a cancelled `pull`.
    reading: Option<tokio::task::JoinHandle<(I, Vec<I::Item>)>>,
}

impl<I: Iterator> std::fmt::Debug for BlockingIter<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingIter")
            .field("reading", &self.reading.is_some())
            .finish_non_exhaustive()
    }
}

impl<I> Source for BlockingIter<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    type Item = I::Item;

    async fn pull(&mut self, max: usize) -> Result<Option<Pulled<I::Item>>, BoxError> {
        if self.reading.is_none() {
            let Some(mut iter) = self.iter.take() else {
                return Ok(None);
            };
            self.reading = Some(tokio::task::spawn_blocking(move || {
                let items: Vec<I::Item> = iter.by_ref().take(max).collect();
                (iter, items)
            }));
        }
        let Some(reading) = self.reading.as_mut() else {
            return Ok(None);
        };
        // Cancel safe: a dropped pull leaves the read in `reading` for the next one.
        let read = reading.await;
        self.reading = None;
        let (iter, items) = match read {
            Ok(read) => read,
            Err(e) => match e.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                Err(e) => return Err(e.into()),
            },
        };
        if items.is_empty() {
            return Ok(None);
        }
        self.iter = Some(iter);
        Ok(Some(Pulled::new(items)))
    }

    fn name(&self) -> &str {
        "blocking_iter"
    }
}

/// A source over a [`futures::Stream`]: each pull takes whatever is ready, waiting only
/// for the first item.
///
/// ```
/// let src = pipeline_core::source::stream(futures::stream::iter(vec!["a", "b"]));
/// # let _ = src;
/// ```
pub fn stream<S>(stream: S) -> FromStream<S>
where
    S: Stream + Unpin + Send + 'static,
    S::Item: Send + 'static,
{
    FromStream(stream)
}

/// See [`stream`].
#[derive(Debug)]
pub struct FromStream<S>(S);

impl<S> Source for FromStream<S>
where
    S: Stream + Unpin + Send + 'static,
    S::Item: Send + 'static,
{
    type Item = S::Item;

    async fn pull(&mut self, max: usize) -> Result<Option<Pulled<S::Item>>, BoxError> {
        // Only the wait for the first item can be cancelled, so no item is ever lost.
        let Some(first) = self.0.next().await else {
            return Ok(None);
        };
        let mut items = vec![first];
        while items.len() < max {
            match futures::FutureExt::now_or_never(self.0.next()) {
                Some(Some(item)) => items.push(item),
                _ => break,
            }
        }
        Ok(Some(Pulled::new(items)))
    }

    fn name(&self) -> &str {
        "stream"
    }
}

/// Settings of an [`ingest`] source. A plain `usize` converts into options with that
/// buffer and no in-flight bound.
///
/// ```
/// use pipeline_core::source::IngestOptions;
/// let opts = IngestOptions::buffer(256).max_in_flight(64);
/// assert_eq!(opts.max_in_flight_limit(), Some(64));
/// let opts: IngestOptions = 64.into();
/// assert_eq!(opts.max_in_flight_limit(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestOptions {
    buffer: usize,
    max_in_flight: Option<usize>,
}

impl IngestOptions {
    /// Items accepted but not yet taken by the pipeline, at most (at least 1).
    pub fn buffer(items: usize) -> Self {
        IngestOptions {
            buffer: items.max(1),
            max_in_flight: None,
        }
    }

    /// Admission: at most `items` accepted items not yet finished (each counts from the
    /// moment `send`/`try_send` accepts it until its final outcome). `try_send` answers
    /// [`TrySendError::Full`] as soon as the pipeline holds that many, so a `202` means
    /// the event is among at most `items` in the pipeline. Counted by the ack ledger:
    /// no snapshot is built.
    #[must_use]
    pub fn max_in_flight(mut self, items: usize) -> Self {
        self.max_in_flight = Some(items.max(1));
        self
    }

    /// The admission bound, if any.
    pub fn max_in_flight_limit(&self) -> Option<usize> {
        self.max_in_flight
    }
}

impl From<usize> for IngestOptions {
    fn from(buffer: usize) -> Self {
        IngestOptions::buffer(buffer)
    }
}

/// The admission count: accepted items not yet finished.
#[derive(Debug)]
///
/// A semaphore of `limit` slots: a freed slot goes to the longest waiting `send` first,
/// so callers that wait are not starved by `try_send` callers racing them.
struct Admission {
    limit: usize,
    slots: tokio::sync::Semaphore,
}

impl Admission {
    fn try_take(&self) -> bool {
        self.slots.try_acquire().map(|p| p.forget()).is_ok()
    }

    async fn take(&self) {
        // The semaphore is never closed.
        if let Ok(permit) = self.slots.acquire().await {
            permit.forget();
        }
    }

    fn release(&self, n: usize) {
        if n > 0 {
            self.slots.add_permits(n);
        }
    }

    fn held(&self) -> usize {
        self.limit.saturating_sub(self.slots.available_permits())
    }
}

/// One admission slot, given back on drop unless the item was handed to the pipeline.
struct Slot<'a>(Option<&'a Admission>);

impl Slot<'_> {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.0 {
            a.release(1);
        }
    }
}

/// What an ingest caller learns about its item from [`Ingest::send_and_wait`].
///
/// ```
/// use pipeline_core::Outcome;
/// use pipeline_core::source::Settled;
/// let settled = Settled::new(Outcome::Delivered);
/// assert!(settled.is_delivered() && settled.reason.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Settled {
    /// The final outcome (the worst over the item's descendants).
    pub outcome: Outcome,
    /// Why, when the item was dead-lettered, dropped or failed: the element that gave up
    /// on it and the error. `None` for delivered and filtered items (no allocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Box<Reason>>,
}

impl Settled {
    /// An outcome without a reason.
    pub fn new(outcome: Outcome) -> Self {
        Settled {
            outcome,
            reason: None,
        }
    }

    /// Whether a sink confirmed the item.
    pub fn is_delivered(&self) -> bool {
        self.outcome == Outcome::Delivered
    }
}

type Waiter = Option<oneshot::Sender<Settled>>;

/// An in-process source fed through cloneable [`Ingest`] handles, for embedding a pipeline
/// in a service: request handlers send events with backpressure. The source ends when
/// every `Ingest` handle is dropped (or the pipeline shuts down).
///
/// `options` is the buffer size (a `usize`) or [`IngestOptions`] with an admission bound.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (ingest, source) = pipeline_core::source::ingest::<String>(64);
/// ingest.try_send("hello".to_string()).unwrap();
/// # drop(source);
/// # }
/// ```
pub fn ingest<T: Send + 'static>(
    options: impl Into<IngestOptions>,
) -> (Ingest<T>, IngestSource<T>) {
    let options = options.into();
    let (tx, rx) = mpsc::channel(options.buffer.max(1));
    let admission = options.max_in_flight.map(|limit| {
        Arc::new(Admission {
            limit: limit.min(tokio::sync::Semaphore::MAX_PERMITS),
            slots: tokio::sync::Semaphore::new(limit.min(tokio::sync::Semaphore::MAX_PERMITS)),
        })
    });
    (
        Ingest {
            tx,
            admission: admission.clone(),
        },
        IngestSource {
            rx,
            stash: None,
            admission,
        },
    )
}

/// The sending side of [`ingest`].
#[derive(Debug)]
pub struct Ingest<T> {
    tx: mpsc::Sender<(T, Waiter)>,
    admission: Option<Arc<Admission>>,
}

impl<T> Clone for Ingest<T> {
    fn clone(&self) -> Self {
        Ingest {
            tx: self.tx.clone(),
            admission: self.admission.clone(),
        }
    }
}

/// Why [`Ingest::try_send`] gave the item back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The ingest buffer is full, or the pipeline holds its `max_in_flight`: answer 503
    /// or try later. The item is returned.
    #[error("the pipeline is full")]
    Full(T),
    /// The pipeline has stopped. The item is returned.
    #[error("the pipeline has stopped")]
    Closed(T),
}

/// The pipeline has stopped; the item is returned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the pipeline has stopped")]
pub struct Closed<T>(pub T);

impl<T: Send + 'static> Ingest<T> {
    /// Sends an item, waiting while the pipeline is full (backpressure).
    ///
    /// # Errors
    ///
    /// [`Closed`] with the item when the pipeline has stopped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the item was not sent.
    pub async fn send(&self, item: T) -> Result<(), Closed<T>> {
        self.send_entry(item, None).await
    }

    async fn send_entry(&self, item: T, waiter: Waiter) -> Result<(), Closed<T>> {
        let slot = match &self.admission {
            Some(a) => {
                if self.tx.is_closed() {
                    return Err(Closed(item));
                }
                a.take().await;
                Slot(Some(a))
            }
            None => Slot(None),
        };
        self.tx
            .send((item, waiter))
            .await
            .map_err(|mpsc::error::SendError((item, _))| Closed(item))?;
        slot.keep();
        Ok(())
    }

    /// Sends an item if there is room at once.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], each with the item.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let slot = match &self.admission {
            Some(a) if !a.try_take() => {
                return Err(if self.tx.is_closed() {
                    TrySendError::Closed(item)
                } else {
                    TrySendError::Full(item)
                });
            }
            Some(a) => Slot(Some(a)),
            None => Slot(None),
        };
        self.tx.try_send((item, None)).map_err(|e| match e {
            mpsc::error::TrySendError::Full((item, _)) => TrySendError::Full(item),
            mpsc::error::TrySendError::Closed((item, _)) => TrySendError::Closed(item),
        })?;
        slot.keep();
        Ok(())
    }

    /// Sends an item and waits for its final outcome, with the reason when it was not
    /// delivered (the failing element and its error). The item is tracked on its own:
    /// its answer never waits for unrelated items.
    ///
    /// # Errors
    ///
    /// [`Closed`] with the item when the pipeline has stopped before taking it. An item the
    /// pipeline took but never finished resolves as [`Outcome::Abandoned`].
    pub async fn send_and_wait(&self, item: T) -> Result<Settled, Closed<T>> {
        let (done, settled) = oneshot::channel();
        self.send_entry(item, Some(done)).await?;
        Ok(settled
            .await
            .unwrap_or_else(|_| Settled::new(Outcome::Abandoned)))
    }

    /// Items accepted and not yet finished, when an admission bound is set.
    pub fn in_flight(&self) -> Option<usize> {
        self.admission.as_ref().map(|a| a.held())
    }
}

/// The source side of [`ingest`].
#[derive(Debug)]
pub struct IngestSource<T> {
    rx: mpsc::Receiver<(T, Waiter)>,
    /// An entry with a waiter, taken while gathering a batch of others: it leaves on its
    /// own at the next pull.
    stash: Option<(T, oneshot::Sender<Settled>)>,
    admission: Option<Arc<Admission>>,
}

impl<T: Send + 'static> IngestSource<T> {
    /// The ack of `n` plain items: gives their admission slots back.
    fn release(&self, n: usize) -> Option<Ack> {
        let admission = Arc::clone(self.admission.as_ref()?);
        Some(Ack::new(move |_: &[Outcome]| admission.release(n)))
    }

    /// One waited-for item, as its own batch.
    fn alone(&self, item: T, waiter: oneshot::Sender<Settled>) -> Pulled<T> {
        let admission = self.admission.clone();
        let ack = Ack::with_reasons(
            move |outcomes: &[Outcome], reasons: &mut [Option<Reason>]| {
                if let Some(a) = admission {
                    a.release(1);
                }
                let outcome = outcomes.first().copied().unwrap_or(Outcome::Abandoned);
                let reason = reasons.first_mut().and_then(Option::take).map(Box::new);
                let _ = waiter.send(Settled { outcome, reason });
            },
        );
        Pulled::with_ack(vec![item], ack)
    }
}

impl<T: Send + 'static> Source for IngestSource<T> {
    type Item = T;

    async fn pull(&mut self, max: usize) -> Result<Option<Pulled<T>>, BoxError> {
        if let Some((item, waiter)) = self.stash.take() {
            return Ok(Some(self.alone(item, waiter)));
        }
        let Some((first, waiter)) = self.rx.recv().await else {
            return Ok(None);
        };
        if let Some(waiter) = waiter {
            return Ok(Some(self.alone(first, waiter)));
        }
        let mut items = Vec::with_capacity(max.min(self.rx.len() + 1));
        items.push(first);
        while items.len() < max {
            match self.rx.try_recv() {
                Ok((item, None)) => items.push(item),
                Ok((item, Some(waiter))) => {
                    self.stash = Some((item, waiter));
                    break;
                }
                Err(_) => break,
            }
        }
        let ack = self.release(items.len());
        Ok(Some(Pulled { items, ack }))
    }

    fn close(&mut self) -> bool {
        // Items already accepted by `send` / `try_send` are still processed.
        self.rx.close();
        true
    }

    fn drain(&mut self) -> Option<Pulled<T>> {
        // Nothing more can be accepted; whatever was accepted ends `Abandoned`, counted,
        // and each waiter is told.
        self.rx.close();
        let mut items = Vec::new();
        let mut waiters = Vec::new();
        let stashed = self.stash.take().map(|(item, w)| (item, Some(w)));
        let rest = std::iter::from_fn(|| self.rx.try_recv().ok());
        for (item, waiter) in stashed.into_iter().chain(rest) {
            if let Some(w) = waiter {
                waiters.push(w);
            }
            items.push(item);
        }
        if items.is_empty() {
            return None;
        }
        let n = items.len();
        let admission = self.admission.clone();
        let ack = Ack::new(move |_: &[Outcome]| {
            if let Some(a) = admission {
                a.release(n);
            }
            for w in waiters {
                let _ = w.send(Settled::new(Outcome::Abandoned));
            }
        });
        Some(Pulled::with_ack(items, ack))
    }

    fn name(&self) -> &str {
        "ingest"
    }
}
