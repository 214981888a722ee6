//! Benchmark (issue 11.8): JetStream source -> map -> JetStream sink through the pipeline,
//! against a hand-written async-nats loop doing the same work with the same batching
//! (fetch up to 256, publish each with a `Nats-Msg-Id`, await the publish acks of the
//! batch, then ack each message), in the same process, on the same server.
//!
//! It starts a private `nats-server -js` on a free loopback port (set `NATS_SERVER` to
//! its path if it is not in `/usr/sbin` or on `PATH`) and prints both rates and their
//! ratio. Run it in release:
//!
//! ```text
//! cargo run --release -p pipeline-connectors --features nats --example nats_bench -- 50000
//! ```

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures::StreamExt;
use pipeline_connectors::nats::{
    JetStreamSink, JetStreamSource, NatsConfig, NatsMessage, SourceOptions,
};
use pipeline_core::prelude::*;

type Error = Box<dyn std::error::Error + Send + Sync>;

const BATCH: usize = 256;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = std::env::temp_dir().join(format!("pipeline-nats-bench-{}", std::process::id()));
    let bin = std::env::var("NATS_SERVER").unwrap_or_else(|_| {
        if std::path::Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server".into()
        } else {
            "nats-server".into()
        }
    });
    let mut server = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let url = format!("127.0.0.1:{port}");
    let result = run(&url, n).await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(url: &str, n: u64) -> Result<(), Error> {
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = async_nats::connect(url).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = client.ok_or("nats-server did not start")?;
    let js = jetstream::new(client.clone());
    for (name, subject) in [("IN", "in.>"), ("OUT_P", "outp.>"), ("OUT_H", "outh.>")] {
        js.get_or_create_stream(stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await?;
    }
    let mut acks = Vec::new();
    for id in 0..n {
        acks.push(js.publish("in.new", id.to_string().into()).await?);
        if acks.len() >= 1000 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    println!("{n} messages in stream IN");

    let hand = hand_written(&js, n).await?;
    let piped = pipeline(url, n).await?;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "hand-written async-nats loop: {:>10.0} msg/s ({hand:?})",
        rate(hand)
    );
    println!(
        "pipeline source->map->sink:   {:>10.0} msg/s ({piped:?})",
        rate(piped)
    );
    println!(
        "ratio pipeline / hand-written: {:.2}",
        rate(piped) / rate(hand)
    );
    Ok(())
}

fn parse(payload: &[u8]) -> u64 {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn hand_written(js: &jetstream::Context, n: u64) -> Result<Duration, Error> {
    let stream = js.get_stream("IN").await?;
    let consumer: consumer::Consumer<consumer::pull::Config> = stream
        .get_or_create_consumer(
            "hand",
            consumer::pull::Config {
                durable_name: Some("hand".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let mut batch = consumer
            .fetch()
            .max_messages(BATCH)
            .expires(Duration::from_millis(500))
            .messages()
            .await?;
        let mut msgs = Vec::with_capacity(BATCH);
        while let Some(m) = batch.next().await {
            msgs.push(m?);
        }
        let mut pending = Vec::with_capacity(msgs.len());
        for m in &msgs {
            let id = parse(&m.payload) * 2;
            let seq = m.info()?.stream_sequence;
            let publish = PublishMessage::build()
                .payload(id.to_string().into())
                .message_id(format!("IN:{seq}"));
            pending.push(js.send_publish("outh.copy", publish).await?);
        }
        for p in pending {
            p.await?;
        }
        for m in &msgs {
            m.ack().await?;
        }
        done += msgs.len() as u64;
    }
    Ok(started.elapsed())
}

async fn pipeline(url: &str, n: u64) -> Result<Duration, Error> {
    let config = NatsConfig::new(url);
    let source = JetStreamSource::connect(
        &config,
        SourceOptions::new("IN", "piped").with_fetch_wait(Duration::from_millis(500)),
    )
    .await?;
    let acks = source.ack_handle();
    let sink = JetStreamSink::connect(
        &config,
        "outp.copy",
        |item: &(u64, String)| item.1.clone(),
        |item: &(u64, String)| Ok(item.0.to_string().into()),
    )
    .await?;
    let started = Instant::now();
    let handle = Pipeline::builder("bench")
        .source(source)
        .stage(stage::map_fn("double", |m: NatsMessage| async move {
            Ok::<_, std::convert::Infallible>((parse(&m.payload) * 2, m.id()))
        }))
        .buffer(BATCH)
        .sink(sink)
        .buffer(BATCH)
        .spawn();
    let give_up = started + Duration::from_secs(300);
    while acks.counts().acked < n {
        if Instant::now() > give_up {
            return Err("the pipeline did not finish within 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    handle.shutdown_within(Duration::from_secs(5)).await?;
    acks.settle(Duration::from_secs(5)).await;
    Ok(elapsed)
}
