//! Acknowledgements: the ack callback hands finished ids to a background task that
//! `XACK`s them in batches, and the counters a source reports.
//!
//! The callback runs inline in whatever pipeline task finalizes an item, so it only
//! takes a lock, moves ids between two collections and wakes the task; it never blocks
//! on the network.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pipeline_core::Outcome;
use pipeline_core::source::Backlog;
use tokio::sync::Notify;

use super::conn::Conn;
use super::entry::{EntryId, as_bytes, as_int, as_list};

/// Ids per `XACK` command; one round trip carries several of them pipelined.
const ACK_CHUNK: usize = 512;

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Ids emitted and not yet settled: in flight in the pipeline, or finished
    /// positively and waiting for their `XACK`. A re-read of the pending list skips them,
    /// so an entry is never in the pipeline twice from one source. Its size is bounded by
    /// the pipeline's in-flight bound plus the ids waiting for an `XACK`, and the source
    /// stops reading at `max_unacked`.
    pub(crate) held: HashSet<EntryId>,
    /// Finished positively, to be `XACK`ed (a subset of `held`).
    pub(crate) to_ack: Vec<EntryId>,
    /// A negative outcome arrived since the last re-read of the pending list.
    pub(crate) nacked_since_reread: bool,
}

/// State shared by the source, its ack callbacks and the acker task.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    ledger: Mutex<Ledger>,
    /// Wakes the acker: ids to ack, or the source went away.
    pub(crate) wake_acker: Notify,
    /// Wakes whoever waits for progress (a source at `max_unacked`, `settled()`).
    pub(crate) progress: Notify,
    pub(crate) counters: Counters,
    pub(crate) source_dropped: std::sync::atomic::AtomicBool,
    /// Pulled batches whose ack has not run (or been dropped) yet.
    pub(crate) outstanding: AtomicU64,
    /// The acker task has ended.
    pub(crate) acker_done: std::sync::atomic::AtomicBool,
}

/// Counters of one source; read through [`SourceProgress`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) read: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) nacked: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) reclaimed: AtomicU64,
    pub(crate) trimmed: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) ack_errors: AtomicU64,
}

impl Shared {
    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panic elsewhere while holding the lock leaves consistent data: every step
        // below is one insert or removal.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ack callback's work: positive outcomes wait for an `XACK`; negative ones
    /// leave the entry pending (the group redelivers it) and release it locally.
    pub(crate) fn settle(&self, ids: &[EntryId], outcomes: &[Outcome]) {
        let mut nacked = 0u64;
        {
            let mut ledger = self.ledger();
            for (i, id) in ids.iter().enumerate() {
                // A missing outcome is not a success.
                if outcomes.get(i).is_some_and(|o| o.is_ack()) {
                    ledger.to_ack.push(*id);
                } else {
                    ledger.held.remove(id);
                    nacked += 1;
                }
            }
            if nacked > 0 {
                ledger.nacked_since_reread = true;
            }
        }
        if nacked > 0 {
            self.counters.nacked.fetch_add(nacked, Ordering::Relaxed);
            self.progress.notify_waiters();
        }
        self.wake_acker.notify_one();
    }
}

/// The ids of one pulled batch, settled exactly once: by the ack callback, or as
/// negative outcomes if the callback is dropped without running ("unfinalized means
/// failed": the entries stay pending and come again).
#[derive(Debug)]
pub(crate) struct BatchGuard {
    shared: Arc<Shared>,
    ids: Vec<EntryId>,
}

impl BatchGuard {
    pub(crate) fn new(shared: Arc<Shared>, ids: Vec<EntryId>) -> Self {
        shared.outstanding.fetch_add(1, Ordering::AcqRel);
        BatchGuard { shared, ids }
    }

    pub(crate) fn settle(mut self, outcomes: &[Outcome]) {
        let ids = std::mem::take(&mut self.ids);
        self.shared.settle(&ids, outcomes);
    }
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        if !ids.is_empty() {
            self.shared.settle(&ids, &[]);
        }
        self.shared.outstanding.fetch_sub(1, Ordering::AcqRel);
        self.shared.wake_acker.notify_one();
    }
}

/// What the acker needs to know about its source.
#[derive(Debug)]
pub(crate) struct AckerConfig {
    pub(crate) name: String,
    pub(crate) stream: String,
    pub(crate) group: String,
    pub(crate) backlog_every: Duration,
    pub(crate) drain_timeout: Duration,
}

/// The acker task: `XACK`s finished ids in batches and refreshes the backlog gauges.
/// Ends once the source and every ack callback are gone and nothing is left to ack (or
/// the server stayed unreachable for `drain_timeout` after that: those entries stay
/// pending and are redelivered).
pub(crate) async fn run(shared: Arc<Shared>, conn: Conn, config: AckerConfig, backlog: Backlog) {
    ack_loop(&shared, conn, config, backlog).await;
    shared.acker_done.store(true, Ordering::Release);
    shared.progress.notify_waiters();
}

async fn ack_loop(shared: &Shared, mut conn: Conn, config: AckerConfig, backlog: Backlog) {
    let mut tick = tokio::time::interval(config.backlog_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut failures = 0u64;
    let mut retry_in = Duration::from_millis(50);
    loop {
        let batch = std::mem::take(&mut shared.ledger().to_ack);
        if !batch.is_empty() {
            match xack(&mut conn, &config, &batch).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(source = %config.name, failures, "XACK works again");
                    }
                    failing_since = None;
                    failures = 0;
                    retry_in = Duration::from_millis(50);
                    {
                        let mut ledger = shared.ledger();
                        for id in &batch {
                            ledger.held.remove(id);
                        }
                    }
                    shared
                        .counters
                        .acked
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    shared.progress.notify_waiters();
                    continue;
                }
                Err(error) => {
                    shared.counters.ack_errors.fetch_add(1, Ordering::Relaxed);
                    // One warning per outage, not one per retry.
                    if failures == 0 {
                        tracing::warn!(source = %config.name, ids = batch.len(), %error, "XACK failed; retrying with backoff (the entries stay pending meanwhile)");
                    } else {
                        tracing::debug!(source = %config.name, ids = batch.len(), %error, failures, "XACK failed again");
                    }
                    failures += 1;
                    // Back in front: order does not matter to XACK, but nothing is lost.
                    shared.ledger().to_ack.splice(0..0, batch);
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if orphaned(shared) && since.elapsed() >= config.drain_timeout {
                        let left = shared.ledger().to_ack.len();
                        tracing::warn!(source = %config.name, ids = left, "giving up on XACK after the source ended; these entries stay pending and will be redelivered");
                        return;
                    }
                    tokio::time::sleep(retry_in).await;
                    retry_in = (retry_in * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
        }
        if orphaned(shared) && shared.ledger().to_ack.is_empty() {
            return;
        }
        tokio::select! {
            () = shared.wake_acker.notified() => {}
            _ = tick.tick() => refresh_backlog(&mut conn, &config, &backlog).await,
        }
    }
}

/// The source and every ack callback are gone: nothing new can arrive.
fn orphaned(shared: &Shared) -> bool {
    shared.source_dropped.load(Ordering::Acquire) && shared.outstanding.load(Ordering::Acquire) == 0
}

async fn xack(conn: &mut Conn, config: &AckerConfig, ids: &[EntryId]) -> Result<(), String> {
    let mut pipe = redis::pipe();
    for chunk in ids.chunks(ACK_CHUNK) {
        let cmd = pipe
            .cmd("XACK")
            .arg(&config.stream)
            .arg(&config.group)
            .ignore();
        for id in chunk {
            cmd.arg(id.to_string());
        }
    }
    conn.pipe::<()>("XACK", &pipe)
        .await
        .map_err(|e| e.to_string())
}

/// `XINFO GROUPS`: the group's `lag` (entries not yet delivered to it; Redis 7) and
/// `pending`. Best effort: a failure leaves the last numbers.
async fn refresh_backlog(conn: &mut Conn, config: &AckerConfig, backlog: &Backlog) {
    let mut cmd = redis::cmd("XINFO");
    cmd.arg("GROUPS").arg(&config.stream);
    let reply = conn.cmd::<redis::Value>("XINFO GROUPS", &cmd).await;
    let Ok(reply) = reply else { return };
    for group in as_list(&reply).unwrap_or_default() {
        let pairs: Vec<(&[u8], &redis::Value)> = match group {
            redis::Value::Map(m) => m
                .iter()
                .filter_map(|(k, v)| Some((as_bytes(k)?, v)))
                .collect(),
            other => as_list(other)
                .unwrap_or_default()
                .chunks(2)
                .filter_map(|kv| match kv {
                    [k, v] => Some((as_bytes(k)?, v)),
                    _ => None,
                })
                .collect(),
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name.as_bytes())
                .map(|(_, v)| *v)
        };
        if field("name").and_then(as_bytes) != Some(config.group.as_bytes()) {
            continue;
        }
        if let Some(pending) = field("pending").and_then(as_int) {
            backlog.set_pending(u64::try_from(pending).unwrap_or(0));
        }
        // `lag` is nil when the server cannot tell (after some deletions).
        if let Some(lag) = field("lag").and_then(as_int) {
            backlog.set_lag(u64::try_from(lag).unwrap_or(0));
        }
    }
}
