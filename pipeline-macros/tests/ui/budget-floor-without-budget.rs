use pipeline_core::prelude::*;

#[stage(retry(attempts = 3, budget_floor = 5))]
async fn fetch(url: String) -> usize {
    url.len()
}

fn main() {}
