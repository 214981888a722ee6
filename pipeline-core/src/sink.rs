//! Sinks: where items end. Built-ins: [`collect`], [`for_each`], [`channel`],
//! [`jsonl_file`], [`log`].

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use serde::Serialize;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::error::{BoxError, Message};

/// A failed write. `failed` names the positions in the batch that did not make it
/// (`None`: all of them); the rest count as delivered. Each failed item gets its own
/// dead letter.
#[derive(Debug)]
pub struct WriteError {
    /// What went wrong.
    pub error: BoxError,
    /// Positions of the failed items in the batch given to `write`; `None` = every item.
    pub failed: Option<Vec<usize>>,
    /// The items as their dead letters show them, by position (see [`show_items_as_json`]).
    shown: Vec<Option<serde_json::Value>>,
    /// The write panicked with this message (caught below the runtime, by a wrapper).
    pub(crate) panic: Option<String>,
}

impl WriteError {
    /// The whole batch failed.
    pub fn all(error: impl Into<BoxError>) -> Self {
        WriteError {
            error: error.into(),
            failed: None,
            shown: Vec::new(),
            panic: None,
        }
    }

    /// Only the items at `positions` failed.
    pub fn partial(error: impl Into<BoxError>, positions: Vec<usize>) -> Self {
        WriteError {
            error: error.into(),
            failed: Some(positions),
            shown: Vec::new(),
            panic: None,
        }
    }

    /// How the dead letter of the item at `position` shows it, if the sink shows items.
    pub(crate) fn shown(&mut self, position: usize) -> Option<serde_json::Value> {
        self.shown.get_mut(position).and_then(Option::take)
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failed {
            None => write!(f, "write failed: {}", self.error),
            Some(p) => write!(f, "write failed for {} items: {}", p.len(), self.error),
        }
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

/// Consumes items in batches. A batch is whatever is ready, never padded by waiting.
///
/// An item counts as `Delivered` once `write` returned `Ok` for its batch; each item named
/// in a [`WriteError`] is dead-lettered (one record per item; with the item itself when
/// the sink is wrapped in [`show_items_as_json`]). A `write` that panics fails its whole
/// batch the same way. [`flush`](Sink::flush) runs once when the input ends, before the
/// pipeline reports; a flush that fails (or panics) is a failure in the report.
///
/// To wait out an outage of the sink's server instead of dead-lettering every row, wrap
/// the sink in [`policy::retry_writes`](crate::policy::retry_writes) (retry with backoff
/// per batch, and a waiting circuit breaker that backpressures the source).
///
/// # Examples
///
/// ```
/// use pipeline_core::sink::{Sink, WriteError};
///
/// struct Sum(u64);
///
/// impl Sink for Sum {
///     type Item = u64;
///     async fn write(&mut self, items: &mut Vec<u64>) -> Result<(), WriteError> {
///         self.0 += items.drain(..).sum::<u64>();
///         Ok(())
///     }
/// }
/// # let _ = Sum(0);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pipeline sink",
    note = "use `sink::collect`, `sink::for_each`, `sink::channel`, `sink::jsonl_file`, or implement `Sink`"
)]
pub trait Sink: Send + 'static {
    /// The item type.
    type Item: Send + 'static;

    /// Writes a batch. The sink may take the items out of `items`.
    fn write(
        &mut self,
        items: &mut Vec<Self::Item>,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Flushes buffered writes; called once when the input ends.
    fn flush(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }

    /// A name for metrics and the topology graph.
    fn name(&self) -> &str {
        "sink"
    }
}

/// A sink whose failed writes dead-letter each failed item with the item as JSON, so the
/// rows can be replayed. It keeps a copy of each batch while it is written (one clone
/// per item).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use pipeline_core::prelude::*;
/// use pipeline_core::sink::{Sink, WriteError};
///
/// /// Refuses odd numbers.
/// struct Evens;
/// impl Sink for Evens {
///     type Item = u64;
///     async fn write(&mut self, items: &mut Vec<u64>) -> Result<(), WriteError> {
///         let odd: Vec<usize> = (0..items.len()).filter(|&i| items[i] % 2 == 1).collect();
///         items.clear();
///         if odd.is_empty() { Ok(()) } else { Err(WriteError::partial("odd", odd)) }
///     }
/// }
///
/// let (dead, letters) = sink::collect();
/// Pipeline::builder("rows")
///     .source(source::iter([2u64, 3, 4]))
///     .sink(sink::show_items_as_json(Evens))
///     .dead_letter(dead)
///     .run()
///     .await
///     .unwrap();
/// let letters = letters.take();
/// assert_eq!(letters.len(), 1);
/// assert_eq!(letters[0].item, Some(serde_json::json!(3)));
/// # }
/// ```
pub fn show_items_as_json<K>(sink: K) -> ShowItems<K>
where
    K: Sink,
    K::Item: Serialize + Clone,
{
    ShowItems {
        sink,
        copy: Vec::new(),
    }
}

/// See [`show_items_as_json`].
#[derive(Debug)]
pub struct ShowItems<K: Sink> {
    sink: K,
    copy: Vec<K::Item>,
}

impl<K> Sink for ShowItems<K>
where
    K: Sink,
    K::Item: Serialize + Clone,
{
    type Item = K::Item;

    async fn write(&mut self, items: &mut Vec<K::Item>) -> Result<(), WriteError> {
        self.copy.clear();
        self.copy.extend_from_slice(items);
        // Caught here, not only by the runtime, so that a panicking write still shows
        // its rows.
        let written = AssertUnwindSafe(self.sink.write(items))
            .catch_unwind()
            .await;
        let written = written.unwrap_or_else(|payload| {
            let message = crate::error::panic_message(&*payload);
            let mut e = WriteError::all(Message(format!("sink panicked: {message}")));
            e.panic = Some(message);
            Err(e)
        });
        written.map_err(|mut e| {
            let n = self.copy.len();
            let failed = e.failed.clone().unwrap_or_else(|| (0..n).collect());
            e.shown = vec![None; n];
            for p in failed {
                if let (Some(slot), Some(item)) = (e.shown.get_mut(p), self.copy.get(p)) {
                    *slot = serde_json::to_value(item).ok();
                }
            }
            e
        })
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send {
        self.sink.flush()
    }

    fn name(&self) -> &str {
        self.sink.name()
    }
}

/// A sink keeping every item in memory, and the handle to read them. Its memory grows with
/// the input: meant for tests and small jobs.
///
/// ```
/// let (sink, items) = pipeline_core::sink::collect::<u64>();
/// assert!(items.take().is_empty());
/// # drop(sink);
/// ```
pub fn collect<T: Send + 'static>() -> (Collect<T>, Collected<T>) {
    let items = Arc::new(Mutex::new(Vec::new()));
    (
        Collect {
            items: Arc::clone(&items),
        },
        Collected { items },
    )
}

/// See [`collect`].
#[derive(Debug)]
pub struct Collect<T> {
    items: Arc<Mutex<Vec<T>>>,
}

/// The items a [`Collect`] sink received, in arrival order.
#[derive(Debug)]
pub struct Collected<T> {
    items: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for Collected<T> {
    fn clone(&self) -> Self {
        Collected {
            items: Arc::clone(&self.items),
        }
    }
}

impl<T> Collected<T> {
    /// Takes the items received so far.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.items.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// How many items are held.
    pub fn len(&self) -> usize {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Send + 'static> Sink for Collect<T> {
    type Item = T;

    async fn write(&mut self, items: &mut Vec<T>) -> Result<(), WriteError> {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(items);
        Ok(())
    }

    fn name(&self) -> &str {
        "collect"
    }
}

/// A sink calling an async closure per item; an `Err` fails that item only.
///
/// ```
/// use std::convert::Infallible;
/// let sink = pipeline_core::sink::for_each(|n: u64| async move {
///     println!("{n}");
///     Ok::<_, Infallible>(())
/// });
/// # let _ = sink;
/// ```
pub fn for_each<T, F, Fut, E>(f: F) -> ForEach<F, T>
where
    T: Send + 'static,
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<BoxError>,
{
    ForEach(f, std::marker::PhantomData)
}

/// See [`for_each`].
pub struct ForEach<F, T>(F, std::marker::PhantomData<fn(T)>);

impl<F, T> fmt::Debug for ForEach<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForEach(..)")
    }
}

impl<T, F, Fut, E> Sink for ForEach<F, T>
where
    T: Send + 'static,
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<BoxError>,
{
    type Item = T;

    async fn write(&mut self, items: &mut Vec<T>) -> Result<(), WriteError> {
        let mut failed = Vec::new();
        let mut last = None;
        for (pos, item) in items.drain(..).enumerate() {
            if let Err(e) = (self.0)(item).await {
                failed.push(pos);
                last = Some(e.into());
            }
        }
        match last {
            None => Ok(()),
            Some(e) => Err(WriteError::partial(e, failed)),
        }
    }

    fn name(&self) -> &str {
        "for_each"
    }
}

/// A sink doing blocking work per batch (an embedded database, a file API without async)
/// on tokio's blocking pool, with state of its own: `open` builds the state on the first
/// write (and again after a write panicked, since the state may be half-changed), `write`
/// handles one batch. Make each write its own transaction: a batch counts as delivered
/// when `write` returns `Ok`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::io::Write;
/// use pipeline_core::prelude::*;
/// use pipeline_core::sink::WriteError;
///
/// // With rusqlite: `|| Connection::open("out.db")` and an INSERT per row in one transaction.
/// let path = std::env::temp_dir().join(format!("pipeline-doc-{}.txt", std::process::id()));
/// let file = path.clone();
/// let sink = sink::blocking(
///     move || std::fs::File::create(&file),
///     |out: &mut std::fs::File, rows: &mut Vec<u64>| {
///         for row in rows.drain(..) {
///             writeln!(out, "{row}").map_err(WriteError::all)?;
///         }
///         out.sync_data().map_err(WriteError::all)
///     },
/// );
/// Pipeline::builder("file")
///     .source(source::iter(1..=3u64))
///     .sink(sink)
///     .run()
///     .await
///     .unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n3\n");
/// # let _ = std::fs::remove_file(&path);
/// # }
/// ```
pub fn blocking<S, T, O, E, W>(open: O, write: W) -> Blocking<S, T, O, W>
where
    S: Send + 'static,
    T: Send + 'static,
    O: FnMut() -> Result<S, E> + Send + 'static,
    E: Into<BoxError>,
    W: FnMut(&mut S, &mut Vec<T>) -> Result<(), WriteError> + Send + 'static,
{
    Blocking {
        parts: Arc::new(Mutex::new(BlockingParts {
            state: None,
            open,
            write,
        })),
        _item: std::marker::PhantomData,
    }
}

/// See [`blocking`].
pub struct Blocking<S, T, O, W> {
    parts: Arc<Mutex<BlockingParts<S, O, W>>>,
    _item: std::marker::PhantomData<fn(T)>,
}

struct BlockingParts<S, O, W> {
    state: Option<S>,
    open: O,
    write: W,
}

impl<S, T, O, W> fmt::Debug for Blocking<S, T, O, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Blocking(..)")
    }
}

impl<S, T, O, E, W> Sink for Blocking<S, T, O, W>
where
    S: Send + 'static,
    T: Send + 'static,
    O: FnMut() -> Result<S, E> + Send + 'static,
    E: Into<BoxError>,
    W: FnMut(&mut S, &mut Vec<T>) -> Result<(), WriteError> + Send + 'static,
{
    type Item = T;

    async fn write(&mut self, items: &mut Vec<T>) -> Result<(), WriteError> {
        let mut batch = std::mem::take(items);
        let parts = Arc::clone(&self.parts);
        let done = tokio::task::spawn_blocking(move || {
            let mut parts = match parts.lock() {
                Ok(parts) => parts,
                Err(poisoned) => {
                    // The last write panicked half-way: its state is not to be trusted.
                    let mut parts = poisoned.into_inner();
                    parts.state = None;
                    parts
                }
            };
            let parts = &mut *parts;
            if parts.state.is_none() {
                parts.state = Some((parts.open)().map_err(WriteError::all)?);
            }
            match parts.state.as_mut() {
                Some(state) => (parts.write)(state, &mut batch),
                None => Err(WriteError::all(Message("sink state not open".into()))),
            }
        })
        .await;
        match done {
            Ok(written) => written,
            Err(e) => match e.try_into_panic() {
                Ok(payload) => {
                    // The next write opens a fresh state.
                    if let Err(poisoned) = self.parts.lock() {
                        poisoned.into_inner().state = None;
                    }
                    self.parts.clear_poison();
                    std::panic::resume_unwind(payload)
                }
                Err(e) => Err(WriteError::all(e)),
            },
        }
    }

    fn name(&self) -> &str {
        "blocking"
    }
}

/// A sink forwarding items into a tokio channel, waiting while it is full.
///
/// ```
/// let (tx, _rx) = tokio::sync::mpsc::channel::<u64>(16);
/// let sink = pipeline_core::sink::channel(tx);
/// # let _ = sink;
/// ```
pub fn channel<T: Send + 'static>(tx: mpsc::Sender<T>) -> Channel<T> {
    Channel(tx)
}

/// See [`channel`].
#[derive(Debug)]
pub struct Channel<T>(mpsc::Sender<T>);

impl<T: Send + 'static> Sink for Channel<T> {
    type Item = T;

    async fn write(&mut self, items: &mut Vec<T>) -> Result<(), WriteError> {
        let total = items.len();
        for (pos, item) in items.drain(..).enumerate() {
            if self.0.send(item).await.is_err() {
                return Err(WriteError::partial(
                    Message("the receiving channel is closed".into()),
                    (pos..total).collect(),
                ));
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "channel"
    }
}

/// A sink appending each item as one JSON line to a file (created or appended to).
///
/// ```no_run
/// let sink = pipeline_core::sink::jsonl_file::<serde_json::Value>("out.jsonl");
/// # let _ = sink;
/// ```
pub fn jsonl_file<T: Serialize + Send + 'static>(path: impl Into<PathBuf>) -> JsonLines<T> {
    JsonLines {
        path: path.into(),
        file: None,
        line: Vec::new(),
        _item: std::marker::PhantomData,
    }
}

/// See [`jsonl_file`].
#[derive(Debug)]
pub struct JsonLines<T> {
    path: PathBuf,
    file: Option<BufWriter<tokio::fs::File>>,
    line: Vec<u8>,
    _item: std::marker::PhantomData<fn(T)>,
}

impl<T: Serialize + Send + 'static> Sink for JsonLines<T> {
    type Item = T;

    async fn write(&mut self, items: &mut Vec<T>) -> Result<(), WriteError> {
        if self.file.is_none() {
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
                .map_err(WriteError::all)?;
            self.file = Some(BufWriter::new(file));
        }
        let Some(file) = self.file.as_mut() else {
            return Err(WriteError::all(Message("file not open".into())));
        };
        let mut failed = Vec::new();
        let mut last: Option<BoxError> = None;
        self.line.clear();
        for (pos, item) in items.iter().enumerate() {
            let start = self.line.len();
            if let Err(e) = serde_json::to_writer(&mut self.line, item) {
                self.line.truncate(start);
                failed.push(pos);
                last = Some(e.into());
                continue;
            }
            self.line.push(b'\n');
        }
        file.write_all(&self.line).await.map_err(WriteError::all)?;
        // The batch is only delivered once it reached the OS.
        file.flush().await.map_err(WriteError::all)?;
        items.clear();
        match last {
            None => Ok(()),
            Some(e) => Err(WriteError::partial(e, failed)),
        }
    }

    async fn flush(&mut self) -> Result<(), BoxError> {
        if let Some(file) = self.file.as_mut() {
            file.flush().await?;
            file.get_mut().sync_data().await?;
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "jsonl_file"
    }
}

/// A sink that writes each item to the `tracing` log at `warn` level and drops it; the
/// default dead-letter sink, so no dead letter is ever silent.
///
/// ```
/// let sink = pipeline_core::sink::log::<pipeline_core::DeadLetter>();
/// # let _ = sink;
/// ```
pub fn log<T: fmt::Debug + Send + 'static>() -> Log<T> {
    Log(std::marker::PhantomData)
}

/// See [`log`].
#[derive(Debug)]
pub struct Log<T>(std::marker::PhantomData<fn(T)>);

impl<T: fmt::Debug + Send + 'static> Sink for Log<T> {
    type Item = T;

    async fn write(&mut self, items: &mut Vec<T>) -> Result<(), WriteError> {
        for item in items.drain(..) {
            tracing::warn!(?item, "dead letter");
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "log"
    }
}
