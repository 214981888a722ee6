//! The JetStream source: a durable pull consumer, fetched only as far as downstream credit
//! allows, acknowledged after each item's final outcome.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::StreamExt;
use pipeline_core::BoxError;
use pipeline_core::ack::{Ack, Outcome};
use pipeline_core::source::{Backlog, Pulled, Source};

use super::acker::{self, AckHandle, Done, Held, Shared};
use super::config::{NatsConfig, NatsError};
use super::options::SourceOptions;

/// One JetStream message as a pipeline item. Cheap to clone (the payload and subject are
/// reference counted). The message's ack handle stays with the source, not the item.
#[derive(Debug, Clone)]
pub struct NatsMessage {
    /// The subject it was published on.
    pub subject: Subject,
    /// The payload.
    pub payload: Bytes,
    /// Its headers, if any.
    pub headers: Option<HeaderMap>,
    /// The stream it came from.
    pub stream: Arc<str>,
    /// Its sequence in the stream: unique and stable across redeliveries, the
    /// idempotency key for sinks.
    pub stream_sequence: u64,
    /// How many times it has been delivered, this time included.
    pub delivered: u64,
}

impl NatsMessage {
    /// An idempotency key: `"{stream}:{stream_sequence}"`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.stream, self.stream_sequence)
    }

    /// Decodes the payload as JSON. Use it in a stage so a malformed payload fails that
    /// item (and is dead-lettered, then acked), never the pipeline.
    ///
    /// # Errors
    ///
    /// The decoder's error, naming the line and column.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

/// A JetStream durable pull consumer as a pipeline [`Source`]. See the
/// [module docs](super) for the delivery guarantees.
pub struct JetStreamSource {
    consumer: consumer::Consumer<consumer::pull::Config>,
    shared: Arc<Shared>,
    stream: Arc<str>,
    fetch_wait: Duration,
    max_deliveries: u64,
    next_batch: u64,
    name: String,
    backlog: Backlog,
}

impl std::fmt::Debug for JetStreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSource")
            .field("name", &self.name)
            .field("stream", &self.stream)
            .field("durable", &self.shared.durable)
            .field("held", &self.shared.held_len())
            .finish_non_exhaustive()
    }
}

impl JetStreamSource {
    /// Connects, creates or binds the stream, the dead-letter stream and the durable
    /// consumer (explicit acks), and starts the acker task on the current runtime.
    ///
    /// # Errors
    ///
    /// [`NatsError::Connect`] (within the connect timeout: a wrong password fails at
    /// once) or [`NatsError::Setup`].
    pub async fn connect(config: &NatsConfig, options: SourceOptions) -> Result<Self, NatsError> {
        let client = config.connect(&options.name).await?;
        Self::with_client(client, config.request_timeout, options).await
    }

    /// As [`connect`](Self::connect) on a client the caller made.
    ///
    /// # Errors
    ///
    /// [`NatsError::Setup`].
    pub async fn with_client(
        client: async_nats::Client,
        request_timeout: Duration,
        options: SourceOptions,
    ) -> Result<Self, NatsError> {
        let name = options.name.clone();
        let setup = |what: &str, e: &dyn std::fmt::Display| NatsError::setup(&name, what, e);
        let js = jetstream::ContextBuilder::new()
            .timeout(request_timeout)
            .build(client.clone());
        let stream = if options.subjects.is_empty() {
            js.get_stream(&options.stream)
                .await
                .map_err(|e| setup(&format!("stream `{}`", options.stream), &e))?
        } else {
            js.get_or_create_stream(stream::Config {
                name: options.stream.clone(),
                subjects: options.subjects.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| setup(&format!("stream `{}`", options.stream), &e))?
        };
        if let Some(dlq) = &options.dead_letter_stream {
            js.get_or_create_stream(stream::Config {
                name: dlq.clone(),
                subjects: vec![options.dead_letter_subject.clone()],
                ..Default::default()
            })
            .await
            .map_err(|e| setup(&format!("dead-letter stream `{dlq}`"), &e))?;
        }
        // Only fields nats-server 2.9 knows: it ignores newer ones silently.
        let consumer: consumer::Consumer<consumer::pull::Config> = stream
            .get_or_create_consumer(
                &options.durable,
                consumer::pull::Config {
                    durable_name: Some(options.durable.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: options.ack_wait,
                    max_deliver: options.server_max_deliver(),
                    filter_subject: options.filter_subject.clone(),
                    max_ack_pending: options.max_ack_pending.unwrap_or_default(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| setup(&format!("consumer `{}`", options.durable), &e))?;
        let backlog = Backlog::new();
        let shared = Arc::new(Shared::new(
            &options,
            js,
            options.server_max_deliver() as u64,
        ));
        tokio::spawn(acker::run(
            Arc::clone(&shared),
            client,
            consumer.clone(),
            backlog.clone(),
        ));
        Ok(JetStreamSource {
            consumer,
            shared,
            stream: Arc::from(options.stream.as_str()),
            fetch_wait: options.fetch_wait,
            max_deliveries: u64::from(options.max_deliveries),
            next_batch: 0,
            name,
            backlog,
        })
    }

    /// A handle on this source's acknowledgements, to await them at shutdown.
    pub fn ack_handle(&self) -> AckHandle {
        AckHandle::new(Arc::clone(&self.shared))
    }

    /// Up to `max` messages, waiting at most `fetch_wait` (plus the client's slack) for
    /// the first. An empty answer is `Ok(empty)`.
    async fn fetch(&self, max: usize) -> Result<Vec<jetstream::Message>, BoxError> {
        // First what is ready now (no_wait): never more than downstream credit, so no
        // message waits in a client buffer while its AckWait runs.
        let mut got = self
            .take(self.consumer.fetch().max_messages(max), max)
            .await?;
        if got.is_empty() {
            // Nothing ready: wait for one, then take whatever else is ready.
            let wait = self
                .consumer
                .batch()
                .max_messages(1)
                .expires(self.fetch_wait);
            got = self.take(wait, 1).await?;
            if !got.is_empty() && max > 1 {
                got.extend(
                    self.take(self.consumer.fetch().max_messages(max - 1), max - 1)
                        .await?,
                );
            }
        }
        Ok(got)
    }

    async fn take<B: IntoBatch>(
        &self,
        builder: B,
        max: usize,
    ) -> Result<Vec<jetstream::Message>, BoxError> {
        // The client ends a batch only 5 s after its expiry when the server's answer is
        // lost (an outage it cannot see); we give up sooner. Messages arriving after that
        // go unanswered and are redelivered after AckWait: late, never lost.
        let bound = self.fetch_wait + self.fetch_wait.max(Duration::from_secs(1));
        let fetch = async {
            let mut batch = builder.start(self.fetch_wait).await?;
            let mut got = Vec::with_capacity(max.min(256));
            while let Some(msg) = batch.next().await {
                got.push(msg?);
            }
            Ok::<_, BoxError>(got)
        };
        match tokio::time::timeout(bound, fetch).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "nats source `{}`: fetch timed out after {bound:?}",
                self.name
            )
            .into()),
        }
    }
}

/// The two fetch builders, started the same way.
trait IntoBatch {
    fn start(
        self,
        expires: Duration,
    ) -> impl std::future::Future<Output = Result<consumer::pull::Batch, BoxError>> + Send;
}

impl IntoBatch for consumer::pull::FetchBuilder<'_> {
    async fn start(self, expires: Duration) -> Result<consumer::pull::Batch, BoxError> {
        // An expiry even on no_wait requests, so the client always times the batch out.
        Ok(self.expires(expires).messages().await?)
    }
}

impl IntoBatch for consumer::pull::BatchBuilder<'_> {
    async fn start(self, _expires: Duration) -> Result<consumer::pull::Batch, BoxError> {
        Ok(self.messages().await?)
    }
}

impl Source for JetStreamSource {
    type Item = NatsMessage;

    /// # Cancel safety
    ///
    /// Cancelling (at shutdown) drops at most one fetch's messages unanswered: the server
    /// redelivers them after AckWait. Nothing is lost.
    async fn pull(&mut self, max: usize) -> Result<Option<Pulled<NatsMessage>>, BoxError> {
        let max = max.max(1);
        loop {
            let messages = self.fetch(max).await?;
            if messages.is_empty() {
                continue;
            }
            let batch = self.next_batch;
            self.next_batch += 1;
            let mut items = Vec::with_capacity(messages.len());
            let mut held = Vec::with_capacity(messages.len());
            let mut lag = None;
            for msg in messages {
                let Ok(info) = msg.info() else {
                    // Not a JetStream delivery: nothing to ack, nothing to process.
                    tracing::warn!(source = %self.name, subject = %msg.subject, "message without JetStream metadata skipped");
                    continue;
                };
                let (seq, delivered) = (info.stream_sequence, info.delivered.max(1) as u64);
                lag = Some(info.pending);
                let message = msg.message;
                let Some(reply) = message.reply else {
                    continue;
                };
                let h = Held {
                    reply,
                    sequence: seq,
                    delivered,
                    subject: message.subject.clone(),
                    payload: message.payload.clone(),
                    headers: message.headers.clone(),
                };
                if delivered > self.max_deliveries {
                    // Past our limit already (a process died holding it, again and
                    // again): dead-letter it without processing it once more.
                    self.shared
                        .push(Done::DeadLetter(h, "delivery limit exceeded"));
                    continue;
                }
                items.push(NatsMessage {
                    subject: message.subject,
                    payload: message.payload,
                    headers: message.headers,
                    stream: Arc::clone(&self.stream),
                    stream_sequence: seq,
                    delivered,
                });
                held.push(h);
            }
            if let Some(lag) = lag {
                self.backlog.set_lag(lag);
            }
            if items.is_empty() {
                continue;
            }
            self.shared.hold(batch, held);
            let mut guard = Unanswered {
                shared: Some(Arc::clone(&self.shared)),
                batch,
            };
            // Runs inline in whichever pipeline task finalizes the batch: one lock, one
            // push, one wake-up; the acker task does the network part.
            let ack = Ack::new(move |outcomes: &[Outcome]| {
                if let Some(shared) = guard.shared.take() {
                    shared.push(Done::Batch(guard.batch, outcomes.to_vec()));
                }
            });
            return Ok(Some(Pulled::with_ack(items, ack)));
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn backlog(&self) -> Option<Backlog> {
        Some(self.backlog.clone())
    }
}

/// Carried by a batch's ack callback: if the callback is dropped without running, the
/// batch is answered as abandoned (nak'd) instead of being kept alive by in-progress acks
/// for as long as the process lives.
struct Unanswered {
    shared: Option<Arc<Shared>>,
    batch: u64,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            // No outcomes: every message counts as abandoned.
            shared.push(Done::Batch(self.batch, Vec::new()));
        }
    }
}

impl Drop for JetStreamSource {
    fn drop(&mut self) {
        self.shared.close();
    }
}
