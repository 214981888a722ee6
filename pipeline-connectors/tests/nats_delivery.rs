//! The JetStream source against a real nats-server 2.9: delivery, acks after outcome,
//! dead letters, abandonment, poison messages and long work.
#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use pipeline_connectors::nats::{JetStreamSource, NatsConfig, NatsMessage, SourceOptions};
use pipeline_core::prelude::*;
use pipeline_core::sink::{Sink, WriteError};
use support::*;

fn id_of(m: &NatsMessage) -> u64 {
    String::from_utf8_lossy(&m.payload)
        .parse()
        .expect("an id payload")
}

fn options(stream: &str, subject: &str) -> SourceOptions {
    SourceOptions::new(stream, "workers")
        .with_subjects([subject])
        .with_ack_wait(Duration::from_secs(5))
        .with_fetch_wait(Duration::from_millis(200))
        .with_backlog_every(Duration::from_millis(100))
        .with_nak_delay(Duration::from_millis(50), Duration::from_millis(200))
}

fn counts(ids: impl IntoIterator<Item = u64>) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for id in ids {
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_delivered_once_and_acked() {
    const N: u64 = 2_000;
    let server = NatsServer::start();
    let js = jetstream::new(client(&server).await);
    create_stream(&js, "EVENTS", &["events.>"]).await;
    publish_ids(&js, "events.new", 0..N).await;

    let source = JetStreamSource::connect(
        &NatsConfig::new(server.url()),
        options("EVENTS", "events.>"),
    )
    .await
    .unwrap();
    let acks = source.ack_handle();
    let (sink, out) = sink::collect();
    let handle = Pipeline::builder("basic")
        .source(source)
        .stage(stage::map_fn("parse", |m: NatsMessage| async move {
            Ok::<_, std::convert::Infallible>((id_of(&m), m.stream_sequence))
        }))
        .buffer(64)
        .sink(sink)
        .spawn();
    assert!(
        eventually(Duration::from_secs(30), || out.len() >= N as usize).await,
        "delivered {} of {N}",
        out.len()
    );
    // The backlog gauges arrive through consumer info.
    assert!(
        eventually(Duration::from_secs(5), || handle
            .stats()
            .stage("nats")
            .is_some_and(|s| s.lag == Some(0) && s.pending == Some(0)))
        .await,
        "backlog: {:?}",
        handle.stats().stage("nats").map(|s| (s.lag, s.pending))
    );
    let report = handle
        .shutdown_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        acks.settle(Duration::from_secs(5)).await,
        "acks not settled"
    );
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.delivered, N, "{report}");
    let seen = counts(out.take().into_iter().map(|(id, _)| id));
    assert_eq!(seen.len() as u64, N);
    assert!(
        seen.values().all(|&n| n == 1),
        "duplicates within one process"
    );
    assert_eq!(consumer_state(&js, "EVENTS", "workers").await, (0, 0));
    assert_eq!(acks.counts().acked, N);
}

/// Fails every write, so a dead-lettered item ends `Failed`.
#[derive(Debug)]
struct FailingDeadLetters;

impl Sink for FailingDeadLetters {
    type Item = pipeline_core::DeadLetter;
    async fn write(&mut self, items: &mut Vec<Self::Item>) -> Result<(), WriteError> {
        items.clear();
        Err(WriteError::all(pipeline_core::error::Message(
            "dead-letter store down".into(),
        )))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_items_are_acked_and_abandoned_items_redelivered() {
    const N: u64 = 300;
    let server = NatsServer::start();
    let js = jetstream::new(client(&server).await);
    create_stream(&js, "JOBS", &["jobs.>"]).await;
    publish_ids(&js, "jobs.new", 0..N).await;
    let config = NatsConfig::new(server.url());

    // 1. Every tenth item fails its stage and is dead-lettered by the pipeline: acked.
    let source = JetStreamSource::connect(&config, options("JOBS", "jobs.>"))
        .await
        .unwrap();
    let acks = source.ack_handle();
    let (sink, out) = sink::collect();
    let (dead, dead_letters) = sink::collect();
    let handle = Pipeline::builder("dead-letters")
        .source(source)
        .stage(stage::map_fn("odd_job", |m: NatsMessage| async move {
            let id = id_of(&m);
            if id % 10 == 0 {
                Err(pipeline_core::error::Message(format!("job {id} refused")))
            } else {
                Ok(id)
            }
        }))
        .sink(sink)
        .dead_letter(dead)
        .spawn();
    assert!(
        eventually(Duration::from_secs(20), || out.len() + dead_letters.len()
            >= N as usize)
        .await
    );
    let report = handle
        .shutdown_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(acks.settle(Duration::from_secs(5)).await);
    assert_eq!(
        (report.delivered, report.dead_lettered),
        (N - N / 10, N / 10),
        "{report}"
    );
    assert_eq!(acks.counts().acked, N, "dead-lettered items are acked too");
    assert_eq!(consumer_state(&js, "JOBS", "workers").await, (0, 0));

    // 2. A stage that never finishes, and a forced shutdown: abandoned, nak'd, and the
    //    next consumer gets them at once.
    publish_ids(&js, "jobs.new", N..2 * N).await;
    let source = JetStreamSource::connect(&config, options("JOBS", "jobs.>"))
        .await
        .unwrap();
    let acks = source.ack_handle();
    let (sink, stuck_out) = sink::collect::<u64>();
    let handle = Pipeline::builder("stuck")
        .source(source)
        .stage(stage::map_fn("stuck", |_m: NatsMessage| async move {
            std::future::pending::<Result<u64, std::convert::Infallible>>().await
        }))
        .buffer(16)
        .sink(sink)
        .spawn();
    assert!(eventually(Duration::from_secs(10), || handle.stats().in_flight > 0).await);
    let report = handle
        .shutdown_within(Duration::from_millis(50))
        .await
        .unwrap();
    let abandoned = report.abandoned;
    assert!(abandoned > 0, "{report}");
    assert!(report.is_balanced(), "{report}");
    assert!(stuck_out.is_empty());
    assert!(acks.settle(Duration::from_secs(5)).await);
    assert_eq!(acks.counts().naked, report.abandoned);
    assert_eq!(acks.counts().acked, 0);

    let source = JetStreamSource::connect(&config, options("JOBS", "jobs.>"))
        .await
        .unwrap();
    let acks = source.ack_handle();
    let (sink, out) = sink::collect();
    let handle = Pipeline::builder("next")
        .source(source)
        .stage(stage::map_fn("take", |m: NatsMessage| async move {
            Ok::<_, std::convert::Infallible>((id_of(&m), m.delivered))
        }))
        .sink(sink)
        .spawn();
    assert!(
        eventually(Duration::from_secs(10), || out.len() >= N as usize).await,
        "the next consumer got {} of {N} (no AckWait wait: the nak is immediate)",
        out.len()
    );
    let report = handle
        .shutdown_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(acks.settle(Duration::from_secs(5)).await);
    let got = out.take();
    let redelivered = got.iter().filter(|(_, d)| *d > 1).count() as u64;
    assert!(
        redelivered >= abandoned,
        "{redelivered} redelivered, {abandoned} abandoned"
    );
    assert_eq!(
        counts(got.iter().map(|(id, _)| *id))
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        (N..2 * N).collect::<Vec<_>>()
    );
    assert!(report.is_balanced());
    assert_eq!(consumer_state(&js, "JOBS", "workers").await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_once_then_terminated() {
    const N: u64 = 50;
    const POISON: u64 = 7;
    let server = NatsServer::start();
    let js = jetstream::new(client(&server).await);
    create_stream(&js, "POISON", &["poison.>"]).await;
    publish_ids(&js, "poison.new", 0..N).await;
    let source = JetStreamSource::connect(
        &NatsConfig::new(server.url()),
        options("POISON", "poison.>").with_max_deliveries(3),
    )
    .await
    .unwrap();
    let acks = source.ack_handle();
    let (sink, out) = sink::collect();
    // The stage refuses the poison item and the dead-letter store is down, so the item
    // ends `Failed` each time: nak'd, redelivered, until our limit.
    let handle = Pipeline::builder("poison")
        .source(source)
        .stage(stage::map_fn("picky", |m: NatsMessage| async move {
            let id = id_of(&m);
            if id == POISON {
                Err(pipeline_core::error::Message("poison".into()))
            } else {
                Ok(id)
            }
        }))
        .sink(sink)
        .dead_letter(FailingDeadLetters)
        .spawn();
    assert!(
        eventually(Duration::from_secs(20), || acks.counts().dead_lettered == 1).await,
        "{:?}",
        acks.counts()
    );
    // Give any (wrong) further delivery a chance to show.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let report = handle
        .shutdown_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(acks.settle(Duration::from_secs(5)).await);
    let c = acks.counts();
    assert_eq!((c.dead_lettered, c.naked, c.acked), (1, 2, N - 1), "{c:?}");
    assert_eq!(out.len() as u64, N - 1);
    assert_eq!(report.failed, 3, "{report}");
    assert_eq!(
        stream_messages(&js, "POISON_DLQ").await,
        1,
        "exactly one dead letter"
    );
    let dlq = js.get_stream("POISON_DLQ").await.unwrap();
    let letter = dlq.get_raw_message(1).await.unwrap();
    assert_eq!(&letter.payload[..], POISON.to_string().as_bytes());
    let header = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header("Nats-Msg-Id").as_deref(), Some("POISON:8"));
    assert_eq!(header("Pipeline-Deliveries").as_deref(), Some("3"));
    assert_eq!(header("Pipeline-Subject").as_deref(), Some("poison.new"));
    // Terminated, not left for the server's MaxDeliver (8) to drop.
    assert_eq!(consumer_state(&js, "POISON", "workers").await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_longer_than_ack_wait_is_kept_alive_not_redelivered() {
    let server = NatsServer::start();
    let js = jetstream::new(client(&server).await);
    create_stream(&js, "SLOW", &["slow.>"]).await;
    publish_ids(&js, "slow.new", 0..4).await;
    let source = JetStreamSource::connect(
        &NatsConfig::new(server.url()),
        options("SLOW", "slow.>").with_ack_wait(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let acks = source.ack_handle();
    let (sink, out) = sink::collect();
    let handle = Pipeline::builder("slow")
        .source(source)
        .stage(stage::map_fn("slow", |m: NatsMessage| async move {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            Ok::<_, std::convert::Infallible>((id_of(&m), m.delivered))
        }))
        .concurrency(2)
        .sink(sink)
        .spawn();
    // Two rounds of 1.5 s each: the last items wait 3 s in all, three AckWaits.
    assert!(eventually(Duration::from_secs(15), || out.len() >= 4).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = handle
        .shutdown_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(acks.settle(Duration::from_secs(5)).await);
    let got = out.take();
    assert_eq!(got.len(), 4, "redelivered: {got:?}");
    assert!(got.iter().all(|(_, delivered)| *delivered == 1), "{got:?}");
    assert!(acks.counts().progress >= 4, "{:?}", acks.counts());
    assert!(report.is_balanced());
    let stream = js.get_stream("SLOW").await.unwrap();
    let consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config> =
        stream.get_consumer("workers").await.unwrap();
    let info = consumer.get_info().await.unwrap();
    assert_eq!((info.num_redelivered, info.num_ack_pending), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_stores_each_key_once_and_fails_per_item() {
    use pipeline_connectors::nats::JetStreamSink;
    const N: u64 = 200;
    let server = NatsServer::start();
    let nats = client(&server).await;
    let js = jetstream::new(nats.clone());
    create_stream(&js, "IN", &["in.>"]).await;
    create_stream(&js, "OUT", &["out.>"]).await;
    publish_ids(&js, "in.new", 0..N).await;

    // Through a pipeline, keyed on the source message's id.
    let config = NatsConfig::new(server.url());
    let source = JetStreamSource::connect(&config, options("IN", "in.>"))
        .await
        .unwrap();
    let acks = source.ack_handle();
    let sink = JetStreamSink::connect(
        &config,
        "out.copy",
        |m: &NatsMessage| m.id(),
        |m: &NatsMessage| Ok(m.payload.clone()),
    )
    .await
    .unwrap();
    let handle = Pipeline::builder("copy").source(source).sink(sink).spawn();
    assert!(eventually(Duration::from_secs(20), || acks.counts().acked >= N).await);
    let report = handle
        .shutdown_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(acks.settle(Duration::from_secs(5)).await);
    assert_eq!(report.delivered, N, "{report}");
    assert_eq!(stream_messages(&js, "OUT").await, N);

    // The same keys again (an at-least-once repeat): stored once.
    let mut sink = JetStreamSink::with_client(
        nats.clone(),
        Duration::from_secs(2),
        "out.copy",
        |id: &u64| format!("IN:{}", id + 1),
        |id: &u64| {
            if *id >= N && id % 2 == 1 {
                Err("odd ids do not encode".into())
            } else {
                Ok(id.to_string().into())
            }
        },
    );
    let mut again: Vec<u64> = (0..N).collect();
    sink.write(&mut again).await.unwrap();
    assert_eq!(sink.duplicates(), N);
    assert_eq!(stream_messages(&js, "OUT").await, N);

    // Items that cannot be encoded fail alone.
    let mut mixed: Vec<u64> = (N..N + 10).collect();
    let error = sink.write(&mut mixed).await.unwrap_err();
    assert_eq!(error.failed, Some(vec![1, 3, 5, 7, 9]), "{error}");
    assert_eq!(stream_messages(&js, "OUT").await, N + 5);

    // A subject no stream captures: every publish fails, within the ack timeout.
    let mut nowhere = JetStreamSink::with_client(
        nats,
        Duration::from_secs(2),
        "nowhere.at.all",
        |id: &u64| id.to_string(),
        |id: &u64| Ok(id.to_string().into()),
    );
    let started = std::time::Instant::now();
    let error = nowhere.write(&mut vec![1, 2, 3]).await.unwrap_err();
    assert_eq!(error.failed, Some(vec![0, 1, 2]), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_the_limit_is_dead_lettered_without_processing() {
    use futures::StreamExt;
    let server = NatsServer::start();
    let js = jetstream::new(client(&server).await);
    create_stream(&js, "CRASHY", &["crashy.>"]).await;
    publish_ids(&js, "crashy.new", 0..1).await;
    let options = || {
        options("CRASHY", "crashy.>")
            .with_ack_wait(Duration::from_secs(1))
            .with_max_deliveries(2)
    };
    // Create the consumer, then play two consumers that die holding the message.
    drop(
        JetStreamSource::connect(&NatsConfig::new(server.url()), options())
            .await
            .unwrap(),
    );
    let stream = js.get_stream("CRASHY").await.unwrap();
    let raw: jetstream::consumer::Consumer<jetstream::consumer::pull::Config> =
        stream.get_consumer("workers").await.unwrap();
    for attempt in 1..=2 {
        let mut batch = raw
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), batch.next())
            .await
            .expect("a delivery in time")
            .expect("a message")
            .unwrap();
        assert_eq!(msg.info().unwrap().delivered, attempt);
        // Never acked: AckWait runs out.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
    }
    let source = JetStreamSource::connect(&NatsConfig::new(server.url()), options())
        .await
        .unwrap();
    let acks = source.ack_handle();
    let (sink, out) = sink::collect::<u64>();
    let handle = Pipeline::builder("crashy")
        .source(source)
        .stage(stage::map_fn("never", |m: NatsMessage| async move {
            Ok::<_, std::convert::Infallible>(m.delivered)
        }))
        .sink(sink)
        .spawn();
    assert!(eventually(Duration::from_secs(10), || acks.counts().dead_lettered == 1).await);
    let report = handle
        .shutdown_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(acks.settle(Duration::from_secs(5)).await);
    assert!(out.is_empty(), "processed a third time: {:?}", out.take());
    assert_eq!(report.emitted, 0, "{report}");
    assert_eq!(stream_messages(&js, "CRASHY_DLQ").await, 1);
    assert_eq!(consumer_state(&js, "CRASHY", "workers").await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_payload_fails_its_item_only() {
    #[derive(Debug, serde::Deserialize)]
    struct Order {
        id: u64,
    }
    let server = NatsServer::start();
    let js = jetstream::new(client(&server).await);
    create_stream(&js, "ORDERS", &["orders.>"]).await;
    for payload in [r#"{"id":1}"#, "not json", r#"{"id":3}"#] {
        js.publish("orders.new", payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let source = JetStreamSource::connect(
        &NatsConfig::new(server.url()),
        options("ORDERS", "orders.>"),
    )
    .await
    .unwrap();
    let acks = source.ack_handle();
    let (sink, out) = sink::collect();
    let (dead, dead_letters) = sink::collect();
    let handle = Pipeline::builder("orders")
        .source(source)
        .stage(stage::map_fn("decode", |m: NatsMessage| async move {
            m.json::<Order>().map(|o| o.id)
        }))
        .sink(sink)
        .dead_letter(dead)
        .spawn();
    assert!(
        eventually(Duration::from_secs(10), || out.len() + dead_letters.len()
            >= 3)
        .await
    );
    let report = handle
        .shutdown_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(acks.settle(Duration::from_secs(5)).await);
    assert_eq!(out.take(), vec![1, 3]);
    let dead = dead_letters.take();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].stage, "decode");
    assert_eq!((report.delivered, report.dead_lettered), (2, 1));
    assert_eq!(
        acks.counts().acked,
        3,
        "the malformed one is acked once dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_dropped_unanswered_is_nakd_not_held_forever() {
    use pipeline_core::source::Source;
    let server = NatsServer::start();
    let js = jetstream::new(client(&server).await);
    create_stream(&js, "DROPS", &["drops.>"]).await;
    publish_ids(&js, "drops.new", 0..10).await;
    let mut source =
        JetStreamSource::connect(&NatsConfig::new(server.url()), options("DROPS", "drops.>"))
            .await
            .unwrap();
    let acks = source.ack_handle();
    let pulled = tokio::time::timeout(Duration::from_secs(5), source.pull(4))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pulled.items.len(), 4, "pull(max) takes at most max");
    assert_eq!(acks.held(), 4);
    drop(pulled);
    assert!(acks.settle(Duration::from_secs(5)).await);
    assert_eq!((acks.counts().naked, acks.counts().acked), (4, 0));
    // The server applies the naks on its own schedule: pull (boundedly) until all ten.
    let mut next = Vec::new();
    let mut keep = Vec::new(); // not dropped: that would nak them again
    for _ in 0..10 {
        if next.len() >= 10 {
            break;
        }
        let pulled = tokio::time::timeout(Duration::from_secs(5), source.pull(10 - next.len()))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        next.extend(pulled.items.clone());
        keep.push(pulled);
    }
    assert_eq!(
        next.len(),
        10,
        "the four come back with the other six, at once"
    );
    assert_eq!(next.iter().filter(|m| m.delivered == 2).count(), 4);
}
