use pipeline_core::prelude::*;

#[derive(Debug, Default)]
pub struct Counter {
    seen: u64,
}

#[stage]
async fn count(line: String, #[state] counter: &mut Counter) -> u64 {
    counter.seen += 1;
    counter.seen + line.len() as u64
}

fn main() {
    let _ = Count::new(|| 0_u64);
}
