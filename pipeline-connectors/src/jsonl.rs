//! A streaming JSON lines source: one JSON value per line, deserialized with serde off the
//! async workers, each line a [`Record`] with its line number; malformed lines become
//! failing items.
//!
//! Works as the CSV source (the `csv` module) does: a dedicated thread reads the file in
//! bounded chunks; each non-blank line becomes a `Record<T>` holding the value or a
//! [`RowError`] (invalid UTF-8, malformed JSON or a value of the wrong shape, a line
//! longer than [`max_line_bytes`](JsonlOptions::max_line_bytes), which is skipped
//! without being held in memory). Blank lines are skipped; a truncated last line is a
//! malformed line like any other.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use pipeline_connectors::jsonl::JsonlSource;
//! use pipeline_connectors::record::parsed;
//! use pipeline_core::prelude::*;
//!
//! #[derive(Debug, Clone, serde::Deserialize)]
//! struct Event {
//!     id: u64,
//! }
//!
//! # let dir = std::env::temp_dir().join(format!("jsonl-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let path = dir.join("events.jsonl");
//! std::fs::write(&path, "{\"id\": 1}\n{\"id\": \n\n{\"id\": 3}\n").unwrap();
//!
//! let (sink, events) = sink::collect();
//! let (dead, letters) = sink::collect();
//! let report = Pipeline::builder("events")
//!     .source(JsonlSource::<Event>::open(&path).unwrap())
//!     .stage(parsed())
//!     .sink(sink)
//!     .dead_letter(dead)
//!     .run()
//!     .await
//!     .unwrap();
//!
//! assert_eq!(events.take().iter().map(|e: &Event| e.id).collect::<Vec<_>>(), vec![1, 3]);
//! assert!(letters.take()[0].error.contains("events.jsonl:2: "));
//! assert!(report.is_balanced());
//! # }
//! ```

use std::io::{BufRead, BufReader, Read};
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use pipeline_core::BoxError;
use pipeline_core::source::{Pulled, Source};
use serde::de::DeserializeOwned;

use crate::feed::{Feed, FeedShape, Produce};
use crate::lines::{Line, LineReader};
use crate::record::{OpenError, Record, RowError, RowErrorKind};

/// Default bound on one line, in bytes: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// Settings of a [`JsonlSource`].
///
/// ```
/// use pipeline_connectors::jsonl::JsonlOptions;
///
/// let source = JsonlOptions::new()
///     .max_line_bytes(64 * 1024)
///     .open_reader::<serde_json::Value>("stdin", std::io::stdin());
/// # let _ = source;
/// ```
#[derive(Debug, Clone)]
pub struct JsonlOptions {
    max_line_bytes: usize,
    chunk: usize,
}

impl Default for JsonlOptions {
    fn default() -> Self {
        JsonlOptions {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            chunk: 256,
        }
    }
}

impl JsonlOptions {
    /// The defaults: lines of at most 1 MiB, 256 lines per chunk.
    pub fn new() -> Self {
        JsonlOptions::default()
    }

    /// The longest line, in bytes (default 1 MiB); longer lines fail with
    /// [`RowErrorKind::TooLong`].
    #[must_use]
    pub fn max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes.max(1);
        self
    }

    /// Lines handed from the reader thread per message (default 256); at most four
    /// messages are read ahead.
    #[must_use]
    pub fn chunk_lines(mut self, lines: usize) -> Self {
        self.chunk = lines.max(1);
        self
    }

    /// A source over the file at `path`.
    ///
    /// # Errors
    ///
    /// [`OpenError`] if the file cannot be opened.
    pub fn open<T: DeserializeOwned + Send + 'static>(
        self,
        path: impl AsRef<Path>,
    ) -> Result<JsonlSource<T>, OpenError> {
        let (name, file) = OpenError::open("jsonl", path.as_ref())?;
        Ok(self.open_reader(name, file))
    }

    /// A source over any reader; `name` stands for the file in error messages.
    pub fn open_reader<T: DeserializeOwned + Send + 'static>(
        self,
        name: impl Into<String>,
        reader: impl Read + Send + 'static,
    ) -> JsonlSource<T> {
        let name: String = name.into();
        let decoder = JsonlDecoder {
            lines: LineReader::new(
                Box::new(BufReader::with_capacity(64 * 1024, reader)),
                self.max_line_bytes,
            ),
            file: Arc::from(name.as_str()),
            max: self.max_line_bytes,
            _item: PhantomData,
        };
        let shape = FeedShape {
            chunk: self.chunk,
            depth: 4,
        };
        JsonlSource {
            feed: Feed::new(decoder, format!("jsonl {name}"), shape),
        }
    }
}

/// A source of [`Record<T>`]s from a JSON lines file; see the [module docs](self).
///
/// # Cancel safety
///
/// `pull` is cancel safe: lines not yet handed out stay in the source.
#[derive(Debug)]
pub struct JsonlSource<T: DeserializeOwned + Send + 'static> {
    feed: Feed<JsonlDecoder<T>>,
}

impl<T: DeserializeOwned + Send + 'static> JsonlSource<T> {
    /// A source over the JSON lines file at `path`, with the default [`JsonlOptions`].
    ///
    /// # Errors
    ///
    /// [`OpenError`] if the file cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        JsonlOptions::new().open(path)
    }
}

impl<T: DeserializeOwned + Send + 'static> Source for JsonlSource<T> {
    type Item = Record<T>;

    async fn pull(&mut self, max: usize) -> Result<Option<Pulled<Record<T>>>, BoxError> {
        self.feed.pull(max).await
    }

    fn name(&self) -> &str {
        "jsonl"
    }
}

/// The blocking decoder that runs on the reader thread.
struct JsonlDecoder<T> {
    lines: LineReader<Box<dyn BufRead + Send>>,
    file: Arc<str>,
    max: usize,
    _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> JsonlDecoder<T> {
    fn error(&self, line: u64, kind: RowErrorKind, message: impl Into<String>) -> RowError {
        RowError::new(Arc::clone(&self.file), line, kind, message)
    }

    fn value(&self, no: u64, bytes: &[u8]) -> Result<T, RowError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            self.error(
                no,
                RowErrorKind::InvalidUtf8,
                format!("invalid UTF-8 after {} bytes", e.valid_up_to()),
            )
            .with_snippet(bytes)
        })?;
        serde_json::from_str(text).map_err(|e| {
            // serde_json says "at line 1 column N": the line is ours, the column is its.
            let full = e.to_string();
            let message = full
                .rsplit_once(" at line ")
                .map_or(full.as_str(), |(m, _)| m);
            self.error(
                no,
                RowErrorKind::Parse,
                format!("{message} at column {}", e.column()),
            )
            .with_snippet(bytes)
        })
    }
}

impl<T: DeserializeOwned + Send + 'static> Produce for JsonlDecoder<T> {
    type Item = Record<T>;

    fn produce(&mut self) -> Result<Option<Record<T>>, BoxError> {
        loop {
            let Some(line) = self.lines.next_line()? else {
                return Ok(None);
            };
            return Ok(Some(match line {
                Line::TooLong { no, len, head } => Record {
                    line: no,
                    value: Err(self
                        .error(
                            no,
                            RowErrorKind::TooLong,
                            format!(
                                "line of {len} bytes is longer than the limit of {} bytes",
                                self.max
                            ),
                        )
                        .with_snippet(&head)),
                },
                Line::Text { no, bytes } => {
                    if bytes.iter().all(u8::is_ascii_whitespace) {
                        continue; // blank lines are no records
                    }
                    Record {
                        line: no,
                        value: self.value(no, &bytes),
                    }
                }
            }));
        }
    }
}
