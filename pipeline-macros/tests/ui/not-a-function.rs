use pipeline_core::prelude::*;

#[stage]
struct Parse;

fn main() {}
