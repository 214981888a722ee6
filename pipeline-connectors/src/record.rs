//! [`Record`]: one row of a file source, with its line number, parsed or failed; and the
//! [`parsed`] stage that turns records into values and failed rows into dead letters.
//!
//! File sources never skip a bad row and never stop at one: each row becomes a
//! `Record<T>` whose `value` is the parsed `T` or a [`RowError`] naming the file and the
//! line. Put [`parsed`] right after the source: good rows continue as plain `T`, bad rows
//! fail in that stage with their `RowError` (a permanent error, never retried) and go to
//! the dead letters with the file and line in the message.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use pipeline_core::stage::{Map, Stage};
use pipeline_core::{Context, StageOptions};
use serde::ser::{Serialize, SerializeStruct, Serializer};

/// One row of a file: where it starts and what it parsed to.
///
/// `Clone + Send + Sync` whenever `T` is, so it can be the input of any stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<T> {
    /// The line (1-based) where the row starts in its file.
    pub line: u64,
    /// The row's value, or why it could not be read.
    pub value: Result<T, RowError>,
}

impl<T> Record<T> {
    /// The value, or the error naming file and line.
    ///
    /// # Errors
    ///
    /// The row's [`RowError`] when it could not be read.
    pub fn into_result(self) -> Result<T, RowError> {
        self.value
    }

    /// Whether the row was read.
    pub fn is_ok(&self) -> bool {
        self.value.is_ok()
    }
}

/// `{"line": 7, "value": ...}` or `{"line": 7, "error": {...}}`: with
/// [`show_items_as_json`](pipeline_core::stage::show_items_as_json) around
/// [`parsed`], a dead letter then carries the failed row's line, kind and text as JSON
/// (at the cost of one clone per row).
///
/// ```
/// use pipeline_connectors::record::{Record, RowError, RowErrorKind};
///
/// let bad: Record<u32> = Record {
///     line: 7,
///     value: Err(RowError::new("f.csv", 7, RowErrorKind::FieldCount, "expected 2 fields, found 1")),
/// };
/// let json = serde_json::to_value(&bad).unwrap();
/// assert_eq!(json["line"], 7);
/// assert_eq!(json["error"]["kind"], "field_count");
/// ```
impl<T: Serialize> Serialize for Record<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut record = serializer.serialize_struct("Record", 2)?;
        record.serialize_field("line", &self.line)?;
        match &self.value {
            Ok(value) => record.serialize_field("value", value)?,
            Err(error) => record.serialize_field("error", error)?,
        }
        record.end()
    }
}

/// What was wrong with a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RowErrorKind {
    /// A quoted field was never closed (within the record size bound or before the end
    /// of the file). Reading resumes on the next line.
    BrokenQuoting,
    /// A field or line is not valid UTF-8.
    InvalidUtf8,
    /// The row has more or fewer fields than the header.
    FieldCount,
    /// The row is longer than the configured bound; it was skipped without being held
    /// in memory.
    TooLong,
    /// The row's text could not be turned into the target type (a bad number, a missing
    /// field, malformed JSON).
    Parse,
}

impl RowErrorKind {
    /// A short snake-case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RowErrorKind::BrokenQuoting => "broken_quoting",
            RowErrorKind::InvalidUtf8 => "invalid_utf8",
            RowErrorKind::FieldCount => "field_count",
            RowErrorKind::TooLong => "too_long",
            RowErrorKind::Parse => "parse",
        }
    }
}

/// A row that could not be read: the file, the line, what was wrong, and the start of the
/// row's text. Displays as `file:line: message`.
///
/// ```
/// use pipeline_connectors::record::{RowError, RowErrorKind};
///
/// let err = RowError::new("flights.csv", 7, RowErrorKind::FieldCount, "expected 19 fields, found 3");
/// assert_eq!(err.to_string(), "flights.csv:7: expected 19 fields, found 3");
/// assert_eq!((err.line(), err.kind()), (7, RowErrorKind::FieldCount));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    file: Arc<str>,
    line: u64,
    kind: RowErrorKind,
    message: String,
    snippet: Option<String>,
}

/// How much of a bad row's text a [`RowError`] keeps.
const SNIPPET_CHARS: usize = 80;

impl RowError {
    /// An error for `line` of `file`.
    pub fn new(
        file: impl Into<Arc<str>>,
        line: u64,
        kind: RowErrorKind,
        message: impl Into<String>,
    ) -> Self {
        RowError {
            file: file.into(),
            line,
            kind,
            message: message.into(),
            snippet: None,
        }
    }

    /// The same error showing the start of the row's text (lossily decoded, at most 80
    /// characters), so a dead letter shows what was read.
    #[must_use]
    pub fn with_snippet(mut self, bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end_matches(['\r', '\n']);
        let mut snippet: String = text.chars().take(SNIPPET_CHARS).collect();
        if text.chars().nth(SNIPPET_CHARS).is_some() {
            snippet.push_str("...");
        }
        self.snippet = Some(snippet);
        self
    }

    /// The file, as given to the source.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The line (1-based) where the row starts.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// What was wrong.
    pub fn kind(&self) -> RowErrorKind {
        self.kind
    }

    /// The message, without file and line.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The start of the row's text, when kept.
    pub fn snippet(&self) -> Option<&str> {
        self.snippet.as_deref()
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)?;
        match &self.snippet {
            Some(s) if !s.is_empty() => write!(f, " (row: `{s}`)"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for RowError {}

/// `{"file", "line", "kind", "message", "snippet"}`, `kind` as [`RowErrorKind::as_str`].
impl Serialize for RowError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut error = serializer.serialize_struct("RowError", 5)?;
        error.serialize_field("file", &*self.file)?;
        error.serialize_field("line", &self.line)?;
        error.serialize_field("kind", self.kind.as_str())?;
        error.serialize_field("message", &self.message)?;
        error.serialize_field("snippet", &self.snippet)?;
        error.end()
    }
}

/// The stage that unwraps [`Record`]s: `Record<T> -> T`, failing with the row's
/// [`RowError`] (permanent: never retried) so bad rows are dead-lettered with file and
/// line. Named `"parse"` unless renamed with the builder's `.name(..)`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use pipeline_connectors::record::{parsed, Record, RowError, RowErrorKind};
/// use pipeline_core::prelude::*;
///
/// let bad = RowError::new("in.csv", 3, RowErrorKind::Parse, "invalid digit");
/// let rows = vec![Record { line: 2, value: Ok(1u32) }, Record { line: 3, value: Err(bad) }];
/// let (sink, out) = sink::collect();
/// let (dead, letters) = sink::collect();
/// let report = Pipeline::builder("rows")
///     .source(source::iter(rows))
///     .stage(parsed())
///     .sink(sink)
///     .dead_letter(dead)
///     .run()
///     .await
///     .unwrap();
/// assert_eq!(out.take(), vec![1]);
/// assert_eq!(letters.take()[0].error, "in.csv:3: invalid digit");
/// assert!(report.is_balanced());
/// # }
/// ```
pub fn parsed<T>() -> Parsed<T> {
    Parsed(std::marker::PhantomData)
}

/// See [`parsed`].
pub struct Parsed<T>(std::marker::PhantomData<fn() -> T>);

impl<T> fmt::Debug for Parsed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Parsed")
    }
}

impl<T: Send + 'static> Stage for Parsed<T> {
    type In = Record<T>;
    type Output = T;
    type Shape = Map;
    type Error = RowError;

    fn call(
        &self,
        item: Record<T>,
        _cx: &Context,
    ) -> impl Future<Output = Result<T, RowError>> + Send {
        std::future::ready(item.value)
    }

    fn is_permanent(&self, _error: &RowError) -> bool {
        // A row does not get better by reading it again.
        true
    }

    fn options(&self) -> StageOptions {
        let mut options = StageOptions::default();
        options.name = Some("parse".into());
        options
    }
}

/// A file source could not open its file.
#[derive(Debug, thiserror::Error)]
#[error("{connector} source: cannot open `{path}`: {source}")]
pub struct OpenError {
    /// `"csv"` or `"jsonl"`.
    pub connector: &'static str,
    /// The path, as given.
    pub path: String,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

impl OpenError {
    /// Opens `path` for `connector`: the file and the name its errors quote.
    pub(crate) fn open(
        connector: &'static str,
        path: &std::path::Path,
    ) -> Result<(String, std::fs::File), OpenError> {
        let name = path.display().to_string();
        match std::fs::File::open(path) {
            Ok(file) => Ok((name, file)),
            Err(source) => Err(OpenError {
                connector,
                path: name,
                source,
            }),
        }
    }
}
