// State arguments whose names start with `_` (unused in the body) expand to code that
// is clean under `deny(warnings)`: no `non_snake_case` locals such as `state__seen`.
#![deny(warnings)]

use std::collections::HashSet;

use pipeline_core::prelude::*;

#[derive(Debug)]
pub struct Db;

#[stage]
async fn tag(n: u64, #[state] _seen: &mut HashSet<u64>, #[state] _db: &Db) -> u64 {
    n
}

#[stage(blocking)]
fn tag_blocking(n: u64, #[state] _seen: &mut HashSet<u64>, #[state] _db: &Db, _cx: &Context) -> u64 {
    n
}

#[stage]
fn r#type(n: u64, #[state] _x: &Db, #[state] r#ref: &Db) -> u64 {
    let _ = r#ref;
    n
}

fn main() {
    let _ = Tag::new(HashSet::new, Db);
    let _ = TagBlocking::new(HashSet::new, Db);
    let _ = Type::new(Db, Db);
}
