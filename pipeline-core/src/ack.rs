//! Delivery tracking: the [`Outcome`] of every item and the per-source-batch records that
//! tell a source when all of an item's descendants are finished.
//!
//! One `Origin` record is shared by every item of one source batch (never one
//! allocation per item, which costs 25x, see BENCHMARKS.md). It holds a count of unfinished
//! items — flat-map children and fan-out copies add to it — and the worst status seen per
//! source item. When the count reaches zero the record is final: the pipeline's
//! ledger counts each source item once, and the source's [`Ack`] runs with the statuses.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::sync::{AtomicU8, AtomicU64, AtomicUsize, Mutex};

/// The final status of an item, from best to worst. A parent item takes the worst
/// status of its descendants.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Outcome {
    /// A sink confirmed the write.
    Delivered = 0,
    /// A stage filtered it out (or a flat-map produced no children).
    Filtered = 1,
    /// Dropped by an overflow policy or by `on_error = drop`.
    Dropped = 2,
    /// The dead-letter sink confirmed the write of its record.
    DeadLettered = 3,
    /// `on_error = fail`, or the dead-letter write itself failed.
    Failed = 4,
    /// Never finished: still in flight when a shutdown's deadline passed, accepted by an
    /// ingest source but not yet taken then, or held by a task that stopped (a batch
    /// dropped without an outcome). Not acknowledged: a broker redelivers it.
    Abandoned = 5,
}

impl Outcome {
    /// Every outcome, best first.
    pub const ALL: [Outcome; 6] = [
        Outcome::Delivered,
        Outcome::Filtered,
        Outcome::Dropped,
        Outcome::DeadLettered,
        Outcome::Failed,
        Outcome::Abandoned,
    ];

    /// Whether a source should acknowledge the item positively (`DeadLettered` or better):
    /// a broker then forgets it; otherwise it redelivers.
    ///
    /// ```
    /// use pipeline_core::Outcome;
    /// assert!(Outcome::DeadLettered.is_ack());
    /// assert!(!Outcome::Abandoned.is_ack());
    /// ```
    pub fn is_ack(self) -> bool {
        self <= Outcome::DeadLettered
    }

    /// The snake-case name used in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Filtered => "filtered",
            Outcome::Dropped => "dropped",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Failed => "failed",
            Outcome::Abandoned => "abandoned",
        }
    }

    fn from_u8(v: u8) -> Outcome {
        Outcome::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(Outcome::Abandoned)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A source's acknowledgement callback: runs once, after every descendant of every item
/// of the batch reached its final outcome, with one [`Outcome`] per item in emission order.
///
/// # Examples
///
/// ```
/// use pipeline_core::ack::Ack;
/// use pipeline_core::Outcome;
///
/// let ack = Ack::new(|outcomes: &[Outcome]| {
///     for (i, o) in outcomes.iter().enumerate() {
///         if o.is_ack() { /* XACK id i */ } else { /* leave pending: redelivered */ }
///         let _ = i;
///     }
/// });
/// # drop(ack);
/// ```
///
/// The callback runs inline in whichever pipeline task settles the last item (often the
/// sink's): keep it short and never block; hand the work to a task of your own. A
/// panicking callback is caught: the items' outcomes stand, the panic is counted on the
/// source and traced, and (not having acknowledged) a broker redelivers.
pub struct Ack {
    f: AckFn,
    on_panic: Option<PanicHook>,
}

enum AckFn {
    Outcomes(OutcomesFn),
    /// Also told why each item failed (costs a record of reasons for the batch).
    Reasons(ReasonsFn),
}

type OutcomesFn = Box<dyn FnOnce(&[Outcome]) + Send>;
type ReasonsFn = Box<dyn FnOnce(&[Outcome], &mut [Option<Reason>]) + Send>;

/// Why an item was not delivered: the element that gave up on it and its error.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reason {
    /// The stage, sink or edge that gave up on the item.
    pub stage: String,
    /// The error, with its source chain.
    pub error: String,
}

/// Told the panic message when an ack callback panics.
pub(crate) type PanicHook = Arc<dyn Fn(&str) + Send + Sync>;

impl Ack {
    /// Wraps a callback.
    pub fn new(f: impl FnOnce(&[Outcome]) + Send + 'static) -> Self {
        Ack {
            f: AckFn::Outcomes(Box::new(f)),
            on_panic: None,
        }
    }

    /// A callback also told the [`Reason`] of each item that failed (its first failure).
    pub(crate) fn with_reasons(
        f: impl FnOnce(&[Outcome], &mut [Option<Reason>]) + Send + 'static,
    ) -> Self {
        Ack {
            f: AckFn::Reasons(Box::new(f)),
            on_panic: None,
        }
    }

    fn wants_reasons(&self) -> bool {
        matches!(self.f, AckFn::Reasons(_))
    }

    /// Reports a panic of the callback to `hook` (the source's counters).
    pub(crate) fn on_panic(mut self, hook: &PanicHook) -> Self {
        self.on_panic = Some(Arc::clone(hook));
        self
    }

    fn run(self, outcomes: &[Outcome], reasons: &mut [Option<Reason>]) {
        let Ack { f, on_panic } = self;
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match f {
            AckFn::Outcomes(f) => f(outcomes),
            AckFn::Reasons(f) => f(outcomes, reasons),
        }));
        if let Err(payload) = ran {
            let message = crate::error::panic_message(&*payload);
            match on_panic {
                Some(hook) => hook(&message),
                None => tracing::error!(message, "ack callback panicked"),
            }
        }
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ack(..)")
    }
}

/// Pipeline-wide conservation counters, in source items.
#[derive(Debug)]
pub(crate) struct Ledger {
    pub(crate) emitted: AtomicU64,
    pub(crate) outcomes: [AtomicU64; 6],
    /// `pipeline_outcomes_total` per outcome, registered once.
    metrics: [::metrics::Counter; 6],
}

impl Ledger {
    /// Counters for the pipeline named `pipeline`.
    pub(crate) fn new(pipeline: &str) -> Self {
        Ledger {
            emitted: AtomicU64::new(0),
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
            metrics: Outcome::ALL.map(|o| {
                ::metrics::counter!(crate::stats::OUTCOMES_TOTAL, "pipeline" => pipeline.to_owned(), "outcome" => o.as_str())
            }),
        }
    }

    pub(crate) fn counts(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.outcomes[i].load(Ordering::Acquire))
    }
}

enum Parent {
    /// A source batch: count into the ledger and run the source's ack.
    Root {
        ledger: Arc<Ledger>,
        ack: Mutex<Option<Ack>>,
    },
    /// An item built from other items (a `batch(n)` output): every origin takes its
    /// status.
    Derived { links: Vec<(Arc<Origin>, u32)> },
}

/// The shared record of one source batch (or of one derived item).
pub(crate) struct Origin {
    pending: AtomicUsize,
    status: Box<[AtomicU8]>,
    /// The first failure of each item, kept only when the ack asked for reasons.
    reasons: Option<Mutex<Vec<Option<Reason>>>>,
    parent: Parent,
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("items", &self.status.len())
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish()
    }
}

impl Origin {
    /// A record for `len` source items, counted as emitted.
    pub(crate) fn root(len: usize, ledger: &Arc<Ledger>, ack: Option<Ack>) -> Arc<Origin> {
        ledger.emitted.fetch_add(len as u64, Ordering::AcqRel);
        let reasons = ack
            .as_ref()
            .filter(|a| a.wants_reasons())
            .map(|_| Mutex::new(vec![None; len]));
        let origin = Arc::new(Origin {
            pending: AtomicUsize::new(len),
            status: (0..len).map(|_| AtomicU8::new(0)).collect(),
            reasons,
            parent: Parent::Root {
                ledger: Arc::clone(ledger),
                ack: Mutex::new(ack),
            },
        });
        if len == 0 {
            origin.complete();
        }
        origin
    }

    /// A record for one item made of `links` (each an origin and an index in it). The
    /// links stay unfinished until this record is.
    pub(crate) fn derived(links: Vec<(Arc<Origin>, u32)>) -> Arc<Origin> {
        Arc::new(Origin {
            pending: AtomicUsize::new(1),
            status: Box::new([AtomicU8::new(0)]),
            reasons: None,
            parent: Parent::Derived { links },
        })
    }

    /// Notes why item `idx` failed, for an ack that asked for reasons (the first one
    /// wins). Costs one branch when nobody asked.
    pub(crate) fn note(&self, idx: u32, stage: &str, error: &str) {
        match &self.parent {
            Parent::Derived { links } => {
                for (origin, i) in links {
                    origin.note(*i, stage, error);
                }
            }
            Parent::Root { .. } => {
                if let Some(reasons) = &self.reasons {
                    let mut reasons = reasons.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(slot) = reasons.get_mut(idx as usize)
                        && slot.is_none()
                    {
                        *slot = Some(Reason {
                            stage: stage.to_owned(),
                            error: error.to_owned(),
                        });
                    }
                }
            }
        }
    }

    /// `n` more unfinished descendants (flat-map children or fan-out copies); their
    /// outcomes are marked on their item when they finish.
    #[inline]
    pub(crate) fn add_pending(&self, n: usize) {
        self.pending.fetch_add(n, Ordering::Relaxed);
    }

    /// Item `idx` (or one of its descendants) ended with `outcome`.
    #[inline]
    pub(crate) fn finish(&self, idx: u32, outcome: Outcome) {
        self.mark(idx, outcome);
        self.release(1);
    }

    /// Records `outcome` for item `idx` without releasing it.
    #[inline]
    pub(crate) fn mark(&self, idx: u32, outcome: Outcome) {
        if outcome != Outcome::Delivered
            && let Some(s) = self.status.get(idx as usize)
        {
            s.fetch_max(outcome as u8, Ordering::Relaxed);
        }
    }

    /// Releases `n` unfinished items at once (their outcomes already marked).
    #[inline]
    pub(crate) fn release(&self, n: usize) {
        if n > 0 && self.pending.fetch_sub(n, Ordering::AcqRel) == n {
            self.complete();
        }
    }

    fn complete(&self) {
        let status = |s: &AtomicU8| Outcome::from_u8(s.load(Ordering::Acquire));
        match &self.parent {
            Parent::Root { ledger, ack } => {
                // Counted locally: at most six atomic adds per source batch.
                let mut counts = [0u64; 6];
                for s in self.status.iter() {
                    counts[status(s) as usize] += 1;
                }
                for ((total, metric), n) in ledger.outcomes.iter().zip(&ledger.metrics).zip(counts)
                {
                    if n > 0 {
                        total.fetch_add(n, Ordering::AcqRel);
                        metric.increment(n);
                    }
                }
                let ack = ack
                    .lock()
                    .map(|mut a| a.take())
                    .unwrap_or_else(|p| p.into_inner().take());
                // Only a source that asked for acks pays for the list of outcomes.
                if let Some(ack) = ack {
                    let outcomes: Vec<Outcome> = self.status.iter().map(status).collect();
                    let mut reasons = match &self.reasons {
                        Some(r) => {
                            std::mem::take(&mut *r.lock().unwrap_or_else(|p| p.into_inner()))
                        }
                        None => Vec::new(),
                    };
                    ack.run(&outcomes, &mut reasons);
                }
            }
            Parent::Derived { links } => {
                let outcome = self.status.first().map_or(Outcome::Filtered, status);
                for (origin, idx) in links {
                    origin.finish(*idx, outcome);
                }
            }
        }
    }
}

#[cfg(all(test, pipeline_loom))]
mod loom_tests {
    use super::*;

    /// Two threads finish the items of one source batch (one of them a flat-map parent
    /// with an extra child) in every interleaving: the ack runs exactly once, after the
    /// last outcome, with the worst status per item, and the ledger counts each item once.
    #[test]
    fn ack_fires_once_after_every_descendant() {
        loom::model(|| {
            let ledger = Arc::new(Ledger::new("test"));
            let acks = Arc::new(AtomicUsize::new(0));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let (a, s) = (Arc::clone(&acks), Arc::clone(&seen));
            let origin = Origin::root(
                2,
                &ledger,
                Some(Ack::new(move |o: &[Outcome]| {
                    a.fetch_add(1, Ordering::SeqCst);
                    s.lock().unwrap().extend_from_slice(o);
                })),
            );
            origin.add_pending(1); // item 1 has two children
            let o1 = Arc::clone(&origin);
            let t1 = loom::thread::spawn(move || {
                o1.finish(1, Outcome::DeadLettered);
            });
            let o2 = Arc::clone(&origin);
            let t2 = loom::thread::spawn(move || {
                o2.release(1); // item 0 delivered
                o2.finish(1, Outcome::Filtered);
            });
            t1.join().unwrap();
            t2.join().unwrap();
            assert_eq!(acks.load(Ordering::SeqCst), 1);
            assert_eq!(
                *seen.lock().unwrap(),
                vec![Outcome::Delivered, Outcome::DeadLettered]
            );
            assert_eq!(ledger.counts(), [1, 0, 0, 1, 0, 0]);
        });
    }
}

#[cfg(all(test, not(pipeline_loom)))]
mod tests {
    use super::*;

    #[test]
    fn worst_status_wins_and_ack_runs_once_after_all() {
        let ledger = Arc::new(Ledger::new("test"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        let origin = Origin::root(
            3,
            &ledger,
            Some(Ack::new(move |o| s2.lock().unwrap().push(o.to_vec()))),
        );
        origin.add_pending(1); // item 1 flat-maps into two children
        origin.finish(1, Outcome::Filtered);
        origin.release(1); // item 0 delivered
        assert!(seen.lock().unwrap().is_empty());
        origin.finish(1, Outcome::DeadLettered);
        assert!(
            seen.lock().unwrap().is_empty(),
            "ack before the last descendant"
        );
        origin.finish(2, Outcome::Dropped);
        let seen = seen.lock().unwrap();
        assert_eq!(
            *seen,
            vec![vec![
                Outcome::Delivered,
                Outcome::DeadLettered,
                Outcome::Dropped
            ]]
        );
        assert_eq!(ledger.emitted.load(Ordering::Relaxed), 3);
        assert_eq!(ledger.counts(), [1, 0, 1, 1, 0, 0]);
    }

    #[test]
    fn derived_item_passes_its_status_to_every_origin() {
        let ledger = Arc::new(Ledger::new("test"));
        let a = Origin::root(2, &ledger, None);
        let b = Origin::root(1, &ledger, None);
        let d = Origin::derived(vec![
            (Arc::clone(&a), 0),
            (Arc::clone(&a), 1),
            (Arc::clone(&b), 0),
        ]);
        assert_eq!(ledger.counts().iter().sum::<u64>(), 0);
        d.finish(0, Outcome::Failed);
        assert_eq!(ledger.counts(), [0, 0, 0, 0, 3, 0]);
    }

    #[test]
    fn empty_batch_completes_at_once() {
        let ledger = Arc::new(Ledger::new("test"));
        let _ = Origin::root(0, &ledger, None);
        assert_eq!(ledger.emitted.load(Ordering::Relaxed), 0);
    }
}
