use pipeline_core::prelude::*;

#[stage]
async fn parse<T: std::str::FromStr>(line: String) -> Option<T> {
    line.parse().ok()
}

fn main() {}
