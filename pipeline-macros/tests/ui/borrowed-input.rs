use std::borrow::Cow;

use pipeline_core::prelude::*;

#[stage]
async fn parse<'a>(line: Cow<'a, str>) -> usize {
    line.len()
}

fn main() {}
