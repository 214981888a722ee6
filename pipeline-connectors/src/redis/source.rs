//! The consumer-group source: reads sized by the pipeline's credit, acknowledgement after
//! the final outcome, recovery of pending entries, poison and trimmed entries.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use pipeline_core::BoxError;
use pipeline_core::ack::Ack;
use pipeline_core::source::{Backlog, Pulled, Source};
use tokio::time::Instant;

use super::acker::{self, AckerConfig, BatchGuard, Shared};
use super::config::RedisConfig;
use super::conn::Conn;
use super::dead_letter::{DeadLetters, Moved};
use super::entry::{
    EntryId, RawEntry, StreamEntry, parse_autoclaim, parse_entries, parse_pending, parse_read,
};
use super::error::ConnectorError;
use super::options::{Settings, StartFrom, StreamSourceBuilder};
use super::progress::SourceProgress;

/// Page size when walking this consumer's pending list.
const PENDING_PAGE: usize = 256;

/// A source reading one stream as one consumer of a consumer group, at least once.
///
/// - **Credit**: each read asks for at most the `max` the pipeline pulls for, so a full
///   pipeline stops reading and the entries wait in Redis.
/// - **Acks**: an entry is `XACK`ed only once its final outcome is `Delivered`,
///   `Filtered`, `Dropped` or `DeadLettered` (by a background task, in batches). A
///   `Failed` or `Abandoned` entry stays pending and is delivered again: by this source
///   as soon as it is idle, or after `min_idle` at the latest (by whichever consumer's
///   reclaimer finds it first).
/// - **Recovery**: at start, after every reconnect, read error or timeout, and when idle
///   after negative outcomes, the source walks its own pending list and delivers again
///   what is not in flight. Every `reclaim_every` it takes over entries other consumers
///   left idle for `min_idle` (`XAUTOCLAIM`), for consumers that died.
/// - **Poison**: an entry delivered more than `max_deliveries` times is moved to the
///   dead-letter stream and acknowledged, atomically and once (see
///   [`dead_letter_stream`](StreamSourceBuilder::dead_letter_stream)).
/// - **Trimmed**: a pending entry that no longer exists (`MAXLEN`, `XTRIM`, `XDEL`) is
///   counted ([`SourceProgress::trimmed`]), traced at `warn` and removed from the
///   pending list.
/// - **Errors**: a failure returns `Err` from `pull` (the pipeline backs off and pulls
///   again) and the broken connection is made anew; a wrong password says so.
///
/// Items are [`StreamEntry`]s: the id (the idempotency key for sinks) and the fields.
///
/// # Cancel safety
///
/// A pull dropped while a read is in flight (on shutdown) leaves what that read took in
/// this consumer's pending list: a consumer of the same name re-reads it at start, and
/// other consumers reclaim it after `min_idle`.
pub struct StreamSource {
    settings: Settings,
    redis: RedisConfig,
    /// Blocking reads only, with a response timeout above the block time.
    reader: Conn,
    /// Everything else the pull path sends.
    ctl: Conn,
    /// Handed to the acker task at start.
    acker_conn: Option<Conn>,
    shared: Arc<Shared>,
    backlog: Backlog,
    dead_letters: DeadLetters,
    group_ready: bool,
    /// `Some(cursor)` while walking this consumer's pending list.
    scan: Option<EntryId>,
    next_reclaim: Option<Instant>,
    reclaim_cursor: EntryId,
}

impl StreamSource {
    /// A builder for a source reading `stream` as `consumer` of `group` (the group is
    /// created with `MKSTREAM` if missing). Consumer names must be unique among live
    /// processes and stable across restarts, so a restarted process finds its own
    /// pending entries.
    pub fn builder(
        config: RedisConfig,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> StreamSourceBuilder {
        StreamSourceBuilder::new(config, stream, group, consumer)
    }

    pub(crate) fn from_parts(
        redis: RedisConfig,
        settings: Settings,
        shared: Arc<Shared>,
    ) -> Result<Self, ConnectorError> {
        let connector = format!("source `{}`", settings.name);
        let rt = redis.response_timeout();
        Ok(StreamSource {
            reader: Conn::new(&redis, connector.clone(), settings.block + rt)?,
            ctl: Conn::new(&redis, connector.clone(), rt)?,
            acker_conn: Some(Conn::new(&redis, connector, rt)?),
            dead_letters: DeadLetters::new(settings.dead_letter_stream.clone()),
            settings,
            redis,
            shared,
            backlog: Backlog::new(),
            group_ready: false,
            scan: Some(EntryId::default()),
            next_reclaim: None,
            reclaim_cursor: EntryId::default(),
        })
    }

    /// Live counters, and [`SourceProgress::settled`] to wait for the last acks.
    pub fn progress(&self) -> SourceProgress {
        SourceProgress {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Creates the group if needed and starts the acker.
    async fn start(&mut self) -> Result<(), ConnectorError> {
        let s = &self.settings;
        let mut c = self.ctl.get().await?;
        let start = match s.start {
            StartFrom::Beginning => "0",
            StartFrom::NewOnly => "$",
        };
        let created: Result<(), _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&s.stream)
            .arg(&s.group)
            .arg(start)
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match created {
            Ok(()) => {
                tracing::info!(source = %s.name, stream = %s.stream, group = %s.group, "consumer group created")
            }
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(self.ctl.failed("XGROUP CREATE", &e)),
        }
        self.group_ready = true;
        if let Some(conn) = self.acker_conn.take() {
            let config = AckerConfig {
                name: s.name.clone(),
                stream: s.stream.clone(),
                group: s.group.clone(),
                backlog_every: s.backlog_every,
                drain_timeout: s.drain_timeout,
            };
            tokio::spawn(acker::run(
                Arc::clone(&self.shared),
                conn,
                config,
                self.backlog.clone(),
            ));
        }
        Ok(())
    }

    async fn pull_inner(&mut self, max: usize) -> Result<Pulled<StreamEntry>, ConnectorError> {
        if !self.group_ready {
            self.start().await?;
        }
        loop {
            let held = self.shared.ledger().held.len();
            let room = self.settings.max_unacked.saturating_sub(held);
            if room == 0 {
                // Wait for acks; re-check at least every block period.
                let notified = self.shared.progress.notified();
                let _ = tokio::time::timeout(self.settings.block, notified).await;
                continue;
            }
            let count = max.min(room).min(self.settings.read_count).max(1);

            // A fresh read connection means a read may have been lost in flight: its
            // entries are in our pending list, where a `>` read never returns them.
            self.reader.get().await?;
            if self.reader.take_reconnected() {
                self.scan = Some(EntryId::default());
            }
            if self.next_reclaim.is_none_or(|at| Instant::now() >= at) {
                self.reclaim(count).await?;
            }
            if let Some(cursor) = self.scan {
                let entries = self.scan_pending(cursor, count).await?;
                if !entries.is_empty() {
                    return Ok(self.emit(entries));
                }
                continue;
            }
            let entries = self.read_new(count).await?;
            if !entries.is_empty() {
                return Ok(self.emit(entries));
            }
            // Idle: deliver again what came back negative.
            if std::mem::take(&mut self.shared.ledger().nacked_since_reread) {
                self.scan = Some(EntryId::default());
            }
        }
    }

    /// `XREADGROUP ... BLOCK ... >`: entries never delivered to the group.
    async fn read_new(&mut self, count: usize) -> Result<Vec<StreamEntry>, ConnectorError> {
        let s = &self.settings;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&s.group)
            .arg(&s.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(u64::try_from(s.block.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS")
            .arg(&s.stream)
            .arg(">");
        let mut c = self.reader.get().await?;
        let reply: redis::Value = match cmd.query_async(&mut c).await {
            Ok(v) => v,
            Err(e) => return Err(self.reader.failed("XREADGROUP", &e)),
        };
        let raw = parse_read(&reply).ok_or_else(|| {
            ConnectorError::protocol(self.reader.connector(), "XREADGROUP", "not a stream reply")
        })?;
        Ok(raw
            .into_iter()
            .map(|(id, fields)| StreamEntry {
                id,
                fields: fields.unwrap_or_default(),
                deliveries: 1,
            })
            .collect())
    }

    /// Walks this consumer's pending list from `cursor`, claiming (and so delivering
    /// again) up to `count` entries not in flight here. Poison entries go to the
    /// dead-letter stream, deleted ones are counted as trimmed.
    ///
    /// This is the re-read of the own pending list, done as `XPENDING` + `XCLAIM` rather
    /// than `XREADGROUP ... 0`: on Redis 7.0 a history read increments the delivery
    /// count of every entry it returns, those still in flight here included, so counts
    /// would grow with every reconnect and healthy entries would look poisoned.
    /// `XPENDING` has no side effect; `XCLAIM` (to ourselves) counts exactly one delivery
    /// for each entry that really is delivered again, and leaves deleted entries out.
    async fn scan_pending(
        &mut self,
        mut cursor: EntryId,
        count: usize,
    ) -> Result<Vec<StreamEntry>, ConnectorError> {
        let s = self.settings.clone();
        let mut wanted: Vec<(EntryId, u64)> = Vec::new();
        let mut min_idle = i64::MAX;
        let mut ended = false;
        while wanted.len() < count && !ended {
            let start = if cursor == EntryId::default() {
                "-".to_owned()
            } else {
                format!("({cursor}")
            };
            let mut cmd = redis::cmd("XPENDING");
            cmd.arg(&s.stream)
                .arg(&s.group)
                .arg(start)
                .arg("+")
                .arg(PENDING_PAGE)
                .arg(&s.consumer);
            let reply: redis::Value = self.ctl.cmd("XPENDING", &cmd).await?;
            let rows = parse_pending(&reply).ok_or_else(|| {
                ConnectorError::protocol(self.ctl.connector(), "XPENDING", "not a pending list")
            })?;
            ended = rows.len() < PENDING_PAGE;
            let idle = idle_times(&reply);
            let ledger = self.shared.ledger();
            for (i, (id, deliveries)) in rows.into_iter().enumerate() {
                cursor = id;
                if ledger.held.contains(&id) {
                    continue;
                }
                min_idle = min_idle.min(idle.get(i).copied().unwrap_or(0));
                wanted.push((id, deliveries));
                if wanted.len() == count {
                    ended = false;
                    break;
                }
            }
        }
        if ended {
            self.scan = None;
        } else {
            self.scan = Some(cursor);
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        // Claim with the smallest idle time seen: an entry another consumer claimed in
        // between has a smaller one and stays theirs.
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&s.stream)
            .arg(&s.group)
            .arg(&s.consumer)
            .arg(min_idle.clamp(0, i64::MAX));
        for (id, _) in &wanted {
            cmd.arg(id.to_string());
        }
        let reply: redis::Value = self.ctl.cmd("XCLAIM", &cmd).await?;
        let claimed: Vec<RawEntry> = parse_entries(&reply).ok_or_else(|| {
            ConnectorError::protocol(self.ctl.connector(), "XCLAIM", "not a list of entries")
        })?;
        let mut out = Vec::with_capacity(claimed.len());
        let mut trimmed = Vec::new();
        let mut claimed = claimed.into_iter().peekable();
        for (id, deliveries) in wanted {
            // XCLAIM answers in request order, leaving out what it could not claim:
            // deleted entries (removed from the pending list by Redis 7) and entries
            // that moved to another consumer meanwhile.
            let fields = match claimed.peek() {
                Some((cid, _)) if *cid == id => claimed.next().and_then(|(_, f)| f),
                _ => {
                    if self.still_exists(id).await? {
                        continue; // claimed by someone else: theirs now
                    }
                    None
                }
            };
            let Some(fields) = fields else {
                trimmed.push(id);
                continue;
            };
            // XCLAIM counted this delivery.
            let deliveries = deliveries + 1;
            if deliveries > s.max_deliveries {
                self.dead_letter(id, deliveries).await?;
                continue;
            }
            out.push(StreamEntry {
                id,
                fields,
                deliveries,
            });
        }
        if !trimmed.is_empty() {
            self.trimmed(&trimmed, "pending entry no longer exists")
                .await?;
        }
        self.shared
            .counters
            .redelivered
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    async fn still_exists(&mut self, id: EntryId) -> Result<bool, ConnectorError> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&self.settings.stream)
            .arg(id.to_string())
            .arg(id.to_string());
        let reply: redis::Value = self.ctl.cmd("XRANGE", &cmd).await?;
        Ok(parse_entries(&reply).is_some_and(|e| !e.is_empty()))
    }

    /// `XAUTOCLAIM ... JUSTID`: entries idle for `min_idle` move into this consumer's
    /// pending list (without counting a delivery; the scan that follows delivers them
    /// and counts it). Deleted ids it reports are counted as trimmed.
    async fn reclaim(&mut self, count: usize) -> Result<(), ConnectorError> {
        let s = &self.settings;
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&s.stream)
            .arg(&s.group)
            .arg(&s.consumer)
            .arg(u64::try_from(s.min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg(self.reclaim_cursor.to_string())
            .arg("COUNT")
            .arg(count)
            .arg("JUSTID");
        let reply: redis::Value = self.ctl.cmd("XAUTOCLAIM", &cmd).await?;
        let (next, claimed, deleted) = parse_autoclaim(&reply).ok_or_else(|| {
            ConnectorError::protocol(self.ctl.connector(), "XAUTOCLAIM", "not an autoclaim reply")
        })?;
        let held = self.shared.ledger();
        let new = claimed.iter().filter(|id| !held.held.contains(id)).count();
        drop(held);
        if new > 0 {
            tracing::info!(source = %s.name, entries = new, "took over idle pending entries (of dead consumers, or lost in flight)");
            self.shared
                .counters
                .reclaimed
                .fetch_add(new as u64, Ordering::Relaxed);
            self.scan = Some(EntryId::default());
        }
        self.reclaim_cursor = next;
        if next == EntryId::default() {
            self.next_reclaim = Some(Instant::now() + self.settings.reclaim_every);
        }
        if !deleted.is_empty() {
            // XAUTOCLAIM already removed them from the pending list.
            self.count_trimmed(&deleted, "XAUTOCLAIM reported deleted entries");
        }
        Ok(())
    }

    async fn dead_letter(&mut self, id: EntryId, deliveries: u64) -> Result<(), ConnectorError> {
        let s = &self.settings;
        let moved = self
            .dead_letters
            .move_entry(
                &mut self.ctl,
                &s.stream,
                &s.group,
                &s.consumer,
                id,
                deliveries,
            )
            .await?;
        match moved {
            Moved::Copied | Moved::AlreadyThere => {
                self.shared
                    .counters
                    .dead_lettered
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    source = %s.name,
                    id = %id,
                    deliveries,
                    max_deliveries = s.max_deliveries,
                    dead_letter_stream = %self.dead_letters.stream,
                    already_there = moved == Moved::AlreadyThere,
                    "poison entry moved to the dead-letter stream and acknowledged"
                );
            }
            Moved::Gone => self.count_trimmed(&[id], "poison entry no longer exists"),
        }
        Ok(())
    }

    /// Counts deleted pending entries and removes them from the pending list.
    async fn trimmed(&mut self, ids: &[EntryId], why: &str) -> Result<(), ConnectorError> {
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.settings.stream).arg(&self.settings.group);
        for id in ids {
            cmd.arg(id.to_string());
        }
        let _: i64 = self.ctl.cmd("XACK", &cmd).await?;
        self.count_trimmed(ids, why);
        Ok(())
    }

    fn count_trimmed(&self, ids: &[EntryId], why: &str) {
        self.shared
            .counters
            .trimmed
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        let shown: Vec<String> = ids.iter().take(10).map(ToString::to_string).collect();
        tracing::warn!(
            source = %self.settings.name,
            entries = ids.len(),
            ids = ?shown,
            "{why}: the entries were trimmed before they were acknowledged and are lost to this group"
        );
    }

    fn emit(&mut self, entries: Vec<StreamEntry>) -> Pulled<StreamEntry> {
        let ids: Vec<EntryId> = entries.iter().map(|e| e.id).collect();
        self.shared.ledger().held.extend(ids.iter().copied());
        self.shared
            .counters
            .read
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        let guard = BatchGuard::new(Arc::clone(&self.shared), ids);
        let ack = Ack::new(move |outcomes| guard.settle(outcomes));
        Pulled::with_ack(entries, ack)
    }
}

/// The idle times (ms) of an `XPENDING` reply's rows, in order.
fn idle_times(reply: &redis::Value) -> Vec<i64> {
    super::entry::as_list(reply)
        .unwrap_or_default()
        .iter()
        .map(|row| {
            super::entry::as_list(row)
                .and_then(|r| r.get(2))
                .and_then(super::entry::as_int)
                .unwrap_or(0)
        })
        .collect()
}

impl Source for StreamSource {
    type Item = StreamEntry;

    async fn pull(&mut self, max: usize) -> Result<Option<Pulled<StreamEntry>>, BoxError> {
        match self.pull_inner(max.max(1)).await {
            Ok(pulled) => Ok(Some(pulled)),
            Err(e) => {
                // Whatever was in flight may now sit in our pending list.
                self.scan = Some(EntryId::default());
                // The stream or group was deleted, or the server restarted empty: create
                // the group again on the next pull.
                if e.code() == Some("NOGROUP") {
                    tracing::warn!(source = %self.settings.name, "the consumer group is gone; creating it again");
                    self.group_ready = false;
                }
                Err(Box::new(e))
            }
        }
    }

    fn name(&self) -> &str {
        &self.settings.name
    }

    fn backlog(&self) -> Option<Backlog> {
        Some(self.backlog.clone())
    }
}

impl Drop for StreamSource {
    fn drop(&mut self) {
        self.shared.source_dropped.store(true, Ordering::Release);
        self.shared.wake_acker.notify_one();
    }
}

impl fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSource")
            .field("name", &self.settings.name)
            .field("server", &format_args!("{}", self.redis))
            .field("stream", &self.settings.stream)
            .field("group", &self.settings.group)
            .field("consumer", &self.settings.consumer)
            .field("block", &self.settings.block)
            .field("min_idle", &self.settings.min_idle)
            .field("max_deliveries", &self.settings.max_deliveries)
            .finish_non_exhaustive()
    }
}
