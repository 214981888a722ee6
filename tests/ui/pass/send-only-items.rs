//! Items that are only `Send + 'static` (a reply channel is neither `Clone` nor `Sync`
//! across attempts) pass map, filter and flat-map stages, closures and `#[stage]` fns,
//! with every policy but retry.
#![deny(warnings)]

use std::convert::Infallible;
use std::time::Duration;

use pipeline_core::options::BreakerOptions;
use pipeline_core::prelude::*;
use tokio::sync::oneshot;

/// A request carrying the channel its answer goes back on.
pub struct Request {
    pub n: u64,
    pub reply: oneshot::Sender<u64>,
}

#[stage(timeout = "1s", breaker(window = 10, min_calls = 5), rate = "100/s")]
async fn double(mut req: Request) -> Request {
    req.n *= 2;
    req
}

#[stage]
async fn keep_even(req: Request) -> Option<Request> {
    (req.n % 2 == 0).then_some(req)
}

#[stage(flatten)]
async fn split(req: Request) -> Vec<Request> {
    vec![req]
}

#[stage]
fn answer(req: Request) -> u64 {
    let n = req.n;
    let _ = req.reply.send(n);
    n
}

fn main() {
    let (tx, _rx) = oneshot::channel();
    let _ready = Pipeline::builder("send-only")
        .source(source::iter([Request { n: 1, reply: tx }]))
        .stage(stage::map_fn("closure", |r: Request| async move {
            Ok::<_, Infallible>(r)
        }))
        .timeout(Duration::from_secs(1))
        .breaker(BreakerOptions::default())
        .stage(stage::filter_fn("closure-filter", |r: Request| async move {
            Ok::<_, Infallible>(Some(r))
        }))
        .stage(stage::flat_map_fn("closure-flat", |r: Request| async move {
            Ok::<_, Infallible>([r])
        }))
        .stage(Double)
        .stage(KeepEven)
        .stage(Split)
        .stage(Answer)
        .sink(sink::collect().0);
}
