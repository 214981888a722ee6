//! `#[stage(retry(..))]` on a by-value input that is not `Clone`: the error points at
//! `retry`.

use pipeline_core::prelude::*;
use tokio::sync::oneshot;

pub struct Request {
    pub reply: oneshot::Sender<u64>,
}

#[stage(retry(attempts = 3))]
async fn answer(req: Request) -> u64 {
    let _ = req.reply.send(1);
    1
}

fn main() {
    let _ = Answer;
}
