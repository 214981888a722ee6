//! Sources: where items come from. Built-ins: [`iter`], [`stream`] and [`ingest`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::ack::{Ack, Outcome};
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

type Waiter = Option<oneshot::Sender<Outcome>>;

/// An in-process source fed through cloneable [`Ingest`] handles, for embedding a pipeline
/// in a service: request handlers send events with backpressure. The source ends when
/// every `Ingest` handle is dropped (or the pipeline shuts down).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (ingest, source) = pipeline_core::source::ingest::<String>(64);
/// ingest.try_send("hello".to_string()).unwrap();
/// # drop(source);
/// # }
/// ```
pub fn ingest<T: Send + 'static>(capacity: usize) -> (Ingest<T>, IngestSource<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (Ingest { tx }, IngestSource { rx })
}

/// The sending side of [`ingest`].
#[derive(Debug)]
pub struct Ingest<T> {
    tx: mpsc::Sender<(T, Waiter)>,
}

impl<T> Clone for Ingest<T> {
    fn clone(&self) -> Self {
        Ingest {
            tx: self.tx.clone(),
        }
    }
}

/// Why [`Ingest::try_send`] gave the item back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The ingest buffer is full: answer 503 or try later. The item is returned.
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
        self.tx
            .send((item, None))
            .await
            .map_err(|mpsc::error::SendError((item, _))| Closed(item))
    }

    /// Sends an item if there is room at once.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], each with the item.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.tx.try_send((item, None)).map_err(|e| match e {
            mpsc::error::TrySendError::Full((item, _)) => TrySendError::Full(item),
            mpsc::error::TrySendError::Closed((item, _)) => TrySendError::Closed(item),
        })
    }

    /// Sends an item and waits for its final [`Outcome`] (the worst over its descendants).
    ///
    /// # Errors
    ///
    /// [`Closed`] with the item when the pipeline has stopped before taking it. An item the
    /// pipeline took but never finished resolves as [`Outcome::Abandoned`].
    pub async fn send_and_wait(&self, item: T) -> Result<Outcome, Closed<T>> {
        let (done, outcome) = oneshot::channel();
        self.tx
            .send((item, Some(done)))
            .await
            .map_err(|mpsc::error::SendError((item, _))| Closed(item))?;
        Ok(outcome.await.unwrap_or(Outcome::Abandoned))
    }
}

/// The source side of [`ingest`].
#[derive(Debug)]
pub struct IngestSource<T> {
    rx: mpsc::Receiver<(T, Waiter)>,
}

impl<T: Send + 'static> Source for IngestSource<T> {
    type Item = T;

    async fn pull(&mut self, max: usize) -> Result<Option<Pulled<T>>, BoxError> {
        let mut buf = Vec::with_capacity(max.min(256));
        if self.rx.recv_many(&mut buf, max).await == 0 {
            return Ok(None);
        }
        let mut items = Vec::with_capacity(buf.len());
        let mut waiters: Vec<(usize, oneshot::Sender<Outcome>)> = Vec::new();
        for (i, (item, waiter)) in buf.into_iter().enumerate() {
            items.push(item);
            if let Some(w) = waiter {
                waiters.push((i, w));
            }
        }
        if waiters.is_empty() {
            return Ok(Some(Pulled::new(items)));
        }
        let ack = Ack::new(move |outcomes: &[Outcome]| {
            for (i, w) in waiters {
                let _ = w.send(outcomes.get(i).copied().unwrap_or(Outcome::Abandoned));
            }
        });
        Ok(Some(Pulled::with_ack(items, ack)))
    }

    fn close(&mut self) -> bool {
        // Items already accepted by `send` / `try_send` are still processed.
        self.rx.close();
        true
    }

    fn name(&self) -> &str {
        "ingest"
    }
}
