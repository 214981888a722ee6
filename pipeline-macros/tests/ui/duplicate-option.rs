use pipeline_core::prelude::*;

#[stage(timeout = "1s", retry(attempts = 3), timeout = "2s")]
async fn parse(line: String) -> u64 {
    line.len() as u64
}

fn main() {}
