//! The JetStream sink: publishes each item with a `Nats-Msg-Id` derived from it (the
//! stream de-duplicates repeats within its duplicate window) and awaits the publish acks
//! of the whole batch before reporting it written.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;
use pipeline_core::BoxError;
use pipeline_core::error::Message;
use pipeline_core::sink::{Sink, WriteError};

use super::config::{NatsConfig, NatsError};

/// A [`Sink`] publishing items to a JetStream subject.
///
/// `key` gives each item its `Nats-Msg-Id` (say the source message's
/// [`id`](super::NatsMessage::id), or a business key): an item written twice (at-least-once
/// upstream, a retried batch) is stored once. `encode` gives its payload; an item it
/// cannot encode fails alone. A batch is delivered once every publish in it is
/// acknowledged by the stream; the items whose publish failed are reported in a partial
/// [`WriteError`].
pub struct JetStreamSink<T, K, E> {
    js: jetstream::Context,
    subject: String,
    key: K,
    encode: E,
    name: String,
    duplicates: u64,
    _item: std::marker::PhantomData<fn(T)>,
}

impl<T, K, E> fmt::Debug for JetStreamSink<T, K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamSink")
            .field("name", &self.name)
            .field("subject", &self.subject)
            .field("duplicates", &self.duplicates)
            .finish_non_exhaustive()
    }
}

impl<T, K, E> JetStreamSink<T, K, E>
where
    T: Send + 'static,
    K: Fn(&T) -> String + Send + 'static,
    E: Fn(&T) -> Result<Bytes, BoxError> + Send + 'static,
{
    /// Connects and publishes to `subject` (which a stream must capture).
    ///
    /// # Errors
    ///
    /// [`NatsError::Connect`] within the connect timeout.
    pub async fn connect(
        config: &NatsConfig,
        subject: impl Into<String>,
        key: K,
        encode: E,
    ) -> Result<Self, NatsError> {
        let client = config.connect("nats sink").await?;
        Ok(Self::with_client(
            client,
            config.request_timeout,
            subject,
            key,
            encode,
        ))
    }

    /// As [`connect`](Self::connect) on a client the caller made; publish acks wait at
    /// most `ack_timeout`.
    pub fn with_client(
        client: async_nats::Client,
        ack_timeout: Duration,
        subject: impl Into<String>,
        key: K,
        encode: E,
    ) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(ack_timeout)
            .ack_timeout(ack_timeout)
            .build(client);
        JetStreamSink {
            js,
            subject: subject.into(),
            key,
            encode,
            name: "nats_sink".to_owned(),
            duplicates: 0,
            _item: std::marker::PhantomData,
        }
    }

    /// Names the sink in stats and the topology (default `"nats_sink"`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Publishes the stream reported as duplicates (already stored under their id).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

impl<T, K, E> Sink for JetStreamSink<T, K, E>
where
    T: Send + 'static,
    K: Fn(&T) -> String + Send + 'static,
    E: Fn(&T) -> Result<Bytes, BoxError> + Send + 'static,
{
    type Item = T;

    async fn write(&mut self, items: &mut Vec<T>) -> Result<(), WriteError> {
        let mut failed = Vec::new();
        let mut last: Option<String> = None;
        // Encode first (no item is borrowed across an await), then send every publish,
        // then await the acks: one round trip per batch.
        let mut ready: Vec<(usize, PublishMessage)> = Vec::with_capacity(items.len());
        for (pos, item) in items.iter().enumerate() {
            match (self.encode)(item) {
                Ok(payload) => ready.push((
                    pos,
                    PublishMessage::build()
                        .payload(payload)
                        .message_id((self.key)(item)),
                )),
                Err(e) => {
                    failed.push(pos);
                    last = Some(format!("cannot encode item: {e}"));
                }
            }
        }
        let mut pending: Vec<(usize, PublishAckFuture)> = Vec::with_capacity(ready.len());
        for (pos, publish) in ready {
            match self.js.send_publish(self.subject.clone(), publish).await {
                Ok(ack) => pending.push((pos, ack)),
                Err(e) => {
                    failed.push(pos);
                    last = Some(format!("publish to `{}` failed: {e}", self.subject));
                }
            }
        }
        for (pos, ack) in pending {
            match ack.await {
                Ok(ack) => self.duplicates += u64::from(ack.duplicate),
                Err(e) => {
                    failed.push(pos);
                    last = Some(format!("publish to `{}` not confirmed: {e}", self.subject));
                }
            }
        }
        items.clear();
        match last {
            None => Ok(()),
            Some(error) => {
                failed.sort_unstable();
                Err(WriteError::partial(
                    Message(format!("{}: {error}", self.name)),
                    failed,
                ))
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Encodes an item as JSON, for [`JetStreamSink`]'s `encode`.
///
/// # Errors
///
/// The serializer's error.
pub fn json<T: serde::Serialize>(item: &T) -> Result<Bytes, BoxError> {
    Ok(Bytes::from(serde_json::to_vec(item)?))
}
