//! Crashes against a real, private redis-server: a worker process killed with `kill -9`,
//! a restarted consumer, a broker restart and a broker outage under load.
#![cfg(feature = "redis")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod redis_support;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pipeline_connectors::redis::StreamEntry;
use pipeline_core::prelude::*;
use redis_support::*;

const WAIT: Duration = Duration::from_secs(60);

/// The worker binary: the scale-out example, built by `cargo test` next to this test.
fn worker_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join("examples").join("redis_scale_out");
    assert!(
        bin.exists(),
        "{} missing: build the examples (`cargo test --features redis` does)",
        bin.display()
    );
    bin
}

struct Worker {
    child: Child,
}

impl Worker {
    fn start(server: &RedisServer, consumer: &str, out: &Path, min_idle_ms: u64) -> Worker {
        let child = Command::new(worker_binary())
            .args([
                "work",
                "--url",
                &server.url(),
                "--stream",
                "jobs",
                "--group",
                "g",
            ])
            .args(["--consumer", consumer, "--out"])
            .arg(out)
            .args([
                "--min-idle-ms",
                &min_idle_ms.to_string(),
                "--reclaim-ms",
                "200",
            ])
            .args(["--block-ms", "100", "--delay-us", "300"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the worker process");
        Worker { child }
    }

    /// `kill -9`.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Ids of `consumer`'s pending entries.
async fn pending_of(c: &mut redis::aio::MultiplexedConnection, consumer: &str) -> HashSet<String> {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg("jobs")
        .arg("g")
        .arg("-")
        .arg("+")
        .arg(100_000)
        .arg(consumer)
        .query_async(c)
        .await
        .expect("XPENDING");
    let mut ids = HashSet::new();
    if let redis::Value::Array(rows) = v {
        for row in rows {
            if let redis::Value::Array(parts) = row
                && let Some(redis::Value::BulkString(id)) = parts.first()
            {
                ids.insert(String::from_utf8_lossy(id).into_owned());
            }
        }
    }
    ids
}

/// Every id in `all` delivered at least once across `files`; duplicates only among
/// `window`. Returns (delivered lines, duplicates).
fn check_delivery(
    all: &HashSet<String>,
    files: &[&Path],
    window: &HashSet<String>,
) -> (usize, usize) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut total = 0;
    for f in files {
        for id in lines(f) {
            total += 1;
            *counts.entry(id).or_default() += 1;
        }
    }
    let missing: Vec<&String> = all
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "ids never delivered: {missing:?}");
    let dups: Vec<&String> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    for id in &dups {
        assert!(
            window.contains(*id),
            "duplicate {id} was not in the killed consumer's in-flight window"
        );
    }
    (total, dups.len())
}

async fn all_delivered(all: &HashSet<String>, files: &[&Path]) -> bool {
    let seen: HashSet<String> = files.iter().flat_map(|f| lines(f)).collect();
    all.iter().all(|id| seen.contains(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_one_of_two_workers_loses_nothing() {
    let server = RedisServer::start();
    let mut c = server.conn().await;
    let n = 6000u64;
    let all: HashSet<String> = produce(&mut c, "jobs", 0..n).await.into_iter().collect();
    let dir = fresh_dir();
    let (out_a, out_b) = (dir.join("a.txt"), dir.join("b.txt"));
    let mut a = Worker::start(&server, "a", &out_a, 500);
    let mut b = Worker::start(&server, "b", &out_b, 500);
    eventually(WAIT, "worker a delivered 500 entries", || {
        lines(&out_a).len() >= 500
    })
    .await;
    a.kill();
    let killed_at = Instant::now();
    let window = pending_of(&mut c, "a").await;
    let delivered_by_a = lines(&out_a).len();
    eprintln!(
        "killed a after {delivered_by_a} deliveries with {} entries pending",
        window.len()
    );
    assert!(
        !window.is_empty(),
        "the killed worker had entries in flight"
    );

    // b takes over a's pending entries after min-idle and finishes the stream.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !pending_of(&mut c, "a").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a's entries were never reclaimed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered_in = killed_at.elapsed();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !all_delivered(&all, &[&out_a, &out_b]).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything was delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until_nothing_pending(&mut c, "jobs", "g", WAIT).await;
    let (total, dups) = check_delivery(&all, &[&out_a, &out_b], &window);
    eprintln!(
        "sent {n}, delivered {total} lines, {dups} duplicates (window {}), a's entries reclaimed {recovered_in:?} after the kill",
        window.len()
    );
    assert!(dups <= window.len());
    b.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_recovers_its_own_pending_entries() {
    let server = RedisServer::start();
    let mut c = server.conn().await;
    let n = 3000u64;
    let all: HashSet<String> = produce(&mut c, "jobs", 0..n).await.into_iter().collect();
    let dir = fresh_dir();
    let (first, second) = (dir.join("a1.txt"), dir.join("a2.txt"));
    // min-idle of an hour: nobody reclaims; only the restart under the same name can.
    let mut a = Worker::start(&server, "a", &first, 3_600_000);
    eventually(WAIT, "worker a delivered 300 entries", || {
        lines(&first).len() >= 300
    })
    .await;
    a.kill();
    let window = pending_of(&mut c, "a").await;
    assert!(!window.is_empty());
    let restarted_at = Instant::now();
    let mut a = Worker::start(&server, "a", &second, 3_600_000);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !window.iter().all(|id| lines(&second).contains(id)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted worker did not re-read its pending entries"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered_in = restarted_at.elapsed();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !all_delivered(&all, &[&first, &second]).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything was delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until_nothing_pending(&mut c, "jobs", "g", WAIT).await;
    let (total, dups) = check_delivery(&all, &[&first, &second], &window);
    eprintln!(
        "sent {n}, delivered {total} lines, {dups} duplicates (window {}), own pending entries re-read within {recovered_in:?} of the restart",
        window.len()
    );
    a.kill();
}

/// A pipeline in this process: source -> slow map -> collect.
fn slow_pipeline(
    server: &RedisServer,
    consumer: &str,
) -> (
    PipelineHandle,
    pipeline_core::sink::Collected<StreamEntry>,
    pipeline_connectors::redis::SourceProgress,
) {
    let source = quick(server.config(), "jobs", "g", consumer)
        .build()
        .unwrap();
    let progress = source.progress();
    let (sink, out) = sink::collect();
    let handle = Pipeline::builder("restart")
        .source(source)
        .stage(stage::map_fn("slow", |e: StreamEntry| async move {
            // Some work: about 50k entries/s, so a stream of thousands spans the outage.
            if n_of(&e) % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok::<_, Infallible>(e)
        }))
        .buffer(128)
        .sink(sink)
        .buffer(128)
        .spawn();
    (handle, out, progress)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_nothing() {
    let mut server = RedisServer::start_aof();
    let mut c = server.conn().await;
    let n = 4000u64;
    let all: HashSet<String> = produce(&mut c, "jobs", 0..n).await.into_iter().collect();
    let (handle, out, progress) = slow_pipeline(&server, "c1");
    eventually(WAIT, "some entries delivered", || out.len() >= 500).await;
    server.kill();
    assert!(out.len() < n as usize, "the stream outlasts the kill");
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let read_before = progress.read();
    server.restart();
    let restarted_at = Instant::now();
    eventually(WAIT, "reads resume after the restart", || {
        progress.read() > read_before
    })
    .await;
    let resumed_in = restarted_at.elapsed();
    let mut c = server.conn().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut tally = Tally::default();
    loop {
        let seen = tally.absorb(&out);
        if all.iter().all(|id| seen.contains(id)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lost entries: {} of {n} seen",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until_nothing_pending(&mut c, "jobs", "g", WAIT).await;
    let report = handle.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, progress.settled())
        .await
        .unwrap();
    assert!(report.is_balanced(), "{report}");
    tally.absorb(&out);
    let delivered = tally.total;
    eprintln!(
        "sent {n}, delivered {delivered} ({} redelivered after the restart), outage {:?}, resumed {resumed_in:?} after the restart",
        delivered as u64 - n,
        restarted_at - killed_at
    );
}

/// Everything a collecting sink received so far (`take` empties the sink, so the
/// tally keeps it).
#[derive(Default)]
struct Tally {
    seen: HashSet<String>,
    total: usize,
}

impl Tally {
    fn absorb(&mut self, out: &pipeline_core::sink::Collected<StreamEntry>) -> &HashSet<String> {
        for e in out.take() {
            self.total += 1;
            self.seen.insert(e.id.to_string());
        }
        &self.seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_under_load_keeps_in_flight_bounded_and_drains() {
    let mut server = RedisServer::start_aof();
    let url = server.url();
    // A producer writing all along; it keeps the ids the server confirmed.
    let producer = tokio::spawn(async move {
        let client = redis::Client::open(url).unwrap();
        let mut confirmed = Vec::new();
        let started = Instant::now();
        let mut i = 0u64;
        while started.elapsed() < Duration::from_secs(3) {
            let cfg = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_millis(200)))
                .set_response_timeout(Some(Duration::from_millis(500)));
            let Ok(mut c) = client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
            else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            loop {
                let mut pipe = redis::pipe();
                for k in 0..50 {
                    pipe.cmd("XADD")
                        .arg("jobs")
                        .arg("*")
                        .arg("n")
                        .arg((i + k).to_string());
                }
                match pipe.query_async::<Vec<String>>(&mut c).await {
                    Ok(ids) => {
                        confirmed.extend(ids);
                        i += 50;
                    }
                    Err(_) => break,
                }
                if started.elapsed() >= Duration::from_secs(3) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        confirmed
    });
    let (handle, out, progress) = slow_pipeline(&server, "c1");
    let bound: u64 = {
        let stats = handle.stats();
        stats
            .stages
            .iter()
            .map(|s| (s.capacity + s.concurrency) as u64)
            .sum::<u64>()
            + 256
    };
    let mut max_in_flight = 0u64;
    let mut sample = |handle: &PipelineHandle| {
        max_in_flight = max_in_flight.max(handle.stats().in_flight);
    };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(800) {
        sample(&handle);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_millis(1200) {
        sample(&handle);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let read_before = progress.read();
    server.restart();
    let healed = Instant::now();
    eventually(WAIT, "reads resume after the heal", || {
        progress.read() > read_before
    })
    .await;
    let resumed_in = healed.elapsed();
    let confirmed = producer.await.unwrap();
    let deadline = Instant::now() + WAIT;
    let mut tally = Tally::default();
    loop {
        sample(&handle);
        let seen = tally.absorb(&out);
        if confirmed.iter().all(|id| seen.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "confirmed entries never delivered: {} of {}",
            seen.len(),
            confirmed.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained_in = healed.elapsed();
    let mut c = server.conn().await;
    until_nothing_pending(&mut c, "jobs", "g", WAIT).await;
    let report = handle.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, progress.settled())
        .await
        .unwrap();
    assert!(report.is_balanced(), "{report}");
    assert!(
        max_in_flight <= bound,
        "in flight {max_in_flight} > bound {bound}"
    );
    eprintln!(
        "confirmed {} entries, delivered {}, max in flight {max_in_flight} (bound {bound}), reads resumed {resumed_in:?} and drained {drained_in:?} after the heal",
        confirmed.len(),
        tally.total + out.len()
    );
}
