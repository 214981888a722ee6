use pipeline_core::prelude::*;

#[stage]
async fn log(line: String) {
    println!("{line}");
}

fn main() {}
