use std::cell::RefCell;
use std::collections::HashMap;

use pipeline_core::prelude::*;
use pipeline_core::{Pipeline, sink, source};

// One mistake, one error: on the state's type, not again on the stage's impl, its
// future, or the places that use the stage.
#[stage]
async fn lookup(key: String, #[state] cache: &RefCell<HashMap<String, u64>>) -> Option<u64> {
    cache.borrow().get(&key).copied()
}

fn main() {
    let (out, _) = sink::collect();
    let _ = Pipeline::builder("lookups")
        .source(source::iter(vec!["a".to_owned()]))
        .stage(Lookup::new(RefCell::new(HashMap::new())))
        .sink(out)
        .run();
}
