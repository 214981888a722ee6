//! A streaming CSV source: rows deserialized with serde, read off the async workers,
//! each row a [`Record`] with its line number; malformed rows become failing items.
//!
//! The file is read by a dedicated thread, a chunk of rows at a time, into a bounded
//! channel: never whole, never on an async worker. Each row is a [`Record<T>`]: its line
//! and either the deserialized `T` or a [`RowError`](crate::record::RowError) naming the file and line. Follow the
//! source with [`parsed`](crate::record::parsed) and bad rows are dead-lettered with their
//! line, while the good ones flow on:
//!
//! | the row | what you get |
//! |---|---|
//! | a good row | `Ok(T)` |
//! | a bad value (`"x"` for a number), a missing field | [`RowErrorKind::Parse`](crate::record::RowErrorKind::Parse) |
//! | more or fewer fields than the header | [`RowErrorKind::FieldCount`](crate::record::RowErrorKind::FieldCount) (unless [`flexible`](CsvOptions::flexible)) |
//! | invalid UTF-8 | [`RowErrorKind::InvalidUtf8`](crate::record::RowErrorKind::InvalidUtf8) |
//! | a line longer than [`max_record_bytes`](CsvOptions::max_record_bytes) | [`RowErrorKind::TooLong`](crate::record::RowErrorKind::TooLong), skipped without being held in memory |
//! | a quote never closed | [`RowErrorKind::BrokenQuoting`](crate::record::RowErrorKind::BrokenQuoting): one dead letter, reading resumes on the next line |
//! | a truncated last row | whichever of the above it is |
//! | an empty file, a header-only file | no rows |
//!
//! The `csv` crate alone cannot recover from broken quoting: an open quote swallows the
//! rest of the file into one field. This source frames records itself (with `csv_core`,
//! the `csv` crate's own parser) line by line: a quoted field may span lines, but a record
//! that runs past `max_record_bytes` or the end of the file, or a multi-line record whose
//! field count does not match the header, is reported as broken quoting *at the line where
//! it started*, and the lines it took are read again as rows of their own. So one bad row
//! costs one dead letter.
//!
//! Blank lines are skipped (as the `csv` crate does). `\r\n` line ends are read as `\n`.
//! A header that cannot be read fails the source (reported in the run's source errors);
//! a failing disk ends it after the rows read so far.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use pipeline_connectors::csv::CsvSource;
//! use pipeline_connectors::record::parsed;
//! use pipeline_core::prelude::*;
//!
//! #[derive(Debug, Clone, serde::Deserialize)]
//! struct Flight {
//!     carrier: String,
//!     dep_delay: Option<i32>,
//! }
//!
//! # let dir = std::env::temp_dir().join(format!("csv-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let path = dir.join("flights.csv");
//! std::fs::write(&path, "carrier,dep_delay\nUA,2\nAA,NA\nB6,-1\n").unwrap();
//!
//! let (sink, flights) = sink::collect();
//! let (dead, letters) = sink::collect();
//! let report = Pipeline::builder("flights")
//!     .source(CsvSource::<Flight>::open(&path).unwrap())
//!     .stage(parsed())              // Record<Flight> -> Flight; bad rows fail here
//!     .sink(sink)
//!     .dead_letter(dead)
//!     .run()
//!     .await
//!     .unwrap();
//!
//! assert_eq!(flights.len(), 2);
//! let letters = letters.take();
//! assert!(letters[0].error.contains("flights.csv:3: field 2 (`dep_delay`)"), "{}", letters[0].error);
//! assert!(report.is_balanced());
//! # }
//! ```
//!
//! Untyped rows: deserialize into `Vec<String>` (fields in order) or
//! `HashMap<String, String>` (by header). Missing values spelled `NA` (as in R's exports,
//! the nycflights13 data among them): see [`na`].

use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use csv_core::Terminator;
use pipeline_core::BoxError;
use pipeline_core::source::{Pulled, Source};
use serde::de::DeserializeOwned;

use crate::feed::{Feed, FeedShape};
use crate::lines::LineReader;
use crate::record::{OpenError, Record};

mod decode;

use decode::CsvDecoder;

/// Default bound on one record, in bytes: 1 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// Settings of a [`CsvSource`]; [`CsvOptions::new`] gives the defaults: comma-separated,
/// `"` quotes, a header row, a strict field count, records of at most 1 MiB.
///
/// ```
/// use pipeline_connectors::csv::CsvOptions;
///
/// let rows = CsvOptions::new()
///     .delimiter(b';')
///     .has_headers(false)
///     .open_reader::<Vec<String>>("inline", std::io::Cursor::new("a;b\nc;d\n"));
/// # let _ = rows;
/// ```
#[derive(Debug, Clone)]
pub struct CsvOptions {
    delimiter: u8,
    quote: u8,
    has_headers: bool,
    flexible: bool,
    max_record_bytes: usize,
    chunk: usize,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            quote: b'"',
            has_headers: true,
            flexible: false,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            chunk: 256,
        }
    }
}

impl CsvOptions {
    /// The defaults.
    pub fn new() -> Self {
        CsvOptions::default()
    }

    /// The field delimiter (default `,`).
    #[must_use]
    pub fn delimiter(mut self, delimiter: u8) -> Self {
        self.delimiter = delimiter;
        self
    }

    /// The quote character (default `"`).
    #[must_use]
    pub fn quote(mut self, quote: u8) -> Self {
        self.quote = quote;
        self
    }

    /// Whether the first record names the fields (default `true`). With headers, rows
    /// deserialize by name (structs, maps); without, by position (tuples, `Vec`), and the
    /// first row sets the field count the others must have (unless
    /// [`flexible`](Self::flexible)).
    #[must_use]
    pub fn has_headers(mut self, yes: bool) -> Self {
        self.has_headers = yes;
        self
    }

    /// Whether rows may have a different number of fields than the header (default
    /// `false`: such a row fails with [`RowErrorKind::FieldCount`](crate::record::RowErrorKind::FieldCount)). Strictness matters:
    /// serde fills a missing `Option` field with `None`, so a short row would otherwise
    /// pass silently.
    #[must_use]
    pub fn flexible(mut self, yes: bool) -> Self {
        self.flexible = yes;
        self
    }

    /// The longest record, in bytes (default 1 MiB). A longer line fails with
    /// [`RowErrorKind::TooLong`](crate::record::RowErrorKind::TooLong) without being held in memory; a quoted field still open
    /// after this many bytes is broken quoting.
    #[must_use]
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes.max(1);
        self
    }

    /// Rows handed from the reader thread per message (default 256); at most four
    /// messages are read ahead.
    #[must_use]
    pub fn chunk_rows(mut self, rows: usize) -> Self {
        self.chunk = rows.max(1);
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
    ) -> Result<CsvSource<T>, OpenError> {
        let (name, file) = OpenError::open("csv", path.as_ref())?;
        Ok(self.open_reader(name, file))
    }

    /// A source over any reader (stdin, a decompressor); `name` stands for the file in
    /// error messages.
    pub fn open_reader<T: DeserializeOwned + Send + 'static>(
        self,
        name: impl Into<String>,
        reader: impl Read + Send + 'static,
    ) -> CsvSource<T> {
        let name: String = name.into();
        let file: Arc<str> = Arc::from(name.as_str());
        let core = csv_core::ReaderBuilder::new()
            .delimiter(self.delimiter)
            .quote(self.quote)
            .terminator(Terminator::Any(b'\n'))
            .build();
        let decoder = CsvDecoder::new(
            LineReader::new(
                Box::new(BufReader::with_capacity(64 * 1024, reader)),
                self.max_record_bytes,
            ),
            file,
            core,
            self.has_headers,
            self.flexible,
        );
        let shape = FeedShape {
            chunk: self.chunk,
            depth: 4,
        };
        CsvSource {
            feed: Feed::new(decoder, format!("csv {name}"), shape),
        }
    }
}

/// A source of [`Record<T>`]s from a CSV file; see the [module docs](self).
///
/// # Cancel safety
///
/// `pull` is cancel safe: rows not yet handed out stay in the source.
#[derive(Debug)]
pub struct CsvSource<T: DeserializeOwned + Send + 'static> {
    feed: Feed<CsvDecoder<T>>,
}

impl<T: DeserializeOwned + Send + 'static> CsvSource<T> {
    /// A source over the CSV file at `path`, with the default [`CsvOptions`].
    ///
    /// # Errors
    ///
    /// [`OpenError`] if the file cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        CsvOptions::new().open(path)
    }
}

impl<T: DeserializeOwned + Send + 'static> Source for CsvSource<T> {
    type Item = Record<T>;

    async fn pull(&mut self, max: usize) -> Result<Option<Pulled<Record<T>>>, BoxError> {
        self.feed.pull(max).await
    }

    fn name(&self) -> &str {
        "csv"
    }
}

/// A serde `deserialize_with` helper for optional values spelled `NA` or left empty, as R
/// and many statistics exports write them: `""` and `"NA"` become `None`, anything else is
/// parsed with `FromStr`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use pipeline_connectors::csv::CsvOptions;
/// use pipeline_core::source::Source;
///
/// #[derive(Debug, Clone, serde::Deserialize)]
/// struct Flight {
///     #[serde(deserialize_with = "pipeline_connectors::csv::na")]
///     dep_time: Option<u32>,
/// }
///
/// let text = "dep_time\n517\nNA\n\"\"\n";
/// let mut source = CsvOptions::new().open_reader::<Flight>("f.csv", std::io::Cursor::new(text));
/// let rows = source.pull(10).await.unwrap().unwrap().items;
/// let times: Vec<_> = rows.into_iter().map(|r| r.value.unwrap().dep_time).collect();
/// assert_eq!(times, vec![Some(517), None, None]);
/// # }
/// ```
///
/// # Errors
///
/// The deserializer's error when the text does not parse as `T`.
pub fn na<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
    let text = text.trim();
    if text.is_empty() || text == "NA" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| <D::Error as serde::de::Error>::custom(format!("`{text}`: {e}")))
}
