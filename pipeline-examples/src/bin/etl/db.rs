//! Where the rows go: an embedded SQLite file or a PostgreSQL server, through one sink
//! type so the pipeline is built by the same code for both.

use std::path::PathBuf;

use pipeline_connectors::postgres::{PostgresOptions, PostgresSink};
use pipeline_connectors::sqlite::{Journal, SqliteOptions, SqliteSink, Synchronous};
use pipeline_connectors::table::{Table, ToRow};
use pipeline_core::BoxError;
use pipeline_core::sink::{Sink, WriteError};

/// The database the run writes to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://user@host:port/db`).
    Postgres(String),
}

impl Target {
    /// A sink for `table`, created (or reached) now so a bad database fails the run
    /// before it starts.
    pub(crate) async fn open<T: ToRow + Send + 'static>(
        &self,
        table: Table,
    ) -> Result<DbSink<T>, BoxError> {
        Ok(match self {
            Target::Sqlite(path) => DbSink::Sqlite(
                SqliteOptions::new(path, table)
                    // Several sinks write to the one file: WAL lets them take turns
                    // cheaply, and NORMAL does not fsync every batch.
                    .journal(Journal::Wal)
                    .synchronous(Synchronous::Normal)
                    .open()?,
            ),
            Target::Postgres(url) => DbSink::Postgres(Box::new(
                PostgresOptions::new(url, table)?
                    .connect_timeout(std::time::Duration::from_secs(5))
                    .connect()
                    .await?,
            )),
        })
    }

    /// What to show the user.
    pub(crate) fn describe(&self) -> String {
        match self {
            Target::Sqlite(path) => path.display().to_string(),
            Target::Postgres(url) => redact(url),
        }
    }
}

/// The URL without a password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Either database sink, or nothing (to draw the graph without opening a database).
///
/// The connectors have no boxed or either-sink, so a program choosing its sink at run
/// time writes this enum.
pub(crate) enum DbSink<T> {
    Sqlite(SqliteSink<T>),
    Postgres(Box<PostgresSink<T>>),
    /// Accepts and drops everything.
    Discard,
}

impl<T> std::fmt::Debug for DbSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl<T> DbSink<T> {
    fn name(&self) -> &'static str {
        match self {
            DbSink::Sqlite(_) => "sqlite",
            DbSink::Postgres(_) => "postgres",
            DbSink::Discard => "discard",
        }
    }
}

impl<T: Send + 'static> Sink for DbSink<T> {
    type Item = T;

    async fn write(&mut self, items: &mut Vec<T>) -> Result<(), WriteError> {
        match self {
            DbSink::Sqlite(s) => s.write(items).await,
            DbSink::Postgres(s) => s.write(items).await,
            DbSink::Discard => {
                items.clear();
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> Result<(), BoxError> {
        match self {
            DbSink::Sqlite(s) => s.flush().await,
            DbSink::Postgres(s) => s.flush().await,
            DbSink::Discard => Ok(()),
        }
    }

    fn name(&self) -> &str {
        DbSink::name(self)
    }
}
