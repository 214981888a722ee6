use pipeline_core::prelude::*;

fn is_transient(_: &std::io::Error) -> bool {
    true
}

#[stage(retry(attempts = 3, when = is_transient))]
async fn parse(line: String) -> u64 {
    line.len() as u64
}

fn main() {}
