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
#![forbid(unsafe_code)]

#[cfg(feature = "nats")]
pub mod nats;
