//! Redis source -> map -> Redis sink through the pipeline, against a hand-written loop
//! doing the same work with the same client: `XREADGROUP COUNT 256`, one pipelined
//! `XADD` round trip per batch, one `XACK` per batch. Prints both rates and their ratio.
//!
//! ```text
//! cargo run --release -p pipeline-connectors --features redis --example redis_bench -- [--entries 200000] [--url redis://127.0.0.1:6379]
//! ```
//!
//! Without `--url` it starts a private `redis-server` (from `PATH`) on a free port and
//! stops it at the end. Run release builds only; debug numbers mean nothing.
//!
//! Measured once (December 2026, 2 shared cores, redis-server 7.0.15, 200 000 entries of
//! ~110 bytes): hand loop 107-150k entries/s, pipeline 124-143k entries/s, ratio
//! 0.95-1.15 over two runs (the pipeline overlaps reads, writes and acks; the loop does
//! them in turn).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pipeline_connectors::redis::{
    RedisConfig, StreamEntry, StreamRecord, StreamSink, StreamSource,
};
use pipeline_core::prelude::*;
use redis::aio::MultiplexedConnection;

const BATCH: usize = 256;

struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let flag = format!("--{name}");
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

async fn connect(url: &str) -> Result<MultiplexedConnection, BoxError> {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

async fn start_server() -> Result<(Server, String), BoxError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()?;
    let url = format!("redis://127.0.0.1:{port}");
    let server = Server(Some(child));
    for _ in 0..200 {
        if let Ok(mut c) = connect(&url).await
            && redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok()
        {
            return Ok((server, url));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("redis-server did not start".into())
}

async fn fill(c: &mut MultiplexedConnection, stream: &str, n: u64) -> Result<(), BoxError> {
    let payload = "x".repeat(100);
    let mut i = 0;
    while i < n {
        let mut pipe = redis::pipe();
        for k in i..n.min(i + 1000) {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("n")
                .arg(k)
                .arg("body")
                .arg(&payload)
                .ignore();
        }
        pipe.query_async::<()>(c).await?;
        i += 1000;
    }
    Ok(())
}

async fn xlen(c: &mut MultiplexedConnection, stream: &str) -> Result<u64, BoxError> {
    Ok(redis::cmd("XLEN").arg(stream).query_async(c).await?)
}

async fn with_pipeline(url: &str, n: u64) -> Result<Duration, BoxError> {
    let config = RedisConfig::new(url)?;
    let source = StreamSource::builder(config.clone(), "bench:in", "pipeline", "c1")
        .block(Duration::from_millis(100))
        .read_count(BATCH)
        .build()?;
    let progress = source.progress();
    let mut c = connect(url).await?;
    let started = Instant::now();
    let handle = Pipeline::builder("bench")
        .source(source)
        .stage(stage::map_fn("map", |e: StreamEntry| async move {
            Ok::<_, std::convert::Infallible>(StreamRecord::from(e))
        }))
        .sink(StreamSink::new(config, "bench:out1")?)
        .spawn();
    while progress.acked() < n || xlen(&mut c, "bench:out1").await? < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    handle.shutdown().await?;
    Ok(took)
}

async fn by_hand(url: &str, n: u64) -> Result<Duration, BoxError> {
    let mut c = connect(url).await?;
    let _: Result<(), _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("bench:in")
        .arg("hand")
        .arg("0")
        .query_async(&mut c)
        .await;
    let started = Instant::now();
    let mut done = 0u64;
    while done < n {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("hand")
            .arg("c1")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg("bench:in")
            .arg(">")
            .query_async(&mut c)
            .await?;
        let Some(key) = reply.keys.into_iter().next() else {
            continue;
        };
        let mut pipe = redis::pipe();
        let mut ack = redis::cmd("XACK");
        ack.arg("bench:in").arg("hand");
        for entry in &key.ids {
            let cmd = pipe.cmd("XADD").arg("bench:out2").arg("*");
            for (k, v) in &entry.map {
                if let redis::Value::BulkString(b) = v {
                    cmd.arg(k).arg(b.as_slice());
                }
            }
            cmd.ignore();
            ack.arg(&entry.id);
        }
        pipe.query_async::<()>(&mut c).await?;
        ack.query_async::<i64>(&mut c).await?;
        done += key.ids.len() as u64;
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let n: u64 = arg("entries").map_or(Ok(200_000), |v| v.parse())?;
    let (_server, url) = match arg("url") {
        Some(url) => (Server(None), url),
        None => start_server().await?,
    };
    let mut c = connect(&url).await?;
    let _: () = redis::cmd("DEL")
        .arg("bench:in")
        .arg("bench:out1")
        .arg("bench:out2")
        .query_async(&mut c)
        .await?;
    fill(&mut c, "bench:in", n).await?;
    // One stream, two groups: both read the same entries.
    let hand = by_hand(&url, n).await?;
    let pipe = with_pipeline(&url, n).await?;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("entries: {n}");
    println!(
        "hand-written loop: {:>10.0} entries/s ({hand:?})",
        rate(hand)
    );
    println!(
        "pipeline:          {:>10.0} entries/s ({pipe:?})",
        rate(pipe)
    );
    println!("ratio pipeline / hand: {:.2}", rate(pipe) / rate(hand));
    Ok(())
}
