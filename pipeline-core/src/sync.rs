//! The atomics and locks the ack tracker and the circuit breaker use: std's, or loom's when the crate is built
//! with `RUSTFLAGS="--cfg pipeline_loom"` so the model checker can explore every
//! interleaving (`cargo test -p pipeline-core --lib loom`).

#[cfg(not(pipeline_loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize};
#[cfg(not(pipeline_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(pipeline_loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize};
#[cfg(pipeline_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
