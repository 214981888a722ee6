//! [`Batch`]: the message between stage tasks.
//!
//! Items travel in batches of whatever is ready (one channel hop per item costs 110-250 ns,
//! inside a batch 2-6 ns). The metadata lives in columns beside the items, not in a struct
//! around each one: one [`Origin`] record for the whole batch and each item's index in it.
//! A batch dropped with items still in it marks them `Abandoned` ("unfinalized means
//! failed"), so a task that is aborted or a queue that is dropped can never lose an item
//! silently.

use std::sync::Arc;

use crate::ack::{Origin, Outcome};

/// Items of one origin, with each item's index in that origin.
///
/// Edges count capacity in source items' worth: an item weighs 1, except a group made
/// by `batch`, which weighs its length. Weights are a column of their own, kept only for
/// batches that hold groups (empty otherwise: every item weighs 1).
#[derive(Debug)]
pub(crate) struct Batch<T> {
    items: Vec<T>,
    idx: Vec<u32>,
    /// Each item's weight, or empty when every item weighs 1.
    weights: Vec<u32>,
    origin: Arc<Origin>,
}

impl<T> Batch<T> {
    /// A batch of freshly emitted source items `0..items.len()`.
    pub(crate) fn new(items: Vec<T>, origin: Arc<Origin>) -> Self {
        let idx = (0..items.len() as u32).collect();
        Batch {
            items,
            idx,
            weights: Vec::new(),
            origin,
        }
    }

    /// One item of weight `weight` (a group of that many).
    pub(crate) fn group(item: T, weight: usize, origin: Arc<Origin>) -> Self {
        Batch {
            items: vec![item],
            idx: vec![0],
            weights: vec![u32::try_from(weight).unwrap_or(u32::MAX)],
            origin,
        }
    }

    /// An empty batch of `origin`, to be filled with [`push`](Self::push).
    pub(crate) fn empty(origin: Arc<Origin>, capacity: usize) -> Self {
        Batch {
            items: Vec::with_capacity(capacity),
            idx: Vec::with_capacity(capacity),
            weights: Vec::new(),
            origin,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// What the batch weighs on an edge: its length, unless it holds groups.
    pub(crate) fn weight(&self) -> usize {
        if self.weights.is_empty() {
            self.items.len()
        } else {
            self.weights.iter().map(|&w| w as usize).sum()
        }
    }

    /// How many items from the back weigh at most `room` in all.
    pub(crate) fn fitting_back(&self, room: usize) -> usize {
        if self.weights.is_empty() {
            return room.min(self.items.len());
        }
        let mut total = 0;
        self.weights
            .iter()
            .rev()
            .take_while(|&&w| {
                total += w as usize;
                total <= room
            })
            .count()
    }

    /// How many items from the front it takes to weigh at least `need` (all, if the
    /// whole batch weighs less).
    pub(crate) fn covering(&self, need: usize) -> usize {
        if self.weights.is_empty() {
            return need.min(self.items.len());
        }
        let mut total = 0;
        let mut n = 0;
        for &w in &self.weights {
            if total >= need {
                break;
            }
            total += w as usize;
            n += 1;
        }
        n
    }

    /// How many items from the front weigh at most `room` in all.
    pub(crate) fn fitting(&self, room: usize) -> usize {
        if self.weights.is_empty() {
            return room.min(self.items.len());
        }
        let mut total = 0;
        self.weights
            .iter()
            .take_while(|&&w| {
                total += w as usize;
                total <= room
            })
            .count()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, idx: u32, item: T) {
        self.items.push(item);
        self.idx.push(idx);
        if !self.weights.is_empty() {
            self.weights.push(1);
        }
    }

    /// Adds an item of weight `weight`.
    pub(crate) fn push_weighted(&mut self, idx: u32, item: T, weight: u32) {
        if weight != 1 && self.weights.is_empty() {
            self.weights = vec![1; self.items.len()];
        }
        self.items.push(item);
        self.idx.push(idx);
        if !self.weights.is_empty() {
            self.weights.push(weight);
        }
    }

    /// Takes every item out with its index and weight; the caller now owns their
    /// outcomes.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (u32, T, u32)> + '_ {
        let weights = std::mem::take(&mut self.weights);
        let n = self.items.len();
        let weights = weights.into_iter().chain(std::iter::repeat(1)).take(n);
        self.idx
            .drain(..)
            .zip(self.items.drain(..))
            .zip(weights)
            .map(|((i, t), w)| (i, t, w))
    }

    /// Takes the items out for a sink; their outcomes are the caller's to report through
    /// the returned [`Claim`].
    pub(crate) fn claim(mut self) -> (Vec<T>, Claim) {
        let items = std::mem::take(&mut self.items);
        let idx = std::mem::take(&mut self.idx);
        (
            items,
            Claim {
                idx,
                origin: Arc::clone(&self.origin),
            },
        )
    }

    /// Reverses the items so that [`pop`](Self::pop) yields them in order.
    pub(crate) fn reverse(&mut self) {
        self.items.reverse();
        self.idx.reverse();
        self.weights.reverse();
    }

    /// Takes the last item out with its index; the caller now owns its outcome.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<(u32, T)> {
        let item = self.items.pop()?;
        let idx = self.idx.pop().unwrap_or_default();
        self.weights.pop();
        Some((idx, item))
    }

    /// Hands the items out one by one, in order; see [`Items`].
    pub(crate) fn into_items<U>(mut self) -> Items<T, U> {
        let items = std::mem::take(&mut self.items).into_iter();
        let idx = std::mem::take(&mut self.idx);
        Items {
            outputs: Vec::with_capacity(idx.len()),
            items,
            idx,
            next: 0,
            origin: Arc::clone(&self.origin),
        }
    }

    /// Splits off the first `n` items into their own batch.
    pub(crate) fn split_front(&mut self, n: usize) -> Batch<T> {
        let n = n.min(self.items.len());
        let rest_items = self.items.split_off(n);
        let rest_idx = self.idx.split_off(n);
        let front_items = std::mem::replace(&mut self.items, rest_items);
        let front_idx = std::mem::replace(&mut self.idx, rest_idx);
        let front_weights = if self.weights.is_empty() {
            Vec::new()
        } else {
            let rest = self.weights.split_off(n);
            std::mem::replace(&mut self.weights, rest)
        };
        Batch {
            items: front_items,
            idx: front_idx,
            weights: front_weights,
            origin: Arc::clone(&self.origin),
        }
    }

    /// Ends every item still in the batch with `outcome`.
    pub(crate) fn finish_all(&mut self, outcome: Outcome) {
        let n = self.items.len();
        if outcome != Outcome::Delivered {
            for &i in &self.idx {
                self.origin.mark(i, outcome);
            }
        }
        self.items.clear();
        self.idx.clear();
        self.weights.clear();
        self.origin.release(n);
    }

    /// The same items as `record`s (for the dead-letter sink), keeping their identities.
    pub(crate) fn into_records<R: Clone>(mut self, record: &R) -> Batch<R> {
        let idx = std::mem::take(&mut self.idx);
        self.items.clear();
        Batch {
            items: vec![record.clone(); idx.len()],
            idx,
            weights: Vec::new(),
            origin: Arc::clone(&self.origin),
        }
    }

    /// Each item gets `extra` more copies downstream (fan-out): all must finish.
    pub(crate) fn add_copies(&self, extra: usize) {
        self.origin.add_pending(self.items.len() * extra);
    }

    /// A copy of the batch for another fan-out branch. Call [`add_copies`](Self::add_copies) first.
    pub(crate) fn copy(&self) -> Batch<T>
    where
        T: Clone,
    {
        Batch {
            items: self.items.clone(),
            idx: self.idx.clone(),
            weights: self.weights.clone(),
            origin: Arc::clone(&self.origin),
        }
    }
}

impl<T> Drop for Batch<T> {
    fn drop(&mut self) {
        if !self.items.is_empty() {
            self.finish_all(Outcome::Abandoned);
        }
    }
}

/// A batch being taken apart item by item, with room for one output per item while
/// every item so far gave exactly one: then the outputs leave as a batch that reuses the
/// index column ([`into_outputs`](Self::into_outputs)). Dropped unfinished (an aborted
/// task), every item not yet taken, and every item whose output is still held here, ends
/// `Abandoned`.
#[derive(Debug)]
pub(crate) struct Items<T, U> {
    outputs: Vec<U>,
    items: std::vec::IntoIter<T>,
    idx: Vec<u32>,
    next: usize,
    origin: Arc<Origin>,
}

impl<T, U> Items<T, U> {
    pub(crate) fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }

    /// The next item with its index; the caller now owns its outcome.
    #[inline(always)]
    pub(crate) fn next(&mut self) -> Option<(u32, T)> {
        let item = self.items.next()?;
        let idx = self.idx.get(self.next).copied().unwrap_or_default();
        self.next += 1;
        Some((idx, item))
    }

    /// Keeps the one output of the item taken last, while every item so far had one.
    #[inline(always)]
    pub(crate) fn push_output(&mut self, output: U) {
        self.outputs.push(output);
    }

    /// The outputs held so far, as a batch of the items before the one taken last: from
    /// now on the caller settles items one by one.
    pub(crate) fn take_outputs(&mut self) -> Option<Batch<U>> {
        if self.outputs.is_empty() {
            return None;
        }
        let outputs = std::mem::take(&mut self.outputs);
        let idx = self.idx.get(..outputs.len()).unwrap_or_default().to_vec();
        Some(Batch {
            items: outputs,
            idx,
            weights: Vec::new(),
            origin: Arc::clone(&self.origin),
        })
    }

    /// Once every item is taken and each gave one output: the outputs as a batch, reusing
    /// the index column.
    pub(crate) fn into_outputs(mut self) -> Batch<U> {
        let outputs = std::mem::take(&mut self.outputs);
        let mut idx = std::mem::take(&mut self.idx);
        idx.truncate(outputs.len());
        Batch {
            items: outputs,
            idx,
            weights: Vec::new(),
            origin: Arc::clone(&self.origin),
        }
    }
}

impl<T, U> Drop for Items<T, U> {
    fn drop(&mut self) {
        let held = self.idx.get(..self.outputs.len()).unwrap_or_default();
        let untaken = self.idx.get(self.next..).unwrap_or_default();
        let n = held.len() + untaken.len();
        if n > 0 {
            for &i in held.iter().chain(untaken) {
                self.origin.mark(i, Outcome::Abandoned);
            }
            self.origin.release(n);
        }
    }
}

/// The outcomes a sink owes for a batch it took the items of. Dropped without a verdict,
/// every item is `Abandoned`.
#[derive(Debug)]
pub(crate) struct Claim {
    idx: Vec<u32>,
    origin: Arc<Origin>,
}

impl Claim {
    /// The items at `positions` (in the batch given to the sink) leave as a batch of
    /// records for the dead-letter sink, `record(position)` each; the rest are delivered.
    pub(crate) fn split_failed<R>(
        mut self,
        positions: &[usize],
        mut record: impl FnMut(usize) -> R,
    ) -> Batch<R> {
        let mut failed = Batch::empty(Arc::clone(&self.origin), positions.len());
        let mut taken = 0;
        for &p in positions {
            if let Some(&i) = self.idx.get(p) {
                failed.push(i, record(p));
                taken += 1;
            }
        }
        // The failed items stay pending: their outcome comes from the dead-letter sink.
        let delivered = self.idx.len() - taken;
        self.idx.clear();
        self.origin.release(delivered);
        failed
    }

    /// Notes why the items at `positions` failed (for acks that asked for reasons).
    pub(crate) fn note(&self, positions: &[usize], stage: &str, error: &str) {
        for &p in positions {
            if let Some(&i) = self.idx.get(p) {
                self.origin.note(i, stage, error);
            }
        }
    }

    /// Every item ended with `outcome`.
    pub(crate) fn finish_all(mut self, outcome: Outcome) {
        self.settle(outcome);
    }

    /// Items at `positions` ended with `failed`, the rest with `Delivered`.
    pub(crate) fn finish_split(mut self, positions: &[usize], failed: Outcome) {
        for &p in positions {
            if let Some(&i) = self.idx.get(p) {
                self.origin.mark(i, failed);
            }
        }
        self.settle(Outcome::Delivered);
    }

    fn settle(&mut self, outcome: Outcome) {
        let n = self.idx.len();
        if outcome != Outcome::Delivered {
            for &i in &self.idx {
                self.origin.mark(i, outcome);
            }
        }
        self.idx.clear();
        self.origin.release(n);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.idx.is_empty() {
            self.settle(Outcome::Abandoned);
        }
    }
}
