use pipeline_core::prelude::*;

#[stage(blocking)]
async fn hash(data: Vec<u8>) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

fn main() {}
