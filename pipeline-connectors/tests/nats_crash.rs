//! Crashes against a real nats-server 2.9: a consumer process killed with `kill -9`, the
//! broker killed and restarted with the same store, and a broker outage under load.
#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use pipeline_connectors::nats::{JetStreamSource, NatsConfig, NatsMessage, SourceOptions};
use pipeline_core::prelude::*;
use support::*;

/// The worker example binary, built next to this test (or built now, in its own target
/// directory, if this test was compiled alone).
fn worker_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let built = profile_dir.join("examples").join("nats_worker");
    if built.exists() {
        return built;
    }
    let target = profile_dir.parent().unwrap().join("nats-worker");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "pipeline-connectors",
            "--features",
            "nats",
            "--example",
            "nats_worker",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo to build the worker example");
    assert!(status.success(), "building the nats_worker example failed");
    target.join("debug").join("examples").join("nats_worker")
}

/// A worker process and the `(id, deliveries)` lines it printed.
struct Worker {
    child: Child,
    seen: Arc<Mutex<Vec<(u64, u64)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn spawn(server: &NatsServer, buffer: usize, ack_wait_ms: u64) -> Worker {
        let mut child = Command::new(worker_binary())
            .args([
                "work",
                "--server",
                &server.url(),
                "--stream",
                "WORK",
                "--subject",
                "work.items",
            ])
            .args(["--delay-ms", "1", "--buffer", &buffer.to_string()])
            .args(["--ack-wait-ms", &ack_wait_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the worker");
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // A line cut by kill -9 has fewer than two fields: ignored.
                let mut fields = line.split(' ');
                if let (Some(Ok(id)), Some(Ok(d)), None) = (
                    fields.next().map(str::parse::<u64>),
                    fields.next().map(str::parse::<u64>),
                    fields.next(),
                ) {
                    sink.lock().unwrap().push((id, d));
                }
            }
        });
        Worker {
            child,
            seen,
            reader: Some(reader),
        }
    }

    fn seen(&self) -> Vec<(u64, u64)> {
        self.seen.lock().unwrap().clone()
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
    }

    /// Closes stdin (graceful stop) and waits at most `within` for the exit.
    fn stop(&mut self, within: Duration) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "worker exited with {status}");
                break;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("worker did not stop within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tally(ids: impl IntoIterator<Item = u64>) -> BTreeMap<u64, u64> {
    let mut seen = BTreeMap::new();
    for id in ids {
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_consumer_processes_loses_nothing() {
    const N: u64 = 3_000;
    const BUFFER: usize = 32;
    // The killed worker holds at most its pipeline's in-flight bound: two edges, one
    // call, one batch in the source's and one in the sink's hands.
    const WINDOW: u64 = 4 * BUFFER as u64 + 1;
    let server = NatsServer::start();
    let js = jetstream::new(client(&server).await);
    create_stream(&js, "WORK", &["work.items"]).await;
    publish_ids(&js, "work.items", 0..N).await;

    let mut a = Worker::spawn(&server, BUFFER, 2_000);
    let mut b = Worker::spawn(&server, BUFFER, 2_000);
    let total = |a: &Worker, b: &Worker| a.seen().len() + b.seen().len();
    assert!(
        eventually(Duration::from_secs(30), || total(&a, &b) >= N as usize / 4).await,
        "workers did not start consuming"
    );
    a.kill9();
    let killed_at = Instant::now();
    let from_a = a.seen();
    assert!(
        eventually(Duration::from_secs(30), || {
            let all = tally(from_a.iter().chain(b.seen().iter()).map(|(id, _)| *id));
            all.len() as u64 == N
        })
        .await,
        "not every id reached a sink"
    );
    let recovered = killed_at.elapsed();
    b.stop(Duration::from_secs(15));
    let from_b = b.seen();
    let all = tally(from_a.iter().chain(from_b.iter()).map(|(id, _)| *id));
    let delivered: u64 = all.values().sum();
    let duplicates = delivered - N;
    println!(
        "kill -9 of one of two workers: sent {N}, worker A wrote {} before the kill, worker B {}, \
         delivered {delivered}, duplicates {duplicates} (window {WINDOW}), all ids {recovered:?} after the kill",
        from_a.len(),
        from_b.len()
    );
    assert_eq!(all.len() as u64, N);
    assert!(
        duplicates <= WINDOW,
        "{duplicates} duplicates > window {WINDOW}"
    );
    // B saw no duplicate of its own making.
    assert!(
        tally(from_b.iter().map(|(id, _)| *id))
            .values()
            .all(|&n| n == 1)
    );
    assert_eq!(consumer_state(&js, "WORK", "workers").await, (0, 0));
}

struct Crash {
    sent: u64,
    delivered: u64,
    duplicates: u64,
    max_in_flight: u64,
    bound: u64,
    recovered: Duration,
    resumed: Duration,
}

/// Runs `N` messages through an in-process pipeline, kills the broker with `kill -9`
/// after a quarter, keeps it down for `outage`, restarts it on the same store and waits
/// for every id. In flight is sampled throughout.
async fn through_a_broker_crash(outage: Duration) -> Crash {
    const N: u64 = 4_000;
    const BUFFER: usize = 32;
    let mut server = NatsServer::start();
    let js = jetstream::new(client(&server).await);
    create_stream(&js, "CRASH", &["crash.>"]).await;
    publish_ids(&js, "crash.new", 0..N).await;
    let source = JetStreamSource::connect(
        &NatsConfig::new(server.url()).with_reconnect_max_delay(Duration::from_millis(250)),
        SourceOptions::new("CRASH", "workers")
            .with_subjects(["crash.>"])
            .with_ack_wait(Duration::from_secs(2))
            .with_fetch_wait(Duration::from_millis(200))
            .with_backlog_every(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let acks = source.ack_handle();
    let (sink, out) = sink::collect();
    let handle = Pipeline::builder("crash")
        .source(source)
        .stage(stage::map_fn("work", |m: NatsMessage| async move {
            tokio::time::sleep(Duration::from_micros(500)).await;
            Ok::<_, std::convert::Infallible>(
                String::from_utf8_lossy(&m.payload)
                    .parse::<u64>()
                    .unwrap_or(u64::MAX),
            )
        }))
        .buffer(BUFFER)
        .sink(sink)
        .buffer(BUFFER)
        .spawn();
    // Two edges, one call, and a batch in the source's and one in the sink's hands.
    let bound = 4 * BUFFER as u64 + 1;
    let handle = Arc::new(handle);
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (handle, peak, acks) = (Arc::clone(&handle), Arc::clone(&peak), acks.clone());
        tokio::spawn(async move {
            loop {
                let now = handle.stats().in_flight.max(acks.held() as u64);
                peak.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    assert!(eventually(Duration::from_secs(30), || out.len() >= N as usize / 4).await);
    server.kill();
    let during = out.len();
    tokio::time::sleep(outage).await;
    let stalled = out.len() - during;
    server.restart();
    let restarted = Instant::now();
    let before = out.len();
    assert!(
        eventually(Duration::from_secs(30), || out.len() > before).await,
        "no delivery after the restart"
    );
    let resumed = restarted.elapsed();
    let collected = Arc::new(Mutex::new(Vec::new()));
    let all_seen = {
        let collected = Arc::clone(&collected);
        let out = out.clone();
        move || {
            let mut c = collected.lock().unwrap();
            c.extend(out.take());
            tally(c.iter().copied()).len() as u64 >= N
        }
    };
    assert!(
        eventually(Duration::from_secs(60), all_seen).await,
        "not every id arrived after the restart"
    );
    let recovered = restarted.elapsed();
    // Whatever the broker redelivers after its restart (already acked ones included)
    // drains too; then nothing is pending.
    let js = jetstream::new(client(&server).await);
    let mut settled = false;
    for _ in 0..100 {
        if consumer_state(&js, "CRASH", "workers").await == (0, 0) {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sampler.abort();
    let _ = sampler.await;
    let handle = Arc::into_inner(handle).expect("sampler gone");
    let report = handle
        .shutdown_within(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(acks.settle(Duration::from_secs(10)).await);
    collected.lock().unwrap().extend(out.take());
    let got = collected.lock().unwrap().clone();
    let all = tally(got.iter().copied());
    assert!(settled, "consumer still has pending messages");
    assert!(report.is_balanced(), "{report}");
    assert_eq!(all.len() as u64, N, "ids missing");
    assert!(!all.contains_key(&u64::MAX));
    println!("during the outage the sink still got {stalled} (drained from the pipeline)");
    Crash {
        sent: N,
        delivered: got.len() as u64,
        duplicates: got.len() as u64 - N,
        max_in_flight: peak.load(std::sync::atomic::Ordering::Relaxed),
        bound,
        recovered,
        resumed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_nothing() {
    let c = through_a_broker_crash(Duration::from_millis(200)).await;
    println!(
        "broker kill -9 + restart: sent {}, delivered {}, duplicates {} (not bounded by the \
         in-flight window after a broker crash), deliveries resumed {:?} and all ids were in {:?} after the restart",
        c.sent, c.delivered, c.duplicates, c.resumed, c.recovered
    );
    assert!(
        c.max_in_flight <= c.bound,
        "in flight {} > bound {}",
        c.max_in_flight,
        c.bound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_under_load_keeps_memory_bounded_and_drains() {
    let c = through_a_broker_crash(Duration::from_secs(3)).await;
    println!(
        "3 s broker outage: sent {}, delivered {}, duplicates {}, peak in flight {} (bound {}), \
         deliveries resumed {:?} and all ids were in {:?} after the heal",
        c.sent, c.delivered, c.duplicates, c.max_in_flight, c.bound, c.resumed, c.recovered
    );
    assert!(
        c.max_in_flight <= c.bound,
        "in flight {} > bound {}",
        c.max_in_flight,
        c.bound
    );
}
