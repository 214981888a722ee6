//! The acker task of a JetStream source: answers every pulled message once its final
//! outcome is known (ack, nak with a delay, or dead-letter then terminate), keeps held
//! messages alive with in-progress acks, and refreshes the backlog gauges.
//!
//! The pipeline's ack callback runs inline in whatever task finalizes a batch, so it only
//! pushes onto `done` and wakes this task; all network work happens here.

use std::collections::HashMap;
use std::mem;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use pipeline_core::ack::Outcome;
use pipeline_core::source::Backlog;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::options::SourceOptions;

/// A pulled message as the source keeps it until answered. The payload and subject are
/// reference counted, shared with the item.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) reply: Subject,
    pub(super) sequence: u64,
    pub(super) delivered: u64,
    pub(super) subject: Subject,
    pub(super) payload: Bytes,
    pub(super) headers: Option<HeaderMap>,
}

/// Work for the acker.
#[derive(Debug)]
pub(super) enum Done {
    /// A pulled batch reached its final outcomes (one per held message, in order).
    Batch(u64, Vec<Outcome>),
    /// A message to dead-letter without processing it, with the reason.
    DeadLetter(Held, &'static str),
}

#[derive(Debug)]
struct HeldBatch {
    messages: Vec<Held>,
    /// Pulled, or last kept alive with an in-progress ack.
    touched: Instant,
}

/// State shared by the source, its ack callbacks and the acker task.
///
/// Bounds: `held` and `done` together hold at most the messages pulled and not yet
/// answered, which the pipeline bounds by its in-flight limit (edge capacities plus
/// stage concurrency) plus one pulled batch: the source pulls only as much as downstream
/// credit allows.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) durable: String,
    pub(super) js: jetstream::Context,
    stream: String,
    held: Mutex<HashMap<u64, HeldBatch>>,
    done: Mutex<Vec<Done>>,
    wake: Notify,
    /// Woken whenever `outstanding` drops to zero.
    pub(super) settled: Notify,
    /// Messages pulled and not yet answered.
    outstanding: AtomicUsize,
    closed: AtomicBool,
    ack_wait: Duration,
    max_deliveries: u64,
    server_max_deliver: u64,
    nak_delay: Duration,
    max_nak_delay: Duration,
    dead_letter_subject: String,
    backlog_every: Duration,
    acked: AtomicU64,
    naked: AtomicU64,
    dead_lettered: AtomicU64,
    progress: AtomicU64,
    dead_letter_failures: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(super) fn new(
        options: &SourceOptions,
        js: jetstream::Context,
        server_max_deliver: u64,
    ) -> Self {
        Shared {
            durable: options.durable.clone(),
            js,
            stream: options.stream.clone(),
            held: Mutex::new(HashMap::new()),
            done: Mutex::new(Vec::new()),
            wake: Notify::new(),
            settled: Notify::new(),
            outstanding: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            ack_wait: options.ack_wait,
            max_deliveries: u64::from(options.max_deliveries),
            server_max_deliver,
            nak_delay: options.nak_delay,
            max_nak_delay: options.max_nak_delay,
            dead_letter_subject: options.dead_letter_subject.clone(),
            backlog_every: options.backlog_every,
            acked: AtomicU64::new(0),
            naked: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            dead_letter_failures: AtomicU64::new(0),
        }
    }

    /// Keeps a pulled batch until its outcomes come back.
    pub(super) fn hold(&self, batch: u64, messages: Vec<Held>) {
        self.outstanding.fetch_add(messages.len(), Ordering::AcqRel);
        lock(&self.held).insert(
            batch,
            HeldBatch {
                messages,
                touched: Instant::now(),
            },
        );
    }

    /// Hands work to the acker: one lock, one push, one wake-up; never blocks on I/O.
    pub(super) fn push(&self, done: Done) {
        if let Done::DeadLetter(..) = done {
            self.outstanding.fetch_add(1, Ordering::AcqRel);
        }
        lock(&self.done).push(done);
        self.wake.notify_one();
    }

    /// The source is gone: the acker ends once everything held is answered.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    pub(super) fn held_len(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    pub(super) fn is_idle(&self) -> bool {
        self.held_len() == 0
    }

    pub(super) fn counts(&self) -> AckCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AckCounts {
            acked: get(&self.acked),
            naked: get(&self.naked),
            dead_lettered: get(&self.dead_lettered),
            progress: get(&self.progress),
            dead_letter_failures: get(&self.dead_letter_failures),
        }
    }

    fn answered(&self, n: usize) {
        if n > 0 && self.outstanding.fetch_sub(n, Ordering::AcqRel) == n {
            self.settled.notify_waiters();
        }
    }

    fn nak_delay_for(&self, delivered: u64) -> Duration {
        let doublings = delivered.saturating_sub(1).min(20) as u32;
        self.nak_delay
            .saturating_mul(1 << doublings)
            .min(self.max_nak_delay)
    }
}

/// A cloneable view of a running source's acknowledgements, kept after the source is
/// moved into a pipeline.
#[derive(Debug, Clone)]
pub struct AckHandle {
    shared: Arc<Shared>,
    client: async_nats::Client,
}

impl AckHandle {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        let client = shared.js.client();
        AckHandle { shared, client }
    }

    /// Messages pulled and not yet acknowledged, nak'd or terminated by this process.
    pub fn held(&self) -> usize {
        self.shared.held_len()
    }

    /// What the acker has sent so far.
    pub fn counts(&self) -> AckCounts {
        self.shared.counts()
    }

    /// Waits (at most `within`) until every message pulled has been answered and the
    /// answers flushed to the server. Call it after the pipeline's shutdown returned,
    /// before the process exits. Returns whether everything was answered in time.
    pub async fn settle(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the check, so a wake-up between the two is not missed.
            let settled = self.shared.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.shared.is_idle() {
                // Acks are buffered by the client: push them out.
                return tokio::time::timeout_at(deadline, self.client.flush())
                    .await
                    .is_ok_and(|r| r.is_ok());
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return false;
            }
        }
    }
}

/// Answers sent by a source's acker, for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckCounts {
    /// Positive acks.
    pub acked: u64,
    /// Negative acks (redelivered after a delay).
    pub naked: u64,
    /// Messages published to the dead-letter subject and then terminated.
    pub dead_lettered: u64,
    /// In-progress acks sent for messages held long.
    pub progress: u64,
    /// Dead-letter publishes that failed (the message was nak'd instead).
    pub dead_letter_failures: u64,
}

/// The acker task: runs until the source is dropped and every held message is answered.
pub(super) async fn run(
    shared: Arc<Shared>,
    client: async_nats::Client,
    consumer: consumer::Consumer<consumer::pull::Config>,
    backlog: Backlog,
) {
    tokio::spawn(refresh_backlog(Arc::clone(&shared), consumer, backlog));
    // Messages held longer than a third of AckWait get an in-progress ack; checking
    // every sixth keeps the oldest within half of AckWait.
    let keep_alive = shared.ack_wait / 3;
    let mut ticker = tokio::time::interval((shared.ack_wait / 6).max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shared.wake.notified() => {}
            _ = ticker.tick() => keep_alive_held(&shared, &client, keep_alive).await,
        }
        let work = mem::take(&mut *lock(&shared.done));
        for done in work {
            answer(&shared, &client, done).await;
        }
        if shared.closed.load(Ordering::Acquire) && shared.is_idle() {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
    shared.settled.notify_waiters();
}

async fn answer(shared: &Shared, client: &async_nats::Client, done: Done) {
    match done {
        Done::DeadLetter(held, reason) => {
            dead_letter(shared, client, held, reason).await;
            shared.answered(1);
        }
        Done::Batch(batch, outcomes) => {
            let Some(held) = lock(&shared.held).remove(&batch) else {
                return;
            };
            let n = held.messages.len();
            for (i, msg) in held.messages.into_iter().enumerate() {
                let outcome = outcomes.get(i).copied().unwrap_or(Outcome::Abandoned);
                if outcome.is_ack() {
                    publish(client, &msg.reply, ACK).await;
                    shared.acked.fetch_add(1, Ordering::Relaxed);
                } else if (outcome == Outcome::Failed && msg.delivered >= shared.max_deliveries)
                    || msg.delivered + 1 >= shared.server_max_deliver
                {
                    // Its last allowed delivery failed: we end it, never the server's
                    // MaxDeliver (which would drop it silently).
                    dead_letter(shared, client, msg, "failed on its last allowed delivery").await;
                } else if outcome == Outcome::Abandoned {
                    // Cut off by a shutdown, not failed: another consumer may take it now.
                    publish(client, &msg.reply, Bytes::from_static(b"-NAK")).await;
                    shared.naked.fetch_add(1, Ordering::Relaxed);
                } else {
                    let delay = shared.nak_delay_for(msg.delivered);
                    let nak = format!("-NAK {{\"delay\":{}}}", delay.as_nanos());
                    publish(client, &msg.reply, Bytes::from(nak)).await;
                    shared.naked.fetch_add(1, Ordering::Relaxed);
                }
            }
            shared.answered(n);
        }
    }
}

const ACK: Bytes = Bytes::from_static(b"+ACK");

async fn publish(client: &async_nats::Client, reply: &Subject, body: Bytes) {
    // Buffered by the client while it reconnects; an error here means the client is
    // closed, and the server redelivers after AckWait.
    if let Err(error) = client.publish(reply.clone(), body).await {
        tracing::debug!(%error, "ack not sent; the server will redeliver");
    }
}

/// Publishes `msg` to the dead-letter subject, de-duplicated on its stream sequence, and
/// terminates it once the publish is confirmed; if the publish fails it is nak'd and
/// dead-lettered again on a later delivery.
async fn dead_letter(shared: &Shared, client: &async_nats::Client, msg: Held, reason: &str) {
    let mut headers = HeaderMap::new();
    if let Some(original) = &msg.headers {
        for (name, values) in original.iter() {
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(id) = original.get(async_nats::header::NATS_MESSAGE_ID) {
            headers.insert("Pipeline-Original-Msg-Id", id.clone());
        }
    }
    let id = format!("{}:{}", shared.stream, msg.sequence);
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    headers.insert("Pipeline-Dead-Letter-Reason", reason);
    headers.insert("Pipeline-Stream", shared.stream.as_str());
    headers.insert("Pipeline-Consumer", shared.durable.as_str());
    headers.insert(
        "Pipeline-Stream-Sequence",
        msg.sequence.to_string().as_str(),
    );
    headers.insert("Pipeline-Subject", msg.subject.as_str());
    headers.insert("Pipeline-Deliveries", msg.delivered.to_string().as_str());
    let confirmed = match shared
        .js
        .publish_with_headers(
            shared.dead_letter_subject.clone(),
            headers,
            msg.payload.clone(),
        )
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match confirmed {
        Ok(()) => {
            publish(client, &msg.reply, Bytes::from_static(b"+TERM")).await;
            shared.dead_lettered.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(stream = %shared.stream, consumer = %shared.durable, sequence = msg.sequence, deliveries = msg.delivered, reason, "message dead-lettered and terminated");
        }
        Err(error) => {
            let delay = shared.nak_delay_for(msg.delivered);
            let nak = format!("-NAK {{\"delay\":{}}}", delay.as_nanos());
            publish(client, &msg.reply, Bytes::from(nak)).await;
            shared.dead_letter_failures.fetch_add(1, Ordering::Relaxed);
            shared.naked.fetch_add(1, Ordering::Relaxed);
            tracing::error!(stream = %shared.stream, sequence = msg.sequence, %error, "dead-letter publish failed; nak'd for a later attempt");
        }
    }
}

/// In-progress acks for every batch held longer than `after`.
async fn keep_alive_held(shared: &Shared, client: &async_nats::Client, after: Duration) {
    let now = Instant::now();
    let mut replies = Vec::new();
    for batch in lock(&shared.held).values_mut() {
        if now.duration_since(batch.touched) >= after {
            batch.touched = now;
            replies.extend(batch.messages.iter().map(|m| m.reply.clone()));
        }
    }
    for reply in &replies {
        publish(client, reply, Bytes::from_static(b"+WPI")).await;
    }
    shared
        .progress
        .fetch_add(replies.len() as u64, Ordering::Relaxed);
}

/// Consumer info every `backlog_every`: one small request, bounded by the request
/// timeout; a failure leaves the last numbers standing.
async fn refresh_backlog(
    shared: Arc<Shared>,
    consumer: consumer::Consumer<consumer::pull::Config>,
    backlog: Backlog,
) {
    loop {
        if let Ok(Ok(info)) = tokio::time::timeout(
            shared.backlog_every.max(Duration::from_secs(1)) * 2,
            consumer.get_info(),
        )
        .await
        {
            backlog.set_lag(info.num_pending);
            backlog.set_pending(info.num_ack_pending as u64);
        }
        tokio::time::sleep(shared.backlog_every).await;
        if shared.closed.load(Ordering::Acquire) && shared.is_idle() {
            break;
        }
    }
}
