//! The CSV decoder that runs on the reader thread: frames records line by line with
//! `csv_core`, resynchronises after broken quoting, and deserializes rows.

use std::collections::VecDeque;
use std::io::{self, BufRead};
use std::marker::PhantomData;
use std::sync::Arc;

use csv_core::ReadRecordResult;
use pipeline_core::BoxError;
use pipeline_core::error::Message;
use serde::de::DeserializeOwned;

use crate::feed::Produce;
use crate::lines::{Line, LineReader};
use crate::record::{Record, RowError, RowErrorKind};

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
pub(super) struct CsvDecoder<T> {
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
    /// A decoder of the lines of `file`; `max` bounds a record, as it bounds `lines`.
    pub(super) fn new(
        lines: LineReader<Box<dyn BufRead + Send>>,
        file: Arc<str>,
        core: csv_core::Reader,
        has_headers: bool,
        flexible: bool,
    ) -> Self {
        let max = lines.max();
        CsvDecoder {
            lines,
            pending: VecDeque::new(),
            core,
            out: vec![0; 1024],
            ends: vec![0; 64],
            file,
            has_headers,
            headers: None,
            expected: None,
            started: false,
            flexible,
            max,
            _item: PhantomData,
        }
    }

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
