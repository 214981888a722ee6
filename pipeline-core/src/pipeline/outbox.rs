//! [`Outbox`]: items leaving a task, gathered by origin into batches for the next edge.

use std::sync::Arc;

use super::MAX_BATCH;
use crate::ack::Origin;
use crate::edge::EdgeTx;
use crate::envelope::Batch;

/// Items leaving a task, grouped by origin, sent as batches.
pub(crate) struct Outbox<T> {
    ready: Vec<Batch<T>>,
    items: usize,
}

impl<T: Send + 'static> Outbox<T> {
    pub(crate) fn new() -> Self {
        Outbox {
            ready: Vec::new(),
            items: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, origin: &Arc<Origin>, idx: u32, item: T, hint: usize) {
        self.batch_for(origin, hint).push(idx, item);
        self.items += 1;
    }

    /// Like [`push`](Self::push), for an item weighing `weight` (a group).
    pub(crate) fn push_weighted(
        &mut self,
        origin: &Arc<Origin>,
        idx: u32,
        item: T,
        weight: u32,
        hint: usize,
    ) {
        self.batch_for(origin, hint)
            .push_weighted(idx, item, weight);
        self.items += 1;
    }

    /// The batch the next item of `origin` joins: the last one if it is of `origin`.
    #[inline(always)]
    fn batch_for(&mut self, origin: &Arc<Origin>, hint: usize) -> &mut Batch<T> {
        let reuse = self
            .ready
            .last()
            .is_some_and(|batch| Arc::ptr_eq(batch.origin(), origin));
        if !reuse {
            let batch = Batch::empty(Arc::clone(origin), hint.clamp(1, MAX_BATCH));
            self.ready.push(batch);
        }
        let last = self.ready.len() - 1;
        &mut self.ready[last]
    }

    /// Queues a whole batch.
    pub(crate) fn push_batch(&mut self, batch: Batch<T>) {
        if !batch.is_empty() {
            self.items += batch.len();
            self.ready.push(batch);
        }
    }

    /// Sends everything; returns how many items went out.
    pub(crate) async fn flush(&mut self, tx: &EdgeTx<T>) -> usize {
        let sent = self.items;
        self.items = 0;
        for batch in self.ready.drain(..) {
            tx.send(batch).await;
        }
        sent
    }
}
