//! Rows: [`Value`], the [`ToRow`] mapping, and [`RowsFailed`], the report of rows a
//! database rejected inside a batch.

use std::fmt;

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// An integer.
    Integer(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
    /// A boolean.
    Bool(bool),
}

impl fmt::Display for Value {
    /// A short rendering for error messages (text quoted and cut at 40 characters).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Real(r) => write!(f, "{r}"),
            Value::Text(t) if t.chars().count() > 40 => {
                write!(f, "'{}...'", t.chars().take(40).collect::<String>())
            }
            Value::Text(t) => write!(f, "'{t}'"),
            Value::Blob(b) => write!(f, "<{} bytes>", b.len()),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Integer(i64::from(v))
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Real(f64::from(v))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// An item that maps to one row: its values in the table's column order.
///
/// For a mapping that is not the item's own (several tables from one item type), give
/// the sinks a closure instead (`open_with` / `connect_with`).
pub trait ToRow {
    /// The row's values, one per column, in the table's column order.
    fn to_row(&self) -> Vec<Value>;
}

/// The mapping the sinks use for `T: ToRow`.
pub type RowFn<T> = fn(&T) -> Vec<Value>;

/// Rows that failed inside a batch the database otherwise committed: their positions in
/// the batch and why. Every failed row's dead letter carries this whole message (the
/// runtime gives one error per write), so it names each row by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsFailed {
    /// `"sqlite"` or `"postgres"`.
    pub connector: &'static str,
    /// The table.
    pub table: String,
    /// Rows in the batch.
    pub batch: usize,
    /// Each failed row: its position in the batch and the reason (with its key).
    pub rows: Vec<(usize, String)>,
}

/// How many failed rows a [`RowsFailed`] message lists by name.
const LISTED: usize = 8;

impl fmt::Display for RowsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sink: {} of {} rows failed in table `{}`",
            self.connector,
            self.rows.len(),
            self.batch,
            self.table
        )?;
        for (i, (_, why)) in self.rows.iter().take(LISTED).enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            f.write_str(why)?;
        }
        if self.rows.len() > LISTED {
            write!(f, "; and {} more", self.rows.len() - LISTED)?;
        }
        Ok(())
    }
}

impl std::error::Error for RowsFailed {}

impl RowsFailed {
    /// The positions, for [`WriteError::partial`](pipeline_core::sink::WriteError::partial).
    pub(crate) fn positions(&self) -> Vec<usize> {
        self.rows.iter().map(|(p, _)| *p).collect()
    }
}
