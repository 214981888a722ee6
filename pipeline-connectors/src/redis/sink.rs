//! The `XADD` sink: one pipelined round trip per batch, no replay.

use std::fmt;

use pipeline_core::sink::{Sink, WriteError};

use super::config::RedisConfig;
use super::conn::Conn;
use super::entry::StreamEntry;
use super::error::ConnectorError;

/// One entry to append: its fields in order. The server assigns the id.
///
/// ```
/// use pipeline_connectors::redis::StreamRecord;
///
/// let record = StreamRecord::new().field("kind", "order").field("qty", "3");
/// assert_eq!(record.fields.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamRecord {
    /// Field names and values, in order.
    pub fields: Vec<(String, Vec<u8>)>,
}

impl StreamRecord {
    /// A record with no fields yet (one is needed before it can be written).
    pub fn new() -> Self {
        StreamRecord::default()
    }

    /// Adds a field.
    pub fn field(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.fields.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// A record with one field holding `value` as JSON.
    ///
    /// # Errors
    ///
    /// When `value` cannot be serialized.
    pub fn json<T: serde::Serialize>(name: &str, value: &T) -> Result<Self, serde_json::Error> {
        Ok(StreamRecord::new().field(name, serde_json::to_vec(value)?))
    }
}

impl From<StreamEntry> for StreamRecord {
    /// Forwards an entry's fields (its id is not kept: the target assigns its own).
    fn from(entry: StreamEntry) -> Self {
        StreamRecord {
            fields: entry.fields,
        }
    }
}

/// How long the target stream may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxLen {
    /// `MAXLEN ~ n`: trims whole nodes, cheap; the stream may hold a little more.
    Approx(u64),
    /// `MAXLEN n`: exactly `n` entries at most.
    Exact(u64),
}

/// A sink appending each item to a stream with `XADD`, one pipelined round trip per
/// batch.
///
/// A connection error fails the whole batch ([`WriteError::all`]); the connection is made
/// anew on the next write. Nothing is re-sent by the client, so a batch is never written
/// twice by this sink itself; the pipeline's retry or dead-letter path decides what
/// happens to a failed batch (a retry after a reply was lost may duplicate entries: the
/// usual at-least-once).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use pipeline_connectors::redis::{MaxLen, RedisConfig, StreamSink};
///
/// let sink = StreamSink::new(RedisConfig::new("redis://127.0.0.1:6379")?, "out")?
///     .with_max_len(MaxLen::Approx(1_000_000));
/// # drop(sink); Ok(()) }
/// ```
pub struct StreamSink {
    name: String,
    stream: String,
    max_len: Option<MaxLen>,
    conn: Conn,
    redis: RedisConfig,
}

impl StreamSink {
    /// A sink appending to `stream`. No connection is made until the first write.
    ///
    /// # Errors
    ///
    /// [`ConnectorError::Config`] for a TLS setup that cannot work.
    pub fn new(config: RedisConfig, stream: &str) -> Result<Self, ConnectorError> {
        let name = format!("redis:{stream}");
        Ok(StreamSink {
            conn: Conn::new(&config, format!("sink `{name}`"), config.response_timeout())?,
            name,
            stream: stream.to_owned(),
            max_len: None,
            redis: config,
        })
    }

    /// Caps the stream's length on every `XADD`.
    pub fn with_max_len(mut self, max_len: MaxLen) -> Self {
        self.max_len = Some(max_len);
        self
    }

    /// The sink's name in stats and the topology. Default `redis:<stream>`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl Sink for StreamSink {
    type Item = StreamRecord;

    async fn write(&mut self, items: &mut Vec<StreamRecord>) -> Result<(), WriteError> {
        let mut pipe = redis::pipe();
        let mut empty = Vec::new();
        for (pos, item) in items.iter().enumerate() {
            if item.fields.is_empty() {
                // XADD needs a field; this item alone fails.
                empty.push(pos);
                continue;
            }
            let cmd = pipe.cmd("XADD").arg(&self.stream);
            match self.max_len {
                Some(MaxLen::Approx(n)) => cmd.arg("MAXLEN").arg("~").arg(n),
                Some(MaxLen::Exact(n)) => cmd.arg("MAXLEN").arg(n),
                None => cmd,
            };
            cmd.arg("*");
            for (k, v) in &item.fields {
                cmd.arg(k).arg(v.as_slice());
            }
            cmd.ignore();
        }
        if empty.len() < items.len() {
            self.conn
                .pipe::<()>("XADD", &pipe)
                .await
                .map_err(WriteError::all)?;
        }
        items.clear();
        if empty.is_empty() {
            Ok(())
        } else {
            Err(WriteError::partial(
                ConnectorError::protocol(self.conn.connector(), "XADD", "a record has no fields"),
                empty,
            ))
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for StreamSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSink")
            .field("name", &self.name)
            .field("server", &format_args!("{}", self.redis))
            .field("stream", &self.stream)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}
