//! The stream source and sink against a real, private redis-server: delivery, acks after
//! the final outcome, abandoned entries, poison entries, trimmed entries, backlog.
#![cfg(feature = "redis")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod redis_support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use pipeline_connectors::redis::{MaxLen, StreamEntry, StreamRecord, StreamSink};
use pipeline_core::DeadLetter;
use pipeline_core::prelude::*;
use pipeline_core::sink::Sink;
use pipeline_core::source::Source;
use redis_support::*;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_entry_once_and_leaves_nothing_pending() {
    let server = RedisServer::start();
    let mut c = server.conn().await;
    let n = 3000u64;
    let ids: HashSet<String> = produce(&mut c, "in", 0..n).await.into_iter().collect();
    let source = quick(server.config(), "in", "g", "c1").build().unwrap();
    let progress = source.progress();
    let (sink, out) = sink::collect();
    let handle = Pipeline::builder("basic")
        .source(source)
        .stage(stage::map_fn("pass", |e: StreamEntry| async move {
            Ok::<_, Infallible>(e)
        }))
        .sink(sink)
        .spawn();
    eventually(WAIT, "every entry delivered", || out.len() >= n as usize).await;
    // Lag and pending reach the stats row through Backlog.
    eventually(WAIT, "backlog reported as drained", || {
        let stats = handle.stats();
        let row = stats.stage("redis:in");
        row.is_some_and(|r| r.lag == Some(0) && r.pending == Some(0))
    })
    .await;
    let report = handle.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, progress.settled())
        .await
        .unwrap();
    let got = out.take();
    let seen: HashSet<String> = got.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(seen, ids, "every id delivered");
    assert_eq!(
        got.len(),
        n as usize,
        "no duplicates within one live process"
    );
    assert!(got.iter().all(|e| e.deliveries == 1));
    assert_eq!(pending(&mut c, "in", "g").await, 0);
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.delivered, n);
    assert_eq!(progress.acked(), n);
    // The acknowledging task ends with the pipeline, though `progress` is still held.
    eventually(WAIT, "the acker task ended", || progress.is_finished()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_appends_every_item_with_xadd() {
    let server = RedisServer::start();
    let mut c = server.conn().await;
    let n = 1000u64;
    produce(&mut c, "in", 0..n).await;
    let source = quick(server.config(), "in", "g", "c1").build().unwrap();
    let progress = source.progress();
    let sink = StreamSink::new(server.config(), "out").unwrap();
    let handle = Pipeline::builder("copy")
        .source(source)
        .stage(stage::map_fn("to_record", |e: StreamEntry| async move {
            Ok::<_, Infallible>(StreamRecord::from(e.clone()).field("source_id", e.id.to_string()))
        }))
        .sink(sink)
        .spawn();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let len: u64 = redis::cmd("XLEN")
            .arg("out")
            .query_async(&mut c)
            .await
            .unwrap();
        if len >= n {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {len} of {n} written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = handle.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, progress.settled())
        .await
        .unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg("out")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(len, n);
    assert!(report.is_balanced());
    assert_eq!(pending(&mut c, "in", "g").await, 0);

    // MAXLEN caps the target stream.
    let mut capped = StreamSink::new(server.config(), "capped")
        .unwrap()
        .with_max_len(MaxLen::Exact(10));
    let mut batch: Vec<StreamRecord> = (0..100)
        .map(|i| StreamRecord::new().field("i", i.to_string()))
        .collect();
    capped.write(&mut batch).await.unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg("capped")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(len, 10);
    // A record without fields fails alone.
    let mut batch = vec![StreamRecord::new().field("a", "1"), StreamRecord::new()];
    let err = capped.write(&mut batch).await.unwrap_err();
    assert_eq!(err.failed, Some(vec![1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_item_is_still_acked() {
    let server = RedisServer::start();
    let mut c = server.conn().await;
    let n = 500u64;
    produce(&mut c, "in", 0..n).await;
    let source = quick(server.config(), "in", "g", "c1").build().unwrap();
    let progress = source.progress();
    let (sink, out) = sink::collect();
    let (dead, dead_letters) = sink::collect::<DeadLetter>();
    let handle = Pipeline::builder("failing")
        .source(source)
        .stage(stage::map_fn("odd_fails", |e: StreamEntry| async move {
            if n_of(&e) % 10 == 0 {
                Err(pipeline_core::error::Message(format!(
                    "entry {} refused",
                    e.id
                )))
            } else {
                Ok(e)
            }
        }))
        .sink(sink)
        .dead_letter(dead)
        .spawn();
    eventually(WAIT, "all settled", || {
        out.len() + dead_letters.len() >= n as usize
    })
    .await;
    let report = handle.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, progress.settled())
        .await
        .unwrap();
    assert_eq!(report.dead_lettered, n / 10);
    assert_eq!(report.delivered, n - n / 10);
    assert!(report.is_balanced());
    assert_eq!(
        pending(&mut c, "in", "g").await,
        0,
        "dead-lettered entries are acked too"
    );
    assert_eq!(progress.acked(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_entries_stay_pending_and_come_back_to_the_same_consumer() {
    let server = RedisServer::start();
    let mut c = server.conn().await;
    let n = 200u64;
    let ids: HashSet<String> = produce(&mut c, "in", 0..n).await.into_iter().collect();
    let source = quick(server.config(), "in", "g", "c1").build().unwrap();
    let progress = source.progress();
    let (sink, out) = sink::collect::<StreamEntry>();
    let handle = Pipeline::builder("stuck")
        .source(source)
        .stage(stage::map_fn("hangs", |e: StreamEntry| async move {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(e)
        }))
        .sink(sink)
        .spawn();
    eventually(WAIT, "entries in flight", || progress.read() > 0).await;
    let report = handle
        .shutdown_within(Duration::from_millis(50))
        .await
        .unwrap();
    assert!(report.abandoned > 0, "{report}");
    assert!(report.is_balanced(), "{report}");
    assert!(out.is_empty());
    tokio::time::timeout(WAIT, progress.settled())
        .await
        .unwrap();
    assert_eq!(progress.acked(), 0, "abandoned entries are not acked");
    let left = pending(&mut c, "in", "g").await;
    assert_eq!(left, progress.read(), "every read entry is still pending");

    // The same consumer name again: its own pending entries come first, then the rest.
    let source = quick(server.config(), "in", "g", "c1")
        .min_idle(Duration::from_secs(3600))
        .build()
        .unwrap();
    let again = source.progress();
    let (sink, out) = sink::collect::<StreamEntry>();
    let handle = Pipeline::builder("again").source(source).sink(sink).spawn();
    eventually(WAIT, "every entry delivered", || out.len() >= n as usize).await;
    handle.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, again.settled()).await.unwrap();
    let got = out.take();
    let seen: HashSet<String> = got.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(seen, ids);
    assert_eq!(
        again.redelivered(),
        left,
        "the abandoned ones came from the pending list"
    );
    assert!(got.iter().filter(|e| e.deliveries == 2).count() as u64 == left);
    assert_eq!(pending(&mut c, "in", "g").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_entry_is_dead_lettered_once_past_max_deliveries_and_acked() {
    let server = RedisServer::start();
    let mut c = server.conn().await;
    let n = 50u64;
    let ids = produce(&mut c, "in", 0..n).await;
    let poison_id = ids[7].clone();
    let source = quick(server.config(), "in", "g", "c1")
        .max_deliveries(3)
        .build()
        .unwrap();
    let progress = source.progress();
    let (sink, out) = sink::collect();
    // Entry 7 always fails, and so does the dead-letter sink: the item ends `Failed`,
    // so the source leaves it pending and it comes again (a crash loop in miniature).
    let dead = sink::for_each(|_d: DeadLetter| async { Err::<(), _>("dead-letter sink down") });
    let handle = Pipeline::builder("poison")
        .source(source)
        .stage(stage::map_fn("rejects_7", |e: StreamEntry| async move {
            if n_of(&e) == 7 {
                Err(pipeline_core::error::Message("poison".into()))
            } else {
                Ok(e)
            }
        }))
        .sink(sink)
        .dead_letter(dead)
        .spawn();
    eventually(WAIT, "the poison entry dead-lettered by the source", || {
        progress.dead_lettered() >= 1
    })
    .await;
    eventually(WAIT, "the rest delivered", || out.len() >= (n - 1) as usize).await;
    let report = handle.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, progress.settled())
        .await
        .unwrap();
    assert_eq!(
        report.failed, 3,
        "delivered three times, failed each time: {report}"
    );
    assert_eq!(progress.dead_lettered(), 1);
    assert_eq!(
        pending(&mut c, "in", "g").await,
        0,
        "the poison entry is acked"
    );
    let dlq: redis::Value = redis::cmd("XRANGE")
        .arg("in:dlq")
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    let text = format!("{dlq:?}");
    let len: u64 = redis::cmd("XLEN")
        .arg("in:dlq")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(len, 1, "exactly one dead letter: {text}");
    assert!(
        text.contains(&poison_id),
        "the dead letter names the original id: {text}"
    );
    let index: Option<String> = redis::cmd("HGET")
        .arg("in:dlq:index")
        .arg(&poison_id)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        index.as_deref(),
        Some("4"),
        "dead-lettered on the fourth delivery"
    );
    let out = out.take();
    assert!(out.iter().all(|e| n_of(e) != 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_pending_entries_are_counted_not_lost_silently() {
    let server = RedisServer::start();
    let mut c = server.conn().await;
    produce(&mut c, "in", 0..100).await;
    // Consumer `a` reads everything and dies before finishing anything.
    let mut a = quick(server.config(), "in", "g", "a").build().unwrap();
    let mut read = 0;
    while read < 100 {
        let pulled = tokio::time::timeout(WAIT, a.pull(100))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        read += pulled.items.len();
        std::mem::forget(pulled.items);
        // The ack is dropped unfinished: the entries stay pending for `a`.
    }
    drop(a);
    // Trimming deletes the oldest 50 though they were never acknowledged.
    let _: i64 = redis::cmd("XTRIM")
        .arg("in")
        .arg("MAXLEN")
        .arg(50)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(pending(&mut c, "in", "g").await, 100);

    // Consumer `b` takes over `a`'s entries after min-idle: XAUTOCLAIM reports the
    // deleted ones.
    let b = quick(server.config(), "in", "g", "b").build().unwrap();
    let progress = b.progress();
    let (sink, out) = sink::collect::<StreamEntry>();
    let handle = Pipeline::builder("after_trim").source(b).sink(sink).spawn();
    eventually(WAIT, "the 50 surviving entries delivered", || {
        out.len() >= 50
    })
    .await;
    eventually(WAIT, "the 50 trimmed entries counted", || {
        progress.trimmed() >= 50
    })
    .await;
    handle.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, progress.settled())
        .await
        .unwrap();
    let mut ns: Vec<u64> = out.take().iter().map(n_of).collect();
    ns.sort_unstable();
    assert_eq!(ns, (50..100).collect::<Vec<_>>());
    assert_eq!(progress.trimmed(), 50);
    assert_eq!(
        progress.reclaimed(),
        50,
        "only the surviving entries are claimed"
    );
    assert_eq!(pending(&mut c, "in", "g").await, 0);

    // A consumer's own pending entries deleted while it was away: found by its re-read.
    let ids = produce(&mut c, "in", 100..110).await;
    let mut a = quick(server.config(), "in", "g", "a").build().unwrap();
    let pulled = tokio::time::timeout(WAIT, a.pull(10))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pulled.items.len(), 10);
    drop(pulled);
    drop(a);
    let mut del = redis::cmd("XDEL");
    del.arg("in");
    for id in &ids[..4] {
        del.arg(id);
    }
    let _: i64 = del.query_async(&mut c).await.unwrap();
    let mut a = quick(server.config(), "in", "g", "a")
        .min_idle(Duration::from_secs(3600))
        .build()
        .unwrap();
    let progress = a.progress();
    let pulled = tokio::time::timeout(WAIT, a.pull(10))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pulled.items.len(), 6);
    assert_eq!(progress.trimmed(), 4);
    drop(pulled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_written_before_is_not_written_twice() {
    let server = RedisServer::start();
    let mut c = server.conn().await;
    let ids = produce(&mut c, "in", 0..3).await;
    // As if an earlier run had copied entry 1 and its reply was lost: the index knows it.
    let _: i64 = redis::cmd("HSET")
        .arg("in:dlq:index")
        .arg(&ids[1])
        .arg(2)
        .query_async(&mut c)
        .await
        .unwrap();
    let source = quick(server.config(), "in", "g", "c1")
        .max_deliveries(1)
        .build()
        .unwrap();
    let progress = source.progress();
    let (sink, out) = sink::collect();
    let dead = sink::for_each(|_d: DeadLetter| async { Err::<(), _>("dead-letter sink down") });
    let handle = Pipeline::builder("poison_again")
        .source(source)
        .stage(stage::map_fn("rejects_1", |e: StreamEntry| async move {
            if n_of(&e) == 1 {
                Err(pipeline_core::error::Message("poison".into()))
            } else {
                Ok(e)
            }
        }))
        .sink(sink)
        .dead_letter(dead)
        .spawn();
    eventually(WAIT, "entry 1 settled by the source", || {
        progress.dead_lettered() >= 1
    })
    .await;
    eventually(WAIT, "the rest delivered", || out.len() >= 2).await;
    handle.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, progress.settled())
        .await
        .unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg("in:dlq")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(len, 0, "already dead-lettered: not copied again");
    assert_eq!(pending(&mut c, "in", "g").await, 0, "but acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_payload_is_a_dead_letter_not_a_crash() {
    let server = RedisServer::start();
    let mut c = server.conn().await;
    for body in [r#"{"qty": 1}"#, "{not json", r#"{"qty": 3}"#] {
        let _: String = redis::cmd("XADD")
            .arg("in")
            .arg("*")
            .arg("body")
            .arg(body)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let source = quick(server.config(), "in", "g", "c1").build().unwrap();
    let progress = source.progress();
    let (sink, out) = sink::collect();
    let (dead, dead_letters) = sink::collect::<DeadLetter>();
    let handle = Pipeline::builder("decode")
        .source(source)
        .stage(stage::map_fn("decode", |e: StreamEntry| async move {
            e.json::<serde_json::Value>("body")
        }))
        .sink(sink)
        .dead_letter(dead)
        .spawn();
    eventually(WAIT, "all three settled", || {
        out.len() + dead_letters.len() >= 3
    })
    .await;
    let report = handle.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, progress.settled())
        .await
        .unwrap();
    assert_eq!((report.delivered, report.dead_lettered), (2, 1), "{report}");
    let dl = dead_letters.take();
    assert!(
        dl[0].error.contains("field `body` is not valid"),
        "{:?}",
        dl[0]
    );
    assert_eq!(pending(&mut c, "in", "g").await, 0);
}
