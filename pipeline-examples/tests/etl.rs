//! The `etl` binary, run as a user runs it, on the committed sample
//! (`tests/data/`: 360 flights, 40 of them cancelled and 20 diverted, with the lookup rows
//! they need) and on corrupted copies of it, each into its own temporary database.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pipeline_core::RunReport;

const SAMPLE_ROWS: u64 = 360;
const SAMPLE_CANCELLED: i64 = 40;
const SAMPLE_DIVERTED: i64 = 20;

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("etl-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The sample's flights.csv, line by line (without line ends).
fn sample_lines() -> Vec<Vec<u8>> {
    let text = std::fs::read(sample_dir().join("flights.csv")).unwrap();
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn join(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

/// A data directory with the sample's lookup tables and `flights` as flights.csv.
fn data_with(dir: &Path, flights: &[u8]) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for name in ["airlines.csv", "planes.csv", "weather.csv"] {
        std::fs::copy(sample_dir().join(name), data.join(name)).unwrap();
    }
    std::fs::write(data.join("flights.csv"), flights).unwrap();
    data
}

/// What one run left behind.
struct Run {
    output: Output,
    report: RunReport,
    json: serde_json::Value,
    dead: Vec<serde_json::Value>,
    db: PathBuf,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn count(&self, sql: &str) -> i64 {
        let db = rusqlite::Connection::open(&self.db).unwrap();
        db.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// The dead letters' lines, from their `file:line:` messages.
    fn dead_lines(&self) -> Vec<u64> {
        self.dead
            .iter()
            .map(|d| {
                let error = d["error"].as_str().unwrap();
                let at = error.find("flights.csv:").expect(error) + "flights.csv:".len();
                let rest = &error[at..];
                rest[..rest.find(':').unwrap()].parse().unwrap()
            })
            .collect()
    }
}

fn etl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_etl"))
        .current_dir(dir)
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap()
}

/// Runs the binary on `data` into `dir/flights.db`, expecting success.
fn run(dir: &Path, data: &Path, extra: &[&str]) -> Run {
    let db = dir.join("flights.db");
    let dlq = dir.join("dlq.jsonl");
    let report = dir.join("report.json");
    let mut args = vec![
        "--data".to_owned(),
        data.display().to_string(),
        "--database".to_owned(),
        db.display().to_string(),
        "--dead-letters".to_owned(),
        dlq.display().to_string(),
        "--report-json".to_owned(),
        report.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = etl(dir, &args);
    assert!(
        output.status.success(),
        "etl failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let report: RunReport = serde_json::from_value(json["report"].clone()).unwrap();
    let dead = match std::fs::read_to_string(&dlq) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    let run = Run {
        output,
        report,
        json,
        dead,
        db,
    };
    // Every run: a balanced ledger, printed and in the JSON, and one dead letter per
    // dead-lettered item.
    assert!(run.report.is_balanced(), "{}", run.report);
    assert!(
        run.stdout().contains("ledger: balanced"),
        "{}",
        run.stdout()
    );
    assert_eq!(run.dead.len() as u64, run.report.dead_lettered);
    assert_eq!(
        run.report.emitted,
        run.report.delivered + run.report.dead_lettered
    );
    run
}

/// The row counts that must agree with the report on every run.
fn check_tables(run: &Run) {
    let flights = run.count("select count(*) from flights");
    let cancelled = run.count("select count(*) from cancelled");
    assert_eq!((flights + cancelled) as u64, run.report.delivered);
    assert_eq!(
        run.count("select coalesce(sum(flights), 0) from daily"),
        flights + cancelled
    );
    assert_eq!(
        run.count(
            "select count(*) from cancelled where status = 'cancelled' and reason is not null"
        ),
        cancelled
    );
    assert_eq!(
        run.count("select count(*) from flights where status = 'cancelled'"),
        0
    );
}

#[test]
fn the_sample_lands_in_sqlite_with_cancelled_and_diverted_flights_as_data() {
    let dir = scratch("sample");
    let run = run(&dir, &sample_dir(), &[]);
    assert_eq!(run.report.emitted, SAMPLE_ROWS);
    assert_eq!(run.report.delivered, SAMPLE_ROWS);
    assert_eq!(run.report.dead_lettered, 0);
    check_tables(&run);
    assert_eq!(
        run.count("select count(*) from cancelled"),
        SAMPLE_CANCELLED
    );
    assert_eq!(
        run.count(
            "select count(*) from flights where status = 'diverted' and reason like 'departed%'"
        ),
        SAMPLE_DIVERTED
    );
    assert_eq!(
        run.count("select sum(cancelled) from daily"),
        SAMPLE_CANCELLED
    );
    assert_eq!(
        run.count("select sum(diverted) from daily"),
        SAMPLE_DIVERTED
    );
    // Joins: every carrier has a name; planes and weather missing from the lookups are
    // nulls, not dropped rows.
    assert_eq!(
        run.count("select count(*) from flights where airline is null"),
        0
    );
    let no_plane = run.count(
        "select (select count(*) from flights where plane_model is null) \
              + (select count(*) from cancelled where plane_model is null)",
    );
    assert_eq!(no_plane, 81);
    let no_weather = run.count(
        "select (select count(*) from flights where temp is null and wind_speed is null) \
              + (select count(*) from cancelled where temp is null and wind_speed is null)",
    );
    assert_eq!(no_weather, 4);
    // The aggregates agree with the rows.
    assert_eq!(run.json["daily_rows"], 39);
    assert_eq!(run.count("select count(*) from daily"), 39);
    let max = run
        .count("select max(arr_delay) from flights where carrier = 'UA' and day = 1 and month = 1");
    assert_eq!(
        run.count("select max_arr_delay from daily where carrier = 'UA' and day = '2013-01-01'"),
        max
    );
    // What the user is told.
    let out = run.stdout();
    assert!(out.contains("pipeline `etl` ran"), "{out}");
    assert!(out.contains("try: sqlite3"), "{out}");
    assert!(out.contains("dead letters: 0"), "{out}");
}

#[test]
fn a_second_run_replaces_rows_instead_of_duplicating_them() {
    let dir = scratch("rerun");
    let first = run(&dir, &sample_dir(), &[]);
    let flights = first.count("select count(*) from flights");
    let second = run(&dir, &sample_dir(), &[]);
    assert_eq!(second.count("select count(*) from flights"), flights);
    assert_eq!(
        second.count("select count(*) from cancelled"),
        SAMPLE_CANCELLED
    );
    assert_eq!(
        second.count("select sum(flights) from daily"),
        SAMPLE_ROWS as i64
    );
}

/// The sample with `bad` put in after the 10th row: at line 12 of the file.
fn with_bad_row(bad: &[u8]) -> Vec<u8> {
    let mut lines = sample_lines();
    lines.insert(11, bad.to_vec());
    join(&lines)
}

fn one_dead_letter_at(name: &str, flights: &[u8], line: u64, what: &str) -> Run {
    let dir = scratch(name);
    let data = data_with(&dir, flights);
    let run = run(&dir, &data, &[]);
    assert_eq!(run.report.dead_lettered, 1, "{}", run.report);
    assert_eq!(run.report.delivered, SAMPLE_ROWS);
    assert_eq!(run.dead_lines(), vec![line]);
    let error = run.dead[0]["error"].as_str().unwrap();
    assert!(error.contains(what), "{error}");
    check_tables(&run);
    run
}

#[test]
fn broken_quoting_costs_one_dead_letter() {
    let bad = b"2013,1,1,600,600,0,800,800,0,\"UA,1,N1,EWR,IAH,100,1000,6,0,2013-01-01T11:00:00Z";
    let run = one_dead_letter_at("quoting", &with_bad_row(bad), 12, "quot");
    assert_eq!(run.dead[0]["stage"], "parse");
}

#[test]
fn a_rerun_replaces_the_dead_letter_file() {
    let bad = b"2013,1,1,600,600,0,800,800,0,UA,1,N1,EWR,IAH,100,1000,6,0";
    let dir = scratch("rerun-dlq");
    let data = data_with(&dir, &with_bad_row(bad));
    run(&dir, &data, &[]);
    let second = run(&dir, &data, &[]);
    assert_eq!(second.dead_lines(), vec![12]);
}

#[test]
fn compare_runs_the_hand_written_loop_on_the_same_rows() {
    let dir = scratch("compare");
    let run = run(&dir, &sample_dir(), &["--compare"]);
    let out = run.stdout();
    assert!(
        out.contains(
            "hand-written loop: 360 rows (320 flights, 40 cancelled, 0 malformed, 39 daily)"
        ),
        "{out}"
    );
    assert!(out.contains("pipeline / hand-written:"), "{out}");
    let hand = rusqlite::Connection::open(dir.join("flights.hand.db")).unwrap();
    let count = |sql: &str| -> i64 { hand.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("select count(*) from flights"),
        run.count("select count(*) from flights")
    );
    assert_eq!(count("select count(*) from cancelled"), SAMPLE_CANCELLED);
    assert_eq!(
        count("select cast(round(sum(mean_arr_delay * 1000)) as integer) from daily"),
        run.count("select cast(round(sum(mean_arr_delay * 1000)) as integer) from daily")
    );
}

#[test]
fn invalid_utf8_is_a_dead_letter() {
    let bad =
        b"2013,1,1,600,600,0,800,800,0,U\xff\xfe,1,N1,EWR,IAH,100,1000,6,0,2013-01-01T11:00:00Z";
    one_dead_letter_at("utf8", &with_bad_row(bad), 12, "UTF-8");
}

#[test]
fn a_10_mb_field_is_a_dead_letter_not_a_10_mb_allocation_per_row() {
    let mut bad = b"2013,1,1,600,600,0,800,800,0,UA,1,".to_vec();
    bad.extend(std::iter::repeat_n(b'N', 10 << 20));
    bad.extend_from_slice(b",EWR,IAH,100,1000,6,0,2013-01-01T11:00:00Z");
    let run = one_dead_letter_at("huge", &with_bad_row(&bad), 12, "long");
    // The dead letter does not carry the field.
    assert!(run.dead[0].to_string().len() < 10_000);
}

#[test]
fn a_row_with_missing_columns_is_a_dead_letter() {
    one_dead_letter_at("short", &with_bad_row(b"2013,1,1,600,600"), 12, "field");
}

#[test]
fn an_impossible_value_is_dead_lettered_by_the_validate_stage() {
    let bad = b"2013,13,1,600,600,0,800,800,0,UA,1,N1,EWR,IAH,100,1000,6,0,2013-01-01T11:00:00Z";
    let run = one_dead_letter_at("month", &with_bad_row(bad), 12, "month 13");
    assert_eq!(run.dead[0]["stage"], "validate");
}

#[test]
fn a_truncated_last_row_is_a_dead_letter() {
    let mut text = join(&sample_lines());
    // Cut the last row in half, with no line end.
    text.truncate(text.len() - 40);
    let dir = scratch("truncated");
    let data = data_with(&dir, &text);
    let run = run(&dir, &data, &[]);
    assert_eq!(run.report.emitted, SAMPLE_ROWS);
    assert_eq!(run.report.dead_lettered, 1);
    assert_eq!(run.dead_lines(), vec![SAMPLE_ROWS + 1]);
    check_tables(&run);
}

#[test]
fn a_header_without_a_column_dead_letters_every_row() {
    let lines = sample_lines();
    // Drop `carrier` (the 10th column) from the header and every row.
    let dropped: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| {
            let mut fields: Vec<&[u8]> = l.split(|b| *b == b',').collect();
            fields.remove(9);
            fields.join(&b","[..])
        })
        .collect();
    let dir = scratch("nocolumn");
    let data = data_with(&dir, &join(&dropped));
    let run = run(&dir, &data, &[]);
    assert_eq!(run.report.emitted, SAMPLE_ROWS);
    assert_eq!(run.report.dead_lettered, SAMPLE_ROWS);
    assert_eq!(run.dead_lines(), (2..=SAMPLE_ROWS + 1).collect::<Vec<_>>());
    assert!(run.dead[0]["error"].as_str().unwrap().contains("carrier"));
    check_tables(&run);
    assert_eq!(run.count("select count(*) from flights"), 0);
}

#[test]
fn an_empty_file_is_an_empty_run() {
    let dir = scratch("empty");
    let data = data_with(&dir, b"");
    let run = run(&dir, &data, &[]);
    assert_eq!(run.report.emitted, 0);
    check_tables(&run);
    assert_eq!(run.count("select count(*) from daily"), 0);
}

#[test]
fn a_missing_data_directory_fails_with_a_message() {
    let dir = scratch("nodata");
    let output = etl(&dir, &["--data", "no/such/dir"]);
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("no/such/dir"), "{err}");
}

#[test]
fn graph_prints_the_topology() {
    let dir = scratch("graph");
    let output = etl(&dir, &["--graph"]);
    assert!(output.status.success());
    let out = String::from_utf8_lossy(&output.stdout);
    for node in [
        "flowchart",
        "csv",
        "parse",
        "validate",
        "enrich",
        "aggregate",
        "route",
        "cancelled",
        "flights",
        "dead_letter",
    ] {
        assert!(out.contains(node), "{node} missing in {out}");
    }
    // It opened no database.
    assert!(!dir.join("target").exists());
}

/// The local PostgreSQL server (trust auth). This test fails, never skips, when it is
/// unreachable.
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

#[test]
fn the_sample_lands_in_postgres_through_the_same_code() {
    let dir = scratch("postgres");
    let prefix = format!("etl_test_{}_", std::process::id());
    let run = run(
        &dir,
        &sample_dir(),
        &["--database-url", POSTGRES, "--table-prefix", &prefix],
    );
    assert_eq!(run.report.delivered, SAMPLE_ROWS);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(POSTGRES, tokio_postgres::NoTls)
            .await
            .expect("the PostgreSQL server at 127.0.0.1:5432 must be running");
        tokio::spawn(conn);
        let count = |sql: String| {
            let client = &client;
            async move { client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        let flights = count(format!("select count(*) from {prefix}flights")).await;
        let cancelled = count(format!("select count(*) from {prefix}cancelled")).await;
        let diverted = count(format!(
            "select count(*) from {prefix}flights where status = 'diverted'"
        ))
        .await;
        let daily = count(format!("select sum(flights)::int8 from {prefix}daily")).await;
        for table in ["flights", "cancelled", "daily"] {
            client
                .batch_execute(&format!("drop table if exists {prefix}{table}"))
                .await
                .unwrap();
        }
        assert_eq!(flights, SAMPLE_ROWS as i64 - SAMPLE_CANCELLED);
        assert_eq!(cancelled, SAMPLE_CANCELLED);
        assert_eq!(diverted, SAMPLE_DIVERTED);
        assert_eq!(daily, SAMPLE_ROWS as i64);
    });
}
