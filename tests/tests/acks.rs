//! Invariant 4 (ack after outcome): a source's ack fires only after every descendant of
//! each item reached its final outcome, with the worst status per item.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_core::ack::Ack;
use pipeline_core::prelude::*;
use pipeline_core::sink::{Sink, WriteError};
use pipeline_core::source::{Pulled, Source};

type Log = Arc<Mutex<Vec<String>>>;

/// Emits batches of 3 items (ids 0..n) with an ack that logs each item's outcome.
struct Acked {
    next: u64,
    end: u64,
    log: Log,
}

impl Source for Acked {
    type Item = u64;
    async fn pull(&mut self, _max: usize) -> Result<Option<Pulled<u64>>, BoxError> {
        if self.next >= self.end {
            return Ok(None);
        }
        let items: Vec<u64> = (self.next..(self.next + 3).min(self.end)).collect();
        self.next += items.len() as u64;
        let log = Arc::clone(&self.log);
        let ids = items.clone();
        Ok(Some(Pulled::with_ack(
            items,
            Ack::new(move |outcomes: &[Outcome]| {
                let mut log = log.lock().unwrap();
                for (id, o) in ids.iter().zip(outcomes) {
                    log.push(format!("ack {id} {o}"));
                }
            }),
        )))
    }
}

/// Logs each write, after a delay.
struct Logging(Log);

impl Sink for Logging {
    type Item = u64;
    async fn write(&mut self, items: &mut Vec<u64>) -> Result<(), WriteError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut log = self.0.lock().unwrap();
        for n in items.drain(..) {
            log.push(format!("write {n}"));
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn ack_fires_after_every_descendant_is_written() {
    let log: Log = Arc::default();
    let report = Pipeline::builder("acks")
        .source(Acked {
            next: 0,
            end: 30,
            log: Arc::clone(&log),
        })
        // n -> [n*100, n*100+1]; multiples of 4 filtered (no children)
        .stage(stage::flat_map_fn("children", |n: u64| async move {
            Ok::<_, Infallible>(if n.is_multiple_of(4) {
                vec![]
            } else {
                vec![n * 100, n * 100 + 1]
            })
        }))
        .buffer(2)
        .sink(Logging(Arc::clone(&log)))
        .buffer(2)
        .run()
        .await
        .unwrap();
    assert!(report.is_balanced());
    let log = log.lock().unwrap();
    for n in 0..30u64 {
        let ack = log
            .iter()
            .position(|l| l.starts_with(&format!("ack {n} ")))
            .unwrap();
        if n % 4 == 0 {
            assert_eq!(log[ack], format!("ack {n} filtered"));
            continue;
        }
        assert_eq!(log[ack], format!("ack {n} delivered"));
        for child in [n * 100, n * 100 + 1] {
            let write = log
                .iter()
                .position(|l| *l == format!("write {child}"))
                .unwrap();
            assert!(
                write < ack,
                "item {n} acked before child {child} was written"
            );
        }
    }
    assert_eq!(
        log.iter().filter(|l| l.starts_with("ack")).count(),
        30,
        "one ack per item"
    );
}

#[derive(Debug)]
struct Bad;
impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad")
    }
}
impl std::error::Error for Bad {}

#[tokio::test]
async fn worst_status_of_the_children_is_acked() {
    let log: Log = Arc::default();
    let (sink, _) = sink::collect::<u64>();
    let report = Pipeline::builder("worst")
        .source(Acked {
            next: 0,
            end: 6,
            log: Arc::clone(&log),
        })
        .stage(stage::flat_map_fn("pair", |n: u64| async move {
            Ok::<_, Infallible>(vec![n * 10, n * 10 + 1])
        }))
        // One child of each odd item fails and is dropped.
        .stage(stage::map_fn("check", |c: u64| async move {
            if c % 10 == 1 && (c / 10) % 2 == 1 {
                Err(Bad)
            } else {
                Ok(c)
            }
        }))
        .on_error(OnError::Drop)
        .sink(sink)
        .run()
        .await
        .unwrap();
    let log = log.lock().unwrap();
    for n in 0..6u64 {
        let want = if n % 2 == 1 { "dropped" } else { "delivered" };
        assert!(log.contains(&format!("ack {n} {want}")), "{log:?}");
    }
    assert_eq!((report.delivered, report.dropped), (3, 3));
}
