use pipeline_core::prelude::*;

#[stage(concurrency = 8)]
async fn count(line: String, #[state] seen: &mut u64) -> u64 {
    *seen += 1;
    line.len() as u64 + *seen
}

fn main() {}
