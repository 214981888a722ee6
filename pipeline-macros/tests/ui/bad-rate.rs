use pipeline_core::prelude::*;

#[stage(rate = "500 per second")]
async fn parse(line: String) -> u64 {
    line.len() as u64
}

fn main() {}
