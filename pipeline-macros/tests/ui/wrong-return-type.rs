use pipeline_core::prelude::*;

#[stage]
async fn read(path: String) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

fn main() {}
