//! Sources and sinks for real systems, each behind its own cargo feature.
//!
//! | feature | module | what |
//! |---|---|---|
//! | `csv` | `csv` | a streaming CSV source; malformed rows become failing items, never a crash |
//! | `jsonl` | `jsonl` | a streaming JSON lines source, the same way |
//! | `sqlite` | `sqlite` | a batched, transactional, idempotent SQLite sink |
//! | `postgres` | `postgres` | a batched, transactional, idempotent PostgreSQL sink |
//! | `redis` | `redis` | Redis Streams: a consumer-group source (at-least-once) and an `XADD` sink |
//! | `nats` | `nats` | NATS JetStream: a durable pull-consumer source (at-least-once) and a publishing sink |
//!
//! The file sources share the `record` module (`Record<T>`: a row with its line number, parsed or
//! failed, and the `parsed()` stage that dead-letters bad rows); the database sinks share
//! the `table` module (`Table`: name, columns and upsert key; `Value` and `ToRow`: how an item
//! becomes a row).
#![forbid(unsafe_code)]

#[cfg(any(feature = "csv", feature = "jsonl"))]
mod feed;
#[cfg(any(feature = "csv", feature = "jsonl"))]
mod lines;
#[cfg(any(feature = "csv", feature = "jsonl"))]
pub mod record;

#[cfg(feature = "csv")]
pub mod csv;
#[cfg(feature = "jsonl")]
pub mod jsonl;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod table;

#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;
