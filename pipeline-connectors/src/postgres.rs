//! A batched, transactional, idempotent PostgreSQL sink (tokio-postgres, no TLS).
//!
//! Each batch is written **atomically in one statement**: the rows go as one array per
//! column into a prepared upsert, `INSERT ... SELECT * FROM UNNEST($1::int8[], ...) ON
//! CONFLICT (key) DO UPDATE` (see [`table`](crate::table)), one round trip per batch. So
//! duplicates from an at-least-once source, or a re-run, leave one row per key; a key
//! repeated inside one batch keeps its last row (PostgreSQL will not update a row twice in
//! one statement, so the earlier rows of that key, which the last one would overwrite, are
//! left out of the statement).
//!
//! **Failed rows.** Rows are checked first against the table's declared column types and
//! the prepared statement's parameter types: a row with the wrong number of values or a
//! value of the wrong type (text for a `BIGINT`, an integer out of an `INTEGER`'s range)
//! fails alone, without a round trip. If the database rejects a row (SQLSTATE class 22,
//! data exception, or 23, integrity constraint: `NOT NULL`, `CHECK`, a foreign key),
//! nothing of the statement is stored and the batch is written again **row by row, each
//! in a savepoint**, inside one transaction: the good rows commit, each bad row is
//! reported through [`WriteError::partial`] (so dead-lettered), its message naming the row
//! by its key. This second pass costs three round trips per row and runs only for batches
//! with a bad row. Any other failure (the connection, a missing table, a serialization
//! conflict) fails the whole batch, with nothing of it committed.
//!
//! For each failed row's dead letter to carry the item itself as JSON (to replay it),
//! wrap the sink in the core's `sink::show_items_as_json` (one clone per item; the sink
//! leaves the items in the batch for it).
//!
//! **Connections.** The sink connects when built ([`PostgresOptions::connect`]), so a wrong
//! address fails at once, with an error naming the server (never the password); or on its
//! first write ([`PostgresOptions::lazy`]), for a pipeline that must start while the
//! database may be down. A
//! connection found closed before a write is replaced first; one that breaks during a
//! write fails that batch (nothing of it committed, every item reported), and the next
//! write connects again. Give the sink a retry policy to ride out an outage instead of
//! dead-lettering.
//!
//! # Cancel safety
//!
//! A write dropped before it finished (a shutdown past its deadline) may or may not have
//! stored its batch (the statement, or the row-by-row transaction's commit, may already be
//! on the server); either way the upsert makes a later replay of the batch harmless.
//!
//! # Examples
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use pipeline_connectors::postgres::PostgresOptions;
//! use pipeline_connectors::table::{ColumnType, Table, ToRow, Value};
//! use pipeline_core::prelude::*;
//!
//! #[derive(Debug, Clone)]
//! struct Daily { carrier: String, day: String, flights: i64 }
//!
//! impl ToRow for Daily {
//!     fn to_row(&self) -> Vec<Value> {
//!         vec![self.carrier.as_str().into(), self.day.as_str().into(), self.flights.into()]
//!     }
//! }
//!
//! let table = Table::new("daily")
//!     .column("carrier", ColumnType::Text)
//!     .column("day", ColumnType::Text)
//!     .column("flights", ColumnType::Integer)
//!     .key(["carrier", "day"]);
//! let sink = PostgresOptions::new("postgres://etl:secret@127.0.0.1:5432/warehouse", table)?
//!     .connect::<Daily>()
//!     .await?;
//! let rows = vec![Daily { carrier: "UA".into(), day: "2013-01-01".into(), flights: 165 }];
//! let report = Pipeline::builder("daily")
//!     .source(source::iter(rows))
//!     .sink(sink)
//!     .run()
//!     .await?;
//! assert!(report.is_balanced());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use pipeline_core::error::{Message, chain};
use pipeline_core::sink::{Sink, WriteError};
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::table::{Dialect, RowFn, RowsFailed, Table, TableError, ToRow, Value};

mod types;
mod write;

use types::{check_types, fits_declared};
use write::{BatchError, write_batch, write_one_by_one};

/// A PostgreSQL sink could not be set up. Messages name the server as
/// `host=.. port=.. user=.. dbname=..`, never the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The connection string does not parse.
    #[error("postgres sink: invalid connection string: {0}")]
    Config(String),
    /// The table declaration is invalid.
    #[error("postgres sink: {0}")]
    Table(#[from] TableError),
    /// The server could not be reached or refused the login.
    #[error("postgres sink: cannot connect to {target}: {}", chain(error))]
    Connect {
        /// The server, without credentials.
        target: String,
        /// tokio-postgres's error (its causes are in the message).
        error: tokio_postgres::Error,
    },
    /// The table could not be created or the upsert prepared.
    #[error("postgres sink: {target}: cannot {what}: {}", chain(error))]
    Setup {
        /// The server, without credentials.
        target: String,
        /// What failed.
        what: String,
        /// tokio-postgres's error (its causes are in the message).
        error: tokio_postgres::Error,
    },
}

/// How to connect a [`PostgresSink`]: the server, the table, timeouts.
#[derive(Clone)]
pub struct PostgresOptions {
    config: Config,
    table: Table,
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("server", &describe(&self.config))
            .field("table", &self.table.name())
            .finish_non_exhaustive()
    }
}

impl PostgresOptions {
    /// A sink writing to `table` on the server named by `url`: a URL
    /// (`postgres://user:password@host:port/dbname`) or key-value pairs
    /// (`host=127.0.0.1 user=postgres dbname=test`). Connect timeout: 10 s.
    ///
    /// # Errors
    ///
    /// [`PostgresError::Config`] if `url` does not parse (the message does not repeat it).
    pub fn new(url: &str, table: Table) -> Result<Self, PostgresError> {
        let mut config = Config::from_str(url).map_err(|e| PostgresError::Config(chain(&e)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        Ok(PostgresOptions { config, table })
    }

    /// A sink from a tokio-postgres [`Config`].
    pub fn from_config(config: Config, table: Table) -> Self {
        PostgresOptions { config, table }
    }

    /// How long connecting may take (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout(timeout);
        self
    }

    /// Connects, creates the table if missing and prepares the upsert; items become rows
    /// through [`ToRow`].
    ///
    /// # Errors
    ///
    /// [`PostgresError`] naming the server (without credentials) and what failed.
    pub async fn connect<T: ToRow + Send + 'static>(
        self,
    ) -> Result<PostgresSink<T>, PostgresError> {
        self.connect_with(T::to_row as RowFn<T>).await
    }

    /// As [`connect`](Self::connect), with a closure making each item's row (values in
    /// the table's column order).
    ///
    /// # Errors
    ///
    /// [`PostgresError`] naming the server (without credentials) and what failed.
    pub async fn connect_with<T, F>(self, map: F) -> Result<PostgresSink<T, F>, PostgresError>
    where
        T: Send + 'static,
        F: Fn(&T) -> Vec<Value> + Send + 'static,
    {
        let mut sink = self.lazy_with(map)?;
        sink.conn = Some(sink.server.open(true).await?);
        sink.created = true;
        Ok(sink)
    }

    /// A sink that connects (and creates the table) on its first write instead: for a
    /// pipeline that must start while the database may be down. Until it is reachable,
    /// each write fails as a whole with a [`PostgresError::Connect`] message (give the sink
    /// a retry policy to wait rather than dead-letter).
    ///
    /// ```
    /// use pipeline_connectors::postgres::PostgresOptions;
    /// use pipeline_connectors::table::{ColumnType, Table, Value};
    ///
    /// let table = Table::new("seen").column("id", ColumnType::Integer).key(["id"]);
    /// let sink = PostgresOptions::new("host=db.invalid user=etl dbname=warehouse", table)
    ///     .unwrap()
    ///     .lazy_with(|id: &i64| vec![Value::from(*id)])
    ///     .unwrap(); // no connection yet
    /// # drop(sink);
    /// ```
    ///
    /// # Errors
    ///
    /// [`PostgresError::Table`] if the table declaration is invalid.
    pub fn lazy_with<T, F>(self, map: F) -> Result<PostgresSink<T, F>, PostgresError>
    where
        T: Send + 'static,
        F: Fn(&T) -> Vec<Value> + Send + 'static,
    {
        self.table.validate()?;
        let target = describe(&self.config);
        let upsert = self.table.upsert_sql(Dialect::Postgres);
        let upsert_many = self.table.upsert_unnest_sql();
        let server = Server {
            config: self.config,
            target,
            table: self.table,
            upsert,
            upsert_many,
        };
        Ok(PostgresSink {
            server,
            conn: None,
            created: false,
            map,
            _item: PhantomData,
        })
    }

    /// As [`lazy_with`](Self::lazy_with), items becoming rows through [`ToRow`].
    ///
    /// # Errors
    ///
    /// [`PostgresError::Table`] if the table declaration is invalid.
    pub fn lazy<T: ToRow + Send + 'static>(self) -> Result<PostgresSink<T>, PostgresError> {
        self.lazy_with(T::to_row as RowFn<T>)
    }
}

/// `host=.. port=.. user=.. dbname=..`: the server without credentials.
fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let mut out = format!("host={}", hosts.join(","));
    if !ports.is_empty() {
        out.push_str(&format!(" port={}", ports.join(",")));
    }
    if let Some(user) = config.get_user() {
        out.push_str(&format!(" user={user}"));
    }
    if let Some(db) = config.get_dbname() {
        out.push_str(&format!(" dbname={db}"));
    }
    out
}

/// A batched, transactional, idempotent PostgreSQL sink; see the [module docs](self).
pub struct PostgresSink<T, F = RowFn<T>> {
    server: Server,
    conn: Option<Conn>,
    /// Whether the table was created (or found) on a first connection.
    created: bool,
    map: F,
    _item: PhantomData<fn(&T)>,
}

impl<T, F> fmt::Debug for PostgresSink<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSink")
            .field("server", &self.server.target)
            .field("table", &self.server.table.name())
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

/// A live connection and the upserts prepared on it.
struct Conn {
    client: Client,
    /// One row.
    upsert: Statement,
    /// A batch, as arrays.
    upsert_many: Statement,
}

/// What the sink connects to and writes: everything but the connection and the mapping.
struct Server {
    config: Config,
    /// The server without credentials, for messages.
    target: String,
    table: Table,
    upsert: String,
    upsert_many: String,
}

impl Server {
    async fn open(&self, create: bool) -> Result<Conn, PostgresError> {
        let (client, connection) =
            self.config
                .connect(NoTls)
                .await
                .map_err(|error| PostgresError::Connect {
                    target: self.target.clone(),
                    error,
                })?;
        let target = self.target.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(server = %target, %error, "postgres sink: connection lost");
            }
        });
        let setup = |what: String, error| PostgresError::Setup {
            target: self.target.clone(),
            what,
            error,
        };
        if create && self.table.creates() {
            client
                .batch_execute(&self.table.create_sql(Dialect::Postgres))
                .await
                .map_err(|e| setup(format!("create table `{}`", self.table.name()), e))?;
        }
        let prepare_failed = |e| {
            setup(
                format!("prepare the upsert into `{}`", self.table.name()),
                e,
            )
        };
        let upsert = client.prepare(&self.upsert).await.map_err(prepare_failed)?;
        let upsert_many = client
            .prepare(&self.upsert_many)
            .await
            .map_err(prepare_failed)?;
        Ok(Conn {
            client,
            upsert,
            upsert_many,
        })
    }

    fn fail(&self, what: impl fmt::Display) -> WriteError {
        WriteError::all(Message(format!(
            "postgres sink: {}: table `{}`: {what}",
            self.target,
            self.table.name()
        )))
    }
}

impl<T, F> Sink for PostgresSink<T, F>
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
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            // Known lost (the server closed it while idle): connect again before writing.
            tracing::info!(server = %self.server.target, "postgres sink: connection closed; reconnecting");
            self.conn = None;
        }
        if self.conn.is_none() {
            match self.server.open(!self.created).await {
                Ok(conn) => {
                    if self.created {
                        tracing::info!(server = %self.server.target, "postgres sink: reconnected");
                    }
                    self.conn = Some(conn);
                    self.created = true;
                }
                Err(e) => return Err(WriteError::all(e)),
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(self.server.fail("not connected"));
        };
        // Rows that cannot fit the statement fail before any round trip.
        let mut failed = Vec::new();
        let mut good = Vec::with_capacity(rows.len());
        for (pos, row) in rows.iter().enumerate() {
            let table = &self.server.table;
            match table
                .check_row(row)
                .and_then(|()| check_types(row, conn.upsert.params(), table))
                .and_then(|()| {
                    match row
                        .iter()
                        .zip(table.columns())
                        .find(|(v, c)| !fits_declared(v, c.ty))
                    {
                        Some((v, c)) => Err(format!(
                            "column `{}`: {v} is not of its declared type {:?}",
                            c.name, c.ty
                        )),
                        None => Ok(()),
                    }
                }) {
                Ok(()) => good.push(pos),
                Err(why) => failed.push((
                    pos,
                    format!("row {pos} ({}): {why}", table.describe_key(row)),
                )),
            }
        }
        let outcome = match write_batch(conn, &self.server.table, &rows, &good).await {
            Ok(()) => Ok(Vec::new()),
            Err(BatchError::Row) => write_one_by_one(conn, &rows, &good, &self.server.table).await,
            Err(BatchError::Batch(why)) => Err(why),
        };
        match outcome {
            Ok(mut bad) => failed.append(&mut bad),
            Err(why) => {
                // Renew the connection on the next write: it may be what failed.
                self.conn = None;
                return Err(self.server.fail(why));
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        failed.sort_by_key(|(pos, _)| *pos);
        let failed = RowsFailed {
            connector: "postgres",
            table: self.server.table.name().to_owned(),
            batch: rows.len(),
            rows: failed,
        };
        let positions = failed.positions();
        Err(WriteError::partial(failed, positions))
    }

    fn name(&self) -> &str {
        "postgres"
    }
}
