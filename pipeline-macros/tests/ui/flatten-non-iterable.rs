use pipeline_core::prelude::*;

#[stage(flatten)]
async fn words(line: String) -> usize {
    line.split_whitespace().count()
}

fn main() {}
