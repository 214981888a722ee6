//! The tasks around the stages: sources, sinks, fan-out, routing, partitioning and
//! batching. Each takes batches from edges and gives every item exactly one way out.

use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use std::sync::Arc;
use std::time::Duration;

use super::outbox::Outbox;
use super::{Control, MAX_BATCH};
use crate::ack::{Origin, Outcome, PanicHook};
use crate::dead_letter::DeadLetter;
use crate::edge::{EdgeRx, EdgeTx};
use crate::envelope::Batch;
use crate::error::{Message, chain};
use crate::options::{OnError, RestartOptions};
use crate::sink::{Sink, WriteError};
use crate::source::Source;
use crate::stats::{Counters, SOURCE_ERRORS_TOTAL};
use crate::supervise::{Supervisor, Verdict};

/// Pulls from a source until it ends or the pipeline stops; at the end, whatever the
/// source still holds ([`Source::drain`]) is counted `Abandoned`.
pub(crate) async fn source<S: Source>(
    mut source: S,
    tx: EdgeTx<S::Item>,
    max: usize,
    restart: Option<RestartOptions>,
    control: Arc<Control>,
    counters: Arc<Counters>,
) {
    // A panicking ack callback is counted on this source.
    let ack_panics: PanicHook = {
        let counters = Arc::clone(&counters);
        Arc::new(move |message: &str| counters.panicked("ack", message))
    };
    // Sources restart after a panicking `pull` only when asked to.
    let mut supervisor = restart.map(|r| Supervisor::new(Some(r)));
    let hard_stop = control.hard_stop.clone();
    tokio::select! {
        biased;
        () = hard_stop.cancelled() => {}
        () = pull_loop(&mut source, &tx, max, &control, &counters, &ack_panics, &mut supervisor) => {}
    }
    let drained = AssertUnwindSafe(|| source.drain());
    match std::panic::catch_unwind(drained) {
        Ok(Some(pulled)) => {
            let n = pulled.items.len();
            if n > 0 {
                tracing::warn!(source = %counters.name, items = n, "accepted items abandoned at shutdown");
            }
            let ack = pulled.ack.map(|a| a.on_panic(&ack_panics));
            let origin = Origin::root(n, &control.ledger, ack);
            Batch::new(pulled.items, origin).finish_all(Outcome::Abandoned);
        }
        Ok(None) => {}
        Err(payload) => counters.panicked("drain", &crate::error::panic_message(&*payload)),
    }
}

async fn pull_loop<S: Source>(
    source: &mut S,
    tx: &EdgeTx<S::Item>,
    max: usize,
    control: &Control,
    counters: &Counters,
    ack_panics: &PanicHook,
    supervisor: &mut Option<Supervisor>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut stopping = false;
    loop {
        // A source that is always ready must still let the other tasks of its worker run.
        tokio::task::consume_budget().await;
        // Pull no more than the edge can take now: a broker source reads what
        // downstream has credit for.
        let room = tx.room().await.min(max).max(1);
        let pull = AssertUnwindSafe(source.pull(room)).catch_unwind();
        let pulled = if stopping {
            pull.await
        } else {
            tokio::select! {
                biased;
                () = control.stop.cancelled() => {
                    // User code: a panicking `close` stops the source at once.
                    let keeps_going = std::panic::catch_unwind(AssertUnwindSafe(|| source.close()))
                        .unwrap_or_else(|payload| {
                            counters.panicked("close", &crate::error::panic_message(&*payload));
                            false
                        });
                    if !keeps_going {
                        break;
                    }
                    stopping = true;
                    continue;
                }
                pulled = pull => pulled,
            }
        };
        let pulled = match pulled {
            Ok(pulled) => pulled,
            Err(payload) => {
                let message = crate::error::panic_message(&*payload);
                counters.panicked("pull", &message);
                match supervisor
                    .as_mut()
                    .map(|s| s.on_panic(tokio::time::Instant::now()))
                {
                    Some(Verdict::Restart(after)) => {
                        counters.restarted();
                        tokio::time::sleep(after).await;
                        continue;
                    }
                    _ => {
                        control.fail(&counters.name, format!("source panicked: {message}"));
                        break;
                    }
                }
            }
        };
        match pulled {
            Ok(Some(pulled)) => {
                backoff = Duration::from_millis(100);
                let n = pulled.items.len();
                let ack = pulled.ack.map(|a| a.on_panic(ack_panics));
                let origin = Origin::root(n, &control.ledger, ack);
                counters.received(n);
                tx.send(Batch::new(pulled.items, origin)).await;
                counters.emitted(n);
                counters.completed(n);
            }
            Ok(None) => break,
            Err(error) => {
                counters.errors(1);
                ::metrics::counter!(SOURCE_ERRORS_TOTAL, "pipeline" => control.name.clone(), "stage" => counters.name.clone()).increment(1);
                tracing::warn!(source = %counters.name, error = %chain(&*error), retry_in = ?backoff, "source failed; retrying");
                tokio::select! {
                    () = control.stop.cancelled(), if !stopping => {}
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// What a sink's write means for the items.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SinkRole {
    /// A regular sink: success = `Delivered`; failed items are dead-lettered.
    Output,
    /// The dead-letter sink: success = `DeadLettered`; failure = `Failed`.
    DeadLetter,
}

/// Writes batches into a sink, then flushes it.
pub(crate) async fn sink<K: Sink>(
    mut sink: K,
    mut rx: EdgeRx<K::Item>,
    dead_tx: Option<EdgeTx<DeadLetter>>,
    role: SinkRole,
    control: Arc<Control>,
    counters: Arc<Counters>,
) {
    while let Some(batch) = rx.recv().await {
        let n = batch.len();
        counters.received(n);
        let (mut items, claim) = batch.claim();
        let start = tokio::time::Instant::now();
        // A panicking sink fails this batch, not the pipeline: the items go to the
        // dead-letter path like any failed write (at-least-once if it panicked after
        // writing).
        let written = AssertUnwindSafe(sink.write(&mut items))
            .catch_unwind()
            .await;
        counters.latency(start.elapsed());
        let written = written.unwrap_or_else(|payload| {
            let message = crate::error::panic_message(&*payload);
            counters.panicked("write", &message);
            Err(WriteError::all(Message(format!(
                "sink panicked: {message}"
            ))))
        });
        match written {
            Ok(()) => {
                counters.emitted(n);
                claim.finish_all(match role {
                    SinkRole::Output => Outcome::Delivered,
                    SinkRole::DeadLetter => Outcome::DeadLettered,
                });
            }
            Err(mut write_error) => {
                if let Some(message) = write_error.panic.take() {
                    counters.panicked("write", &message);
                }
                let mut failed = write_error
                    .failed
                    .take()
                    .unwrap_or_else(|| (0..n).collect());
                failed.sort_unstable();
                failed.dedup();
                failed.retain(|&p| p < n);
                counters.errors(failed.len());
                counters.emitted(n - failed.len());
                let text = chain(&*write_error.error);
                claim.note(&failed, &counters.name, &text);
                match (role, &dead_tx) {
                    (SinkRole::Output, Some(dead_tx)) => {
                        tracing::warn!(sink = %counters.name, items = failed.len(), error = %text, "write failed; items dead-lettered");
                        let record = DeadLetter::new(&*counters.name, text, 1);
                        let records = claim.split_failed(&failed, |p| {
                            let mut letter = record.clone();
                            letter.item = write_error.shown(p);
                            letter
                        });
                        dead_tx.send(records).await;
                    }
                    _ => {
                        tracing::error!(sink = %counters.name, items = failed.len(), error = %text, "write failed; items failed");
                        claim.finish_split(&failed, Outcome::Failed);
                    }
                }
            }
        }
        counters.completed(n);
    }
    let flushed = AssertUnwindSafe(sink.flush()).catch_unwind().await;
    let flushed = flushed.unwrap_or_else(|payload| {
        let message = crate::error::panic_message(&*payload);
        counters.panicked("flush", &message);
        Err(Message(format!("panicked: {message}")).into())
    });
    if let Err(error) = flushed {
        counters.errors(1);
        control.fail(&counters.name, format!("flush failed: {}", chain(&*error)));
    }
}

/// Copies every item to each output (fan-out). Each output has its own edge and policy.
pub(crate) async fn tee<T: Clone + Send + 'static>(
    mut rx: EdgeRx<T>,
    outputs: Vec<EdgeTx<T>>,
    counters: Arc<Counters>,
) {
    let Some((last, rest)) = outputs.split_last() else {
        return;
    };
    while let Some(batch) = rx.recv().await {
        let n = batch.len();
        counters.received(n);
        // Worst status wins over the branches: every copy is one more to wait for.
        batch.add_copies(rest.len());
        for tx in rest {
            tx.send(batch.copy()).await;
        }
        last.send(batch).await;
        counters.emitted(n);
        counters.completed(n);
    }
}

/// How a router settles an item whose predicate or key fn panicked: through the router's
/// `on_error`, the router named.
pub(crate) struct Reject {
    pub(crate) on_error: OnError,
    pub(crate) dead_tx: EdgeTx<DeadLetter>,
    pub(crate) control: Arc<Control>,
    pub(crate) counters: Arc<Counters>,
}

impl Reject {
    /// Calls `f` under panic capture; a panic settles item `idx` and gives `None`.
    fn guard<R>(
        &self,
        what: &'static str,
        origin: &Arc<Origin>,
        idx: u32,
        dead: &mut Outbox<DeadLetter>,
        f: impl FnOnce() -> R,
    ) -> Option<R> {
        let payload = match std::panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => return Some(r),
            Err(payload) => payload,
        };
        let message = crate::error::panic_message(&*payload);
        let name = &self.counters.name;
        self.counters.panicked(what, &message);
        self.counters.errors(1);
        let error = format!("{what} panicked: {message}");
        origin.note(idx, name, &error);
        match self.on_error {
            OnError::DeadLetter => dead.push(origin, idx, DeadLetter::new(name, error, 1), 1),
            OnError::Drop => origin.finish(idx, Outcome::Dropped),
            OnError::Fail => {
                origin.finish(idx, Outcome::Failed);
                self.control.fail(name, error);
            }
        }
        None
    }
}

/// Sends items matching `pred` to `matched`, the rest to `other`.
pub(crate) async fn route<T: Send + 'static, P: Fn(&T) -> bool + Send + 'static>(
    mut rx: EdgeRx<T>,
    pred: P,
    matched: EdgeTx<T>,
    other: EdgeTx<T>,
    reject: Reject,
) {
    let counters = Arc::clone(&reject.counters);
    while let Some(mut batch) = rx.recv().await {
        let n = batch.len();
        counters.received(n);
        let mut yes = Outbox::new();
        let mut no = Outbox::new();
        let mut dead = Outbox::new();
        let origin = Arc::clone(batch.origin());
        for (idx, item, weight) in batch.drain() {
            match reject.guard("predicate", &origin, idx, &mut dead, || pred(&item)) {
                Some(true) => yes.push_weighted(&origin, idx, item, weight, n),
                Some(false) => no.push_weighted(&origin, idx, item, weight, n),
                None => {}
            }
        }
        let sent = yes.flush(&matched).await + no.flush(&other).await;
        dead.flush(&reject.dead_tx).await;
        counters.emitted(sent);
        counters.completed(n);
    }
}

/// Sends each item to lane `hash(key) % lanes`, so one key always takes one lane.
pub(crate) async fn partition<T, K, F>(
    mut rx: EdgeRx<T>,
    key: F,
    lanes: Vec<EdgeTx<T>>,
    reject: Reject,
) where
    T: Send + 'static,
    K: Hash,
    F: Fn(&T) -> K + Send + 'static,
{
    let counters = Arc::clone(&reject.counters);
    let mut outs: Vec<Outbox<T>> = lanes.iter().map(|_| Outbox::new()).collect();
    let mut dead = Outbox::new();
    while let Some(mut batch) = rx.recv().await {
        let n = batch.len();
        counters.received(n);
        let origin = Arc::clone(batch.origin());
        for (idx, item, weight) in batch.drain() {
            let hashed = reject.guard("key", &origin, idx, &mut dead, || {
                let mut h = std::hash::DefaultHasher::new();
                key(&item).hash(&mut h);
                h.finish()
            });
            let Some(hash) = hashed else { continue };
            let lane = (hash % outs.len() as u64) as usize;
            if let Some(out) = outs.get_mut(lane) {
                out.push_weighted(&origin, idx, item, weight, n);
            }
        }
        let mut sent = 0;
        for (out, tx) in outs.iter_mut().zip(&lanes) {
            sent += out.flush(tx).await;
        }
        dead.flush(&reject.dead_tx).await;
        counters.emitted(sent);
        counters.completed(n);
    }
}

/// Items gathered for one group, with the identity of each. Dropped unfinished (an
/// aborted task), every member ends `Abandoned`.
struct Group<T> {
    items: Vec<T>,
    links: Vec<(Arc<Origin>, u32)>,
}

impl<T> Drop for Group<T> {
    fn drop(&mut self) {
        for (origin, idx) in self.links.drain(..) {
            origin.finish(idx, Outcome::Abandoned);
        }
    }
}

/// Groups items into `Vec`s of up to `size`, emitted when full or `within` after the
/// group's first item. A group is one item whose outcome every member takes.
pub(crate) async fn batch<T: Send + 'static>(
    mut rx: EdgeRx<T>,
    tx: EdgeTx<Vec<T>>,
    size: usize,
    within: Duration,
    counters: Arc<Counters>,
) {
    let size = size.max(1);
    let mut group = Group {
        items: Vec::with_capacity(size.min(MAX_BATCH)),
        links: Vec::with_capacity(size.min(MAX_BATCH)),
    };
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut input: Option<Batch<T>> = None;
    loop {
        if let Some(batch) = input.as_mut() {
            while let Some((idx, item)) = batch.pop() {
                if group.items.is_empty() {
                    deadline = Some(tokio::time::Instant::now() + within);
                }
                group.items.push(item);
                group.links.push((Arc::clone(batch.origin()), idx));
                if group.items.len() >= size {
                    emit(&mut group, &tx, &counters).await;
                    deadline = None;
                }
            }
            input = None;
        }
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            next = rx.recv() => match next {
                Some(mut batch) => {
                    counters.received(batch.len());
                    batch.reverse();
                    input = Some(batch);
                }
                None => break,
            },
            () = timer => {
                emit(&mut group, &tx, &counters).await;
                deadline = None;
            }
        }
    }
    emit(&mut group, &tx, &counters).await;
}

async fn emit<T: Send + 'static>(group: &mut Group<T>, tx: &EdgeTx<Vec<T>>, counters: &Counters) {
    let n = group.items.len();
    if n == 0 {
        return;
    }
    let origin = Origin::derived(std::mem::take(&mut group.links));
    let items = std::mem::replace(&mut group.items, Vec::with_capacity(n));
    // A group weighs its length on every edge it crosses: capacity stays in items.
    tx.send(Batch::group(items, n, origin)).await;
    counters.emitted(1);
    counters.completed(n);
}
