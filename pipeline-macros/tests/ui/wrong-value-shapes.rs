use pipeline_core::prelude::*;

#[stage(concurrency = "8", buffer = 0, retry = 3, timeout, budget = 2)]
async fn parse(line: String) -> u64 {
    line.len() as u64
}

fn main() {}
