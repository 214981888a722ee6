use pipeline_core::prelude::*;

#[stage]
async fn parse(line: String) -> Result<u64, String> {
    line.trim().parse().map_err(|_| line.clone())
}

fn main() {}
