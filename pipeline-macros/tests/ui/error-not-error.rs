use pipeline_core::prelude::*;

#[derive(Debug)]
pub struct Oops;

#[stage]
async fn parse(line: String) -> Result<u64, Oops> {
    line.trim().parse().map_err(|_| Oops)
}

fn main() {}
