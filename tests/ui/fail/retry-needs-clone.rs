//! A retry of a stage taking a non-`Clone` item by value: the builder says why it needs
//! `Clone`, and how to do without.

use std::convert::Infallible;

use pipeline_core::options::RetryOptions;
use pipeline_core::prelude::*;
use tokio::sync::oneshot;

struct Request {
    reply: oneshot::Sender<u64>,
}

fn main() {
    let (tx, _rx) = oneshot::channel();
    let _ready = Pipeline::builder("retry")
        .source(source::iter([Request { reply: tx }]))
        .stage(stage::map_fn("answer", |r: Request| async move {
            let _ = r.reply.send(1);
            Ok::<_, Infallible>(())
        }))
        .retry(RetryOptions::new(3))
        .sink(sink::collect().0);
}
