//! Property tests ("fuzzing") of the CSV and JSON lines decoders: arbitrary bytes never
//! panic and always end; every line gets exactly one item, or is blank, or belongs to a
//! record that started on an earlier line.
#![cfg(all(feature = "csv", feature = "jsonl"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pipeline_connectors::csv::CsvOptions;
use pipeline_connectors::jsonl::JsonlOptions;
use pipeline_connectors::record::Record;
use pipeline_core::source::Source;
use proptest::prelude::*;

/// Pulls everything; `Err`s (a header that cannot be read) are counted, not fatal.
fn drain<S: Source<Item = Record<T>>, T>(mut source: S) -> (Vec<Record<T>>, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut items = Vec::new();
        let mut errors = 0;
        loop {
            match source.pull(7).await {
                Ok(Some(pulled)) => items.extend(pulled.items),
                Ok(None) => break,
                Err(_) => {
                    errors += 1;
                    assert!(errors < 3, "a failed source must end");
                }
            }
        }
        (items, errors)
    })
}

/// The physical lines as the decoders see them (`\n`-separated, a last line without one
/// included), and whether each is blank.
fn lines(input: &[u8], blank: impl Fn(&[u8]) -> bool) -> Vec<bool> {
    let mut out: Vec<bool> = input.split(|&b| b == b'\n').map(&blank).collect();
    if input.is_empty() || input.ends_with(b"\n") {
        out.pop();
    }
    out
}

fn csv_blank(line: &[u8]) -> bool {
    line.is_empty() || line == b"\r"
}

fn json_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn csv_arbitrary_bytes_never_panic(
        input in proptest::collection::vec(
            prop_oneof![Just(b'"'), Just(b','), Just(b'\n'), Just(b'\r'), Just(0xff), Just(b'a'), any::<u8>()],
            0..400,
        ),
        max in 8usize..64,
    ) {
        let source = CsvOptions::new()
            .max_record_bytes(max)
            .open_reader::<Vec<String>>("fuzz.csv", std::io::Cursor::new(input.clone()));
        let (items, errors) = drain(source);
        let total = lines(&input, csv_blank).len() as u64;
        prop_assert!(errors <= 1);
        let mut last = 0;
        for item in &items {
            prop_assert!(item.line > last, "lines increase: {} after {}", item.line, last);
            prop_assert!(item.line <= total);
            if let Err(e) = &item.value {
                prop_assert_eq!(e.line(), item.line);
                let prefix = format!("fuzz.csv:{}: ", item.line);
                prop_assert!(e.to_string().starts_with(&prefix), "{} / {}", e, prefix);
            }
            last = item.line;
        }
    }

    #[test]
    fn csv_without_quotes_gives_one_item_per_line(
        input in proptest::collection::vec(
            prop_oneof![Just(b','), Just(b'\n'), Just(b'\r'), Just(0xff), Just(b'a'), Just(b' ')],
            0..400,
        ),
    ) {
        let source = CsvOptions::new()
            .has_headers(false)
            .max_record_bytes(32)
            .open_reader::<Vec<String>>("plain.csv", std::io::Cursor::new(input.clone()));
        let (items, errors) = drain(source);
        prop_assert_eq!(errors, 0);
        let want: Vec<u64> = lines(&input, csv_blank)
            .iter()
            .enumerate()
            .filter(|(_, blank)| !**blank)
            .map(|(i, _)| i as u64 + 1)
            .collect();
        let got: Vec<u64> = items.iter().map(|r| r.line).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn jsonl_gives_one_item_per_non_blank_line(
        input in proptest::collection::vec(
            prop_oneof![
                Just(b'{'), Just(b'}'), Just(b'"'), Just(b':'), Just(b'1'), Just(b'\n'),
                Just(b' '), Just(0xff), any::<u8>()
            ],
            0..400,
        ),
        max in 4usize..64,
    ) {
        let source = JsonlOptions::new()
            .max_line_bytes(max)
            .open_reader::<serde_json::Value>("fuzz.jsonl", std::io::Cursor::new(input.clone()));
        let (items, errors) = drain(source);
        prop_assert_eq!(errors, 0);
        // An over-long line (its `\n` counted) is an item whatever its content.
        let count = lines(&input, json_blank).len();
        let want: Vec<u64> = input
            .split(|&b| b == b'\n')
            .take(count)
            .enumerate()
            .filter(|(i, line)| {
                let newline = usize::from(i + 1 < count || input.ends_with(b"\n"));
                line.len() + newline > max || !json_blank(line)
            })
            .map(|(i, _)| i as u64 + 1)
            .collect();
        let got: Vec<u64> = items.iter().map(|r| r.line).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn csv_written_by_the_csv_crate_reads_back_exactly(
        width in 1usize..5,
        cells in proptest::collection::vec("[a-z,\" \n]{0,8}", 0..60),
    ) {
        let rows: Vec<Vec<String>> = cells.chunks(width).filter(|r| r.len() == width).map(<[String]>::to_vec).collect();
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        let mut starts = Vec::new();
        let mut newlines = 0u64;
        for row in &rows {
            writer.write_record(row).unwrap();
            writer.flush().unwrap();
            starts.push(newlines + 1);
            newlines = writer.get_ref().iter().filter(|&&b| b == b'\n').count() as u64;
        }
        let bytes = writer.into_inner().unwrap();
        let source = CsvOptions::new()
            .has_headers(false)
            .open_reader::<Vec<String>>("rt.csv", std::io::Cursor::new(bytes));
        let (items, errors) = drain(source);
        prop_assert_eq!(errors, 0);
        let lines: Vec<u64> = items.iter().map(|r| r.line).collect();
        let back: Vec<Vec<String>> = items.into_iter().map(|r| r.value.unwrap()).collect();
        prop_assert_eq!(back, rows);
        prop_assert_eq!(lines, starts);
    }

    #[test]
    fn json_values_written_one_per_line_read_back_exactly(
        values in proptest::collection::vec(
            prop_oneof![
                any::<i64>().prop_map(serde_json::Value::from),
                "[a-z \"\\\n\u{e9}]{0,12}".prop_map(serde_json::Value::from),
                any::<bool>().prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
            ],
            0..40,
        ),
    ) {
        let mut text = String::new();
        for v in &values {
            text.push_str(&serde_json::to_string(v).unwrap());
            text.push('\n');
        }
        let source = JsonlOptions::new()
            .open_reader::<serde_json::Value>("rt.jsonl", std::io::Cursor::new(text));
        let (items, errors) = drain(source);
        prop_assert_eq!(errors, 0);
        let lines: Vec<u64> = items.iter().map(|r| r.line).collect();
        let back: Vec<serde_json::Value> = items.into_iter().map(|r| r.value.unwrap()).collect();
        prop_assert_eq!(back, values.clone());
        prop_assert_eq!(lines, (1..=values.len() as u64).collect::<Vec<_>>());
    }
}
