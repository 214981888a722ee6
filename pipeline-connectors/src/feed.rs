//! A blocking producer on its own thread, feeding a source through a bounded channel.
//!
//! File decoders are blocking (`std::io`, `csv_core`, serde): they run on a dedicated
//! thread that sends chunks of items into a channel of a few chunks' capacity, so the
//! async workers never block and the read-ahead is bounded. The receiving side is cancel
//! safe (a dropped `pull` loses nothing: items stay in the channel or the local buffer).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

use pipeline_core::BoxError;
use pipeline_core::error::Message;
use pipeline_core::source::Pulled;
use tokio::sync::mpsc;

/// What runs on the reader thread.
pub(crate) trait Produce: Send + 'static {
    /// The item type.
    type Item: Send + 'static;
    /// The next item, `Ok(None)` at the end. An `Err` ends the feed after it is reported.
    fn produce(&mut self) -> Result<Option<Self::Item>, BoxError>;
}

pub(crate) enum Msg<T> {
    Items(Vec<T>),
    Failed(BoxError),
}

/// How items are moved from the thread: `chunk` items per message, `depth` messages
/// ahead at most.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FeedShape {
    pub(crate) chunk: usize,
    pub(crate) depth: usize,
}

/// The async side: a producer not started yet, or the channel from its thread.
pub(crate) enum Feed<P: Produce> {
    Idle(Option<(P, String, FeedShape)>),
    /// The thread could not be started (reported once): the source is over.
    Failed,
    Running {
        rx: mpsc::Receiver<Msg<P::Item>>,
        buf: VecDeque<P::Item>,
        /// A failure that came after items still buffered: reported once they are out.
        failed: Option<BoxError>,
        done: bool,
    },
}

impl<P: Produce> std::fmt::Debug for Feed<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Feed::Idle(_) => f.write_str("Feed::Idle"),
            Feed::Failed => f.write_str("Feed::Failed"),
            Feed::Running { buf, done, .. } => f
                .debug_struct("Feed::Running")
                .field("buffered", &buf.len())
                .field("done", done)
                .finish(),
        }
    }
}

impl<P: Produce> Feed<P> {
    /// A feed that starts its thread (named `thread`) on the first pull.
    pub(crate) fn new(producer: P, thread: String, shape: FeedShape) -> Self {
        Feed::Idle(Some((producer, thread, shape)))
    }

    fn start(&mut self) -> Result<(), BoxError> {
        let Feed::Idle(idle) = self else {
            return Ok(());
        };
        let Some((producer, thread, shape)) = idle.take() else {
            *self = Feed::Failed;
            return Ok(());
        };
        let (tx, rx) = mpsc::channel(shape.depth.max(1));
        let spawned = std::thread::Builder::new()
            .name(thread.clone())
            .spawn(move || run(producer, tx, shape.chunk.max(1)));
        if let Err(e) = spawned {
            *self = Feed::Failed;
            return Err(Message(format!("{thread}: cannot start the reader thread: {e}")).into());
        }
        *self = Feed::Running {
            rx,
            buf: VecDeque::new(),
            failed: None,
            done: false,
        };
        Ok(())
    }

    /// Up to `max` items; `Ok(None)` at the end.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: only the wait for the first message can be dropped.
    pub(crate) async fn pull(&mut self, max: usize) -> Result<Option<Pulled<P::Item>>, BoxError> {
        self.start()?;
        let Feed::Running {
            rx,
            buf,
            failed,
            done,
        } = self
        else {
            return Ok(None);
        };
        let max = max.max(1);
        if buf.is_empty()
            && let Some(e) = failed.take()
        {
            return Err(e);
        }
        if buf.is_empty() && !*done {
            match rx.recv().await {
                Some(Msg::Items(items)) => buf.extend(items),
                Some(Msg::Failed(e)) => {
                    *done = true;
                    return Err(e);
                }
                None => *done = true,
            }
        }
        while buf.len() < max && !*done {
            match rx.try_recv() {
                Ok(Msg::Items(items)) => buf.extend(items),
                Ok(Msg::Failed(e)) => {
                    // Deliver what came before the failure first; report it next pull.
                    *done = true;
                    if buf.is_empty() {
                        return Err(e);
                    }
                    *failed = Some(e);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => *done = true,
            }
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let n = buf.len().min(max);
        Ok(Some(Pulled::new(buf.drain(..n).collect())))
    }
}

/// The reader thread: chunks of items into the channel until the end, a failure, or the
/// source is dropped.
fn run<P: Produce>(mut producer: P, tx: mpsc::Sender<Msg<P::Item>>, chunk: usize) {
    loop {
        let mut items = Vec::with_capacity(chunk);
        let mut last = None;
        while items.len() < chunk {
            // A panic in a decoder (a user's `Deserialize` impl) must not end the source
            // silently: it is reported as the source's failure.
            match catch_unwind(AssertUnwindSafe(|| producer.produce())) {
                Ok(Ok(Some(item))) => items.push(item),
                Ok(Ok(None)) => {
                    last = Some(None);
                    break;
                }
                Ok(Err(e)) => {
                    last = Some(Some(e));
                    break;
                }
                Err(_) => {
                    last = Some(Some(Message("the file decoder panicked".into()).into()));
                    break;
                }
            }
        }
        if !items.is_empty() && tx.blocking_send(Msg::Items(items)).is_err() {
            return;
        }
        match last {
            None => {}
            Some(None) => return,
            Some(Some(e)) => {
                let _ = tx.blocking_send(Msg::Failed(e));
                return;
            }
        }
    }
}
