//! CI compiles the harness and runs every workload once at tiny sizes (no timed
//! assertions: the table's numbers are not checked, only that every run completes and
//! delivers every item).

use std::process::Command;

#[test]
fn every_workload_runs_at_smoke_sizes() {
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline-bench"))
        .args(["--smoke", "--no-write"])
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => panic!("cannot run pipeline-bench: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pipeline-bench --smoke failed:\n{stdout}\n{stderr}"
    );
    for row in [
        "map4 u64",
        "map4 String",
        "map4-guarded u64",
        "macro-vs-hand u64",
        "io-bound",
        "cpu-bound sync #[stage]",
        "latency @ 50% of max, map4",
        "latency @ 50% of max, B-batch",
        "slow-sink memory, framework",
        "slow-sink memory, unbounded",
    ] {
        assert!(stdout.contains(row), "no `{row}` row in:\n{stdout}");
    }
}
