//! Physical lines of a file, each bounded in size: the base both file decoders read from.
//!
//! A line longer than the bound is consumed without being held (only its first bytes are
//! kept, for the error message), so a 10 MB field costs 10 MB of reading, not of memory.

use std::io::{self, BufRead};

/// One physical line.
#[derive(Debug)]
pub(crate) enum Line {
    /// A line within the bound, always ending in `\n` (added when the file's last line
    /// has none; `\r\n` is given as `\n`).
    Text {
        /// 1-based line number.
        no: u64,
        /// The bytes, `\n` included.
        bytes: Vec<u8>,
    },
    /// A line longer than the bound, skipped.
    TooLong {
        /// 1-based line number.
        no: u64,
        /// Its full length in bytes.
        len: u64,
        /// Its first bytes.
        head: Vec<u8>,
    },
}

impl Line {
    /// The line number.
    #[cfg_attr(not(feature = "csv"), allow(dead_code))]
    pub(crate) fn no(&self) -> u64 {
        match self {
            Line::Text { no, .. } | Line::TooLong { no, .. } => *no,
        }
    }
}

/// How many bytes of an over-long line are kept for its error message.
const HEAD: usize = 128;

/// Reads bounded lines from a buffered reader.
#[derive(Debug)]
pub(crate) struct LineReader<R> {
    inner: R,
    next_no: u64,
    max: usize,
}

impl<R: BufRead> LineReader<R> {
    /// Lines of at most `max` bytes (the `\n` included).
    pub(crate) fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            next_no: 1,
            max: max.max(1),
        }
    }

    /// The bound on a line, in bytes.
    #[cfg_attr(not(feature = "csv"), allow(dead_code))]
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// The next line, or `None` at the end of the input.
    ///
    /// # Errors
    ///
    /// An I/O error of the underlying reader.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<Line>> {
        let mut out = Vec::new();
        let mut len = 0u64;
        let mut too_long = false;
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(avail) => avail,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                if len == 0 {
                    return Ok(None);
                }
                if !too_long {
                    // The last line had no newline: give it one, so that a decoder sees
                    // a complete line (and an open quote stays detectably open).
                    out.push(b'\n');
                }
                break;
            }
            let (n, found) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            if too_long || out.len() + n > self.max {
                too_long = true;
                out.truncate(HEAD);
                let keep = HEAD.saturating_sub(out.len()).min(n);
                out.extend_from_slice(&avail[..keep]);
            } else {
                out.extend_from_slice(&avail[..n]);
            }
            len += n as u64;
            self.inner.consume(n);
            if found {
                break;
            }
        }
        let no = self.next_no;
        self.next_no += 1;
        if too_long {
            return Ok(Some(Line::TooLong { no, len, head: out }));
        }
        if out.ends_with(b"\r\n") {
            out.truncate(out.len() - 2);
            out.push(b'\n');
        }
        Ok(Some(Line::Text { no, bytes: out }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn all(input: &[u8], max: usize) -> Vec<Line> {
        let mut r = LineReader::new(io::BufReader::with_capacity(4, input), max);
        let mut out = Vec::new();
        while let Some(line) = r.next_line().unwrap() {
            out.push(line);
        }
        out
    }

    #[test]
    fn lines_are_bounded_numbered_and_terminated() {
        let lines = all(b"ab\r\ncdefghij\nk", 5);
        assert_eq!(lines.len(), 3);
        assert!(matches!(&lines[0], Line::Text { no: 1, bytes } if bytes == b"ab\n"));
        assert!(
            matches!(&lines[1], Line::TooLong { no: 2, len: 9, head } if head == b"cdefghij\n")
        );
        assert!(matches!(&lines[2], Line::Text { no: 3, bytes } if bytes == b"k\n"));
        assert!(all(b"", 5).is_empty());
    }
}
