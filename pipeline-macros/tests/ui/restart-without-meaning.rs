use pipeline_core::prelude::*;

#[stage(restart(max = 3, within = "60s"))]
async fn parse(line: String) -> u64 {
    line.len() as u64
}

fn main() {}
