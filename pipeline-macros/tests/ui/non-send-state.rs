use std::cell::RefCell;
use std::collections::HashMap;

use pipeline_core::prelude::*;

#[stage]
async fn lookup(key: String, #[state] cache: &RefCell<HashMap<String, u64>>) -> Option<u64> {
    cache.borrow().get(&key).copied()
}

fn main() {}
