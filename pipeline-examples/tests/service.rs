//! Runs the real `service` binary: thousands of concurrent events from a real HTTP client
//! with bad requests mixed in, a SIGTERM in the middle of the load, and the live page in
//! headless Chromium.
//!
//! The client is a small HTTP/1.1 client over `tokio::net::TcpStream` (one connection per
//! request, `connection: close`), to keep the dependency tree lean.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// Body limit the server is started with.
const BODY_LIMIT: usize = 4096;
/// Admission bound the server is started with.
const MAX_IN_FLIGHT: usize = 48;
/// Concurrent clients.
const CLIENTS: usize = 64;

/// A running `service` process.
struct Server {
    child: Child,
    addr: SocketAddr,
    report: PathBuf,
    /// Every stdout line after the first.
    stdout: tokio::task::JoinHandle<Vec<String>>,
}

async fn start(dir: &Path) -> Server {
    let report = dir.join("report.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_service"))
        .args(["--addr", "127.0.0.1:0"])
        .args(["--max-in-flight", &MAX_IN_FLIGHT.to_string()])
        .args(["--body-limit", &BODY_LIMIT.to_string()])
        .arg("--report-json")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the service binary");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the service prints its address within 30 s")
        .unwrap()
        .expect("a first stdout line");
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .unwrap();
    let stdout = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });
    Server {
        child,
        addr,
        report,
        stdout,
    }
}

/// An HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// Header lines, lower-cased.
    headers: String,
    body: String,
}

/// One request over a fresh connection.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<Reply> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("content-type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other(format!("no response head in {raw:?}")))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
        Ok(Reply {
            status,
            headers: head.to_lowercase(),
            body: body.to_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| std::io::Error::other("timed out"))?
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let reply = request(addr, "GET", path, None, b"").await.unwrap();
    assert_eq!(reply.status, 200, "{path}: {reply:?}");
    serde_json::from_str(&reply.body).unwrap()
}

/// What a request is meant to test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A valid event with `try_send`.
    Good,
    /// A valid event with `?wait=true`.
    Wait,
    Malformed,
    Oversized,
    WrongType,
}

#[derive(Debug, Clone)]
struct Job {
    kind: Kind,
    content_type: Option<&'static str>,
    path: &'static str,
    body: Vec<u8>,
}

/// A valid event. Every 10th is a test event (filtered), every 50th has a negative
/// amount (dead-lettered by `validate`), every 100th is from an unknown user
/// (dead-lettered by `enrich`).
fn event(id: u64) -> Vec<u8> {
    let user = if id % 100 == 7 {
        format!("ghost{id}")
    } else {
        format!("user{}", id % 13)
    };
    let amount = if id % 50 == 3 { -100 } else { 100 + id as i64 };
    let kind = if id % 10 == 5 { "test" } else { "order" };
    serde_json::json!({ "id": id, "user": user, "amount_cents": amount, "kind": kind })
        .to_string()
        .into_bytes()
}

fn good(id: u64) -> Job {
    Job {
        kind: Kind::Good,
        content_type: Some("application/json"),
        path: "/events",
        body: event(id),
    }
}

fn bad_jobs(n: usize) -> Vec<Job> {
    const MALFORMED: &[&str] = &[
        r#"{"id": 1, "user": "#,
        "not json at all",
        r#"[1, 2, 3]"#,
        r#"{"id": "one", "user": "ann", "amount_cents": 1}"#,
        r#"{"id": 1, "user": "ann"}"#,
        r#"{"id": 1, "user": "ann", "amount_cents": 1, "extra": true}"#,
        "",
    ];
    let oversized = serde_json::json!({
        "id": 1, "user": "x".repeat(BODY_LIMIT + 1000), "amount_cents": 1
    })
    .to_string();
    let mut jobs = Vec::new();
    for i in 0..n {
        jobs.push(Job {
            kind: Kind::Malformed,
            content_type: Some("application/json"),
            path: "/events",
            body: MALFORMED[i % MALFORMED.len()].as_bytes().to_vec(),
        });
        if i % 3 == 0 {
            jobs.push(Job {
                kind: Kind::Oversized,
                content_type: Some("application/json"),
                path: "/events",
                body: oversized.clone().into_bytes(),
            });
            jobs.push(Job {
                kind: Kind::WrongType,
                content_type: [
                    Some("text/plain"),
                    None,
                    Some("application/x-www-form-urlencoded"),
                ][(i / 3) % 3],
                path: "/events",
                body: event(1),
            });
        }
    }
    jobs
}

/// Status counts per request kind, and the bodies of the `?wait=true` answers.
#[derive(Debug, Default)]
struct Tally {
    statuses: BTreeMap<(Kind, u16), usize>,
    /// Connections refused or cut (only expected after SIGTERM).
    refused: BTreeMap<Kind, usize>,
    waits: Vec<Value>,
    /// Every 503 carried `Retry-After`.
    retry_after_missing: usize,
}

impl Tally {
    fn count(&self, kind: Kind, status: u16) -> usize {
        self.statuses.get(&(kind, status)).copied().unwrap_or(0)
    }

    /// Events the pipeline took: 202s, and `?wait=true` answers with an outcome.
    fn accepted(&self) -> usize {
        self.count(Kind::Good, 202) + self.waits.len()
    }
}

/// Runs `jobs` from `CLIENTS` concurrent clients; `on_done(n)` after each response.
async fn load(
    addr: SocketAddr,
    jobs: Vec<Job>,
    on_done: impl Fn(usize) + Send + Sync + 'static,
) -> Tally {
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let on_done = Arc::new(on_done);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (jobs, next, done, tally, on_done) = (
            Arc::clone(&jobs),
            Arc::clone(&next),
            Arc::clone(&done),
            Arc::clone(&tally),
            Arc::clone(&on_done),
        );
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let reply = request(addr, "POST", job.path, job.content_type, &job.body).await;
                let mut t = tally.lock().await;
                match reply {
                    Ok(reply) => {
                        *t.statuses.entry((job.kind, reply.status)).or_default() += 1;
                        if reply.status == 503 && !reply.headers.contains("\r\nretry-after: 1") {
                            t.retry_after_missing += 1;
                        }
                        if job.kind == Kind::Wait && matches!(reply.status, 200 | 422) {
                            t.waits.push(serde_json::from_str(&reply.body).unwrap());
                        }
                        if matches!(
                            job.kind,
                            Kind::Malformed | Kind::Oversized | Kind::WrongType
                        ) {
                            let body: Value = serde_json::from_str(&reply.body).unwrap();
                            assert!(body["error"].is_string(), "{reply:?}");
                        }
                    }
                    Err(_) => *t.refused.entry(job.kind).or_default() += 1,
                }
                drop(t);
                on_done(done.fetch_add(1, Ordering::Relaxed) + 1);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    Arc::try_unwrap(tally).unwrap().into_inner()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn stage<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {stats}"))
}

/// Waits until everything emitted has finished.
async fn settle(addr: SocketAddr) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = get_json(addr, "/stats").await;
        if u(&stats["in_flight"]) == 0 || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_bad_requests_then_sigterm_mid_load_drains_every_accepted_event() {
    let dir = tempdir("load");
    let mut server = start(&dir).await;
    let addr = server.addr;

    // Phase A: 2000 events with 100 malformed, 34 oversized and 34 wrong-type requests
    // shuffled in (deterministically), from 64 clients.
    let mut jobs: Vec<Job> = (0..2000).map(good).collect();
    jobs.extend(bad_jobs(100));
    shuffle(&mut jobs);
    let bad_sent = jobs.iter().filter(|j| j.kind != Kind::Good).count();
    let sent_a = jobs.len();
    let started = Instant::now();
    let mut a = load(addr, jobs, |_| {}).await;
    eprintln!(
        "phase A: {sent_a} requests in {:?}: {a:?}",
        started.elapsed()
    );

    assert!(
        a.refused.is_empty(),
        "no connection refused before SIGTERM: {a:?}"
    );
    assert_eq!(a.retry_after_missing, 0, "every 503 says Retry-After");
    assert_eq!(
        a.count(Kind::Good, 202) + a.count(Kind::Good, 503),
        2000,
        "{a:?}"
    );
    assert!(a.count(Kind::Good, 202) > 0);
    assert_eq!(a.count(Kind::Malformed, 400), 100, "{a:?}");
    assert_eq!(a.count(Kind::Oversized, 413), 34, "{a:?}");
    assert_eq!(a.count(Kind::WrongType, 415), 34, "{a:?}");
    assert_eq!(bad_sent, 168);

    // 40 `?wait=true` events at once, outside the saturating load (under it, a waiting
    // sender can lose every race for a freed admission slot: see the report).
    let waits: Vec<Job> = (0..40u64)
        .map(|i| {
            let id = 10_000 + i;
            let body = match id % 4 {
                0 => serde_json::json!({ "id": id, "user": "ann", "amount_cents": -1 }),
                1 => serde_json::json!({ "id": id, "user": "ghost", "amount_cents": 1 }),
                2 => serde_json::json!({ "id": id, "user": "ann", "amount_cents": 1, "kind": "test" }),
                _ => serde_json::json!({ "id": id, "user": "ann", "amount_cents": 1 }),
            };
            Job {
                kind: Kind::Wait,
                content_type: Some("application/json"),
                path: "/events?wait=true",
                body: body.to_string().into_bytes(),
            }
        })
        .collect();
    let w = load(addr, waits, |_| {}).await;
    assert!(w.refused.is_empty(), "{w:?}");
    assert_eq!(
        w.waits.len(),
        40,
        "every wait is answered with an outcome: {w:?}"
    );
    for w in &w.waits {
        match w["outcome"].as_str().unwrap() {
            "delivered" | "filtered" => assert!(w.get("reason").is_none(), "{w}"),
            "dead_lettered" => {
                let stage = w["reason"]["stage"].as_str().unwrap();
                let error = w["reason"]["error"].as_str().unwrap();
                assert!(
                    (stage == "validate" && error.contains("negative"))
                        || (stage == "enrich" && error.contains("unknown user")),
                    "{w}"
                );
            }
            other => panic!("unexpected outcome {other} in {w}"),
        }
    }
    let outcome = |o: &str| w.waits.iter().filter(|v| v["outcome"] == o).count();
    assert_eq!(outcome("dead_lettered"), 20, "{:?}", w.waits);
    assert_eq!(outcome("filtered"), 10, "{:?}", w.waits);
    assert_eq!(w.count(Kind::Wait, 422), 20);
    a.waits = w.waits;

    // The ledger counts only what got through: bad requests never reached the pipeline.
    let stats = settle(addr).await;
    let accepted_a = a.accepted() as u64;
    assert_eq!(u(&stats["emitted"]), accepted_a, "{stats}");
    assert_eq!(u(&stats["finished"]), accepted_a, "{stats}");
    assert_eq!(u(&stage(&stats, "validate")["received"]), accepted_a);
    for name in ["ingest", "validate", "enrich", "drop_tests", "ledger"] {
        assert!(u(&stage(&stats, name)["received"]) > 0, "{name}: {stats}");
    }
    assert_eq!(stage(&stats, "enrich")["breaker"], "closed");

    let metrics = request(addr, "GET", "/metrics", None, b"").await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(metrics.headers.contains("content-type: text/plain"));
    let emitted_metric = metrics
        .body
        .lines()
        .find(|l| {
            l.starts_with("pipeline_items_total{")
                && l.contains("stage=\"ingest\"")
                && l.contains("event=\"emitted\"")
        })
        .unwrap_or_else(|| panic!("no ingest emitted counter in\n{}", metrics.body));
    assert!(
        emitted_metric.ends_with(&format!(" {accepted_a}")),
        "{emitted_metric}"
    );
    let topology = request(addr, "GET", "/topology", None, b"").await.unwrap();
    assert!(topology.body.starts_with("flowchart LR") && topology.body.contains("enrich"));
    let health = get_json(addr, "/health").await;
    assert_eq!(health["health"], "running");

    // Phase B: 3000 more events; SIGTERM once 600 are answered.
    let pid = server.child.id().unwrap();
    let signalled = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mark = Arc::clone(&signalled);
    let started = Instant::now();
    let b = load(addr, (100_000..103_000).map(good).collect(), move |n| {
        if n == 600 {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            *mark.lock().unwrap() = Some(Instant::now());
        }
    })
    .await;
    let took_b = started.elapsed();
    let exit = tokio::time::timeout(Duration::from_secs(60), server.child.wait())
        .await
        .expect("the service exits within 60 s of SIGTERM")
        .unwrap();
    let signalled = signalled.lock().unwrap().expect("SIGTERM was sent");
    let stop_to_exit = signalled.elapsed();
    eprintln!(
        "phase B: 3000 requests in {took_b:?}, SIGTERM to exit (at most) {stop_to_exit:?}: {b:?}"
    );
    assert!(exit.success(), "exit status {exit:?}");
    assert_eq!(b.retry_after_missing, 0);
    let answered_b = b.count(Kind::Good, 202) + b.count(Kind::Good, 503);
    assert_eq!(
        answered_b + b.refused.get(&Kind::Good).copied().unwrap_or(0),
        3000,
        "{b:?}"
    );
    assert!(answered_b >= 600, "{b:?}");
    assert!(
        b.refused.get(&Kind::Good).copied().unwrap_or(0) > 0,
        "some requests came after the server stopped accepting: {b:?}"
    );

    // The final report: every accepted event reached an outcome, none abandoned.
    let stdout = server.stdout.await.unwrap();
    let printed: Value = serde_json::from_str(stdout.last().expect("the report line")).unwrap();
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&server.report).unwrap()).unwrap();
    assert_eq!(printed, written);
    let report = written;
    let accepted = accepted_a + b.count(Kind::Good, 202) as u64;
    let emitted = u(&report["emitted"]);
    let outcomes: u64 = [
        "delivered",
        "filtered",
        "dropped",
        "dead_lettered",
        "failed",
        "abandoned",
    ]
    .iter()
    .map(|k| u(&report[*k]))
    .sum();
    eprintln!(
        "report: accepted {accepted}, emitted {emitted}, delivered {}, filtered {}, dead-lettered {}, dropped {}, failed {}, abandoned {}",
        report["delivered"],
        report["filtered"],
        report["dead_lettered"],
        report["dropped"],
        report["failed"],
        report["abandoned"]
    );
    assert_eq!(emitted, accepted, "emitted == accepted: {report}");
    assert_eq!(outcomes, emitted, "balanced: {report}");
    assert_eq!(u(&report["abandoned"]), 0, "{report}");
    assert_eq!(u(&report["failed"]), 0, "{report}");
    assert!(report["failure"].is_null(), "{report}");
    // Invalid events are refused by `validate`, exactly those accepted.
    let validate = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "validate")
        .unwrap();
    assert_eq!(u(&validate["received"]), accepted);
    assert!(u(&report["delivered"]) > 0 && u(&report["filtered"]) > 0);
}

/// The dependency goes down: `enrich`'s breaker opens and the pipeline waits (health
/// `degraded`, events held, not dead-lettered), then resumes when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_opens_the_breaker_and_the_pipeline_waits_instead_of_dead_lettering() {
    let dir = tempdir("outage");
    let mut server = start(&dir).await;
    let addr = server.addr;
    let admin = |down: bool| async move {
        let path = format!("/admin/directory?down={down}");
        let reply = request(addr, "POST", &path, None, b"").await.unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
    };
    admin(true).await;
    let mut accepted = 0;
    for id in 0..40u64 {
        let body = serde_json::json!({ "id": id, "user": "ann", "amount_cents": 1 }).to_string();
        let reply = request(
            addr,
            "POST",
            "/events",
            Some("application/json"),
            body.as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(
            reply.status, 202,
            "40 events fit under max_in_flight: {reply:?}"
        );
        accepted += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let open = loop {
        let stats = get_json(addr, "/stats").await;
        if stage(&stats, "enrich")["breaker"] == "open" {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker never opened: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(get_json(addr, "/health").await["health"], "degraded");
    // The breaker holds the events: most are still in flight, waiting, not dumped.
    let held = u(&open["in_flight"]);
    let dumped = u(&stage(&open, "enrich")["errors"]);
    eprintln!("breaker open: {held} events held, {dumped} dead-lettered before it opened");
    assert!(held >= 30, "{open}");
    // The live page shows it: `enrich`'s box is marked open (or half-open, probing).
    require_chromium();
    let url = format!("http://{addr}/");
    let dom = run_chromium(&dir, &["--virtual-time-budget=1500", "--dump-dom", &url]).await;
    assert!(
        dom.contains(r#"class="node open" id="node-enrich""#)
            || dom.contains(r#"class="node half_open" id="node-enrich""#),
        "enrich's box is marked open:\n{dom}"
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("service-breaker-open.png");
    let screenshot_flag = format!("--screenshot={}", shot.display());
    run_chromium(&dir, &[&screenshot_flag, "--window-size=1200,800", &url]).await;
    eprintln!("screenshot: {}", shot.display());
    admin(false).await;
    let stats = settle(addr).await;
    assert_eq!(u(&stats["in_flight"]), 0, "{stats}");
    assert_eq!(stage(&stats, "enrich")["breaker"], "closed", "{stats}");
    assert_eq!(get_json(addr, "/health").await["health"], "running");

    std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(server.child.wait().await.unwrap().success());
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&server.report).unwrap()).unwrap();
    eprintln!(
        "outage report: emitted {}, delivered {}, dead-lettered {}",
        report["emitted"], report["delivered"], report["dead_lettered"]
    );
    assert_eq!(u(&report["emitted"]), accepted);
    assert_eq!(
        u(&report["delivered"]) + u(&report["dead_lettered"]),
        accepted,
        "{report}"
    );
    // Only the few events whose attempts ran out before the breaker opened (or on a
    // failed half-open probe) were dead-lettered.
    assert!(u(&report["dead_lettered"]) <= 8, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_page_renders_counts_in_headless_chromium() {
    require_chromium();
    let dir = tempdir("page");
    let mut server = start(&dir).await;
    let addr = server.addr;
    let mut jobs: Vec<Job> = (0..300).map(good).collect();
    jobs.push(Job {
        kind: Kind::Wait,
        content_type: Some("application/json"),
        path: "/events?wait=true",
        body: event(1),
    });
    let tally = load(addr, jobs, |_| {}).await;
    assert!(tally.count(Kind::Good, 202) > 0, "{tally:?}");
    settle(addr).await;

    let page = request(addr, "GET", "/", None, b"").await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page.headers.contains("content-type: text/html"));
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no CDN"
    );

    let url = format!("http://{addr}/");
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("service.png");
    let _ = std::fs::remove_file(&shot);
    let screenshot_flag = format!("--screenshot={}", shot.display());
    run_chromium(&dir, &[&screenshot_flag, "--window-size=1200,800", &url]).await;
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1200, 800));
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());

    // The DOM after the script ran: every element's box shows a non-zero count.
    let dom = run_chromium(&dir, &["--virtual-time-budget=3000", "--dump-dom", &url]).await;
    assert!(
        !dom.contains("waiting for /stats"),
        "the script ran:\n{dom}"
    );
    assert!(dom.contains(" emitted, "), "the summary line:\n{dom}");
    for name in ["ingest", "validate", "enrich", "drop_tests", "ledger"] {
        let at = dom
            .find(&format!("id=\"node-{name}\""))
            .unwrap_or_else(|| panic!("no box for {name}:\n{dom}"));
        let rest = &dom[at..];
        let cell = "data-field=\"received\">";
        let start = rest.find(cell).unwrap() + cell.len();
        let count: u64 = rest[start..]
            .split('<')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("{name}: received is not a number ({e}):\n{dom}"));
        assert!(count > 0, "{name} shows received {count}");
    }
    assert!(
        dom.contains("data-field=\"breaker\">closed<"),
        "enrich's breaker:\n{dom}"
    );

    std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(60), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success());
}

/// Fails with what to do when Chromium is not installed.
fn require_chromium() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run pipeline-examples/tests/install-chromium.sh \
         (Debian's `chromium` package) before this test"
    );
}

/// Runs headless Chromium with the flags this machine needs; its stdout.
async fn run_chromium(dir: &Path, args: &[&str]) -> String {
    let profile = dir.join(format!(
        "chromium-profile-{}",
        PROFILES.fetch_add(1, Ordering::Relaxed)
    ));
    let out = Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("chromium finishes within 90 s")
        .expect("chromium starts");
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static PROFILES: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the target's temporary directory.
fn tempdir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("service-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A deterministic shuffle (xorshift), so bad requests are spread through the load.
fn shuffle<T>(items: &mut [T]) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}
