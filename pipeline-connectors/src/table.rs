//! [`Table`]: what a database sink writes to (name, columns, key), and how an item
//! becomes a row of [`Value`]s ([`ToRow`] or a closure). Shared by the SQLite and
//! PostgreSQL sinks.
//!
//! Both sinks *upsert* on the table's key: a row whose key is already present replaces
//! the stored one, so a re-run of the same input, or a duplicate from an at-least-once
//! source, leaves one row per key. The sinks create the table if it is missing (with the
//! key as its primary key); an existing table needs a unique index on the key columns.
//!
//! Columns are `NOT NULL` unless declared [`nullable`](Table::nullable): a mapping that
//! leaves a required value out fails that row (dead-lettered), not the batch.
//!
//! ```
//! use pipeline_connectors::table::{ColumnType, Table, ToRow, Value};
//!
//! struct Daily { carrier: String, day: String, flights: i64, mean_delay: Option<f64> }
//!
//! impl ToRow for Daily {
//!     fn to_row(&self) -> Vec<Value> {
//!         vec![
//!             self.carrier.as_str().into(),
//!             self.day.as_str().into(),
//!             self.flights.into(),
//!             self.mean_delay.into(),
//!         ]
//!     }
//! }
//!
//! let table = Table::new("daily")
//!     .column("carrier", ColumnType::Text)
//!     .column("day", ColumnType::Text)
//!     .column("flights", ColumnType::Integer)
//!     .nullable("mean_delay", ColumnType::Real)
//!     .check("flights >= 0")
//!     .key(["carrier", "day"]);
//! assert!(table.validate().is_ok());
//! # let _ = Daily { carrier: String::new(), day: String::new(), flights: 0, mean_delay: None }.to_row();
//! ```

use std::fmt::Write as _;

mod row;

pub use row::{RowFn, RowsFailed, ToRow, Value};

/// The type of a column; each sink maps it to its own SQL type.
///
/// | `ColumnType` | SQLite | PostgreSQL | [`Value`] |
/// |---|---|---|---|
/// | `Integer` | `INTEGER` | `BIGINT` | `Integer` |
/// | `Real` | `REAL` | `DOUBLE PRECISION` | `Real` (or `Integer`) |
/// | `Text` | `TEXT` | `TEXT` | `Text` |
/// | `Blob` | `BLOB` | `BYTEA` | `Blob` |
/// | `Boolean` | `INTEGER` (0/1) | `BOOLEAN` | `Bool` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ColumnType {
    /// A 64-bit integer.
    Integer,
    /// A 64-bit float.
    Real,
    /// UTF-8 text.
    Text,
    /// Bytes.
    Blob,
    /// A boolean.
    Boolean,
}

/// One column of a [`Table`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// Whether it accepts `NULL`.
    pub nullable: bool,
}

/// A table a database sink writes to: its name, its columns in row order, the key the
/// sink upserts on, and optional `CHECK` constraints. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    name: String,
    columns: Vec<Column>,
    key: Vec<String>,
    checks: Vec<String>,
    create: bool,
}

/// A [`Table`] that cannot be written to as declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// No column declared.
    #[error("table `{0}` has no columns")]
    NoColumns(String),
    /// No key declared: without one, a re-run would duplicate rows.
    #[error("table `{0}` has no key: declare the columns to upsert on with `key([..])`")]
    NoKey(String),
    /// A key column that is not a column.
    #[error("table `{table}`: key column `{column}` is not declared")]
    UnknownKey {
        /// The table.
        table: String,
        /// The key column.
        column: String,
    },
    /// A nullable key column.
    #[error("table `{table}`: key column `{column}` is nullable; key columns must be `NOT NULL`")]
    NullableKey {
        /// The table.
        table: String,
        /// The key column.
        column: String,
    },
    /// A column declared twice.
    #[error("table `{table}`: column `{column}` is declared twice")]
    Duplicate {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
}

impl Table {
    /// A table named `name` (quoted in SQL, so any name works), with no columns yet.
    pub fn new(name: impl Into<String>) -> Self {
        Table {
            name: name.into(),
            columns: Vec::new(),
            key: Vec::new(),
            checks: Vec::new(),
            create: true,
        }
    }

    /// Adds a `NOT NULL` column.
    #[must_use]
    pub fn column(mut self, name: impl Into<String>, ty: ColumnType) -> Self {
        self.columns.push(Column {
            name: name.into(),
            ty,
            nullable: false,
        });
        self
    }

    /// Adds a column that accepts `NULL` ([`Value::Null`], or `None` through
    /// `Option<T>: Into<Value>`).
    #[must_use]
    pub fn nullable(mut self, name: impl Into<String>, ty: ColumnType) -> Self {
        self.columns.push(Column {
            name: name.into(),
            ty,
            nullable: true,
        });
        self
    }

    /// The key columns the sink upserts on (the primary key of a table it creates).
    #[must_use]
    pub fn key<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.key = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a `CHECK (expr)` constraint to the table the sink creates; a row violating it
    /// fails alone. `expr` is SQL, written by the program (never from input).
    #[must_use]
    pub fn check(mut self, expr: impl Into<String>) -> Self {
        self.checks.push(expr.into());
        self
    }

    /// The table exists already: the sink does not try to create it (it then needs a
    /// unique index on the key columns for the upsert).
    #[must_use]
    pub fn assume_exists(mut self) -> Self {
        self.create = false;
        self
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The columns, in row order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The key columns.
    pub fn key_columns(&self) -> &[String] {
        &self.key
    }

    /// Whether the sink creates the table if it is missing.
    pub fn creates(&self) -> bool {
        self.create
    }

    /// Checks the declaration: at least one column, a key of declared `NOT NULL`
    /// columns, no column twice.
    ///
    /// # Errors
    ///
    /// The first [`TableError`] found.
    pub fn validate(&self) -> Result<(), TableError> {
        if self.columns.is_empty() {
            return Err(TableError::NoColumns(self.name.clone()));
        }
        if self.key.is_empty() {
            return Err(TableError::NoKey(self.name.clone()));
        }
        for (i, c) in self.columns.iter().enumerate() {
            if self.columns[..i].iter().any(|d| d.name == c.name) {
                return Err(TableError::Duplicate {
                    table: self.name.clone(),
                    column: c.name.clone(),
                });
            }
        }
        for k in &self.key {
            match self.columns.iter().find(|c| &c.name == k) {
                None => {
                    return Err(TableError::UnknownKey {
                        table: self.name.clone(),
                        column: k.clone(),
                    });
                }
                Some(c) if c.nullable => {
                    return Err(TableError::NullableKey {
                        table: self.name.clone(),
                        column: k.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Why `row` cannot be a row of this table, if it cannot (a wrong number of values).
    pub(crate) fn check_row(&self, row: &[Value]) -> Result<(), String> {
        if row.len() == self.columns.len() {
            Ok(())
        } else {
            Err(format!(
                "the row has {} values, table `{}` has {} columns",
                row.len(),
                self.name,
                self.columns.len()
            ))
        }
    }

    /// `col=value, ...` for the key columns of `row`, for error messages.
    pub(crate) fn describe_key(&self, row: &[Value]) -> String {
        let mut out = String::new();
        for k in &self.key {
            if let Some(i) = self.columns.iter().position(|c| &c.name == k) {
                if !out.is_empty() {
                    out.push_str(", ");
                }
                let _ = match row.get(i) {
                    Some(v) => write!(out, "{k}={v}"),
                    None => write!(out, "{k}=?"),
                };
            }
        }
        out
    }

    /// `CREATE TABLE IF NOT EXISTS ...` in `dialect`.
    pub(crate) fn create_sql(&self, dialect: Dialect) -> String {
        let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (", quote(&self.name));
        for (i, c) in self.columns.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "{} {}", quote(&c.name), dialect.type_name(c.ty));
            if !c.nullable {
                sql.push_str(" NOT NULL");
            }
        }
        let _ = write!(sql, ", PRIMARY KEY ({})", self.quoted_list(&self.key));
        for check in &self.checks {
            let _ = write!(sql, ", CHECK ({check})");
        }
        sql.push(')');
        sql
    }

    /// The upsert: `INSERT ... ON CONFLICT (key) DO UPDATE SET ...` (or `DO NOTHING` when
    /// every column is in the key), with the dialect's placeholders.
    pub(crate) fn upsert_sql(&self, dialect: Dialect) -> String {
        let mut sql = self.insert_head();
        sql.push_str(" VALUES (");
        for i in 1..=self.columns.len() {
            if i > 1 {
                sql.push_str(", ");
            }
            let _ = match dialect {
                Dialect::Sqlite => write!(sql, "?{i}"),
                Dialect::Postgres => write!(sql, "${i}"),
            };
        }
        sql.push(')');
        sql.push_str(&self.on_conflict());
        sql
    }

    /// The upsert of a whole batch in one statement (PostgreSQL): one array parameter
    /// per column, `INSERT ... SELECT * FROM UNNEST($1::int8[], ...) ON CONFLICT ...`.
    /// The batch must not repeat a key (PostgreSQL refuses to update a row twice in one
    /// statement).
    #[cfg(feature = "postgres")]
    pub(crate) fn upsert_unnest_sql(&self) -> String {
        let mut sql = self.insert_head();
        sql.push_str(" SELECT * FROM UNNEST(");
        for (i, c) in self.columns.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let array = match c.ty {
                ColumnType::Integer => "int8[]",
                ColumnType::Real => "float8[]",
                ColumnType::Text => "text[]",
                ColumnType::Blob => "bytea[]",
                ColumnType::Boolean => "bool[]",
            };
            let _ = write!(sql, "${}::{array}", i + 1);
        }
        sql.push(')');
        sql.push_str(&self.on_conflict());
        sql
    }

    /// `INSERT INTO "t" ("a", "b")`.
    fn insert_head(&self) -> String {
        let names: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        format!(
            "INSERT INTO {} ({})",
            quote(&self.name),
            self.quoted_list(&names)
        )
    }

    /// ` ON CONFLICT ("k") DO UPDATE SET "a" = excluded."a", ...` (or `DO NOTHING`).
    fn on_conflict(&self) -> String {
        let mut sql = format!(" ON CONFLICT ({}) DO ", self.quoted_list(&self.key));
        let rest: Vec<&Column> = self
            .columns
            .iter()
            .filter(|c| !self.key.contains(&c.name))
            .collect();
        if rest.is_empty() {
            sql.push_str("NOTHING");
        } else {
            sql.push_str("UPDATE SET ");
            for (i, c) in rest.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let _ = write!(sql, "{0} = excluded.{0}", quote(&c.name));
            }
        }
        sql
    }

    /// Positions of the key columns, in key order.
    #[cfg(feature = "postgres")]
    pub(crate) fn key_positions(&self) -> Vec<usize> {
        self.key
            .iter()
            .filter_map(|k| self.columns.iter().position(|c| &c.name == k))
            .collect()
    }

    fn quoted_list(&self, names: &[String]) -> String {
        names
            .iter()
            .map(|n| quote(n))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An SQL identifier in double quotes (both SQLite and PostgreSQL), inner quotes doubled.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The SQL flavour of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn type_name(self, ty: ColumnType) -> &'static str {
        match (self, ty) {
            (Dialect::Sqlite, ColumnType::Integer | ColumnType::Boolean) => "INTEGER",
            (Dialect::Sqlite, ColumnType::Real) => "REAL",
            (Dialect::Sqlite, ColumnType::Blob) => "BLOB",
            (Dialect::Postgres, ColumnType::Integer) => "BIGINT",
            (Dialect::Postgres, ColumnType::Real) => "DOUBLE PRECISION",
            (Dialect::Postgres, ColumnType::Blob) => "BYTEA",
            (Dialect::Postgres, ColumnType::Boolean) => "BOOLEAN",
            (_, ColumnType::Text) => "TEXT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table::new("t")
            .column("a", ColumnType::Text)
            .column("b", ColumnType::Integer)
            .nullable("c", ColumnType::Real)
            .key(["a", "b"])
    }

    #[test]
    fn sql() {
        let t = table();
        assert_eq!(
            t.create_sql(Dialect::Postgres),
            r#"CREATE TABLE IF NOT EXISTS "t" ("a" TEXT NOT NULL, "b" BIGINT NOT NULL, "c" DOUBLE PRECISION, PRIMARY KEY ("a", "b"))"#
        );
        assert_eq!(
            t.upsert_sql(Dialect::Sqlite),
            r#"INSERT INTO "t" ("a", "b", "c") VALUES (?1, ?2, ?3) ON CONFLICT ("a", "b") DO UPDATE SET "c" = excluded."c""#
        );
        let all_key = Table::new("k").column("a", ColumnType::Text).key(["a"]);
        assert!(
            all_key
                .upsert_sql(Dialect::Postgres)
                .ends_with("VALUES ($1) ON CONFLICT (\"a\") DO NOTHING")
        );
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
        #[cfg(feature = "postgres")]
        assert_eq!(
            t.upsert_unnest_sql(),
            r#"INSERT INTO "t" ("a", "b", "c") SELECT * FROM UNNEST($1::text[], $2::int8[], $3::float8[]) ON CONFLICT ("a", "b") DO UPDATE SET "c" = excluded."c""#
        );
    }

    #[test]
    fn validation() {
        assert!(table().validate().is_ok());
        assert_eq!(
            Table::new("t").column("a", ColumnType::Text).validate(),
            Err(TableError::NoKey("t".into()))
        );
        let e = table().key(["z"]).validate().unwrap_err();
        assert_eq!(e.to_string(), "table `t`: key column `z` is not declared");
        assert!(matches!(
            table().key(["c"]).validate(),
            Err(TableError::NullableKey { .. })
        ));
        assert_eq!(
            table().describe_key(&["x".into(), 3.into(), Value::Null]),
            "a='x', b=3"
        );
    }
}
