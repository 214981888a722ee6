//! A batched, transactional, idempotent SQLite sink (rusqlite, bundled SQLite).
//!
//! Each batch the pipeline hands the sink is written in **one transaction** with one
//! cached prepared statement, an **upsert on the table's key** (see [`table`](crate::table)):
//! running the same input twice, or receiving a duplicate, leaves one row per key. A row
//! the database rejects (a `NOT NULL` or `CHECK` violation, a wrong number of values) fails
//! alone: the rest of the batch commits, and the failed rows are reported with
//! [`WriteError::partial`] so each is dead-lettered, its message naming the row by its key.
//! If the database aborts the whole transaction (disk full, I/O error) the whole batch
//! fails and nothing of it is committed.
//!
//! For each failed row's dead letter to carry the item itself as JSON (to replay it),
//! wrap the sink in the core's `sink::show_items_as_json` (one clone per item; the sink
//! leaves the items in the batch for it).
//!
//! rusqlite is blocking: the connection lives on a dedicated thread, fed one batch at a
//! time through a bounded channel, so the async workers never wait on the disk. Items are
//! turned into rows on the caller's side ([`ToRow`] or a closure), so the items stay with
//! the pipeline.
//!
//! # Cancel safety
//!
//! A write dropped before it finished (a shutdown past its deadline) may still commit on
//! the database thread: its items then count as not delivered, and a replay of the batch
//! is absorbed by the upsert.
//!
//! For bulk loads, [`Journal::Wal`] with [`Synchronous::Normal`] makes a commit cheap (a
//! commit is then durable against a crash of the program, not of the machine); the
//! defaults are SQLite's own (rollback journal, `FULL`).
//!
//! Several tables in one file (the flights and their per-carrier daily aggregates): open
//! one sink per table on the same path. Each transaction takes the write lock when it
//! begins (`BEGIN IMMEDIATE`) and waits up to the [busy timeout](SqliteOptions::busy_timeout)
//! for the other, so the sinks take turns instead of failing; with [`Journal::Wal`] readers
//! never wait. Batches are whatever the pipeline has ready, up to 256 items: at that size a
//! debug build loads the 336,776 nycflights13 flights in about 5 s.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use pipeline_connectors::sqlite::{Journal, SqliteOptions, Synchronous};
//! use pipeline_connectors::table::{ColumnType, Table, ToRow, Value};
//! use pipeline_core::prelude::*;
//!
//! #[derive(Debug, Clone)]
//! struct Carrier { code: String, name: String }
//!
//! impl ToRow for Carrier {
//!     fn to_row(&self) -> Vec<Value> {
//!         vec![self.code.as_str().into(), self.name.as_str().into()]
//!     }
//! }
//!
//! # let dir = std::env::temp_dir().join(format!("sqlite-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("etl.db");
//! let table = Table::new("carriers")
//!     .column("code", ColumnType::Text)
//!     .column("name", ColumnType::Text)
//!     .key(["code"]);
//! let sink = SqliteOptions::new(&path, table)
//!     .journal(Journal::Wal)
//!     .synchronous(Synchronous::Normal)
//!     .open::<Carrier>()
//!     .unwrap();
//!
//! let carriers = vec![
//!     Carrier { code: "UA".into(), name: "United Air Lines Inc.".into() },
//!     Carrier { code: "AA".into(), name: "American Airlines Inc.".into() },
//!     Carrier { code: "UA".into(), name: "United Air Lines Inc.".into() }, // a duplicate
//! ];
//! let report = Pipeline::builder("carriers")
//!     .source(source::iter(carriers))
//!     .sink(sink)
//!     .run()
//!     .await
//!     .unwrap();
//! assert_eq!(report.delivered, 3);
//!
//! let db = rusqlite::Connection::open(&path).unwrap();
//! let rows: i64 = db.query_row("SELECT count(*) FROM carriers", [], |r| r.get(0)).unwrap();
//! assert_eq!(rows, 2);
//! # }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pipeline_core::error::Message;
use pipeline_core::sink::{Sink, WriteError};
use rusqlite::types::{ToSqlOutput, ValueRef};
use tokio::sync::{mpsc, oneshot};

use crate::table::{Dialect, RowFn, RowsFailed, Table, TableError, ToRow, Value};

/// SQLite's journal mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Journal {
    /// Whatever the database file has (for a new file, SQLite's rollback journal,
    /// `DELETE`). Readers wait while a batch commits.
    #[default]
    Default,
    /// Write-ahead log: readers do not block the writer, and commits are cheaper. The
    /// mode is persistent: it stays with the file.
    Wal,
}

/// SQLite's `synchronous` setting: how hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// SQLite's default: a commit survives a power loss.
    #[default]
    Full,
    /// With [`Journal::Wal`]: a commit survives a crash of the program; a power loss may
    /// lose the last commits (never corrupts the file). Much faster for many small
    /// transactions.
    Normal,
    /// No waiting for the disk at all: for scratch databases.
    Off,
}

/// A SQLite sink could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The table declaration is invalid.
    #[error("sqlite sink: {0}")]
    Table(#[from] TableError),
    /// The database could not be opened.
    #[error("sqlite sink: cannot open `{path}`: {source}")]
    Open {
        /// The database path.
        path: String,
        /// rusqlite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A setting or the table could not be applied.
    #[error("sqlite sink: `{path}`: cannot {what}: {source}")]
    Setup {
        /// The database path.
        path: String,
        /// What failed (`"create table `t`"`, `"set journal_mode"`, ...).
        what: String,
        /// rusqlite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database thread could not be started.
    #[error("sqlite sink: cannot start the database thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// How to open a [`SqliteSink`]: the database file, the table, and connection settings.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    path: PathBuf,
    table: Table,
    journal: Journal,
    synchronous: Synchronous,
    busy_timeout: Duration,
}

impl SqliteOptions {
    /// A sink writing to `table` in the database at `path` (created if missing;
    /// `":memory:"` for a private in-memory database).
    pub fn new(path: impl AsRef<Path>, table: Table) -> Self {
        SqliteOptions {
            path: path.as_ref().to_path_buf(),
            table,
            journal: Journal::default(),
            synchronous: Synchronous::default(),
            busy_timeout: Duration::from_secs(5),
        }
    }

    /// The journal mode (default: [`Journal::Default`]).
    #[must_use]
    pub fn journal(mut self, journal: Journal) -> Self {
        self.journal = journal;
        self
    }

    /// The `synchronous` setting (default: [`Synchronous::Full`]).
    #[must_use]
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long a write waits for another connection's lock before failing (default 5 s).
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Opens the database, applies the settings, creates the table if missing, and
    /// starts the database thread; items become rows through [`ToRow`].
    ///
    /// This runs synchronously (it opens a file): call it while building the pipeline.
    ///
    /// # Errors
    ///
    /// [`SqliteError`] naming the path and what failed.
    pub fn open<T: ToRow + Send + 'static>(self) -> Result<SqliteSink<T>, SqliteError> {
        self.open_with(T::to_row as RowFn<T>)
    }

    /// As [`open`](Self::open), with a closure making each item's row (values in the
    /// table's column order).
    ///
    /// # Errors
    ///
    /// [`SqliteError`] naming the path and what failed.
    pub fn open_with<T, F>(self, map: F) -> Result<SqliteSink<T, F>, SqliteError>
    where
        T: Send + 'static,
        F: Fn(&T) -> Vec<Value> + Send + 'static,
    {
        self.table.validate()?;
        let path = self.path.display().to_string();
        let conn = rusqlite::Connection::open(&self.path).map_err(|source| SqliteError::Open {
            path: path.clone(),
            source,
        })?;
        let setup = |what: &str, source| SqliteError::Setup {
            path: path.clone(),
            what: what.to_owned(),
            source,
        };
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| setup("set busy_timeout", e))?;
        if self.journal == Journal::Wal {
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| {
                row.get::<_, String>(0)
            })
            .map_err(|e| setup("set journal_mode", e))?;
        }
        let sync = match self.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Off => "OFF",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(|e| setup("set synchronous", e))?;
        if self.table.creates() {
            conn.execute_batch(&self.table.create_sql(Dialect::Sqlite))
                .map_err(|e| setup(&format!("create table `{}`", self.table.name()), e))?;
        }
        let upsert = self.table.upsert_sql(Dialect::Sqlite);
        // Prepare once now, so a table that does not fit the declaration (no unique index
        // on the key, a missing column) is an error here, not on every batch.
        conn.prepare_cached(&upsert).map_err(|e| {
            setup(
                &format!("prepare the upsert into `{}`", self.table.name()),
                e,
            )
        })?;
        let (jobs, rx) = mpsc::channel(1);
        let table = self.table;
        std::thread::Builder::new()
            .name(format!("sqlite {path}"))
            .spawn(move || worker(conn, table, upsert, rx))
            .map_err(SqliteError::Thread)?;
        Ok(SqliteSink {
            jobs,
            map,
            path,
            _item: PhantomData,
        })
    }
}

/// A batched, transactional, idempotent SQLite sink; see the [module docs](self).
pub struct SqliteSink<T, F = RowFn<T>> {
    jobs: mpsc::Sender<Job>,
    map: F,
    path: String,
    _item: PhantomData<fn(&T)>,
}

impl<T: ToRow + Send + 'static> SqliteSink<T> {
    /// A sink writing to `table` at `path` with the default [`SqliteOptions`].
    ///
    /// # Errors
    ///
    /// [`SqliteError`] naming the path and what failed.
    pub fn open(path: impl AsRef<Path>, table: Table) -> Result<Self, SqliteError> {
        SqliteOptions::new(path, table).open()
    }
}

impl<T, F> fmt::Debug for SqliteSink<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<T, F> Sink for SqliteSink<T, F>
where
    T: Send + 'static,
    F: Fn(&T) -> Vec<Value> + Send + 'static,
{
    type Item = T;

    async fn write(&mut self, items: &mut Vec<T>) -> Result<(), WriteError> {
        if items.is_empty() {
            return Ok(());
        }
        let rows: Vec<Vec<Value>> = items.iter().map(&self.map).collect();
        let (reply, done) = oneshot::channel();
        let stopped = || {
            WriteError::all(Message(format!(
                "sqlite sink: `{}`: the database thread has stopped",
                self.path
            )))
        };
        self.jobs
            .send(Job { rows, reply })
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    fn name(&self) -> &str {
        "sqlite"
    }
}

/// One batch for the database thread.
struct Job {
    rows: Vec<Vec<Value>>,
    reply: oneshot::Sender<Result<(), WriteError>>,
}

/// The database thread: one transaction per job, until the sink is dropped.
fn worker(
    mut conn: rusqlite::Connection,
    table: Table,
    upsert: String,
    mut rx: mpsc::Receiver<Job>,
) {
    while let Some(job) = rx.blocking_recv() {
        let result = write_rows(&mut conn, &table, &upsert, &job.rows);
        let _ = job.reply.send(result);
    }
}

fn write_rows(
    conn: &mut rusqlite::Connection,
    table: &Table,
    upsert: &str,
    rows: &[Vec<Value>],
) -> Result<(), WriteError> {
    let fail = |what: &str, e: rusqlite::Error| {
        WriteError::all(Message(format!(
            "sqlite sink: table `{}`: {what}: {e}",
            table.name()
        )))
    };
    // IMMEDIATE takes the write lock at BEGIN, waiting up to the busy timeout for another
    // writer (a second sink on the same file); a DEFERRED transaction could fail at its
    // first write instead, without waiting.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| fail("cannot begin a transaction", e))?;
    let mut failed = Vec::new();
    {
        let mut stmt = tx
            .prepare_cached(upsert)
            .map_err(|e| fail("cannot prepare the upsert", e))?;
        for (pos, row) in rows.iter().enumerate() {
            if let Err(why) = table.check_row(row) {
                failed.push((pos, format!("row {pos}: {why}")));
                continue;
            }
            if let Err(e) = stmt.execute(rusqlite::params_from_iter(row.iter())) {
                if tx.is_autocommit() {
                    // SQLite rolled the whole transaction back (I/O error, disk full):
                    // nothing of this batch is stored.
                    return Err(fail("the transaction was rolled back", e));
                }
                // A statement error (constraint, type) undoes that statement only.
                failed.push((pos, format!("row {pos} ({}): {e}", table.describe_key(row))));
            }
        }
    }
    tx.commit().map_err(|e| fail("cannot commit", e))?;
    if failed.is_empty() {
        return Ok(());
    }
    let failed = RowsFailed {
        connector: "sqlite",
        table: table.name().to_owned(),
        batch: rows.len(),
        rows: failed,
    };
    let positions = failed.positions();
    Err(WriteError::partial(failed, positions))
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(r) => ToSqlOutput::Borrowed(ValueRef::Real(*r)),
            Value::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
        })
    }
}
