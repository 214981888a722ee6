//! Scale-out with NATS JetStream: one producer and any number of workers sharing one
//! durable pull consumer. Each message goes to one worker; a worker that dies loses
//! nothing (its unacknowledged messages are redelivered to the others after AckWait).
//!
//! Start a server (`nats-server -js`), then one producer and N workers:
//!
//! ```text
//! cargo run -p pipeline-connectors --features nats --example nats_worker -- \
//!     produce --server 127.0.0.1:4222 --count 100000
//! cargo run -p pipeline-connectors --features nats --example nats_worker -- \
//!     work --server 127.0.0.1:4222 --delay-ms 1 &    # as many times as you like
//! ```
//!
//! A worker prints `id deliveries` per processed message on stdout (flushed before the
//! message is acked) and stops gracefully when its stdin closes or on Ctrl-C.
//!
//! Options: `--stream WORK` `--subject work.items` `--durable workers` `--count N`
//! `--start K` `--delay-ms D` `--ack-wait-ms A` `--buffer B` `--concurrency C`.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use async_nats::jetstream;
use pipeline_connectors::nats::{JetStreamSource, NatsConfig, NatsMessage, SourceOptions};
use pipeline_core::prelude::*;
use pipeline_core::sink::{Sink, WriteError};

type Args = HashMap<String, String>;

fn parse_args() -> (String, Args) {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_default();
    let mut args = HashMap::new();
    while let Some(key) = it.next() {
        if let Some(key) = key.strip_prefix("--") {
            args.insert(key.to_owned(), it.next().unwrap_or_default());
        }
    }
    (mode, args)
}

fn arg<T: std::str::FromStr>(args: &Args, key: &str, default: T) -> T {
    args.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn text(args: &Args, key: &str, default: &str) -> String {
    args.get(key).cloned().unwrap_or_else(|| default.to_owned())
}

/// Writes `id deliveries` lines to stdout, flushed per batch: once `write` returns,
/// the lines are out of the process, and only then is the message acked.
#[derive(Debug)]
struct Stdout;

impl Sink for Stdout {
    type Item = (u64, u64);

    async fn write(&mut self, items: &mut Vec<(u64, u64)>) -> Result<(), WriteError> {
        let mut out = String::with_capacity(items.len() * 12);
        for (id, delivered) in items.drain(..) {
            out.push_str(&format!("{id} {delivered}\n"));
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(WriteError::all)
    }

    fn name(&self) -> &str {
        "stdout"
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mode, args) = parse_args();
    let config = NatsConfig::new(text(&args, "server", "127.0.0.1:4222"));
    let stream = text(&args, "stream", "WORK");
    let subject = text(&args, "subject", "work.items");
    match mode.as_str() {
        "produce" => produce(&config, &stream, &subject, &args).await,
        "work" => work(&config, &stream, &subject, &args).await,
        _ => {
            eprintln!("usage: nats_worker produce|work [--server H:P] [--count N] ...");
            std::process::exit(2);
        }
    }
}

async fn produce(
    config: &NatsConfig,
    stream: &str,
    subject: &str,
    args: &Args,
) -> Result<(), Box<dyn std::error::Error>> {
    let start: u64 = arg(args, "start", 0);
    let count: u64 = arg(args, "count", 10_000);
    let js = jetstream::new(config.connect("producer").await?);
    js.get_or_create_stream(jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec![subject.to_owned()],
        ..Default::default()
    })
    .await?;
    let mut acks = Vec::with_capacity(1024);
    for id in start..start + count {
        // The id as message id too: a re-run of the producer stores nothing twice.
        let publish = jetstream::message::PublishMessage::build()
            .payload(id.to_string().into())
            .message_id(id.to_string());
        acks.push(js.send_publish(subject.to_owned(), publish).await?);
        if acks.len() == 1024 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    eprintln!("produced {count} messages from {start}");
    Ok(())
}

async fn work(
    config: &NatsConfig,
    stream: &str,
    subject: &str,
    args: &Args,
) -> Result<(), Box<dyn std::error::Error>> {
    let delay = Duration::from_millis(arg(args, "delay-ms", 0));
    let options = SourceOptions::new(stream, text(args, "durable", "workers"))
        .with_subjects([subject])
        .with_ack_wait(Duration::from_millis(arg(args, "ack-wait-ms", 30_000)))
        .with_fetch_wait(Duration::from_millis(200));
    let source = JetStreamSource::connect(config, options).await?;
    let acks = source.ack_handle();
    let buffer: usize = arg(args, "buffer", 64);
    let handle = Pipeline::builder("worker")
        .source(source)
        .stage(stage::map_fn("work", move |m: NatsMessage| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            String::from_utf8_lossy(&m.payload)
                .parse::<u64>()
                .map(|id| (id, m.delivered))
        }))
        .concurrency(arg(args, "concurrency", 1))
        .buffer(buffer)
        .sink(Stdout)
        .buffer(buffer)
        .spawn();
    // Stop when stdin closes (a parent process going away) or on Ctrl-C.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    });
    let report = handle
        .shutdown_on(async move {
            tokio::select! {
                _ = stdin_closed => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    let settled = acks.settle(Duration::from_secs(10)).await;
    eprintln!("{report}\nacks settled: {settled}, {:?}", acks.counts());
    Ok(())
}
