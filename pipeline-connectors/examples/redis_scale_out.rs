//! Scale-out over one Redis consumer group: one producer, N workers, each a separate
//! process sharing the work at least once.
//!
//! ```text
//! redis-server --port 6379 &
//! # one producer: 100 000 entries into `orders`
//! cargo run -p pipeline-connectors --features redis --example redis_scale_out -- \
//!     produce --url redis://127.0.0.1:6379 --stream orders --count 100000
//! # N workers (run each in its own shell; names must be unique and stable across restarts)
//! cargo run -p pipeline-connectors --features redis --example redis_scale_out -- \
//!     work --url redis://127.0.0.1:6379 --stream orders --group billing --consumer worker-1
//! cargo run -p pipeline-connectors --features redis --example redis_scale_out -- \
//!     work --url redis://127.0.0.1:6379 --stream orders --group billing --consumer worker-2
//! ```
//!
//! Kill a worker with `kill -9`: after `--min-idle-ms` the others take over what it had
//! in flight (`XAUTOCLAIM`); restarted under the same name it first re-reads its own
//! pending entries. Each worker appends the id of every entry it delivered to `--out`
//! (one line each, written before the entry is acknowledged) or prints it.
//!
//! Options for `work`: `--min-idle-ms` (default 30000), `--reclaim-ms` (default 1000),
//! `--block-ms` (default 1000), `--delay-us` per entry (default 0: simulated work),
//! `--max-deliveries` (default 10). The worker stops on Ctrl-C, draining what is in
//! flight.

use std::io::Write;
use std::time::Duration;

use pipeline_connectors::redis::{
    RedisConfig, StreamEntry, StreamRecord, StreamSink, StreamSource,
};
use pipeline_core::prelude::*;
use pipeline_core::sink::{Sink, WriteError};

/// `--name value` pairs after the mode.
struct Args(Vec<String>);

impl Args {
    fn get(&self, name: &str) -> Option<&str> {
        let flag = format!("--{name}");
        self.0
            .iter()
            .position(|a| *a == flag)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }

    fn or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    fn num(&self, name: &str, default: u64) -> Result<u64, BoxError> {
        match self.get(name) {
            Some(v) => Ok(v.parse().map_err(|e| format!("--{name}: {e}"))?),
            None => Ok(default),
        }
    }
}

/// Appends one line per delivered entry id; each batch is one `write` to the file (it
/// reaches the OS before the sink returns, so a `kill -9` loses nothing written).
struct IdLog(Box<dyn Write + Send>);

impl Sink for IdLog {
    type Item = StreamEntry;

    async fn write(&mut self, items: &mut Vec<StreamEntry>) -> Result<(), WriteError> {
        let mut buf = String::new();
        for e in items.drain(..) {
            buf.push_str(&e.id.to_string());
            buf.push('\n');
        }
        self.0.write_all(buf.as_bytes()).map_err(WriteError::all)?;
        self.0.flush().map_err(WriteError::all)
    }

    fn name(&self) -> &str {
        "id_log"
    }
}

async fn produce(args: &Args) -> Result<(), BoxError> {
    let config = RedisConfig::new(&args.or("url", "redis://127.0.0.1:6379"))?;
    let stream = args.or("stream", "orders");
    let count = args.num("count", 100_000)?;
    let mut sink = StreamSink::new(config, &stream)?;
    let mut sent = 0u64;
    while sent < count {
        let end = count.min(sent + 1000);
        let mut batch: Vec<StreamRecord> = (sent..end)
            .map(|n| StreamRecord::new().field("n", n.to_string()))
            .collect();
        sink.write(&mut batch).await.map_err(|e| e.to_string())?;
        sent = end;
    }
    eprintln!("produced {sent} entries into `{stream}`");
    Ok(())
}

async fn work(args: &Args) -> Result<(), BoxError> {
    let config = RedisConfig::new(&args.or("url", "redis://127.0.0.1:6379"))?;
    let stream = args.or("stream", "orders");
    let group = args.or("group", "workers");
    let consumer = args
        .get("consumer")
        .ok_or("--consumer is required")?
        .to_owned();
    let delay = Duration::from_micros(args.num("delay-us", 0)?);
    let source = StreamSource::builder(config, &stream, &group, &consumer)
        .min_idle(Duration::from_millis(args.num("min-idle-ms", 30_000)?))
        .reclaim_every(Duration::from_millis(args.num("reclaim-ms", 1_000)?))
        .block(Duration::from_millis(args.num("block-ms", 1_000)?))
        .max_deliveries(args.num("max-deliveries", 10)?)
        .build()?;
    let progress = source.progress();
    let out: Box<dyn Write + Send> = match args.get("out") {
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let handle = Pipeline::builder(format!("worker-{consumer}"))
        .source(source)
        .stage(stage::map_fn("work", move |e: StreamEntry| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, std::convert::Infallible>(e)
        }))
        .buffer(64)
        .sink(IdLog(out))
        .buffer(64)
        .spawn();
    eprintln!("worker {consumer} running on `{stream}` / `{group}`");
    tokio::signal::ctrl_c().await?;
    let report = handle.shutdown().await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), progress.settled()).await;
    eprintln!("{report}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        return Err("usage: redis_scale_out produce|work [--option value ...]".into());
    }
    let mode = argv.remove(0);
    let args = Args(argv);
    match mode.as_str() {
        "produce" => produce(&args).await,
        "work" => work(&args).await,
        other => Err(format!("unknown mode `{other}`: expected `produce` or `work`").into()),
    }
}
