//! `--compare`: the same work written by hand, with no framework: read and parse the CSV
//! with the `csv` crate, validate, enrich, aggregate, and upsert into SQLite in batches of
//! 1,000 rows per transaction. It shares the row types and the validate / enrich /
//! aggregate functions with the pipeline, so only the plumbing differs.

use std::path::Path;

use pipeline_connectors::table::{Table, ToRow};
use pipeline_core::BoxError;

use crate::lookup::{Lookup, data_file, open_data};
use crate::model::{self, Daily, Enriched, Flight, Status};

/// What the loop did.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) rows: u64,
    pub(crate) flights: u64,
    pub(crate) cancelled: u64,
    pub(crate) malformed: u64,
    pub(crate) daily: u64,
}

const BATCH: usize = 1000;

/// Runs the loop over `dir`'s flights into a fresh SQLite file at `db`.
pub(crate) fn run(dir: &Path, lookup: &Lookup, db: &Path) -> Result<Counts, BoxError> {
    let path = data_file(dir, "flights.csv")?;
    let file = path.display().to_string();
    let mut reader = csv::ReaderBuilder::new().from_reader(open_data(&path)?);
    let mut conn = rusqlite::Connection::open(db)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let flights_table = model::flights_table("flights");
    let cancelled_table = model::flights_table("cancelled");
    let daily_table = model::daily_table("daily");
    for t in [&flights_table, &cancelled_table, &daily_table] {
        conn.execute_batch(&create_sql(t))?;
    }
    let mut counts = Counts::default();
    let mut daily = Daily::default();
    let mut flights: Vec<Enriched> = Vec::with_capacity(BATCH);
    let mut cancelled: Vec<Enriched> = Vec::with_capacity(BATCH);
    let mut record = csv::StringRecord::new();
    let headers = reader.headers()?.clone();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(_) => {
                // The csv crate cannot resynchronise after some errors; count and go on.
                counts.rows += 1;
                counts.malformed += 1;
                continue;
            }
        }
        counts.rows += 1;
        let line = record.position().map_or(0, |p| p.line());
        let mut flight: Flight = match record.deserialize(Some(&headers)) {
            Ok(f) => f,
            Err(_) => {
                counts.malformed += 1;
                continue;
            }
        };
        flight.line = line;
        let Ok(checked) = model::check(flight, &file) else {
            counts.malformed += 1;
            continue;
        };
        let enriched = lookup.enrich(checked);
        daily.add(&enriched);
        if enriched.status == Status::Cancelled {
            cancelled.push(enriched);
            if cancelled.len() == BATCH {
                counts.cancelled += insert(&mut conn, &cancelled_table, &mut cancelled)?;
            }
        } else {
            flights.push(enriched);
            if flights.len() == BATCH {
                counts.flights += insert(&mut conn, &flights_table, &mut flights)?;
            }
        }
    }
    counts.cancelled += insert(&mut conn, &cancelled_table, &mut cancelled)?;
    counts.flights += insert(&mut conn, &flights_table, &mut flights)?;
    let mut rows = daily.rows();
    counts.daily = insert(&mut conn, &daily_table, &mut rows)?;
    Ok(counts)
}

fn insert<T: ToRow>(
    conn: &mut rusqlite::Connection,
    table: &Table,
    rows: &mut Vec<T>,
) -> Result<u64, BoxError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(&upsert_sql(table))?;
        for row in rows.iter() {
            stmt.execute(rusqlite::params_from_iter(row.to_row().iter()))?;
        }
    }
    tx.commit()?;
    let n = rows.len() as u64;
    rows.clear();
    Ok(n)
}

/// The connectors keep their SQL to themselves, so the hand loop writes its own from the
/// table's public description.
fn create_sql(t: &Table) -> String {
    let columns: Vec<String> = t
        .columns()
        .iter()
        .map(|c| {
            let ty = match c.ty {
                pipeline_connectors::table::ColumnType::Integer
                | pipeline_connectors::table::ColumnType::Boolean => "INTEGER",
                pipeline_connectors::table::ColumnType::Real => "REAL",
                pipeline_connectors::table::ColumnType::Blob => "BLOB",
                _ => "TEXT",
            };
            format!(
                "\"{}\" {ty}{}",
                c.name,
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS \"{}\" ({}, PRIMARY KEY ({}))",
        t.name(),
        columns.join(", "),
        quoted(t.key_columns())
    )
}

fn upsert_sql(t: &Table) -> String {
    let names: Vec<String> = t.columns().iter().map(|c| c.name.clone()).collect();
    let params: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
    let set: Vec<String> = names
        .iter()
        .filter(|n| !t.key_columns().contains(n))
        .map(|n| format!("\"{n}\" = excluded.\"{n}\""))
        .collect();
    format!(
        "INSERT INTO \"{}\" ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
        t.name(),
        quoted(&names),
        params.join(", "),
        quoted(t.key_columns()),
        set.join(", ")
    )
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}
