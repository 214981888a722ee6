//! CSV and JSON lines sources in real pipelines, on the committed sample files and on
//! each corrupted variant.
#![cfg(all(feature = "csv", feature = "jsonl"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use pipeline_connectors::csv::{CsvOptions, CsvSource};
use pipeline_connectors::jsonl::JsonlSource;
use pipeline_connectors::record::parsed;
use pipeline_core::prelude::*;
use pipeline_core::source::Source;
use pipeline_core::{DeadLetter, RunReport};

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
struct Flight {
    year: u16,
    month: u8,
    day: u8,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    dep_time: Option<u32>,
    #[serde(deserialize_with = "pipeline_connectors::csv::na")]
    arr_delay: Option<i32>,
    carrier: String,
    flight: u32,
    tailnum: String,
    origin: String,
    dest: String,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct Leg {
    carrier: String,
    flight: u32,
    origin: String,
    dest: String,
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Runs source -> parsed -> collect; returns (rows, dead letters, report).
async fn run<S, T>(source: S) -> (Vec<T>, Vec<DeadLetter>, RunReport)
where
    S: Source<Item = pipeline_connectors::record::Record<T>>,
    T: Clone + Send + Sync + 'static,
{
    let (sink, out) = sink::collect();
    let (dead, letters) = sink::collect();
    let report = Pipeline::builder("files")
        .source(source)
        .stage(parsed())
        .sink(sink)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    assert!(report.is_balanced(), "{report:?}");
    (out.take(), letters.take(), report)
}

async fn run_csv(name: &str) -> (Vec<Flight>, Vec<DeadLetter>, RunReport) {
    run(CsvSource::<Flight>::open(data(name)).unwrap()).await
}

/// (line, error text) of each dead letter, sorted by line.
fn lines(letters: &[DeadLetter]) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = letters
        .iter()
        .map(|d| {
            assert_eq!(d.stage, "parse");
            // "<path>:<line>: message"
            let after = d
                .error
                .split(".csv:")
                .nth(1)
                .or_else(|| d.error.split(".jsonl:").nth(1));
            let after = after.unwrap_or_else(|| panic!("no file:line in {}", d.error));
            let line = after.split(':').next().unwrap().parse().unwrap();
            (line, d.error.clone())
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn sample_reads_every_row_with_na_values() {
    let (rows, letters, report) = run_csv("flights_sample.csv").await;
    assert_eq!(rows.len(), 34);
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(report.emitted, 34);
    assert_eq!(report.delivered, 34);
    assert_eq!(rows[0].carrier, "UA");
    assert_eq!(rows[0].dep_time, Some(517));
    assert_eq!(rows.iter().filter(|f| f.arr_delay.is_none()).count(), 4);
}

#[tokio::test]
async fn line_numbers_are_kept() {
    let mut source = CsvSource::<Flight>::open(data("flights_sample.csv")).unwrap();
    let first = source.pull(3).await.unwrap().unwrap().items;
    assert_eq!(
        first.iter().map(|r| r.line).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
}

#[tokio::test]
async fn broken_quoting_costs_one_dead_letter() {
    let (rows, letters, report) = run_csv("broken_quoting.csv").await;
    let bad = lines(&letters);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, 4);
    assert!(
        bad[0].1.contains("quoted field is not closed"),
        "{}",
        bad[0].1
    );
    assert_eq!(rows.len(), 9);
    assert_eq!((report.emitted, report.dead_lettered), (10, 1));
}

#[tokio::test]
async fn broken_quoting_closed_later_resynchronises() {
    // Line 3 opens a quote that line 5 "closes": the merged record has the wrong field
    // count, so line 3 is reported and lines 4 and 5 are read again on their own (line 5
    // has a field too many by itself).
    let text = "a,b,c\n1,2,3\n4,\"5,6\n7,8,9\n10,11\",12,x\n13,14,15\n";
    let source = CsvOptions::new().open_reader::<Vec<String>>("t.csv", std::io::Cursor::new(text));
    let (rows, letters, _) = run(source).await;
    let bad = lines(&letters);
    assert_eq!(
        bad.iter().map(|b| b.0).collect::<Vec<_>>(),
        vec![3, 5],
        "{bad:?}"
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
}

#[tokio::test]
async fn a_quoted_field_may_span_lines() {
    let text = "a,b\n1,\"two\nlines\"\n3,4\n";
    let source = CsvOptions::new().open_reader::<Vec<String>>("t.csv", std::io::Cursor::new(text));
    let (rows, letters, _) = run(source).await;
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(
        rows,
        vec![
            vec!["1".to_string(), "two\nlines".into()],
            vec!["3".into(), "4".into()]
        ]
    );
}

#[tokio::test]
async fn invalid_utf8_is_a_dead_letter() {
    let (rows, letters, _) = run_csv("invalid_utf8.csv").await;
    let bad = lines(&letters);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, 5);
    assert!(
        bad[0].1.contains("field 12 (`tailnum`): invalid UTF-8"),
        "{}",
        bad[0].1
    );
    assert_eq!(rows.len(), 9);
}

#[tokio::test]
async fn missing_columns_are_a_dead_letter() {
    let (rows, letters, _) = run_csv("missing_columns.csv").await;
    let bad = lines(&letters);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, 6);
    assert!(
        bad[0].1.contains("expected 19 fields, found 9"),
        "{}",
        bad[0].1
    );
    assert_eq!(rows.len(), 9);
}

#[tokio::test]
async fn truncated_last_row_is_a_dead_letter() {
    let (rows, letters, _) = run_csv("truncated.csv").await;
    let bad = lines(&letters);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, 11);
    assert_eq!(rows.len(), 9);
}

#[tokio::test]
async fn empty_and_header_only_files_have_no_rows() {
    for name in ["empty.csv", "header_only.csv"] {
        let (rows, letters, report) = run_csv(name).await;
        assert!(rows.is_empty() && letters.is_empty(), "{name}");
        assert_eq!(report.emitted, 0, "{name}");
    }
}

#[tokio::test]
async fn a_10_mb_field_is_bounded_and_skipped() {
    let dir = std::env::temp_dir().join(format!("pipeline-connectors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("huge_field.csv");
    let sample = std::fs::read_to_string(data("flights_sample.csv")).unwrap();
    let mut lines_in: Vec<String> = sample.lines().take(6).map(String::from).collect();
    // Line 4: a 10 MB tailnum, once unquoted and once (line 6) quoted.
    let huge = "N".repeat(10 << 20);
    let mut fields: Vec<String> = lines_in[3].split(',').map(String::from).collect();
    fields[11] = huge.clone();
    lines_in[3] = fields.join(",");
    fields[11] = format!("\"{huge}\"");
    lines_in[5] = fields.join(",");
    std::fs::write(&path, lines_in.join("\n") + "\n").unwrap();

    let (rows, letters, _) = run(CsvSource::<Flight>::open(&path).unwrap()).await;
    let bad = lines(&letters);
    assert_eq!(
        bad.iter().map(|b| b.0).collect::<Vec<_>>(),
        vec![4, 6],
        "{bad:?}"
    );
    assert!(bad[0].1.contains("longer than the limit"), "{}", bad[0].1);
    assert!(bad[0].1.len() < 1000, "the error must not carry the field");
    assert_eq!(rows.len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_missing_file_is_a_clear_error() {
    let err = CsvSource::<Flight>::open(data("no-such.csv")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("csv source: cannot open `") && text.contains("no-such.csv"),
        "{text}"
    );
}

#[tokio::test]
async fn without_headers_rows_deserialize_by_position() {
    let text = "UA;1545\nAA;x\nB6;725\n";
    let source = CsvOptions::new()
        .delimiter(b';')
        .has_headers(false)
        .open_reader::<(String, u32)>("pos.csv", std::io::Cursor::new(text));
    let (rows, letters, _) = run(source).await;
    assert_eq!(
        rows,
        vec![("UA".to_string(), 1545), ("B6".to_string(), 725)]
    );
    let bad = lines(&letters);
    assert_eq!(bad[0].0, 2);
    assert!(bad[0].1.contains("field 2: invalid digit"), "{}", bad[0].1);
}

#[tokio::test]
async fn jsonl_sample_and_corrupted_lines() {
    let (rows, letters, report) =
        run(JsonlSource::<Leg>::open(data("flights_sample.jsonl")).unwrap()).await;
    assert_eq!(rows.len(), 10);
    assert!(letters.is_empty());
    assert_eq!(report.delivered, 10);

    let (rows, letters, report) =
        run(JsonlSource::<Leg>::open(data("corrupted.jsonl")).unwrap()).await;
    let bad = lines(&letters);
    assert_eq!(
        bad.iter().map(|b| b.0).collect::<Vec<_>>(),
        vec![3, 6, 8, 11],
        "{bad:?}"
    );
    assert!(bad[1].1.contains("invalid UTF-8"), "{}", bad[1].1);
    assert!(bad[2].1.contains("missing field `flight`"), "{}", bad[2].1);
    assert_eq!(rows.len(), 6);
    assert_eq!(report.emitted, 10);
}

#[tokio::test]
async fn jsonl_oversized_line_is_bounded() {
    let mut text =
        String::from("{\"carrier\":\"UA\",\"flight\":1,\"origin\":\"EWR\",\"dest\":\"IAH\"}\n");
    text.push_str(&format!("{{\"carrier\":\"{}\"}}\n", "x".repeat(3 << 20)));
    text.push_str("{\"carrier\":\"AA\",\"flight\":2,\"origin\":\"JFK\",\"dest\":\"MIA\"}");
    let source = pipeline_connectors::jsonl::JsonlOptions::new()
        .max_line_bytes(1 << 20)
        .open_reader::<Leg>("big.jsonl", std::io::Cursor::new(text));
    let (rows, letters, _) = run(source).await;
    assert_eq!(rows.len(), 2);
    let bad = lines(&letters);
    assert_eq!(bad[0].0, 2);
    assert!(bad[0].1.contains("longer than the limit"));
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct Pair {
    a: u32,
    b: String,
}

#[tokio::test]
async fn a_byte_order_mark_and_crlf_line_ends_are_read() {
    let text = "\u{feff}a,b\r\n1,\"x\r\ny\"\r\n\r\n2,z\r\n";
    let source = CsvOptions::new().open_reader::<Pair>("bom.csv", std::io::Cursor::new(text));
    let (rows, letters, _) = run(source).await;
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(
        rows,
        vec![
            Pair {
                a: 1,
                b: "x\ny".into()
            },
            Pair {
                a: 2,
                b: "z".into()
            }
        ]
    );
}

#[tokio::test]
async fn a_bad_header_fails_the_source_not_the_process() {
    let text = "a,\"b\n1,2\n";
    let source = CsvOptions::new().open_reader::<Pair>("hdr.csv", std::io::Cursor::new(text));
    let (rows, letters, report) = run(source).await;
    assert!(rows.is_empty() && letters.is_empty());
    assert_eq!(report.emitted, 0);
    // Not silent: the source's row counts the failure.
    let source = report.stages.iter().find(|s| s.name == "csv").unwrap();
    assert_eq!(source.errors, 1, "{report:?}");
}

#[tokio::test]
async fn dead_letters_can_carry_the_row_as_json() {
    let (sink, _out) = sink::collect::<Flight>();
    let (dead, letters) = sink::collect();
    Pipeline::builder("json")
        .source(CsvSource::<Flight>::open(data("missing_columns.csv")).unwrap())
        .stage(pipeline_core::stage::show_items_as_json(parsed()))
        .sink(sink)
        .dead_letter(dead)
        .run()
        .await
        .unwrap();
    let letters = letters.take();
    assert_eq!(letters.len(), 1);
    let item = letters[0].item.as_ref().unwrap();
    assert_eq!(item["line"], 6);
    assert_eq!(item["error"]["kind"], "field_count");
    assert!(
        item["error"]["snippet"]
            .as_str()
            .unwrap()
            .starts_with("2013,1,1,")
    );
}
