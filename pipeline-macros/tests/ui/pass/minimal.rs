#![deny(warnings)]

use pipeline_core::prelude::*;

#[stage]
async fn parse(line: String) -> u64 {
    line.len() as u64
}

fn main() {
    let _ = parse;
    let _ = Parse;
}
