use std::rc::Rc;

use pipeline_core::prelude::*;

#[stage]
fn wrap(line: String) -> Rc<String> {
    Rc::new(line)
}

fn main() {}
