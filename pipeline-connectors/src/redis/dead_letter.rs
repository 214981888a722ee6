//! Poison entries: past `max_deliveries` an entry is copied to a dead-letter stream and
//! acknowledged, in one server-side script.
//!
//! The script runs atomically, so no crash can fall between the dead-letter write and
//! the `XACK`. A reply lost on the way back (or a second consumer that claimed the same
//! entry) runs it again for the same id: the index hash (`HSETNX` keyed by the original
//! id) makes the copy happen once. The index grows by one field per dead letter; trim it
//! together with the dead-letter stream.

use redis::Script;

use super::conn::Conn;
use super::entry::EntryId;
use super::error::ConnectorError;

/// KEYS: source stream, dead-letter stream, index hash.
/// ARGV: group, entry id, deliveries, consumer.
/// Returns 1 (copied now), 0 (copied before), -1 (the entry no longer exists).
const SCRIPT: &str = r"
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #entry == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return -1
end
local copied = 0
if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[3]) == 1 then
  local args = {'XADD', KEYS[2], '*',
    'dlq.source_stream', KEYS[1], 'dlq.source_id', ARGV[2], 'dlq.group', ARGV[1],
    'dlq.consumer', ARGV[4], 'dlq.deliveries', ARGV[3]}
  local fields = entry[1][2]
  for i = 1, #fields do args[#args + 1] = fields[i] end
  redis.call(unpack(args))
  copied = 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return copied
";

/// What the script did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Moved {
    /// Copied to the dead-letter stream now, and acknowledged.
    Copied,
    /// Already copied by an earlier run; acknowledged.
    AlreadyThere,
    /// The entry was deleted (trimmed); acknowledged.
    Gone,
}

#[derive(Debug)]
pub(crate) struct DeadLetters {
    script: Script,
    pub(crate) stream: String,
    index: String,
}

impl DeadLetters {
    pub(crate) fn new(stream: String) -> Self {
        DeadLetters {
            script: Script::new(SCRIPT),
            index: format!("{stream}:index"),
            stream,
        }
    }

    pub(crate) async fn move_entry(
        &self,
        conn: &mut Conn,
        source_stream: &str,
        group: &str,
        consumer: &str,
        id: EntryId,
        deliveries: u64,
    ) -> Result<Moved, ConnectorError> {
        let mut c = conn.get().await?;
        let result: Result<i64, _> = self
            .script
            .key(source_stream)
            .key(&self.stream)
            .key(&self.index)
            .arg(group)
            .arg(id.to_string())
            .arg(deliveries)
            .arg(consumer)
            .invoke_async(&mut c)
            .await;
        match result {
            Ok(1) => Ok(Moved::Copied),
            Ok(0) => Ok(Moved::AlreadyThere),
            Ok(_) => Ok(Moved::Gone),
            Err(e) => Err(conn.failed("dead-letter script", &e)),
        }
    }
}
