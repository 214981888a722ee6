//! Runs the `host` binary: its stage functions called directly by the CLI, and the same
//! functions as stages of a pipeline over stdin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn host(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the host binary");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn normalize_one_address_by_calling_the_function() {
    let out = host(&["normalize", " 12  MAIN st. ,springfield, 12345"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "12 Main Street, 12345 Springfield\n");

    let bad = host(&["normalize", "12 main st, springfield, 1234"], "");
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("postcode `1234` is not five digits"));
}

#[test]
fn score_one_order_by_calling_the_function() {
    let out = host(
        &["score", "3", "12500", "12 main st, springfield, 12345"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "92\n");
}

#[test]
fn normalize_a_stream_with_the_function_as_a_stage() {
    let out = host(
        &["normalize"],
        "12 main st, springfield, 12345\nno commas here\n1 elm rd, shelbyville, 54321\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines.iter().any(|l| l["street"] == "1 Elm Road"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "failed in `normalize_address`: expected `street, city, postcode`, got 1 part(s)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("3 emitted = 2 delivered"), "{stderr}");
}

#[test]
fn batch_scores_orders_in_order_through_both_stages() {
    let input = "1;3;12500;12 main st, springfield, 12345\n\
                 2;1;100;9 oak ave, ogdenville, 99999\n\
                 3;x;1;12 main st, springfield, 12345\n\
                 4;9;20000;1 elm rd, shelbyville, 54321\n";
    let out = host(&["batch"], input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let scored: Vec<(u64, u64)> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["order"]["id"].as_u64().unwrap(),
                v["score"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(scored, [(1, 92), (2, 4), (4, 100)]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("failed in `parse_order`: bad items"),
        "{stderr}"
    );
    assert!(
        stderr.contains("4 emitted = 3 delivered + 0 filtered + 0 dropped + 1 dead-lettered"),
        "{stderr}"
    );
}
