//! NATS JetStream: a durable pull-consumer [`JetStreamSource`] (at-least-once) and a
//! de-duplicating [`JetStreamSink`].
//!
//! # Delivery
//!
//! - **Ack after outcome.** Each pulled message is acked only once its item reached its
//!   final outcome: `Delivered`, `Filtered`, `Dropped` or `DeadLettered` ack it; `Failed`
//!   naks it with a delay doubling per delivery; `Abandoned` (a forced shutdown) naks it
//!   at once, so another consumer takes it.
//! - **Poison messages.** A message that fails on its last allowed delivery
//!   ([`SourceOptions::max_deliveries`]) is published to the dead-letter subject with
//!   `Nats-Msg-Id = "{stream}:{sequence}"` (a repeat is de-duplicated) and then
//!   terminated. The consumer's `MaxDeliver` is set a few deliveries higher, as a backstop:
//!   the server never ends a message silently.
//! - **Credit.** A pull fetches at most what downstream has room for, with no prefetch
//!   buffer (a message waiting in the client's buffer still runs down its AckWait), and
//!   the source sends in-progress acks for messages held longer than a third of AckWait.
//! - **Outages.** async-nats reconnects by itself and buffers publishes and acks, so the
//!   source cannot see an outage: every fetch is bounded in time, and a failed fetch is a
//!   source error that the pipeline retries with backoff.
//! - **Duplicates.** After a consumer process dies, what it held is redelivered after
//!   AckWait. After a *broker* crash, nats-server 2.9 may redeliver messages that were
//!   already acked (its ack state reaches disk at most every 100 ms): sinks must be
//!   idempotent on [`NatsMessage::id`] (or the stream sequence).
//!
//! Secrets ([`Secret`]) never appear in `Debug`, logs, errors or dead letters.
//!
//! # Example
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use pipeline_connectors::nats::{self, JetStreamSink, JetStreamSource, NatsConfig, SourceOptions};
//! use pipeline_core::prelude::*;
//!
//! let config = NatsConfig::new("127.0.0.1:4222");
//! let source = JetStreamSource::connect(
//!     &config,
//!     SourceOptions::new("ORDERS", "workers").with_subjects(["orders.>"]),
//! )
//! .await?;
//! let acks = source.ack_handle();
//! let sink = JetStreamSink::connect(
//!     &config,
//!     "shipped.orders",
//!     |m: &nats::NatsMessage| m.id(),
//!     |m: &nats::NatsMessage| Ok(m.payload.clone()),
//! )
//! .await?;
//! let report = Pipeline::builder("orders")
//!     .source(source)
//!     .stage(stage::map_fn("check", |m: nats::NatsMessage| async move {
//!         m.json::<serde_json::Value>().map(|_| m)
//!     }))
//!     .sink(sink)
//!     .spawn()
//!     .shutdown_on(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! acks.settle(std::time::Duration::from_secs(5)).await;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod acker;
mod config;
mod options;
mod sink;
mod source;

pub use acker::{AckCounts, AckHandle};
pub use config::{Auth, ConnectFailure, NatsConfig, NatsError, Secret, Tls};
pub use options::SourceOptions;
pub use sink::{JetStreamSink, json};
pub use source::{JetStreamSource, NatsMessage};

/// The client crate, for its types in this API ([`Subject`](async_nats::Subject),
/// [`HeaderMap`](async_nats::HeaderMap), streams).
pub use async_nats;
