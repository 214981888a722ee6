//! A batched, transactional, idempotent PostgreSQL sink (tokio-postgres, no TLS).
//!
//! Each batch is written in **one transaction**: one prepared upsert
//! (`INSERT ... ON CONFLICT (key) DO UPDATE`, see [`table`](crate::table)) per row, all
//! rows pipelined on the connection, so duplicates from an at-least-once source, or a
//! re-run, leave one row per key (a key repeated inside one batch keeps its last row).
//!
//! **Failed rows.** Rows are checked against the prepared statement's parameter types
//! first: a row with the wrong number of values or a value of the wrong type (text for a
//! `BIGINT`, an integer out of an `INTEGER`'s range) fails alone, without a round trip.
//! If the database rejects a row (SQLSTATE class 22, data exception, or 23, integrity
//! constraint: `NOT NULL`, `CHECK`, a foreign key), the batch's transaction is rolled back
//! and the batch is written again **row by row, each in a savepoint**, inside one
//! transaction: the good rows commit, each bad row is reported through
//! [`WriteError::partial`] (so dead-lettered), its message naming the row by its key. This
//! second pass costs three round trips per row and runs only for batches with a bad row.
//! Any other failure (the connection, a missing table, a serialization conflict) fails the
//! whole batch, with nothing of it committed.
//!
//! **Connections.** The sink connects when built ([`PostgresOptions::connect`]), so a wrong
//! address fails at once, with an error naming the server (never the password). A
//! connection found closed before a write is replaced first; one that breaks during a
//! write fails that batch (nothing of it committed, every item reported), and the next
//! write connects again. Give the sink a retry policy to ride out an outage instead of
//! dead-lettering.
//!
//! # Cancel safety
//!
//! A write dropped before it finished (a shutdown past its deadline) leaves its
//! transaction uncommitted, and tokio-postgres rolls it back: nothing of that batch is
//! stored unless the commit was already sent. Either way the upsert makes a later replay
//! of the batch harmless.
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

use bytes::BytesMut;
use pipeline_core::error::{Message, chain};
use pipeline_core::sink::{Sink, WriteError};
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::table::{Dialect, RowFn, RowsFailed, Table, TableError, ToRow, Value};

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
        self.table.validate()?;
        let target = describe(&self.config);
        let upsert = self.table.upsert_sql(Dialect::Postgres);
        let server = Server {
            config: self.config,
            target,
            table: self.table,
            upsert,
        };
        let conn = server.open(true).await?;
        Ok(PostgresSink {
            server,
            conn: Some(conn),
            map,
            _item: PhantomData,
        })
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

/// A live connection and the upsert prepared on it.
struct Conn {
    client: Client,
    upsert: Statement,
}

/// Why a batch failed.
enum BatchError {
    /// A row the database rejected (SQLSTATE class 22 or 23): find it row by row.
    Row,
    /// Anything else: the whole batch fails, the connection is renewed.
    Batch(String),
}

/// What the sink connects to and writes: everything but the connection and the mapping.
struct Server {
    config: Config,
    /// The server without credentials, for messages.
    target: String,
    table: Table,
    upsert: String,
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
        let upsert = client.prepare(&self.upsert).await.map_err(|e| {
            setup(
                format!("prepare the upsert into `{}`", self.table.name()),
                e,
            )
        })?;
        Ok(Conn { client, upsert })
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
            self.conn = None;
        }
        if self.conn.is_none() {
            match self.server.open(false).await {
                Ok(conn) => self.conn = Some(conn),
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
            {
                Ok(()) => good.push(pos),
                Err(why) => failed.push((
                    pos,
                    format!("row {pos} ({}): {why}", table.describe_key(row)),
                )),
            }
        }
        let outcome = match write_batch(conn, &rows, &good).await {
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

/// Whether the database rejected a row rather than the batch: a data exception (class
/// 22) or an integrity constraint violation (class 23).
fn is_row_error(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

fn params(row: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    row.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// The rows at `good` in one transaction, pipelined.
async fn write_batch(
    conn: &mut Conn,
    rows: &[Vec<Value>],
    good: &[usize],
) -> Result<(), BatchError> {
    if good.is_empty() {
        return Ok(());
    }
    let batch = |e: tokio_postgres::Error| BatchError::Batch(chain(&e));
    let tx = conn.client.transaction().await.map_err(batch)?;
    let args: Vec<Vec<&(dyn ToSql + Sync)>> = good.iter().map(|&p| params(&rows[p])).collect();
    let upsert = &conn.upsert;
    let written = futures::future::try_join_all(args.iter().map(|a| tx.execute(upsert, a))).await;
    match written {
        Ok(_) => tx.commit().await.map_err(batch),
        Err(e) => {
            let row = is_row_error(&e);
            tx.rollback().await.map_err(batch)?;
            if row {
                Err(BatchError::Row)
            } else {
                Err(batch(e))
            }
        }
    }
}

/// The rows at `good` in one transaction, each in its own savepoint: the failed ones are
/// returned with their reasons, the rest commits.
async fn write_one_by_one(
    conn: &mut Conn,
    rows: &[Vec<Value>],
    good: &[usize],
    table: &Table,
) -> Result<Vec<(usize, String)>, String> {
    let mut tx = conn.client.transaction().await.map_err(|e| chain(&e))?;
    let mut failed = Vec::new();
    for &pos in good {
        let row = &rows[pos];
        let savepoint = tx.savepoint("pipeline_row").await.map_err(|e| chain(&e))?;
        match savepoint.execute(&conn.upsert, &params(row)).await {
            Ok(_) => savepoint.commit().await.map_err(|e| chain(&e))?,
            Err(e) if is_row_error(&e) => {
                savepoint.rollback().await.map_err(|e| chain(&e))?;
                let why = e
                    .as_db_error()
                    .map_or_else(|| chain(&e), |d| d.message().to_owned());
                failed.push((
                    pos,
                    format!("row {pos} ({}): {why}", table.describe_key(row)),
                ));
            }
            Err(e) => return Err(chain(&e)),
        }
    }
    tx.commit().await.map_err(|e| chain(&e))?;
    Ok(failed)
}

/// Whether each value can be sent as the statement's parameter of the same position.
fn check_types(row: &[Value], types: &[Type], table: &Table) -> Result<(), String> {
    for ((value, ty), column) in row.iter().zip(types).zip(table.columns()) {
        if let Err(why) = fits(value, ty) {
            return Err(format!("column `{}`: {why}", column.name));
        }
    }
    Ok(())
}

fn fits(value: &Value, ty: &Type) -> Result<(), String> {
    let ok = match value {
        Value::Null => true,
        Value::Integer(i) => {
            if *ty == Type::INT4 {
                i32::try_from(*i).is_ok()
            } else if *ty == Type::INT2 {
                i16::try_from(*i).is_ok()
            } else {
                [Type::INT8, Type::FLOAT8, Type::FLOAT4].contains(ty)
            }
        }
        Value::Real(_) => *ty == Type::FLOAT8 || *ty == Type::FLOAT4,
        Value::Text(_) => <&str as ToSql>::accepts(ty),
        Value::Blob(_) => *ty == Type::BYTEA,
        Value::Bool(_) => *ty == Type::BOOL,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{value} does not fit a {ty} column"))
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => {
                if *ty == Type::INT4 {
                    i32::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::FLOAT8 {
                    // Exact up to 2^53, as every float column is.
                    #[allow(clippy::cast_precision_loss)]
                    (*i as f64).to_sql(ty, out)
                } else if *ty == Type::FLOAT4 {
                    #[allow(clippy::cast_precision_loss)]
                    (*i as f32).to_sql(ty, out)
                } else {
                    i.to_sql(ty, out)
                }
            }
            Value::Real(r) => {
                if *ty == Type::FLOAT4 {
                    #[allow(clippy::cast_possible_truncation)]
                    (*r as f32).to_sql(ty, out)
                } else {
                    r.to_sql(ty, out)
                }
            }
            Value::Text(t) => t.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
            Value::Bool(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        // Checked per value in `fits` (with a message naming the column), and again by
        // the inner `to_sql`.
        true
    }

    tokio_postgres::types::to_sql_checked!();
}
