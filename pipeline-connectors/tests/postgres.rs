//! The PostgreSQL sink against the real server (`PIPELINE_TEST_POSTGRES`, default
//! `host=127.0.0.1 port=5432 user=postgres dbname=test`). These tests fail, never skip,
//! when the server is unreachable.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use pipeline_connectors::postgres::{PostgresOptions, PostgresSink};
use pipeline_connectors::table::{ColumnType, Table, ToRow, Value};
use pipeline_core::prelude::*;
use pipeline_core::sink::Sink;
use pipeline_core::{DeadLetter, RunReport};
use tokio_postgres::{Client, Config, NoTls};

fn url() -> String {
    std::env::var("PIPELINE_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// A table name no other run uses.
fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("pc_{test}_{}_{nanos}", std::process::id())
}

async fn admin() -> Client {
    let (client, conn) = Config::from_str(&url())
        .unwrap()
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the PostgreSQL test server at `{}` is unreachable: {e}",
                url()
            )
        });
    tokio::spawn(conn);
    client
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn drop_table(client: &Client, name: &str) {
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS \"{name}\""))
        .await
        .unwrap();
}

#[derive(Debug, Clone)]
struct Event {
    id: i64,
    carrier: &'static str,
    delay: Option<i64>,
}

impl ToRow for Event {
    fn to_row(&self) -> Vec<Value> {
        vec![self.id.into(), self.carrier.into(), self.delay.into()]
    }
}

fn e(id: i64, carrier: &'static str, delay: Option<i64>) -> Event {
    Event { id, carrier, delay }
}

fn events(name: &str) -> Table {
    Table::new(name)
        .column("id", ColumnType::Integer)
        .column("carrier", ColumnType::Text)
        .nullable("delay", ColumnType::Integer)
        .check("delay IS NULL OR delay > -1000")
        .key(["id"])
}

async fn run(name: &str, items: Vec<Event>) -> (RunReport, Vec<DeadLetter>) {
    let sink = PostgresOptions::new(&url(), events(name))
        .unwrap()
        .connect::<Event>()
        .await
        .unwrap();
    let (dead, letters) = sink::collect();
    let report = Pipeline::builder("pg")
        .source(source::iter(items))
        .sink(sink)
        .buffer(3) // small batches, so duplicates cross batch boundaries
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    assert!(report.is_balanced(), "{report:?}");
    (report, letters.take())
}

#[tokio::test]
async fn at_least_once_duplicates_make_no_duplicate_rows() {
    let admin = admin().await;
    let name = unique("dups");
    // Redelivered items, inside one batch and across batches.
    let input = vec![
        e(1, "UA", Some(3)),
        e(2, "AA", None),
        e(1, "UA", Some(3)),
        e(3, "B6", Some(-2)),
        e(2, "AA", None),
        e(1, "UA", Some(4)),
        e(4, "DL", Some(0)),
    ];
    let (report, letters) = run(&name, input.clone()).await;
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(report.delivered, 7);
    assert_eq!(
        count(&admin, &format!("SELECT count(*) FROM \"{name}\"")).await,
        4
    );
    // A re-run of the same input changes nothing.
    let (report, _) = run(&name, input).await;
    assert_eq!(report.delivered, 7);
    assert_eq!(
        count(&admin, &format!("SELECT count(*) FROM \"{name}\"")).await,
        4
    );
    assert_eq!(
        count(
            &admin,
            &format!("SELECT delay FROM \"{name}\" WHERE id = 1")
        )
        .await,
        4
    );
    drop_table(&admin, &name).await;
}

#[tokio::test]
async fn a_failed_row_is_dead_lettered_and_the_rest_commits() {
    let admin = admin().await;
    let name = unique("failed");
    let sink = PostgresOptions::new(&url(), events(&name))
        .unwrap()
        .connect::<Event>()
        .await
        .unwrap();
    let (dead, letters) = sink::collect();
    let report = Pipeline::builder("pg")
        .source(source::iter(vec![
            e(1, "UA", Some(1)),
            e(2, "AA", Some(-5000)), // CHECK violation
            e(3, "B6", Some(2)),
            e(4, "DL", Some(-9999)), // CHECK violation
            e(5, "EV", None),
        ]))
        .sink(sink)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    assert!(report.is_balanced());
    assert_eq!((report.delivered, report.dead_lettered), (3, 2));
    let letters = letters.take();
    assert_eq!(letters.len(), 2);
    let text = &letters[0].error;
    assert_eq!(letters[0].stage, "postgres");
    assert!(text.contains("2 of 5 rows failed"), "{text}");
    assert!(text.contains("(id=2)") && text.contains("(id=4)"), "{text}");
    assert!(text.contains("check constraint"), "{text}");
    assert_eq!(
        count(&admin, &format!("SELECT count(*) FROM \"{name}\"")).await,
        3
    );
    drop_table(&admin, &name).await;
}

#[tokio::test]
async fn a_value_of_the_wrong_type_fails_its_row_only() {
    let admin = admin().await;
    let name = unique("types");
    let mut sink = PostgresOptions::new(&url(), events(&name))
        .unwrap()
        .connect_with(|n: &i64| match n {
            2 => vec![Value::from("two"), "UA".into(), Value::Null], // text for BIGINT
            3 => vec![Value::from(3), Value::Null, Value::Null],     // NOT NULL
            _ => vec![(*n).into(), "UA".into(), Value::Null],
        })
        .await
        .unwrap();
    let err = sink.write(&mut vec![1, 2, 3, 4]).await.unwrap_err();
    assert_eq!(err.failed, Some(vec![1, 2]));
    let text = err.to_string();
    assert!(
        text.contains("column `id`: 'two' does not fit a int8 column"),
        "{text}"
    );
    assert!(
        text.contains("not-null constraint") || text.contains("null value"),
        "{text}"
    );
    assert_eq!(
        count(&admin, &format!("SELECT count(*) FROM \"{name}\"")).await,
        2
    );
    drop_table(&admin, &name).await;
}

#[tokio::test]
async fn a_broken_connection_fails_one_batch_and_the_next_write_reconnects() {
    let admin = admin().await;
    let name = unique("reconnect");
    let app = name.clone();
    let mut config = Config::from_str(&url()).unwrap();
    config.application_name(&app);
    let mut sink: PostgresSink<Event> = PostgresOptions::from_config(config, events(&name))
        .connect()
        .await
        .unwrap();
    sink.write(&mut vec![e(1, "UA", None)]).await.unwrap();

    let killed = count(
        &admin,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{app}'"
        ),
    )
    .await;
    assert_eq!(killed, 1);
    // Let the server close the socket.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    // Either the sink saw the connection closed and connected again before writing, or
    // the write found it broken: then the whole batch fails, naming the server, and the
    // next write connects again.
    let mut stored = 2;
    if let Err(err) = sink.write(&mut vec![e(2, "AA", None)]).await {
        assert_eq!(err.failed, None, "the whole batch fails: {err}");
        assert!(
            err.to_string()
                .starts_with("write failed: postgres sink: host="),
            "{err}"
        );
        stored = 1;
    }
    sink.write(&mut vec![e(3, "B6", None)]).await.unwrap();
    assert_eq!(
        count(&admin, &format!("SELECT count(*) FROM \"{name}\"")).await,
        stored + 1
    );
    drop_table(&admin, &name).await;
}

#[tokio::test]
async fn passwords_never_show() {
    // Trust authentication ignores the password, so this connects.
    let mut config = Config::from_str(&url()).unwrap();
    config.password("hunter2");
    let name = unique("secret");
    let options = PostgresOptions::from_config(config.clone(), events(&name));
    assert!(!format!("{options:?}").contains("hunter2"));
    let sink: PostgresSink<Event> = options.connect().await.unwrap();
    let debug = format!("{sink:?}");
    assert!(
        !debug.contains("hunter2") && debug.contains("host=127.0.0.1"),
        "{debug}"
    );

    // A server that is not there: a clear error naming the server, not the password.
    let err = PostgresOptions::new(
        "postgres://postgres:hunter2@127.0.0.1:1/test?connect_timeout=2",
        events(&name),
    )
    .unwrap()
    .connect::<Event>()
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(
            "postgres sink: cannot connect to host=127.0.0.1 port=1 user=postgres dbname=test"
        ),
        "{text}"
    );
    assert!(
        text.contains("refused"),
        "the cause is in the message: {text}"
    );
    assert!(
        !text.contains("hunter2") && !format!("{err:?}").contains("hunter2"),
        "{err:?}"
    );

    let err = PostgresOptions::new(
        "postgres://postgres:hunter2@127.0.0.1:notaport/test",
        events(&name),
    )
    .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    drop_table(&admin().await, &name).await;
}

#[tokio::test]
async fn a_connection_broken_during_a_write_fails_that_batch() {
    let admin = admin().await;
    let name = unique("midwrite");
    let app = name.clone();
    let mut config = Config::from_str(&url()).unwrap();
    config.application_name(&app);
    let mut sink: PostgresSink<Event> = PostgresOptions::from_config(config, events(&name))
        .connect()
        .await
        .unwrap();
    sink.write(&mut vec![e(1, "UA", None)]).await.unwrap();

    // Hold a lock so the next write waits inside its transaction, then kill its backend.
    let mut locker = self::admin().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute(&format!("LOCK TABLE \"{name}\" IN ACCESS EXCLUSIVE MODE"))
        .await
        .unwrap();
    let write = tokio::spawn(async move {
        let result = sink
            .write(&mut vec![e(2, "AA", None), e(3, "B6", None)])
            .await;
        (sink, result)
    });
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' AND wait_event_type = 'Lock'"
    );
    for _ in 0..500 {
        if count(&admin, &waiting).await == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        count(&admin, &waiting).await,
        1,
        "the write waits on the lock"
    );
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{app}'"
        ))
        .await
        .unwrap();
    let (mut sink, result) = write.await.unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.failed, None, "the whole batch fails: {err}");
    lock.rollback().await.unwrap();

    // The next write connects again.
    sink.write(&mut vec![e(4, "DL", None)]).await.unwrap();
    assert_eq!(
        count(&admin, &format!("SELECT count(*) FROM \"{name}\"")).await,
        2
    );
    drop_table(&admin, &name).await;
}

/// A throughput check: 50,000 rows in batches of up to 256. Opt-in (`-- --ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a throughput measurement, not a check"]
async fn bulk_load_throughput() {
    let admin = admin().await;
    let name = unique("bulk");
    let sink = PostgresOptions::new(&url(), events(&name))
        .unwrap()
        .connect::<Event>()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let report = Pipeline::builder("bulk")
        .source(source::iter((0..50_000).map(|i| e(i, "UA", Some(i % 100)))))
        .sink(sink)
        .run()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(report.delivered, 50_000);
    assert_eq!(
        count(&admin, &format!("SELECT count(*) FROM \"{name}\"")).await,
        50_000
    );
    println!(
        "50000 rows in {took:?} ({:.0} rows/s)",
        50_000.0 / took.as_secs_f64()
    );
    drop_table(&admin, &name).await;
}

fn every_type(name: &str) -> Table {
    Table::new(name)
        .column("id", ColumnType::Integer)
        .nullable("r", ColumnType::Real)
        .nullable("t", ColumnType::Text)
        .nullable("b", ColumnType::Blob)
        .nullable("f", ColumnType::Boolean)
        .key(["id"])
}

#[tokio::test]
async fn every_column_type_round_trips() {
    let admin = admin().await;
    let name = unique("types_rt");
    let mut sink = PostgresOptions::new(&url(), every_type(&name))
        .unwrap()
        .connect_with(|n: &i64| {
            if *n % 2 == 0 {
                vec![
                    (*n).into(),
                    Value::Real(*n as f64 + 0.5),
                    format!("it's \"{n}\"").into(),
                    Value::Blob(vec![0, 1, 255]),
                    (*n % 4 == 0).into(),
                ]
            } else {
                // An integer into a REAL column is converted; the rest are NULL.
                vec![
                    (*n).into(),
                    (*n).into(),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ]
            }
        })
        .await
        .unwrap();
    sink.write(&mut vec![1, 2, 3, 4]).await.unwrap();
    let rows = admin
        .query(
            &format!("SELECT id, r, t, b, f FROM \"{name}\" ORDER BY id"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    let r: Option<f64> = rows[0].get(1);
    let t: Option<String> = rows[0].get(2);
    assert_eq!((r, t), (Some(1.0), None));
    let r: Option<f64> = rows[1].get(1);
    let t: Option<String> = rows[1].get(2);
    let b: Option<Vec<u8>> = rows[1].get(3);
    let f: Option<bool> = rows[1].get(4);
    assert_eq!(r, Some(2.5));
    assert_eq!(t.as_deref(), Some("it's \"2\""));
    assert_eq!(b, Some(vec![0, 1, 255]));
    assert_eq!(f, Some(false));
    let f: Option<bool> = rows[3].get(4);
    assert_eq!(f, Some(true));
    drop_table(&admin, &name).await;
}

#[tokio::test]
async fn an_existing_table_with_narrower_types() {
    let admin = admin().await;
    let name = unique("existing");
    admin
        .batch_execute(&format!(
            "CREATE TABLE \"{name}\" (id INTEGER PRIMARY KEY, carrier VARCHAR(2) NOT NULL, delay SMALLINT)"
        ))
        .await
        .unwrap();
    let mut sink: PostgresSink<Event> = PostgresOptions::new(&url(), events(&name).assume_exists())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let err = sink
        .write(&mut vec![
            e(1, "UA", Some(5)),
            e(3_000_000_000, "AA", None), // beyond INTEGER: fails before the round trip
            e(2, "B6", Some(40_000)),     // beyond SMALLINT
            e(4, "TOO LONG", None),       // beyond VARCHAR(2): the database says so
        ])
        .await
        .unwrap_err();
    assert_eq!(err.failed, Some(vec![1, 2, 3]), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("column `id`") && text.contains("column `delay`"),
        "{text}"
    );
    assert!(text.contains("too long"), "{text}");
    assert_eq!(
        count(&admin, &format!("SELECT count(*) FROM \"{name}\"")).await,
        1
    );
    drop_table(&admin, &name).await;
}

#[tokio::test]
async fn a_key_only_table_ignores_duplicates() {
    let admin = admin().await;
    let name = unique("keys");
    let table = Table::new(&name)
        .column("carrier", ColumnType::Text)
        .column("day", ColumnType::Integer)
        .key(["carrier", "day"]);
    let mut sink = PostgresOptions::new(&url(), table)
        .unwrap()
        .connect_with(|(c, d): &(&'static str, i64)| vec![(*c).into(), (*d).into()])
        .await
        .unwrap();
    sink.write(&mut vec![("UA", 1), ("UA", 2), ("UA", 1), ("AA", 1)])
        .await
        .unwrap();
    sink.write(&mut vec![("UA", 2)]).await.unwrap();
    assert_eq!(
        count(&admin, &format!("SELECT count(*) FROM \"{name}\"")).await,
        3
    );
    drop_table(&admin, &name).await;
}

#[tokio::test]
async fn a_lazy_sink_connects_and_creates_the_table_on_its_first_write() {
    let admin = admin().await;
    let name = unique("lazy");
    // Unreachable: the write fails as a whole, naming the server.
    let mut down: PostgresSink<Event> = PostgresOptions::new(
        "host=127.0.0.1 port=1 user=postgres dbname=test connect_timeout=2",
        events(&name),
    )
    .unwrap()
    .lazy()
    .unwrap();
    let err = down.write(&mut vec![e(1, "UA", None)]).await.unwrap_err();
    assert_eq!(err.failed, None);
    assert!(
        err.to_string()
            .contains("cannot connect to host=127.0.0.1 port=1"),
        "{err}"
    );

    let mut sink: PostgresSink<Event> = PostgresOptions::new(&url(), events(&name))
        .unwrap()
        .lazy()
        .unwrap();
    let exists = format!("SELECT count(*) FROM pg_tables WHERE tablename = '{name}'");
    assert_eq!(count(&admin, &exists).await, 0);
    sink.write(&mut vec![e(1, "UA", None), e(2, "AA", Some(3))])
        .await
        .unwrap();
    assert_eq!(count(&admin, &exists).await, 1);
    assert_eq!(
        count(&admin, &format!("SELECT count(*) FROM \"{name}\"")).await,
        2
    );
    drop_table(&admin, &name).await;
}

#[tokio::test]
async fn a_bad_row_among_duplicates_is_found_row_by_row_in_order() {
    let admin = admin().await;
    let name = unique("dupbad");
    let mut sink: PostgresSink<Event> = PostgresOptions::new(&url(), events(&name))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Key 1 twice: the later copy violates the CHECK, so (applied in order) the earlier
    // one stays; key 2's later copy is good and wins.
    let err = sink
        .write(&mut vec![
            e(1, "UA", Some(1)),
            e(2, "AA", Some(2)),
            e(1, "UA", Some(-5000)),
            e(2, "AA", Some(20)),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.failed, Some(vec![2]), "{err}");
    let delays = admin
        .query(&format!("SELECT delay FROM \"{name}\" ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Option<i64>>(0))
        .collect::<Vec<_>>();
    assert_eq!(delays, vec![Some(1), Some(20)]);
    drop_table(&admin, &name).await;
}
