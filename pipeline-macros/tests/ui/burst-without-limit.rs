use pipeline_core::prelude::*;

#[stage(rate(burst = 50))]
async fn notify(user: u64) -> u64 {
    user
}

fn main() {}
