use pipeline_core::prelude::*;

pub struct Db;

#[stage]
async fn enrich(id: u64, db: &Db) -> u64 {
    let _ = db;
    id
}

fn main() {}
