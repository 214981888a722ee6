use pipeline_core::prelude::*;

// `M` is a month in humantime's syntax, not a minute.
#[stage(breaker(open_for = "5M"))]
async fn parse(line: String) -> u64 {
    line.len() as u64
}

fn main() {}
