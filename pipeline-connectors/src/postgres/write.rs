//! The two ways a batch is written: all rows in one statement (arrays through `UNNEST`),
//! and, when the database rejects a row, row by row in savepoints to find which.

use std::collections::HashMap;

use pipeline_core::error::chain;
use tokio_postgres::types::ToSql;

use super::Conn;
use crate::table::{ColumnType, Table, Value};

/// Why a batch failed.
pub(super) enum BatchError {
    /// A row the database rejected (SQLSTATE class 22 or 23): find it row by row.
    Row,
    /// Anything else: the whole batch fails, the connection is renewed.
    Batch(String),
}

/// Whether the database rejected a row rather than the batch: a data exception (class
/// 22) or an integrity constraint violation (class 23).
pub(super) fn is_row_error(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

fn params(row: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    row.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// The rows at `good` in one statement: per column, an array of the values of the rows,
/// the last row of each key only (PostgreSQL will not update a row twice in one
/// statement; applied in order, the earlier rows of a key would be overwritten anyway).
pub(super) async fn write_batch(
    conn: &Conn,
    table: &Table,
    rows: &[Vec<Value>],
    good: &[usize],
) -> Result<(), BatchError> {
    if good.is_empty() {
        return Ok(());
    }
    let last = last_of_each_key(table, rows, good);
    let arrays: Vec<Array<'_>> = table
        .columns()
        .iter()
        .enumerate()
        .map(|(j, c)| Array::of(c.ty, last.iter().map(|&p| &rows[p][j])))
        .collect();
    let args: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(Array::param).collect();
    match conn.client.execute(&conn.upsert_many, &args).await {
        Ok(_) => Ok(()),
        Err(e) if is_row_error(&e) => Err(BatchError::Row),
        Err(e) => Err(BatchError::Batch(chain(&e))),
    }
}

/// The positions in `good` that are the last of their key, in order.
fn last_of_each_key(table: &Table, rows: &[Vec<Value>], good: &[usize]) -> Vec<usize> {
    let key = table.key_positions();
    let mut last: HashMap<String, usize> = HashMap::with_capacity(good.len());
    for (i, &p) in good.iter().enumerate() {
        // `Debug` tells values apart exactly (floats round-trip, text is escaped).
        let k: Vec<&Value> = key.iter().map(|&j| &rows[p][j]).collect();
        last.insert(format!("{k:?}"), i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| good[i]).collect()
}

/// One column of a batch, as the array `UNNEST` takes.
enum Array<'a> {
    Integer(Vec<Option<i64>>),
    Real(Vec<Option<f64>>),
    Text(Vec<Option<&'a str>>),
    Blob(Vec<Option<&'a [u8]>>),
    Boolean(Vec<Option<bool>>),
}

impl<'a> Array<'a> {
    /// The values (checked by `fits_declared` beforehand; anything else would be `NULL`).
    fn of(ty: ColumnType, values: impl Iterator<Item = &'a Value>) -> Self {
        match ty {
            ColumnType::Integer => Array::Integer(
                values
                    .map(|v| match v {
                        Value::Integer(i) => Some(*i),
                        _ => None,
                    })
                    .collect(),
            ),
            ColumnType::Real => Array::Real(
                values
                    .map(|v| match v {
                        Value::Real(r) => Some(*r),
                        #[allow(clippy::cast_precision_loss)]
                        Value::Integer(i) => Some(*i as f64),
                        _ => None,
                    })
                    .collect(),
            ),
            ColumnType::Text => Array::Text(
                values
                    .map(|v| match v {
                        Value::Text(t) => Some(t.as_str()),
                        _ => None,
                    })
                    .collect(),
            ),
            ColumnType::Blob => Array::Blob(
                values
                    .map(|v| match v {
                        Value::Blob(b) => Some(b.as_slice()),
                        _ => None,
                    })
                    .collect(),
            ),
            ColumnType::Boolean => Array::Boolean(
                values
                    .map(|v| match v {
                        Value::Bool(b) => Some(*b),
                        _ => None,
                    })
                    .collect(),
            ),
        }
    }

    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Array::Integer(v) => v,
            Array::Real(v) => v,
            Array::Text(v) => v,
            Array::Blob(v) => v,
            Array::Boolean(v) => v,
        }
    }
}

/// The rows at `good` in one transaction, each in its own savepoint: the failed ones are
/// returned with their reasons, the rest commits.
pub(super) async fn write_one_by_one(
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
