//! Edges: bounded channels of [`Batch`]es between tasks, with capacity counted in items.
//!
//! tokio's mpsc bounds messages, not items, and cannot drop the oldest entry, so the edge
//! is our own: a short mutex around a queue of batches, and two [`Notify`]s. The lock is
//! taken once per batch, never per item. A full edge applies its [`WhenFull`] policy;
//! every drop is counted and traced.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::ack::Outcome;
use crate::dead_letter::DeadLetter;
use crate::envelope::Batch;
use crate::options::WhenFull;
use crate::stats::{OVERFLOW_TOTAL, QUEUE_DEPTH};

/// Creates an edge of pipeline `pipeline` into element `name`, holding at most
/// `capacity` items (at least 1).
pub(crate) fn edge<T>(
    pipeline: &str,
    name: &str,
    capacity: usize,
    when_full: WhenFull,
) -> (EdgeTx<T>, EdgeRx<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            len: 0,
            senders: 1,
            receiver: true,
            space_waiters: 0,
        }),
        capacity: capacity.max(1),
        when_full,
        numbers: Arc::new(Numbers {
            depth: AtomicUsize::new(0),
            gauge: ::metrics::gauge!(QUEUE_DEPTH, "pipeline" => pipeline.to_owned(), "stage" => name.to_owned()),
            dropped: AtomicU64::new(0),
            capacity: capacity.max(1),
        }),
        space: Notify::new(),
        data: Notify::new(),
        name: name.into(),
    });
    (
        EdgeTx {
            shared: Arc::clone(&shared),
            overflow: None,
        },
        EdgeRx { shared },
    )
}

struct State<T> {
    queue: VecDeque<Batch<T>>,
    len: usize,
    senders: usize,
    receiver: bool,
    space_waiters: usize,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    when_full: WhenFull,
    numbers: Arc<Numbers>,
    space: Notify,
    data: Notify,
    name: Box<str>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // No code panics while holding the lock, but never turn poison into a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drop_items(&self, mut batch: Batch<T>, why: &'static str) {
        let n = batch.weight();
        if n == 0 {
            return;
        }
        self.numbers.dropped.fetch_add(n as u64, Ordering::Relaxed);
        ::metrics::counter!(OVERFLOW_TOTAL, "edge" => self.name.to_string(), "policy" => why)
            .increment(n as u64);
        tracing::warn!(edge = %self.name, items = n, policy = why, "edge full: items dropped");
        batch.finish_all(Outcome::Dropped);
    }
}

/// An edge's live numbers, readable without its lock (for `stats()`).
#[derive(Debug)]
struct Numbers {
    depth: AtomicUsize,
    /// `pipeline_queue_depth`, set with `depth` (once per batch).
    gauge: ::metrics::Gauge,
    dropped: AtomicU64,
    capacity: usize,
}

impl Numbers {
    fn set_depth(&self, items: usize) {
        self.depth.store(items, Ordering::Relaxed);
        self.gauge.set(items as f64);
    }
}

/// A handle on an edge's live numbers.
#[derive(Debug, Clone)]
pub(crate) struct EdgeProbe(Arc<Numbers>);

impl EdgeProbe {
    /// (queued items, capacity, items dropped or dead-lettered by the overflow policy)
    pub(crate) fn read(&self) -> (usize, usize, u64) {
        (
            self.0.depth.load(Ordering::Relaxed),
            self.0.capacity,
            self.0.dropped.load(Ordering::Relaxed),
        )
    }
}

/// The sending half; cloneable.
pub(crate) struct EdgeTx<T> {
    shared: Arc<Shared<T>>,
    overflow: Option<Box<EdgeTx<DeadLetter>>>,
}

impl<T> Clone for EdgeTx<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        EdgeTx {
            shared: Arc::clone(&self.shared),
            overflow: self.overflow.clone(),
        }
    }
}

impl<T> Drop for EdgeTx<T> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.senders -= 1;
        if st.senders == 0 {
            drop(st);
            self.shared.data.notify_one();
        }
    }
}

impl<T: Send + 'static> EdgeTx<T> {
    /// Sets where overflow goes for [`WhenFull::DeadLetter`].
    pub(crate) fn set_overflow(&mut self, dead_letters: EdgeTx<DeadLetter>) {
        self.overflow = Some(Box::new(dead_letters));
    }

    pub(crate) fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Free room in items, waiting while there is none (an edge whose policy never blocks
    /// answers at once, at least 1; so does an edge whose receiver is gone).
    ///
    /// Cancel safety: cancel safe.
    pub(crate) async fn room(&self) -> usize {
        let shared = &*self.shared;
        loop {
            let notified = shared.space.notified();
            let mut notified = pin!(notified);
            {
                let mut st = shared.lock();
                let room = shared.capacity.saturating_sub(st.len);
                if room > 0 || !st.receiver || shared.when_full != WhenFull::Block {
                    return room.max(1);
                }
                st.space_waiters += 1;
                notified.as_mut().enable();
            }
            let _waiting = WaiterGuard(shared);
            notified.await;
        }
    }

    /// Sends `batch`, applying the edge's [`WhenFull`] policy. With `Block` it waits
    /// for room, splitting the batch when only part of it fits.
    ///
    /// Cancel safety: items already queued stay queued; the rest of the batch is dropped
    /// with the future and so marked `Abandoned`.
    pub(crate) async fn send(&self, mut batch: Batch<T>) {
        let shared = &*self.shared;
        loop {
            if batch.is_empty() {
                return;
            }
            let notified = shared.space.notified();
            let mut notified = pin!(notified);
            match self.offer(&mut batch, notified.as_mut()) {
                Offer::Done => return,
                Offer::Wait => {
                    let _waiting = WaiterGuard(shared);
                    notified.await;
                }
                Offer::Overflow => {
                    self.overflow(batch).await;
                    return;
                }
            }
        }
    }

    /// Queues what fits under the lock; says what to do with the rest.
    fn offer(&self, batch: &mut Batch<T>, notified: std::pin::Pin<&mut Notified<'_>>) -> Offer {
        let shared = &*self.shared;
        let mut st = shared.lock();
        if !st.receiver {
            // The receiving task is gone: nobody will ever take these. Dropping them
            // marks them abandoned.
            drop(st);
            batch.finish_all(Outcome::Abandoned);
            return Offer::Done;
        }
        // Capacity counts weight: an item weighs 1, a group made by `batch` its length.
        let room = shared.capacity.saturating_sub(st.len);
        let weight = batch.weight();
        if weight <= room {
            let all = batch.split_front(batch.len());
            Self::push(shared, &mut st, all);
            return Offer::Done;
        }
        // What fits now; an item heavier than the whole edge is admitted into an empty one.
        let fits = match batch.fitting(room) {
            0 if st.len == 0 => 1,
            n => n,
        };
        match shared.when_full {
            WhenFull::Block => {
                // Send what fits only if that is a worthwhile part: splitting off whatever
                // little room there is would cut the stream into tiny batches.
                let worthwhile =
                    2 * room >= shared.capacity || weight > shared.capacity || st.len == 0;
                if fits > 0 && worthwhile {
                    let front = batch.split_front(fits);
                    Self::push(shared, &mut st, front);
                    if batch.is_empty() {
                        return Offer::Done;
                    }
                }
                st.space_waiters += 1;
                notified.enable();
                Offer::Wait
            }
            WhenFull::DropNewest | WhenFull::DeadLetter => {
                if fits > 0 {
                    let front = batch.split_front(fits);
                    Self::push(shared, &mut st, front);
                }
                if batch.is_empty() {
                    Offer::Done
                } else {
                    Offer::Overflow
                }
            }
            WhenFull::DropOldest => {
                // Keep the newest part that fits the whole edge (at least one item).
                let keep = batch.fitting_back(shared.capacity).max(1);
                if keep < batch.len() {
                    let old = batch.split_front(batch.len() - keep);
                    shared.drop_items(old, "drop_oldest");
                }
                let mut need = (st.len + batch.weight()).saturating_sub(shared.capacity);
                while need > 0 {
                    let Some(mut front) = st.queue.pop_front() else {
                        break;
                    };
                    let old = front.split_front(front.covering(need));
                    let w = old.weight();
                    st.len -= w;
                    need = need.saturating_sub(w);
                    shared.drop_items(old, "drop_oldest");
                    if !front.is_empty() {
                        st.queue.push_front(front);
                    }
                }
                shared.numbers.set_depth(st.len);
                let all = batch.split_front(batch.len());
                Self::push(shared, &mut st, all);
                Offer::Done
            }
        }
    }

    async fn overflow(&self, batch: Batch<T>) {
        match (&self.shared.when_full, &self.overflow) {
            (WhenFull::DeadLetter, Some(dead_letters)) => {
                let n = batch.weight();
                ::metrics::counter!(OVERFLOW_TOTAL, "edge" => self.shared.name.to_string(), "policy" => "dead_letter")
                    .increment(n as u64);
                tracing::warn!(edge = %self.shared.name, items = n, "edge full: items dead-lettered");
                self.shared
                    .numbers
                    .dropped
                    .fetch_add(n as u64, Ordering::Relaxed);
                let record = DeadLetter::new(&*self.shared.name, "edge full", 0);
                // Boxed: an edge of dead letters sending its overflow to an edge of dead letters
                // would otherwise be a future of infinite size.
                Box::pin(dead_letters.send(batch.into_records(&record))).await;
            }
            _ => self.shared.drop_items(batch, "drop_newest"),
        }
    }

    fn push(shared: &Shared<T>, st: &mut State<T>, batch: Batch<T>) {
        st.len += batch.weight();
        shared.numbers.set_depth(st.len);
        st.queue.push_back(batch);
        shared.data.notify_one();
    }
}

enum Offer {
    Done,
    Wait,
    Overflow,
}

struct WaiterGuard<'a, T>(&'a Shared<T>);

impl<T> Drop for WaiterGuard<'_, T> {
    fn drop(&mut self) {
        self.0.lock().space_waiters -= 1;
    }
}

/// The receiving half.
pub(crate) struct EdgeRx<T> {
    shared: Arc<Shared<T>>,
}

impl<T> EdgeRx<T> {
    pub(crate) fn probe(&self) -> EdgeProbe {
        EdgeProbe(Arc::clone(&self.shared.numbers))
    }

    /// The next batch; `None` once every sender is gone and the queue is empty.
    ///
    /// Cancel safety: cancel safe; a batch is only removed when it is returned.
    pub(crate) async fn recv(&mut self) -> Option<Batch<T>> {
        loop {
            {
                let mut st = self.shared.lock();
                if let Some(batch) = self.take(&mut st) {
                    return Some(batch);
                }
                if st.senders == 0 {
                    return None;
                }
            }
            self.shared.data.notified().await;
        }
    }

    /// The next batch if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Batch<T>> {
        let mut st = self.shared.lock();
        self.take(&mut st)
    }

    /// Pops the oldest batch under the lock and wakes senders waiting for room.
    fn take(&self, st: &mut State<T>) -> Option<Batch<T>> {
        let batch = st.queue.pop_front()?;
        st.len -= batch.weight();
        self.shared.numbers.set_depth(st.len);
        if st.space_waiters > 0 {
            self.shared.space.notify_waiters();
        }
        Some(batch)
    }
}

impl<T> Drop for EdgeRx<T> {
    fn drop(&mut self) {
        let queued: Vec<Batch<T>> = {
            let mut st = self.shared.lock();
            st.receiver = false;
            st.len = 0;
            self.shared.numbers.set_depth(0);
            st.queue.drain(..).collect()
        };
        // Dropped outside the lock: each marks its items abandoned.
        drop(queued);
        self.shared.space.notify_waiters();
    }
}

impl<T> std::fmt::Debug for EdgeTx<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeTx")
            .field("edge", &self.shared.name)
            .finish()
    }
}

impl<T> std::fmt::Debug for EdgeRx<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeRx")
            .field("edge", &self.shared.name)
            .finish()
    }
}
