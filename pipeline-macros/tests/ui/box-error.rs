use pipeline_core::prelude::*;

#[stage]
async fn parse(line: String) -> Result<u64, BoxError> {
    Ok(line.trim().parse()?)
}

fn main() {}
