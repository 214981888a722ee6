//! Quick start: a filter, a flat-map, a slow sink that pushes back on the source, and the
//! final report.
//!
//! ```text
//! cargo run -p pipeline-examples --bin quickstart
//! ```

use std::convert::Infallible;
use std::time::Duration;

use pipeline_core::prelude::*;
use pipeline_core::sink::WriteError;

/// A sink that takes 5 ms per batch, so the source must wait for it.
struct SlowPrinter {
    written: usize,
}

impl pipeline_core::sink::Sink for SlowPrinter {
    type Item = String;

    async fn write(&mut self, items: &mut Vec<String>) -> Result<(), WriteError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.written += items.len();
        if let Some(last) = items.last() {
            println!(
                "sink: wrote {:>3} words (total {:>4}), last {last:?}",
                items.len(),
                self.written
            );
        }
        items.clear();
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lines = (0..200u32).map(|i| format!("line {i} has some words"));

    let handle = Pipeline::builder("quickstart")
        .source(source::iter(lines))
        // Filter: keep every other line.
        .stage(stage::filter_fn("keep_even", |line: String| async move {
            let n: u32 = line
                .split(' ')
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            Ok::<_, Infallible>(n.is_multiple_of(2).then_some(line))
        }))
        // Flat-map: one item per word.
        .stage(stage::flat_map_fn("words", |line: String| async move {
            Ok::<_, Infallible>(line.split(' ').map(str::to_owned).collect::<Vec<_>>())
        }))
        .buffer(64) // a small edge: the slow sink soon pushes back
        .sink(SlowPrinter { written: 0 })
        .buffer(32)
        .spawn();

    // Watch backpressure: the source waits, queues stay within their capacities.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stats = handle.stats();
        println!(
            "stats: {} source lines in flight; queues: {}",
            stats.in_flight,
            stats
                .stages
                .iter()
                .map(|s| format!("{}={}/{}", s.name, s.queue_depth, s.capacity))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let report = handle.join().await?;
    println!("\n{report}");
    Ok(())
}
