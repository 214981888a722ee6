use pipeline_core::prelude::*;

#[stage(retry(backoff = "100ms", jiter))]
async fn parse(line: String) -> u64 {
    line.len() as u64
}

fn main() {}
