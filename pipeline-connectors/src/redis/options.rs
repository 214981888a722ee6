//! The settings of a [`StreamSource`](super::StreamSource) and its builder.

use std::time::Duration;

use super::acker::Shared;
use super::config::RedisConfig;
use super::error::ConnectorError;
use super::source::StreamSource;

/// Where a newly created consumer group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The first entry still in the stream (`0`): nothing written before the group
    /// existed is skipped. The default.
    #[default]
    Beginning,
    /// Only entries added after the group was created (`$`).
    NewOnly,
}

/// The settings of a stream source; made by [`StreamSource::builder`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) name: String,
    pub(crate) stream: String,
    pub(crate) group: String,
    pub(crate) consumer: String,
    pub(crate) start: StartFrom,
    pub(crate) block: Duration,
    pub(crate) read_count: usize,
    pub(crate) min_idle: Duration,
    pub(crate) reclaim_every: Duration,
    pub(crate) max_deliveries: u64,
    pub(crate) dead_letter_stream: String,
    pub(crate) max_unacked: usize,
    pub(crate) backlog_every: Duration,
    pub(crate) drain_timeout: Duration,
}

/// Builds a [`StreamSource`]; see [`StreamSource::builder`].
#[derive(Debug, Clone)]
pub struct StreamSourceBuilder {
    config: RedisConfig,
    settings: Settings,
}

impl StreamSourceBuilder {
    pub(crate) fn new(config: RedisConfig, stream: &str, group: &str, consumer: &str) -> Self {
        StreamSourceBuilder {
            config,
            settings: Settings {
                name: format!("redis:{stream}"),
                stream: stream.to_owned(),
                group: group.to_owned(),
                consumer: consumer.to_owned(),
                start: StartFrom::Beginning,
                block: Duration::from_secs(1),
                read_count: 256,
                min_idle: Duration::from_secs(60),
                reclaim_every: Duration::from_secs(30),
                max_deliveries: 10,
                dead_letter_stream: format!("{stream}:dlq"),
                max_unacked: 10_000,
                backlog_every: Duration::from_secs(5),
                drain_timeout: Duration::from_secs(5),
            },
        }
    }

    /// The source's name in stats, metrics and the topology. Default `redis:<stream>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// Where the group starts if this source creates it. Default [`StartFrom::Beginning`].
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.settings.start = start;
        self
    }

    /// How long one `XREADGROUP ... BLOCK` waits for new entries. Default 1 s. The read
    /// runs on its own connection whose response timeout is this plus the config's
    /// response timeout, so the client never gives up on a read the server still serves.
    pub fn block(mut self, block: Duration) -> Self {
        self.settings.block = block.max(Duration::from_millis(1));
        self
    }

    /// The most entries one read asks for (also capped by the pipeline's credit).
    /// Default 256.
    pub fn read_count(mut self, count: usize) -> Self {
        self.settings.read_count = count.max(1);
        self
    }

    /// How long another consumer's entry must stay unacknowledged before this source
    /// takes it over (`XAUTOCLAIM`). Default 60 s. Keep it well above the longest time an
    /// entry spends in a live pipeline, or live consumers' entries are taken over too
    /// (duplicates, not loss).
    pub fn min_idle(mut self, min_idle: Duration) -> Self {
        self.settings.min_idle = min_idle;
        self
    }

    /// How often the source looks for idle entries of dead consumers. Default 30 s.
    pub fn reclaim_every(mut self, every: Duration) -> Self {
        self.settings.reclaim_every = every;
        self
    }

    /// Deliveries after which an entry is moved to the dead-letter stream instead of
    /// being delivered again. Default 10.
    pub fn max_deliveries(mut self, max: u64) -> Self {
        self.settings.max_deliveries = max.max(1);
        self
    }

    /// The stream poison entries are moved to. Default `<stream>:dlq`; its id index is
    /// the hash `<dead-letter stream>:index`.
    pub fn dead_letter_stream(mut self, stream: impl Into<String>) -> Self {
        self.settings.dead_letter_stream = stream.into();
        self
    }

    /// The most entries emitted and not yet acknowledged; reading pauses at this
    /// number. Default 10 000. The pipeline's own in-flight bound is normally lower; this
    /// caps the entries waiting for an `XACK` while the server is unreachable.
    pub fn max_unacked(mut self, max: usize) -> Self {
        self.settings.max_unacked = max.max(1);
        self
    }

    /// How often lag and pending counts are refreshed (`XINFO GROUPS`). Default 5 s.
    pub fn backlog_every(mut self, every: Duration) -> Self {
        self.settings.backlog_every = every.max(Duration::from_millis(10));
        self
    }

    /// How long the acknowledging task keeps retrying after the source ended while the
    /// server is unreachable. Default 5 s; what it could not acknowledge is redelivered.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.settings.drain_timeout = timeout;
        self
    }

    /// The source. No connection is made until the first pull.
    ///
    /// # Errors
    ///
    /// [`ConnectorError::Config`] for an empty stream, group or consumer name, or a TLS
    /// setup that cannot work.
    pub fn build(self) -> Result<StreamSource, ConnectorError> {
        let s = &self.settings;
        for (what, value) in [
            ("stream", &s.stream),
            ("group", &s.group),
            ("consumer", &s.consumer),
        ] {
            if value.is_empty() {
                return Err(ConnectorError::Config(format!(
                    "redis source `{}`: the {what} name is empty",
                    s.name
                )));
            }
        }
        StreamSource::from_parts(
            self.config,
            self.settings,
            std::sync::Arc::new(Shared::default()),
        )
    }
}
