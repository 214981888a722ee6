use pipeline_core::prelude::*;

#[stage(timeout = "2 sekunden")]
async fn parse(line: String) -> u64 {
    line.len() as u64
}

fn main() {}
