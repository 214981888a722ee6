use pipeline_core::prelude::*;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _ = Pipeline::builder("no sink")
        .source(source::iter(0..3u64))
        .run()
        .await;
}
