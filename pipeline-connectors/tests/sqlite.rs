//! The SQLite sink in real pipelines against real database files.
#![cfg(all(feature = "sqlite", feature = "csv"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use pipeline_connectors::csv::CsvSource;
use pipeline_connectors::record::parsed;
use pipeline_connectors::sqlite::{Journal, SqliteOptions, SqliteSink, Synchronous};
use pipeline_connectors::table::{ColumnType, Table, ToRow, Value};
use pipeline_core::prelude::*;
use pipeline_core::{DeadLetter, RunReport};

#[derive(Debug, Clone, serde::Deserialize)]
struct Flight {
    year: i32,
    month: i32,
    day: i32,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    dep_delay: Option<i32>,
    carrier: String,
    flight: i32,
    origin: String,
    dest: String,
}

impl ToRow for Flight {
    fn to_row(&self) -> Vec<Value> {
        vec![
            self.year.into(),
            self.month.into(),
            self.day.into(),
            self.carrier.as_str().into(),
            self.flight.into(),
            self.origin.as_str().into(),
            self.dest.as_str().into(),
            self.dep_delay.into(),
        ]
    }
}

fn flights_table() -> Table {
    Table::new("flights")
        .column("year", ColumnType::Integer)
        .column("month", ColumnType::Integer)
        .column("day", ColumnType::Integer)
        .column("carrier", ColumnType::Text)
        .column("flight", ColumnType::Integer)
        .column("origin", ColumnType::Text)
        .column("dest", ColumnType::Text)
        .nullable("dep_delay", ColumnType::Integer)
        .key(["year", "month", "day", "carrier", "flight", "origin"])
}

/// A fresh directory per test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pipeline-connectors-sqlite-{}-{test}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn count(path: &std::path::Path, sql: &str) -> i64 {
    let db = rusqlite::Connection::open(path).unwrap();
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

async fn load_sample(db: &std::path::Path) -> RunReport {
    let csv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/flights_sample.csv");
    let sink = SqliteOptions::new(db, flights_table())
        .journal(Journal::Wal)
        .synchronous(Synchronous::Normal)
        .open::<Flight>()
        .unwrap();
    let report = Pipeline::builder("load")
        .source(CsvSource::<Flight>::open(csv).unwrap())
        .stage(parsed())
        .sink(sink)
        .run()
        .await
        .unwrap();
    assert!(report.is_balanced());
    report
}

#[tokio::test]
async fn a_rerun_does_not_duplicate_rows() {
    let dir = scratch("rerun");
    let db = dir.join("etl.db");
    let first = load_sample(&db).await;
    assert_eq!(first.delivered, 34);
    assert_eq!(count(&db, "SELECT count(*) FROM flights"), 34);
    let second = load_sample(&db).await;
    assert_eq!(second.delivered, 34);
    assert_eq!(count(&db, "SELECT count(*) FROM flights"), 34);
    assert_eq!(
        count(&db, "SELECT count(*) FROM flights WHERE dep_delay IS NULL"),
        0
    );
    let wal: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(wal, "wal");
}

#[derive(Debug, Clone)]
struct Tally {
    carrier: &'static str,
    day: &'static str,
    flights: Option<i64>,
}

impl ToRow for Tally {
    fn to_row(&self) -> Vec<Value> {
        vec![self.carrier.into(), self.day.into(), self.flights.into()]
    }
}

fn tally_table() -> Table {
    Table::new("daily")
        .column("carrier", ColumnType::Text)
        .column("day", ColumnType::Text)
        .column("flights", ColumnType::Integer)
        .check("flights >= 0")
        .key(["carrier", "day"])
}

async fn write(db: &std::path::Path, rows: Vec<Tally>) -> (RunReport, Vec<DeadLetter>) {
    let (dead, letters) = sink::collect();
    let report = Pipeline::builder("tally")
        .source(source::iter(rows))
        .sink(SqliteSink::open(db, tally_table()).unwrap())
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    assert!(report.is_balanced());
    (report, letters.take())
}

fn t(carrier: &'static str, day: &'static str, flights: Option<i64>) -> Tally {
    Tally {
        carrier,
        day,
        flights,
    }
}

#[tokio::test]
async fn duplicates_within_a_batch_keep_the_last() {
    let dir = scratch("dups");
    let db = dir.join("d.db");
    let rows = vec![
        t("UA", "2013-01-01", Some(1)),
        t("AA", "2013-01-01", Some(5)),
        t("UA", "2013-01-01", Some(2)),
        t("UA", "2013-01-01", Some(3)),
    ];
    let (report, letters) = write(&db, rows).await;
    assert!(letters.is_empty());
    assert_eq!(report.delivered, 4);
    assert_eq!(count(&db, "SELECT count(*) FROM daily"), 2);
    assert_eq!(
        count(&db, "SELECT flights FROM daily WHERE carrier = 'UA'"),
        3
    );
}

#[tokio::test]
async fn a_failing_row_is_dead_lettered_and_the_rest_commits() {
    let dir = scratch("failing");
    let db = dir.join("f.db");
    let rows = vec![
        t("UA", "2013-01-01", Some(1)),
        t("AA", "2013-01-01", None),     // NOT NULL
        t("B6", "2013-01-01", Some(-4)), // CHECK
        t("DL", "2013-01-01", Some(7)),
    ];
    let (report, letters) = write(&db, rows).await;
    assert_eq!((report.delivered, report.dead_lettered), (2, 2));
    assert_eq!(count(&db, "SELECT count(*) FROM daily"), 2);
    assert_eq!(letters.len(), 2);
    let text = &letters[0].error;
    assert_eq!(letters[0].stage, "sqlite");
    assert!(
        text.contains("2 of 4 rows failed in table `daily`"),
        "{text}"
    );
    assert!(
        text.contains("carrier='AA'") && text.contains("NOT NULL"),
        "{text}"
    );
    assert!(
        text.contains("carrier='B6'") && text.contains("CHECK"),
        "{text}"
    );
}

#[tokio::test]
async fn a_row_of_the_wrong_width_fails_alone() {
    let dir = scratch("width");
    let db = dir.join("w.db");
    let (dead, letters) = sink::collect();
    let sink = SqliteOptions::new(&db, tally_table())
        .open_with(|n: &i64| {
            if *n == 2 {
                vec![Value::from("UA")]
            } else {
                vec!["UA".into(), format!("day {n}").into(), (*n).into()]
            }
        })
        .unwrap();
    let report = Pipeline::builder("width")
        .source(source::iter(1..=3i64))
        .sink(sink)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    assert_eq!((report.delivered, report.dead_lettered), (2, 1));
    assert!(letters.take()[0].error.contains("the row has 1 values"));
    assert_eq!(count(&db, "SELECT count(*) FROM daily"), 2);
}

#[tokio::test]
async fn setup_errors_are_clear() {
    let dir = scratch("setup");
    let err = SqliteSink::<Tally>::open(dir.join("no/such/dir/x.db"), tally_table()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("sqlite sink: cannot open `") && text.contains("x.db"),
        "{text}"
    );

    let no_key = Table::new("t").column("a", ColumnType::Text);
    let err = SqliteSink::<Tally>::open(dir.join("k.db"), no_key).unwrap_err();
    assert!(err.to_string().contains("has no key"), "{err}");

    // An existing table without a unique index on the key: the upsert cannot work.
    let path = dir.join("e.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE daily (carrier TEXT, day TEXT, flights INTEGER)")
        .unwrap();
    let err = SqliteSink::<Tally>::open(&path, tally_table()).unwrap_err();
    assert!(err.to_string().contains("prepare the upsert"), "{err}");
}

/// The whole nycflights13 `flights.csv` (336,776 rows) into SQLite: a throughput check
/// for the ETL example. Opt-in: `FLIGHTS_CSV=/path/to/flights.csv cargo test -p
/// pipeline-connectors --features csv,sqlite --test sqlite -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs FLIGHTS_CSV (the unzipped nycflights13 flights.csv)"]
async fn full_flights_load() {
    let csv = std::env::var("FLIGHTS_CSV").expect("FLIGHTS_CSV names the unzipped flights.csv");
    let dir = scratch("full");
    let db = dir.join("flights.db");
    let sink = SqliteOptions::new(&db, flights_table())
        .journal(Journal::Wal)
        .synchronous(Synchronous::Normal)
        .open::<Flight>()
        .unwrap();
    let started = std::time::Instant::now();
    let report = Pipeline::builder("load")
        .source(CsvSource::<Flight>::open(csv).unwrap())
        .stage(parsed())
        .sink(sink)
        .run()
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(report.is_balanced());
    assert_eq!(report.emitted, 336_776);
    let rows = count(&db, "SELECT count(*) FROM flights");
    println!(
        "{} rows emitted, {} delivered, {} dead-lettered, {rows} stored, in {took:?} ({:.0} rows/s)",
        report.emitted,
        report.delivered,
        report.dead_lettered,
        report.emitted as f64 / took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_share_one_database_file() {
    let dir = scratch("shared");
    let db = dir.join("shared.db");
    let table = |name: &str| {
        Table::new(name)
            .column("id", ColumnType::Integer)
            .column("v", ColumnType::Text)
            .key(["id"])
    };
    let open = |name: &str| {
        SqliteOptions::new(&db, table(name))
            .journal(Journal::Wal)
            .synchronous(Synchronous::Normal)
            .open_with(|n: &i64| vec![(*n).into(), format!("v{n}").into()])
            .unwrap()
    };
    let (first, second) = (open("first"), open("second"));
    let (dead, letters) = sink::collect();
    let report = Pipeline::builder("shared")
        .source(source::iter(0..20_000i64))
        .tee(|branch| branch.sink(second))
        .sink(first)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    assert!(report.is_balanced());
    assert!(letters.take().is_empty());
    assert_eq!(report.delivered, 20_000);
    assert_eq!(count(&db, "SELECT count(*) FROM first"), 20_000);
    assert_eq!(count(&db, "SELECT count(*) FROM second"), 20_000);
}

#[tokio::test]
async fn every_column_type_round_trips_and_a_key_only_table() {
    let dir = scratch("types");
    let db = dir.join("t.db");
    let table = Table::new("every")
        .column("id", ColumnType::Integer)
        .nullable("r", ColumnType::Real)
        .nullable("t", ColumnType::Text)
        .nullable("b", ColumnType::Blob)
        .nullable("f", ColumnType::Boolean)
        .key(["id"]);
    let mut sink = SqliteOptions::new(&db, table)
        .open_with(|n: &i64| {
            vec![
                (*n).into(),
                Value::Real(0.25),
                "it's".into(),
                Value::Blob(vec![9, 0]),
                true.into(),
            ]
        })
        .unwrap();
    pipeline_core::sink::Sink::write(&mut sink, &mut vec![1, 1, 2])
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let row: (f64, String, Vec<u8>, bool) = conn
        .query_row("SELECT r, t, b, f FROM every WHERE id = 2", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!(row, (0.25, "it's".to_string(), vec![9, 0], true));
    assert_eq!(count(&db, "SELECT count(*) FROM every"), 2);

    // Every column in the key: duplicates are ignored (`DO NOTHING`).
    let keys = Table::new("seen")
        .column("id", ColumnType::Text)
        .key(["id"]);
    let mut sink = SqliteOptions::new(&db, keys)
        .open_with(|s: &&str| vec![(*s).into()])
        .unwrap();
    pipeline_core::sink::Sink::write(&mut sink, &mut vec!["a", "b", "a"])
        .await
        .unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM seen"), 2);
}
