use pipeline_core::prelude::*;

#[stage(on_error = "retry", breaker(mode = "open"))]
async fn parse(line: String) -> u64 {
    line.len() as u64
}

fn main() {}
