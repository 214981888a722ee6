//! A streaming CSV source: rows deserialized with serde, read off the async workers,
//! each row a [`Record`] with its line number; malformed rows become failing items.
//!
//! The file is read by a dedicated thread, a chunk of rows at a time, into a bounded
//! channel: never whole, never on an async worker. Each row is a [`Record<T>`]: its line
//! and either the deserialized `T` or a [`RowError`] naming the file and line. Follow the
//! source with [`parsed`](crate::record::parsed) and bad rows are dead-lettered with their
//! line, while the good ones flow on:
//!
//! | the row | what you get |
//! |---|---|
//! | a good row | `Ok(T)` |
//! | a bad value (`"x"` for a number), a missing field | [`RowErrorKind::Parse`] |
//! | more or fewer fields than the header | [`RowErrorKind::FieldCount`] (unless [`flexible`](CsvOptions::flexible)) |
//! | invalid UTF-8 | [`RowErrorKind::InvalidUtf8`] |
//! | a line longer than [`max_record_bytes`](CsvOptions::max_record_bytes) | [`RowErrorKind::TooLong`], skipped without being held in memory |
//! | a quote never closed | [`RowErrorKind::BrokenQuoting`]: one dead letter, reading resumes on the next line |
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

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use csv_core::{ReadRecordResult, Terminator};
use pipeline_core::BoxError;
use pipeline_core::error::Message;
use pipeline_core::source::{Pulled, Source};
use serde::de::DeserializeOwned;

use crate::feed::{Feed, FeedShape, Produce};
use crate::lines::{Line, LineReader};
use crate::record::{OpenError, Record, RowError, RowErrorKind};

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
    /// deserialize by name (structs, maps); without, by position (tuples, `Vec`).
    #[must_use]
    pub fn has_headers(mut self, yes: bool) -> Self {
        self.has_headers = yes;
        self
    }

    /// Whether rows may have a different number of fields than the header (default
    /// `false`: such a row fails with [`RowErrorKind::FieldCount`]). Strictness matters:
    /// serde fills a missing `Option` field with `None`, so a short row would otherwise
    /// pass silently.
    #[must_use]
    pub fn flexible(mut self, yes: bool) -> Self {
        self.flexible = yes;
        self
    }

    /// The longest record, in bytes (default 1 MiB). A longer line fails with
    /// [`RowErrorKind::TooLong`] without being held in memory; a quoted field still open
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
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| OpenError {
            connector: "csv",
            path: name.clone(),
            source,
        })?;
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
        let decoder = CsvDecoder {
            lines: LineReader::new(
                Box::new(BufReader::with_capacity(64 * 1024, reader)),
                self.max_record_bytes,
            ),
            pending: VecDeque::new(),
            core,
            out: vec![0; 1024],
            ends: vec![0; 64],
            file,
            has_headers: self.has_headers,
            headers: None,
            expected: None,
            started: false,
            flexible: self.flexible,
            max: self.max_record_bytes,
            _item: PhantomData,
        };
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

/// A framed record: the fields, or why there are none.
enum Framed {
    /// The fields are in `out` / `ends`.
    Fields {
        line: u64,
        first: Vec<u8>,
    },
    Bad(RowError),
}

/// The blocking decoder that runs on the reader thread.
struct CsvDecoder<T> {
    lines: LineReader<Box<dyn BufRead + Send>>,
    /// Lines given back after a broken record, read again first.
    pending: VecDeque<Line>,
    core: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    file: Arc<str>,
    has_headers: bool,
    headers: Option<::csv::StringRecord>,
    expected: Option<usize>,
    started: bool,
    flexible: bool,
    max: usize,
    _item: PhantomData<fn() -> T>,
}

/// Where a record's bytes ended in `out` / `ends`.
struct Parsed {
    out: usize,
    ends: usize,
}

impl<T> CsvDecoder<T> {
    fn next_line(&mut self) -> io::Result<Option<Line>> {
        match self.pending.pop_front() {
            Some(line) => Ok(Some(line)),
            None => self.lines.next_line(),
        }
    }

    fn error(&self, line: u64, kind: RowErrorKind, message: impl Into<String>) -> RowError {
        RowError::new(Arc::clone(&self.file), line, kind, message)
    }

    /// Feeds one line into the parser; `true` when a record is complete.
    fn feed(&mut self, mut input: &[u8], at: &mut Parsed) -> bool {
        loop {
            let (res, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.out[at.out..], &mut self.ends[at.ends..]);
            input = &input[nin..];
            at.out += nout;
            at.ends += nend;
            match res {
                ReadRecordResult::InputEmpty => return false,
                ReadRecordResult::OutputFull => {
                    let n = self.out.len() * 2;
                    self.out.resize(n, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                ReadRecordResult::Record | ReadRecordResult::End => return true,
            }
        }
    }

    /// The next record's fields (left in `out` / `ends`), or a bad row, or the end.
    fn frame(&mut self) -> io::Result<Option<(Framed, Parsed)>> {
        loop {
            let Some(first) = self.next_line()? else {
                return Ok(None);
            };
            let (no, bytes) = match first {
                Line::TooLong { no, len, head } => {
                    let err = self
                        .error(
                            no,
                            RowErrorKind::TooLong,
                            format!(
                                "line of {len} bytes is longer than the limit of {} bytes",
                                self.max
                            ),
                        )
                        .with_snippet(&head);
                    return Ok(Some((Framed::Bad(err), Parsed { out: 0, ends: 0 })));
                }
                Line::Text { no, bytes } => (no, bytes),
            };
            if bytes == b"\n" {
                continue; // a blank line is no record
            }
            self.core.reset();
            let mut at = Parsed { out: 0, ends: 0 };
            if self.feed(&bytes, &mut at) {
                return Ok(Some((
                    Framed::Fields {
                        line: no,
                        first: bytes,
                    },
                    at,
                )));
            }
            // An open quote: the record continues on the next lines, up to the bound.
            let mut taken: Vec<Line> = Vec::new();
            let mut total = bytes.len();
            let broken = loop {
                let Some(next) = self.next_line()? else {
                    break Some(
                        "a quoted field is not closed before the end of the file".to_string(),
                    );
                };
                let more = match &next {
                    Line::Text { bytes, .. } if total + bytes.len() <= self.max => bytes.clone(),
                    _ => {
                        taken.push(next);
                        break Some(format!(
                            "a quoted field is not closed within {} bytes",
                            self.max
                        ));
                    }
                };
                total += more.len();
                let done = self.feed(&more, &mut at);
                taken.push(next);
                if done {
                    break None;
                }
            };
            let broken = broken.or_else(|| {
                let found = at.ends;
                match self.expected {
                    Some(want) if !self.flexible && found != want => Some(format!(
                        "a quoted field spans lines {no}-{} and the record has {found} fields, not {want}: an unclosed quote?",
                        taken.last().map_or(no, Line::no)
                    )),
                    _ => None,
                }
            });
            if let Some(message) = broken {
                // Give the lines back: each is read again as a row of its own.
                for line in taken.into_iter().rev() {
                    self.pending.push_front(line);
                }
                let err = self
                    .error(no, RowErrorKind::BrokenQuoting, message)
                    .with_snippet(&bytes);
                return Ok(Some((Framed::Bad(err), Parsed { out: 0, ends: 0 })));
            }
            return Ok(Some((
                Framed::Fields {
                    line: no,
                    first: bytes,
                },
                at,
            )));
        }
    }

    /// The fields just framed as a `StringRecord`, or the row's UTF-8 error.
    fn record(&self, line: u64, at: &Parsed) -> Result<::csv::StringRecord, RowError> {
        let mut record = ::csv::StringRecord::with_capacity(at.out, at.ends);
        let mut start = 0;
        for (i, &end) in self.ends[..at.ends].iter().enumerate() {
            let field = &self.out[start..end];
            start = end;
            match std::str::from_utf8(field) {
                Ok(text) => record.push_field(text),
                Err(e) => {
                    return Err(self.error(
                        line,
                        RowErrorKind::InvalidUtf8,
                        format!(
                            "field {}{}: invalid UTF-8 after {} bytes",
                            i + 1,
                            self.header_name(i),
                            e.valid_up_to()
                        ),
                    ));
                }
            }
        }
        Ok(record)
    }

    fn header_name(&self, i: usize) -> String {
        match self.headers.as_ref().and_then(|h| h.get(i)) {
            Some(name) => format!(" (`{name}`)"),
            None => String::new(),
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> CsvDecoder<T> {
    fn row(&mut self, line: u64, first: &[u8], at: &Parsed) -> Result<T, RowError> {
        let record = self.record(line, at).map_err(|e| e.with_snippet(first))?;
        if let Some(want) = self.expected
            && !self.flexible
            && record.len() != want
        {
            return Err(self
                .error(
                    line,
                    RowErrorKind::FieldCount,
                    format!("expected {want} fields, found {}", record.len()),
                )
                .with_snippet(first));
        }
        record.deserialize(self.headers.as_ref()).map_err(|e| {
            let message = match e.kind() {
                ::csv::ErrorKind::Deserialize { err, .. } => match err.field() {
                    Some(i) => {
                        let i = usize::try_from(i).unwrap_or(usize::MAX);
                        format!(
                            "field {}{}: {}",
                            i.saturating_add(1),
                            self.header_name(i),
                            err.kind()
                        )
                    }
                    None => err.kind().to_string(),
                },
                _ => e.to_string(),
            };
            self.error(line, RowErrorKind::Parse, message)
                .with_snippet(first)
        })
    }

    /// Reads the header row, once.
    fn start(&mut self) -> Result<(), BoxError> {
        self.started = true;
        if !self.has_headers {
            return Ok(());
        }
        let Some((framed, at)) = self.frame()? else {
            return Ok(()); // an empty file
        };
        match framed {
            Framed::Fields { line, .. } => {
                let headers = self.record(line, &at)?;
                self.expected = Some(headers.len());
                self.headers = Some(headers);
                Ok(())
            }
            Framed::Bad(e) => Err(Message(format!("cannot read the header: {e}")).into()),
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> Produce for CsvDecoder<T> {
    type Item = Record<T>;

    fn produce(&mut self) -> Result<Option<Record<T>>, BoxError> {
        if !self.started {
            self.start()?;
        }
        let Some((framed, at)) = self.frame()? else {
            return Ok(None);
        };
        Ok(Some(match framed {
            Framed::Bad(err) => Record {
                line: err.line(),
                value: Err(err),
            },
            Framed::Fields { line, first } => {
                if self.expected.is_none() && !self.flexible {
                    // No header: the first row sets the field count.
                    self.expected = Some(at.ends);
                }
                Record {
                    line,
                    value: self.row(line, &first, &at),
                }
            }
        }))
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
