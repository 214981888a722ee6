use std::rc::Rc;

use pipeline_core::prelude::*;

#[stage]
async fn parse(line: Rc<str>) -> usize {
    line.len()
}

fn main() {}
