//! The service's pipeline: validate, enrich (a simulated dependency behind a timeout,
//! retries and a circuit breaker), drop test events, and a ledger sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pipeline_core::prelude::*;
use pipeline_core::source::IngestOptions;
use pipeline_core::{DeadLetter, Pipeline};
use serde::{Deserialize, Serialize};

/// An event as posted to `POST /events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Event {
    /// The caller's id for it.
    pub(crate) id: u64,
    /// Who it is about.
    pub(crate) user: String,
    /// Amount in cents; negative amounts are invalid.
    pub(crate) amount_cents: i64,
    /// `"order"` (the default) or `"test"` (filtered out before the ledger).
    #[serde(default = "order")]
    pub(crate) kind: String,
}

fn order() -> String {
    "order".to_owned()
}

/// An event with what the dependency knows about its user.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Enriched {
    pub(crate) event: Event,
    pub(crate) tier: Tier,
}

/// A user's tier, from the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Basic,
    Gold,
}

/// Why `validate` refused an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Invalid {
    #[error("`user` is empty")]
    NoUser,
    #[error("`amount_cents` is negative: {0}")]
    NegativeAmount(i64),
}

/// Checks what JSON alone cannot: a user and a non-negative amount.
#[stage(on_error = "dead_letter")]
pub(crate) fn validate(event: Event) -> Result<Event, Invalid> {
    if event.user.trim().is_empty() {
        return Err(Invalid::NoUser);
    }
    if event.amount_cents < 0 {
        return Err(Invalid::NegativeAmount(event.amount_cents));
    }
    Ok(event)
}

/// The simulated user directory: a few milliseconds per call, a transient failure on
/// one call in 25, a call slower than the stage's timeout on one in 101, and users
/// named `ghost*` it never knows. It can be taken down (`POST /admin/directory?down=true`):
/// then every call fails as unavailable, and `enrich`'s breaker opens.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    calls: AtomicU64,
    down: AtomicBool,
}

/// What the directory answers when it fails.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirectoryError {
    #[error("directory unavailable (call {0})")]
    Unavailable(u64),
    #[error("unknown user `{0}`")]
    UnknownUser(String),
}

impl Directory {
    /// Takes the directory down, or brings it back.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    pub(crate) async fn tier(&self, user: &str) -> Result<Tier, DirectoryError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(1)).await;
            return Err(DirectoryError::Unavailable(call));
        }
        let slow = call % 101 == 50;
        let wait = if slow { 250 } else { 1 + call % 3 };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if user.starts_with("ghost") {
            return Err(DirectoryError::UnknownUser(user.to_owned()));
        }
        if call % 25 == 11 {
            return Err(DirectoryError::Unavailable(call));
        }
        Ok(if user.len() % 3 == 0 {
            Tier::Gold
        } else {
            Tier::Basic
        })
    }
}

/// An unavailable directory may answer next time; an unknown user never will, so it is
/// not retried and does not count against the breaker.
pub(crate) fn is_transient(error: &DirectoryError) -> bool {
    matches!(error, DirectoryError::Unavailable(_))
}

/// Looks the user up in the directory, under a timeout, with retries and a breaker that
/// makes the pipeline wait (not dump events) while the directory is down.
#[stage(
    concurrency = 32,
    timeout = "100ms",
    retry(attempts = 4, backoff = "5ms", max_backoff = "50ms", jitter, when = is_transient),
    breaker(
        failure_rate = 0.5,
        window = 20,
        min_calls = 10,
        open_for = "500ms",
        half_open = 2,
        mode = "wait"
    ),
    on_error = "dead_letter"
)]
pub(crate) async fn enrich(
    event: Event,
    #[state] directory: &Directory,
) -> Result<Enriched, DirectoryError> {
    let tier = directory.tier(&event.user).await?;
    Ok(Enriched { event, tier })
}

/// Test events stop here.
#[stage]
pub(crate) fn drop_tests(event: Enriched) -> Option<Enriched> {
    (event.event.kind != "test").then_some(event)
}

/// What the ledger sink has booked.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub(crate) events: AtomicU64,
    pub(crate) cents: AtomicU64,
}

/// The pipeline, not yet spawned: `ingest -> validate -> enrich -> drop_tests -> ledger`.
pub(crate) fn build(
    max_in_flight: usize,
    directory: Arc<Directory>,
    ledger: Arc<Ledger>,
) -> Pipeline {
    Pipeline::builder("service")
        .ingest::<Event>(IngestOptions::buffer(256).max_in_flight(max_in_flight))
        .stage(Validate)
        .stage(Enrich::new(directory))
        .stage(DropTests)
        .sink(sink::for_each(move |e: Enriched| {
            let ledger = Arc::clone(&ledger);
            async move {
                ledger.events.fetch_add(1, Ordering::Relaxed);
                ledger
                    .cents
                    .fetch_add(e.event.amount_cents.unsigned_abs(), Ordering::Relaxed);
                Ok::<_, std::convert::Infallible>(())
            }
        }))
        .name("ledger")
        // Dead letters are counted by the pipeline; the reason goes back to a
        // `?wait=true` caller. Nothing else to do with them here.
        .dead_letter(sink::for_each(|_: DeadLetter| async {
            Ok::<_, std::convert::Infallible>(())
        }))
        .shutdown_deadline(Duration::from_secs(10))
        .build()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn event(user: &str, amount_cents: i64) -> Event {
        Event {
            id: 1,
            user: user.into(),
            amount_cents,
            kind: order(),
        }
    }

    #[test]
    fn validate_is_a_plain_function() {
        assert_eq!(validate(event("ann", 5)), Ok(event("ann", 5)));
        assert_eq!(validate(event(" ", 5)), Err(Invalid::NoUser));
        assert_eq!(validate(event("ann", -5)), Err(Invalid::NegativeAmount(-5)));
    }

    #[tokio::test]
    async fn enrich_knows_users_but_not_ghosts() {
        let directory = Directory::default();
        let ok = enrich(event("bob", 1), &directory).await.unwrap();
        assert_eq!(ok.tier, Tier::Gold);
        assert!(enrich(event("ghost", 1), &directory).await.is_err());
    }
}
