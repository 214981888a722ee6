//! Redis Streams: a consumer-group source with at-least-once delivery and an `XADD` sink.
//!
//! Several processes reading one stream with one group and distinct consumer names share
//! the work; that is the scale-out story (see `examples/redis_scale_out.rs`).
//!
//! | piece | what |
//! |---|---|
//! | [`RedisConfig`] | URL (password or ACL user; `rediss://` for TLS through rustls), timeouts; prints the URL with the password as `***` |
//! | [`StreamSource`] | `XREADGROUP` sized by the pipeline's credit, `XACK` after the final outcome, own pending entries re-read after reconnects, dead consumers' entries reclaimed (`XAUTOCLAIM`), poison entries dead-lettered past `max_deliveries`, trimmed entries counted |
//! | [`StreamEntry`] | what the source emits: the id (the idempotency key) and the fields |
//! | [`SourceProgress`] | the source's counters, and `settled()` to wait for the last acks |
//! | [`StreamSink`] | `XADD`, pipelined per batch, optional `MAXLEN`; never replays |
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use pipeline_core::prelude::*;
//! use pipeline_connectors::redis::{
//!     DecodeError, RedisConfig, StreamEntry, StreamRecord, StreamSink, StreamSource,
//! };
//!
//! let redis = RedisConfig::new("redis://127.0.0.1:6379")?;
//! let source = StreamSource::builder(redis.clone(), "orders", "billing", "worker-1")
//!     .min_idle(Duration::from_secs(30))
//!     .max_deliveries(5)
//!     .build()?;
//! let progress = source.progress();
//! let report = Pipeline::builder("billing")
//!     .source(source)
//!     // A malformed entry fails here: it is dead-lettered by the pipeline and acked.
//!     .stage(stage::map_fn("parse", |e: StreamEntry| async move {
//!         let order: serde_json::Value = e.json("body")?;
//!         Ok::<_, DecodeError>(
//!             StreamRecord::new()
//!                 .field("body", order.to_string())
//!                 .field("source_id", e.id.to_string()),
//!         )
//!     }))
//!     .sink(StreamSink::new(redis, "billed")?)
//!     .run()
//!     .await?;
//! // Let the last acknowledgements reach the server before the process exits.
//! let _ = tokio::time::timeout(Duration::from_secs(5), progress.settled()).await;
//! # let _ = report; Ok(()) }
//! ```
//!
//! # Delivery
//!
//! At least once: an entry is acknowledged only after its final outcome is
//! `Delivered`, `Filtered`, `Dropped` or `DeadLettered`; `Failed` and `Abandoned`
//! entries stay pending and come again. After a crash of a consumer, the entries it had
//! in flight come again (to itself on restart, or to another consumer after `min_idle`):
//! duplicates are bounded by the crashed consumer's in-flight window. Sinks that must not
//! see duplicates de-duplicate on [`StreamEntry::id`].

mod acker;
mod config;
mod conn;
mod dead_letter;
mod entry;
mod error;
mod options;
mod progress;
mod sink;
mod source;

pub use config::RedisConfig;
pub use entry::{BadEntryId, DecodeError, EntryId, StreamEntry};
pub use error::ConnectorError;
pub use options::{StartFrom, StreamSourceBuilder};
pub use progress::SourceProgress;
pub use sink::{MaxLen, StreamRecord, StreamSink};
pub use source::StreamSource;
