use pipeline_core::prelude::*;

#[stage(restart(max = 3))]
async fn count(line: String, #[state] seen: &mut u64) -> u64 {
    *seen += 1;
    *seen + line.len() as u64
}

fn main() {}
