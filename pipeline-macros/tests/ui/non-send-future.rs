use std::rc::Rc;

use pipeline_core::prelude::*;

async fn fetch() -> u64 {
    1
}

#[stage]
async fn parse(line: String) -> u64 {
    let shared = Rc::new(line);
    let n = fetch().await;
    shared.len() as u64 + n
}

fn main() {}
