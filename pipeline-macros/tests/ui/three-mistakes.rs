use pipeline_core::prelude::*;

// Three independent mistakes, reported together in one compile.
#[stage(retires = 3, timeout = "1M", ordered)]
async fn parse(line: String) -> u64 {
    line.len() as u64
}

fn main() {}
