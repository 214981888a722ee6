//! The stage task: takes batches from the input edge, calls the stage per item (inline
//! when `concurrency` is 1, else up to `concurrency` calls in flight, ordered or not),
//! and sends what is ready downstream as one batch.

use std::future::poll_fn;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context as TaskCx, Poll};

use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::{FutureExt, Stream, StreamExt};

use super::outbox::Outbox;
use super::{Control, MAX_BATCH};
use crate::ack::{Origin, Outcome};
use crate::context::Context;
use crate::dead_letter::DeadLetter;
use crate::edge::{EdgeRx, EdgeTx};
use crate::envelope::{Batch, Items};
use crate::error::{BoxError, Message, chain};
use crate::options::OnError;
use crate::policy::{Failure, Outcome as CallOutcome, Policies, Tried};
use crate::stage::{Emitted, Shape, Stage};
use crate::stats::Counters;

/// An item whose call is under way. Dropped unsettled (an aborted task), it ends
/// `Abandoned`.
struct Claimed {
    origin: Arc<Origin>,
    idx: u32,
    settled: bool,
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if !self.settled {
            self.origin.finish(self.idx, Outcome::Abandoned);
        }
    }
}

/// The item whose call is under way when calls run one at a time. Dropped busy (an
/// aborted task), the item ends `Abandoned`.
struct Current<'o> {
    origin: &'o Arc<Origin>,
    idx: u32,
    busy: bool,
}

impl Drop for Current<'_> {
    fn drop(&mut self) {
        if self.busy {
            self.origin.finish(self.idx, Outcome::Abandoned);
        }
    }
}

/// Calls in flight, in completion order or in input order.
enum InFlight<F: Future> {
    Unordered(FuturesUnordered<F>),
    Ordered(FuturesOrdered<F>),
}

impl<F: Future> InFlight<F> {
    fn len(&self) -> usize {
        match self {
            InFlight::Unordered(f) => f.len(),
            InFlight::Ordered(f) => f.len(),
        }
    }

    fn push(&mut self, fut: F) {
        match self {
            InFlight::Unordered(f) => f.push(fut),
            InFlight::Ordered(f) => f.push_back(fut),
        }
    }
}

impl<F: Future> Stream for InFlight<F> {
    type Item = F::Output;
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Option<F::Output>> {
        match self.get_mut() {
            InFlight::Unordered(f) => f.poll_next_unpin(cx),
            InFlight::Ordered(f) => f.poll_next_unpin(cx),
        }
    }
}

/// Everything a stage task owns.
pub(crate) struct StageTask<S: Stage> {
    /// The policy engine: every call of the stage goes through it.
    pub(crate) stage: Policies<S>,
    pub(crate) name: Arc<str>,
    pub(crate) tx: EdgeTx<Emitted<S>>,
    pub(crate) dead_tx: EdgeTx<DeadLetter>,
    pub(crate) concurrency: usize,
    pub(crate) ordered: bool,
    pub(crate) on_error: OnError,
    pub(crate) counters: Arc<Counters>,
    pub(crate) control: Arc<Control>,
}

/// Per-batch tallies, applied to the counters once per batch.
#[derive(Default)]
struct Tally {
    completed: usize,
    filtered: usize,
    errors: usize,
    dead_lettered: usize,
    dropped: usize,
}

type Outcome_<S> = CallOutcome<S>;

/// What interrupted the processing of a batch.
enum Step<S: Stage> {
    /// The batch is done.
    Done,
    /// A flat-map output has more children than fit one batch: send as room allows.
    Children(Children<S>),
}

/// A flat-map output's remaining children, with their parent's identity.
type Children<S> = (
    Arc<Origin>,
    u32,
    <<S as Stage>::Shape as Shape<<S as Stage>::Output>>::Iter,
);

/// Where the results of calls go.
struct Results<'a, S: Stage> {
    task: &'a StageTask<S>,
    out: Outbox<Emitted<S>>,
    dead: Outbox<DeadLetter>,
    tally: Tally,
    /// Size of the input batch at hand: output batches are allocated for about as many.
    hint: usize,
}

impl<S: Stage> Results<'_, S> {
    /// Routes one call's result. Returns the children of a flat-map output beyond the
    /// first, to be pulled as the downstream edge has room ([`push_children`]).
    ///
    /// [`push_children`]: Self::push_children
    #[inline(always)]
    fn settle(&mut self, mut claim: Claimed, outcome: Outcome_<S>) -> Option<Children<S>> {
        claim.settled = true;
        self.settle_parts(&claim.origin, claim.idx, outcome)
    }

    /// Routes one call's result for item `idx` of `origin`. Returns the children of a
    /// flat-map output beyond the first, to be pulled as the downstream edge has room
    /// ([`push_children`](Self::push_children)).
    #[inline(always)]
    fn settle_parts(
        &mut self,
        origin: &Arc<Origin>,
        idx: u32,
        outcome: Outcome_<S>,
    ) -> Option<Children<S>> {
        self.tally.completed += 1;
        let (result, tries, input) = outcome.split();
        match result {
            Ok(output) => {
                // A flat-map's iterator is user code, pulled here, outside the call.
                let first = if <S::Shape as Shape<S::Output>>::MANY {
                    self.pull_child(origin, idx, false, || {
                        let mut items = <S::Shape as Shape<S::Output>>::items(output);
                        items.next().map(|first| (first, items))
                    })?
                } else {
                    let mut items = <S::Shape as Shape<S::Output>>::items(output);
                    items.next().map(|first| (first, items))
                };
                let Some((first, items)) = first else {
                    self.tally.filtered += 1;
                    origin.finish(idx, Outcome::Filtered);
                    return None;
                };
                self.out.push(origin, idx, first, self.hint);
                if <S::Shape as Shape<S::Output>>::MANY {
                    return Some((Arc::clone(origin), idx, items));
                }
                None
            }
            Err(error) => {
                self.fail(origin, idx, &error, &tries, input);
                None
            }
        }
    }

    /// Settles the call of the item of `batch` taken last: its output stays in the batch
    /// while `direct` (every item so far gave exactly one), else goes through
    /// [`settle_parts`](Self::settle_parts) after the outputs held so far left.
    #[inline(always)]
    fn settle_batched(
        &mut self,
        batch: &mut Items<S::In, Emitted<S>>,
        direct: &mut bool,
        origin: &Arc<Origin>,
        idx: u32,
        outcome: Outcome_<S>,
    ) -> Option<Children<S>> {
        if *direct {
            // The common case first: one output, nothing to report, no tries to read.
            let outcome = match outcome.into_ok() {
                Ok(output) => {
                    let mut items = <S::Shape as Shape<S::Output>>::items(output);
                    // Not a flat-map: one output at most.
                    if let Some(first) = items.next() {
                        self.tally.completed += 1;
                        batch.push_output(first);
                        return None;
                    }
                    self.leave_direct(batch, direct);
                    self.tally.completed += 1;
                    self.tally.filtered += 1;
                    origin.finish(idx, Outcome::Filtered);
                    return None;
                }
                Err(outcome) => outcome,
            };
            let (result, tries, input) = outcome.split();
            match result {
                Ok(output) => {
                    let mut items = <S::Shape as Shape<S::Output>>::items(output);
                    // Not a flat-map: one output at most.
                    if let Some(first) = items.next() {
                        self.tally.completed += 1;
                        batch.push_output(first);
                        return None;
                    }
                    self.leave_direct(batch, direct);
                    self.tally.completed += 1;
                    self.tally.filtered += 1;
                    origin.finish(idx, Outcome::Filtered);
                    return None;
                }
                Err(error) => {
                    self.leave_direct(batch, direct);
                    self.tally.completed += 1;
                    self.fail(origin, idx, &error, &tries, input);
                    return None;
                }
            }
        }
        self.settle_parts(origin, idx, outcome)
    }

    /// The outputs held in the batch leave for the outbox; items are settled one by one
    /// from now on.
    fn leave_direct(&mut self, batch: &mut Items<S::In, Emitted<S>>, direct: &mut bool) {
        *direct = false;
        if let Some(held) = batch.take_outputs() {
            self.out.push_batch(held);
        }
    }

    /// Emits the remaining children of a flat-map output, sending full batches as it goes.
    async fn push_children(&mut self, (origin, idx, mut items): Children<S>) {
        loop {
            // Each child beyond the first is one more descendant to wait for; so is the
            // failure of the rest of the expansion, should the iterator panic.
            origin.add_pending(1);
            let Some(Some(child)) = self.pull_child(&origin, idx, true, || items.next()) else {
                break;
            };
            self.out.push(&origin, idx, child, MAX_BATCH);
            if self.out.len() >= MAX_BATCH {
                self.flush().await;
            }
        }
    }

    /// Pulls from a flat-map's iterator under panic capture. A panic fails item `idx`
    /// through the stage's `on_error` (children already emitted go on), counts the panic
    /// on the stage and gives `None`. Past the end, the descendant `reserved` for the next
    /// child (every child but the first) is released.
    fn pull_child<R>(
        &mut self,
        origin: &Arc<Origin>,
        idx: u32,
        reserved: bool,
        next: impl FnOnce() -> Option<R>,
    ) -> Option<Option<R>> {
        match catch_unwind(AssertUnwindSafe(next)) {
            Ok(Some(child)) => Some(Some(child)),
            Ok(None) => {
                if reserved {
                    origin.release(1);
                }
                Some(None)
            }
            Err(payload) => {
                let message = crate::error::panic_message(&*payload);
                self.task.counters.panicked("iterator", &message);
                let failure = Failure::Panicked(crate::policy::Panicked::new(format!(
                    "flat-map iterator panicked: {message}"
                )));
                let tries = Tried {
                    attempts: 1,
                    probes: 0,
                    first_failure: None,
                };
                self.fail(origin, idx, &failure, &tries, None);
                None
            }
        }
    }

    /// Settles a result, then deals with flat-map children if there are any.
    #[inline]
    async fn settle_all(&mut self, claim: Claimed, outcome: Outcome_<S>) {
        self.supervise(&outcome);
        if let Some(children) = self.settle(claim, outcome) {
            self.push_children(children).await;
        }
    }

    /// What the engine reports of supervision: the state rebuilds it made after the
    /// item's panics, and whether the pipeline must stop (the restart limit was
    /// exceeded, or a restart failed).
    #[inline(always)]
    fn supervise(&mut self, outcome: &Outcome_<S>) {
        if !outcome.panicked() {
            return;
        }
        let task = self.task;
        for _ in 0..outcome.restarts() {
            task.counters.restarted();
        }
        if let Some(why) = outcome.stop() {
            task.control.fail(&task.name, why.to_owned());
        }
    }

    fn fail(
        &mut self,
        origin: &Arc<Origin>,
        idx: u32,
        error: &Failure<S::Error>,
        meta: &Tried,
        item: Option<S::In>,
    ) {
        let Tried {
            attempts,
            probes,
            first_failure,
        } = *meta;
        self.tally.errors += 1;
        let task = self.task;
        let text = chain(error);
        origin.note(idx, &task.name, &text);
        match task.on_error {
            OnError::DeadLetter => {
                self.tally.dead_lettered += 1;
                tracing::warn!(stage = %task.name, error = %text, attempts, probes, "item dead-lettered");
                let mut record = DeadLetter::new(&*task.name, text, attempts);
                record.probes = probes;
                if let Some(first) = first_failure {
                    let ago = tokio::time::Instant::now().saturating_duration_since(first);
                    record.first_failure = record
                        .last_failure
                        .checked_sub(ago)
                        .unwrap_or(record.last_failure);
                }
                if let (Some(show), Some(item)) = (S::DEAD_LETTER_ITEM, item.as_ref()) {
                    // A `Serialize` or `Debug` impl is user code too.
                    record.item =
                        catch_unwind(AssertUnwindSafe(|| show(item))).unwrap_or_else(|payload| {
                            task.counters
                                .panicked("show item", &crate::error::panic_message(&*payload));
                            None
                        });
                }
                self.dead.push(origin, idx, record, 1);
            }
            OnError::Drop => {
                self.tally.dropped += 1;
                tracing::warn!(stage = %task.name, error = %text, "item dropped");
                origin.finish(idx, Outcome::Dropped);
            }
            OnError::Fail => {
                origin.finish(idx, Outcome::Failed);
                task.control.fail(&task.name, text);
            }
        }
    }

    async fn flush(&mut self) {
        let task = self.task;
        let t = std::mem::take(&mut self.tally);
        task.counters.completed(t.completed);
        task.counters.filtered(t.filtered);
        task.counters.errors(t.errors);
        task.counters.dead_lettered(t.dead_lettered);
        task.counters.dropped(t.dropped);
        let sent = self.out.flush(&task.tx).await;
        task.counters.emitted(sent);
        self.dead.flush(&task.dead_tx).await;
    }
}

impl<S: Stage> StageTask<S> {
    /// Claims an item for a call that may overlap others.
    #[inline]
    fn claim(&self, origin: Arc<Origin>, idx: u32) -> Claimed {
        Claimed {
            origin,
            idx,
            settled: false,
        }
    }

    /// Calls the stage for one item at a time. Each call's future (the policy engine's
    /// [`attempt`](Policies::attempt)) is built in one pinned slot and polled at once,
    /// inside one poll of the task: a call that is ready at once (most maps) costs no
    /// await, no allocation and no reference count; only a call that is not ready makes
    /// the task wait. The engine catches panics; nothing here can unwind.
    async fn one_at_a_time(
        &self,
        rx: &mut EdgeRx<S::In>,
        results: &mut Results<'_, S>,
        cx: &Context,
    ) {
        let stage = &self.stage;
        let mut slot = pin!(None);
        while let Some(batch) = rx.recv().await {
            self.counters.received(batch.len());
            results.hint = batch.len();
            let timing = results.task.counters.time_batch(batch.len());
            let mut batch = batch.into_items::<Emitted<S>>();
            let origin = Arc::clone(batch.origin());
            // While every call gives exactly one output, the outputs are kept in the batch
            // and leave with its index column: no per-item bookkeeping.
            let mut direct = !<S::Shape as Shape<S::Output>>::MANY;
            // The item whose call is in `slot`; ends `Abandoned` if the task is aborted.
            let mut current = Current {
                origin: &origin,
                idx: 0,
                busy: false,
            };
            loop {
                let step: Step<S> = poll_fn(|tcx| {
                    loop {
                        if let Some(fut) = slot.as_mut().as_pin_mut() {
                            let outcome = match Future::poll(fut, tcx) {
                                Poll::Pending => return Poll::Pending,
                                Poll::Ready(outcome) => outcome,
                            };
                            slot.set(None);
                            current.busy = false;
                            results.supervise(&outcome);
                            if let Some(children) = results.settle_batched(
                                &mut batch,
                                &mut direct,
                                &origin,
                                current.idx,
                                outcome,
                            ) {
                                return Poll::Ready(Step::Children(children));
                            }
                        }
                        let Some((idx, item)) = batch.next() else {
                            return Poll::Ready(Step::Done);
                        };
                        slot.set(Some(stage.attempt(item, cx)));
                        current.idx = idx;
                        current.busy = true;
                    }
                })
                .await;
                match step {
                    Step::Done => break,
                    Step::Children(children) => results.push_children(children).await,
                }
            }
            drop(current);
            if direct {
                results.out.push_batch(batch.into_outputs());
            }
            results.task.counters.timed(timing);
            stage.end_batch();
            results.flush().await;
        }
    }

    pub(crate) async fn run(self, mut rx: EdgeRx<S::In>) {
        let cx = Context::new(Arc::clone(&self.name));
        let task = &self;
        let mut results = Results {
            task,
            out: Outbox::new(),
            dead: Outbox::new(),
            tally: Tally::default(),
            hint: 1,
        };
        // The hooks run on the stage itself, not through the policies. A start that fails
        // (an error or a panic) stops the pipeline, naming the stage; the stage then calls
        // nothing and fails every item that reaches it.
        if let Err(error) = hook(task.stage.get_ref().on_start()).await {
            task.control
                .fail(&task.name, format!("on_start failed: {}", chain(&*error)));
            task.refuse(rx).await;
            return;
        }
        if task.concurrency <= 1 {
            task.one_at_a_time(&mut rx, &mut results, &cx).await;
        } else {
            let call = |claim: Claimed, item: S::In| {
                let cx = &cx;
                async move { (claim, task.stage.attempt(item, cx).await) }
            };
            results.hint = MAX_BATCH;
            let mut running = if task.ordered {
                InFlight::Ordered(FuturesOrdered::new())
            } else {
                InFlight::Unordered(FuturesUnordered::new())
            };
            let mut input: Option<Batch<S::In>> = None;
            let mut closed = false;
            loop {
                // Start calls while there is room and input at hand.
                while running.len() < task.concurrency {
                    if input.as_ref().is_none_or(Batch::is_empty) {
                        input = None;
                        if closed {
                            break;
                        }
                        let Some(mut batch) = rx.try_recv() else {
                            break;
                        };
                        task.counters.received(batch.len());
                        batch.reverse();
                        input = Some(batch);
                    }
                    let Some(batch) = input.as_mut() else { break };
                    let Some((idx, item)) = batch.pop() else {
                        continue;
                    };
                    let origin = Arc::clone(batch.origin());
                    let claim = task.claim(origin, idx);
                    running.push(call(claim, item));
                }
                if running.len() == 0 {
                    task.stage.end_batch();
                    results.flush().await;
                    if closed {
                        break;
                    }
                    match rx.recv().await {
                        Some(mut batch) => {
                            task.counters.received(batch.len());
                            batch.reverse();
                            input = Some(batch);
                        }
                        None => closed = true,
                    }
                    continue;
                }
                let room = running.len() < task.concurrency && !closed && input.is_none();
                tokio::select! {
                    biased;
                    Some((claim, result)) = running.next() => {
                        results.settle_all(claim, result).await;
                        // Take every other completion that is already there.
                        while let Some(Some((claim, result))) =
                            futures::FutureExt::now_or_never(running.next())
                        {
                            results.settle_all(claim, result).await;
                        }
                        task.stage.end_batch();
                        results.flush().await;
                    }
                    batch = rx.recv(), if room => match batch {
                        Some(mut batch) => {
                            task.counters.received(batch.len());
                            batch.reverse();
                            input = Some(batch);
                        }
                        None => closed = true,
                    },
                }
            }
        }
        task.stage.end_batch();
        results.flush().await;
        drop(rx);
        if let Err(error) = hook(task.stage.get_ref().on_stop()).await {
            task.control
                .fail(&task.name, format!("on_stop failed: {}", chain(&*error)));
        }
    }

    /// Fails every item that reaches a stage that could not start, until its input ends.
    async fn refuse(&self, mut rx: EdgeRx<S::In>) {
        while let Some(mut batch) = rx.recv().await {
            self.counters.received(batch.len());
            self.counters.errors(batch.len());
            self.counters.completed(batch.len());
            batch.finish_all(Outcome::Failed);
        }
    }
}

/// Runs a stage hook, turning a panic into an error.
async fn hook(run: impl Future<Output = Result<(), BoxError>>) -> Result<(), BoxError> {
    AssertUnwindSafe(run)
        .catch_unwind()
        .await
        .unwrap_or_else(|payload| {
            let panic = crate::policy::Panicked::from_payload(&*payload);
            Err(Message(format!("panicked: {}", panic.message())).into())
        })
}
