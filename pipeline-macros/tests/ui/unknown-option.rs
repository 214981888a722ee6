use pipeline_core::prelude::*;

#[stage(concurrency = 4, retires = 3)]
async fn parse(line: String) -> u64 {
    line.len() as u64
}

fn main() {}
