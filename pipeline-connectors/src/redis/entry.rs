//! Stream entries as the pipeline sees them, and the parsing of the server's replies.

use std::fmt;
use std::str::FromStr;

use redis::Value;

/// A stream entry id (`<ms>-<seq>`), the entry's idempotency key: a sink that remembers
/// ids can drop the duplicates at-least-once delivery brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// The id `ms-seq`.
    pub const fn new(ms: u64, seq: u64) -> Self {
        EntryId { ms, seq }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Not an entry id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream entry id: {0:?}")]
pub struct BadEntryId(pub String);

impl FromStr for EntryId {
    type Err = BadEntryId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadEntryId(s.chars().take(64).collect());
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Ok(EntryId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl serde::Serialize for EntryId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One entry read from a stream: its id and its fields in the order they were written.
///
/// Decoding is the user's stage (for example [`json`](Self::json) in a `map_fn`): a
/// malformed payload then fails that item, which is dead-lettered and acknowledged like
/// any failure, rather than stopping the source.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamEntry {
    /// The entry id: the idempotency key.
    pub id: EntryId,
    /// Field names and values, in order (a field may repeat).
    pub fields: Vec<(String, Vec<u8>)>,
    /// How many times the group delivered this entry, this delivery included (1 for a
    /// first read).
    pub deliveries: u64,
}

/// Why a field could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No field of that name.
    #[error("entry {id} has no field `{field}`")]
    Missing {
        /// The entry.
        id: EntryId,
        /// The field asked for.
        field: String,
    },
    /// The field is not valid JSON for the type.
    #[error("entry {id}: field `{field}` is not valid: {source}")]
    Json {
        /// The entry.
        id: EntryId,
        /// The field.
        field: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
}

impl StreamEntry {
    /// The first value of field `name`.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Decodes field `name` as JSON.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the field is missing or does not decode.
    pub fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, DecodeError> {
        let raw = self.field(name).ok_or_else(|| DecodeError::Missing {
            id: self.id,
            field: name.to_owned(),
        })?;
        serde_json::from_slice(raw).map_err(|source| DecodeError::Json {
            id: self.id,
            field: name.to_owned(),
            source,
        })
    }
}

impl fmt::Debug for StreamEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Fields<'a>(&'a [(String, Vec<u8>)]);
        impl fmt::Debug for Fields<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|(k, v)| (k, String::from_utf8_lossy(v))))
                    .finish()
            }
        }
        f.debug_struct("StreamEntry")
            .field("id", &format_args!("{}", self.id))
            .field("fields", &Fields(&self.fields))
            .field("deliveries", &self.deliveries)
            .finish()
    }
}

/// An entry as a reply holds it: `None` fields when the entry was deleted (trimmed) but
/// is still in a pending list.
pub(crate) type RawEntry = (EntryId, Option<Vec<(String, Vec<u8>)>>);

pub(crate) fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

pub(crate) fn as_id(v: &Value) -> Option<EntryId> {
    std::str::from_utf8(as_bytes(v)?).ok()?.parse().ok()
}

pub(crate) fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => std::str::from_utf8(as_bytes(other)?).ok()?.parse().ok(),
    }
}

pub(crate) fn as_list(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Nil => Some(&[]),
        _ => None,
    }
}

/// `[[id, [k, v, ...] | nil], ...]`
pub(crate) fn parse_entries(v: &Value) -> Option<Vec<RawEntry>> {
    let mut out = Vec::new();
    for entry in as_list(v)? {
        let parts = as_list(entry)?;
        let id = as_id(parts.first()?)?;
        let fields = match parts.get(1) {
            None | Some(Value::Nil) => None,
            Some(Value::Map(pairs)) => Some(
                pairs
                    .iter()
                    .map(|(k, v)| Some((field_name(k)?, as_bytes(v)?.to_vec())))
                    .collect::<Option<Vec<_>>>()?,
            ),
            Some(list) => {
                let list = as_list(list)?;
                Some(
                    list.chunks(2)
                        .map(|kv| match kv {
                            [k, v] => Some((field_name(k)?, as_bytes(v)?.to_vec())),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>()?,
                )
            }
        };
        out.push((id, fields));
    }
    Some(out)
}

fn field_name(v: &Value) -> Option<String> {
    Some(String::from_utf8_lossy(as_bytes(v)?).into_owned())
}

/// The entries of the one stream in an `XREADGROUP` reply (`nil` on a timeout).
pub(crate) fn parse_read(v: &Value) -> Option<Vec<RawEntry>> {
    match v {
        Value::Nil => Some(Vec::new()),
        // RESP3: {stream: entries}
        Value::Map(streams) => match streams.first() {
            Some((_, entries)) => parse_entries(entries),
            None => Some(Vec::new()),
        },
        // RESP2: [[stream, entries]]
        other => match as_list(other)?.first() {
            Some(stream) => parse_entries(as_list(stream)?.get(1)?),
            None => Some(Vec::new()),
        },
    }
}

/// `XPENDING key group start end count consumer`: `[[id, consumer, idle, deliveries]]`.
pub(crate) fn parse_pending(v: &Value) -> Option<Vec<(EntryId, u64)>> {
    as_list(v)?
        .iter()
        .map(|row| {
            let row = as_list(row)?;
            let deliveries = as_int(row.get(3)?)?;
            Some((as_id(row.first()?)?, u64::try_from(deliveries).ok()?))
        })
        .collect()
}

/// `XAUTOCLAIM ... JUSTID`: `[cursor, [ids], [deleted ids]]`.
pub(crate) fn parse_autoclaim(v: &Value) -> Option<(EntryId, Vec<EntryId>, Vec<EntryId>)> {
    let parts = as_list(v)?;
    let cursor = as_id(parts.first()?)?;
    let ids = |v: &Value| as_list(v)?.iter().map(as_id).collect::<Option<Vec<_>>>();
    let claimed = ids(parts.get(1)?)?;
    let deleted = match parts.get(2) {
        Some(v) => ids(v)?,
        None => Vec::new(),
    };
    Some((cursor, claimed, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn ids_round_trip_and_order() {
        let a: EntryId = "1-2".parse().unwrap_or_default();
        assert_eq!(a, EntryId::new(1, 2));
        assert_eq!(a.to_string(), "1-2");
        assert!(EntryId::new(1, 9) < EntryId::new(2, 0));
        assert!("x-1".parse::<EntryId>().is_err());
    }

    #[test]
    fn read_reply_keeps_field_order_and_marks_deleted_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-1"),
                    Value::Array(vec![bulk("b"), bulk("2"), bulk("a"), bulk("1")]),
                ]),
                Value::Array(vec![bulk("2-1"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read(&reply).unwrap_or_default();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].1.as_deref(),
            Some(&[("b".into(), b"2".to_vec()), ("a".into(), b"1".to_vec())][..])
        );
        assert_eq!(entries[1], (EntryId::new(2, 1), None));
        assert_eq!(parse_read(&Value::Nil).map(|e| e.len()), Some(0));
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        let e = StreamEntry {
            id: EntryId::new(1, 0),
            fields: vec![("body".into(), b"{nope".to_vec())],
            deliveries: 1,
        };
        assert!(e.json::<serde_json::Value>("body").is_err());
        assert!(e.json::<serde_json::Value>("other").is_err());
    }
}
