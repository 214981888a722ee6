use pipeline_core::prelude::*;

struct Parser;

impl Parser {
    #[stage]
    async fn parse(&self, line: String) -> u64 {
        line.len() as u64
    }
}

fn main() {}
