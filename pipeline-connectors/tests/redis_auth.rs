//! Credentials and TLS against a real, private redis-server: a password never shows in
//! logs, reports, the topology or `Debug`; a wrong one fails clearly and quickly; TLS
//! through rustls with a CA made at test time.
#![cfg(feature = "redis")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod redis_support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline_connectors::redis::{RedisConfig, StreamEntry, StreamRecord, StreamSink};
use pipeline_core::prelude::*;
use pipeline_core::sink::Sink;
use pipeline_core::source::Source;
use redis_support::*;

const SECRET: &str = "Pa55-w0rd-SECRET-7f3a";
const WAIT: Duration = Duration::from_secs(20);

/// Everything the fmt layer writes, for inspection.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// current_thread: the thread-local subscriber sees every task of the test.
#[tokio::test]
async fn the_password_never_shows_and_a_right_one_works() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut server = RedisServer::start_with_password(SECRET);
    let mut c = server.conn().await;
    let n = 500u64;
    produce(&mut c, "in", 0..n).await;
    let config = server.config();
    let source = quick(config.clone(), "in", "g", "c1").build().unwrap();
    let progress = source.progress();
    let source_debug = format!("{source:?}");
    let sink = StreamSink::new(config.clone(), "out").unwrap();
    let sink_debug = format!("{sink:?}");
    let pipeline = Pipeline::builder("secret")
        .source(source)
        .stage(stage::map_fn("fwd", |e: StreamEntry| async move {
            Ok::<_, std::convert::Infallible>(StreamRecord::from(e))
        }))
        .sink(sink)
        .build();
    let mermaid = pipeline.graph().to_mermaid();
    let handle = pipeline.spawn();
    eventually(WAIT, "half delivered", || progress.acked() >= n / 2).await;
    // A restart (without persistence) makes the connectors fail, log and reconnect: the
    // errors name the server, and the sink's failed batch becomes logged dead letters.
    server.restart();
    let read_before = progress.read();
    let mut c = server.conn().await;
    produce(&mut c, "in", n..2 * n).await;
    eventually(WAIT, "the new entries read after the restart", || {
        progress.read() >= read_before + n
    })
    .await;
    let stats = format!("{:?}", handle.stats());
    let report = handle.shutdown().await.unwrap();
    let _ = tokio::time::timeout(WAIT, progress.settled()).await;
    let report_text = format!("{report}");
    let report_json = serde_json::to_string(&report).unwrap();
    let logs = captured.text();
    assert!(
        logs.contains(":***@127.0.0.1"),
        "the errors after the restart were captured, redacted: {logs}"
    );
    for (what, text) in [
        ("tracing output", &logs),
        ("report", &report_text),
        ("report JSON", &report_json),
        ("topology", &mermaid),
        ("source Debug", &source_debug),
        ("sink Debug", &sink_debug),
        ("stats", &stats),
        ("config Debug", &format!("{config:?}")),
        ("config Display", &config.to_string()),
    ] {
        assert!(
            !text.contains(SECRET),
            "the password shows in the {what}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_works() {
    let server = RedisServer::start_with_password(SECRET);
    let mut c = server.conn().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(">app-pass-123")
        .arg("~*")
        .arg("+@all")
        .query_async(&mut c)
        .await
        .unwrap();
    produce(&mut c, "in", 0..10).await;
    let url = format!("redis://app:app-pass-123@127.0.0.1:{}", server.port);
    let mut source = quick(RedisConfig::new(&url).unwrap(), "in", "g", "c1")
        .build()
        .unwrap();
    let pulled = tokio::time::timeout(WAIT, source.pull(10))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pulled.items.len(), 10);
    assert!(!format!("{source:?}").contains("app-pass-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_clearly_quickly_and_without_a_retry_storm() {
    let server = RedisServer::start_with_password(SECRET);
    let wrong = "not-the-Secret-91";
    let url = format!("redis://:{wrong}@127.0.0.1:{}", server.port);
    let mut source = quick(RedisConfig::new(&url).unwrap(), "in", "g", "c1")
        .build()
        .unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(5), source.pull(10))
        .await
        .expect("a wrong password must not hang")
        .expect_err("a wrong password must fail");
    let text = err.to_string();
    eprintln!("error after {:?}: {text}", started.elapsed());
    assert!(text.contains("authentication failed"), "{text}");
    assert!(
        text.contains("source `redis:in`"),
        "names the connector: {text}"
    );
    assert!(!text.contains(wrong), "{text}");

    // In a pipeline: the runtime backs off between attempts, so errors stay few.
    let (sink, _out) = sink::collect::<StreamEntry>();
    let handle = Pipeline::builder("wrong").source(source).sink(sink).spawn();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let errors = handle
        .stats()
        .stage("redis:in")
        .map(|s| s.errors)
        .unwrap_or(0);
    handle
        .shutdown_within(Duration::from_millis(100))
        .await
        .unwrap();
    eprintln!("{errors} failed pulls in 1.5 s");
    assert!((1..=6).contains(&errors), "{errors} failed pulls in 1.5 s");

    // The sink says so too, per batch.
    let mut sink = StreamSink::new(RedisConfig::new(&url).unwrap(), "out").unwrap();
    let err = sink
        .write(&mut vec![StreamRecord::new().field("a", "1")])
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert!(!err.to_string().contains(wrong));
}

struct TestPki {
    ca: String,
    cert: String,
    key: String,
}

fn pki() -> TestPki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pipeline test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    TestPki {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_rustls_and_a_private_ca() {
    let pki = pki();
    let server = RedisServer::start_tls(&pki.cert, &pki.key, &pki.ca);
    let config = RedisConfig::new(&server.url())
        .unwrap()
        .with_root_cert_pem(pki.ca.as_bytes());
    assert!(config.is_tls());
    let n = 300u64;
    // Write over TLS with the sink, read back over TLS with the source.
    let mut sink = StreamSink::new(config.clone(), "in").unwrap();
    let mut batch: Vec<StreamRecord> = (0..n)
        .map(|i| StreamRecord::new().field("n", i.to_string()))
        .collect();
    tokio::time::timeout(WAIT, sink.write(&mut batch))
        .await
        .unwrap()
        .unwrap();
    let source = quick(config.clone(), "in", "g", "c1").build().unwrap();
    let progress = source.progress();
    let (out, got) = sink::collect::<StreamEntry>();
    let handle = Pipeline::builder("tls").source(source).sink(out).spawn();
    eventually(WAIT, "all read over TLS", || got.len() >= n as usize).await;
    handle.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, progress.settled())
        .await
        .unwrap();
    assert_eq!(progress.acked(), n);

    // Without the CA the server is not trusted: a clear, bounded failure.
    let untrusted = RedisConfig::new(&server.url()).unwrap();
    let mut source = quick(untrusted, "in", "g", "c2").build().unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), source.pull(10))
        .await
        .expect("no hang")
        .expect_err("an untrusted certificate must fail");
    eprintln!("untrusted: {err}");
}
