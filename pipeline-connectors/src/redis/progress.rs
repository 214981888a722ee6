//! What a source tells its host: counters, and a wait for the last acknowledgements.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::acker::Shared;

/// Live counters of a [`StreamSource`](super::StreamSource), and a way to wait until
/// every finished entry has been acknowledged. Cloneable; stays valid after the source
/// is dropped.
#[derive(Debug, Clone)]
pub struct SourceProgress {
    pub(crate) shared: Arc<Shared>,
}

impl SourceProgress {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Entries read from the group (first reads and redeliveries).
    pub fn read(&self) -> u64 {
        Self::get(&self.shared.counters.read)
    }

    /// Entries acknowledged with `XACK` after a positive outcome.
    pub fn acked(&self) -> u64 {
        Self::get(&self.shared.counters.acked)
    }

    /// Entries left pending after a negative outcome (failed or abandoned).
    pub fn nacked(&self) -> u64 {
        Self::get(&self.shared.counters.nacked)
    }

    /// Entries delivered again (from this consumer's pending list, its own or claimed).
    pub fn redelivered(&self) -> u64 {
        Self::get(&self.shared.counters.redelivered)
    }

    /// Idle pending entries taken over with `XAUTOCLAIM`: a dead consumer's, or this
    /// source's own that came back negative or were lost in flight.
    pub fn reclaimed(&self) -> u64 {
        Self::get(&self.shared.counters.reclaimed)
    }

    /// Pending entries found deleted (trimmed by `MAXLEN`/`XTRIM`, or `XDEL`): counted,
    /// traced at `warn` and removed from the pending list, never delivered.
    pub fn trimmed(&self) -> u64 {
        Self::get(&self.shared.counters.trimmed)
    }

    /// Entries moved to the dead-letter stream after too many deliveries.
    pub fn dead_lettered(&self) -> u64 {
        Self::get(&self.shared.counters.dead_lettered)
    }

    /// Failed `XACK` round trips (each retried).
    pub fn ack_errors(&self) -> u64 {
        Self::get(&self.shared.counters.ack_errors)
    }

    /// Whether the acknowledging task has ended: the source was dropped and every
    /// entry it emitted was acknowledged or released (or the server stayed unreachable
    /// past the drain timeout).
    pub fn is_finished(&self) -> bool {
        self.shared.acker_done.load(Ordering::Acquire)
    }

    /// Entries emitted and not yet acknowledged or released.
    pub fn unacked(&self) -> usize {
        self.shared.ledger().held.len()
    }

    /// Waits until no emitted entry waits for its outcome or its `XACK`. Use it after a
    /// pipeline ended (and before the process exits) so the last acknowledgements reach
    /// the server; entries whose `XACK` never arrives are redelivered later.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn settled(&self) {
        loop {
            let notified = self.shared.progress.notified();
            if self.shared.ledger().held.is_empty() {
                return;
            }
            // A timeout guards against a missed wake-up; progress is re-checked.
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}
