use pipeline_core::prelude::*;

#[stage(rate(limit = "500/s", burst = 0, brust = 5))]
async fn notify(user: u64) -> u64 {
    user
}

#[stage(burst = 5)]
async fn alert(user: u64) -> u64 {
    user
}

fn main() {}
