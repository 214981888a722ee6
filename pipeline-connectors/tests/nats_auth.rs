//! Credentials and TLS against a real nats-server 2.9: the right password works and never
//! shows anywhere; a wrong one fails clearly and fast; a token; TLS through rustls with a
//! certificate made at test time.
#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use pipeline_connectors::nats::{
    Auth, ConnectFailure, JetStreamSource, NatsConfig, NatsMessage, Secret, SourceOptions, Tls,
};
use pipeline_core::prelude::*;
use support::*;

const PASSWORD: &str = "s3cr3t-Pa55w0rd-91817";
const TOKEN: &str = "t0ken-77c1a0f3e2";

/// Everything any thread traces, at every level.
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

fn capture_tracing() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            captured
        })
        .clone()
}

fn options() -> SourceOptions {
    SourceOptions::new("SECURE", "workers")
        .with_subjects(["secure.>"])
        .with_ack_wait(Duration::from_secs(5))
        .with_fetch_wait(Duration::from_millis(200))
        .with_backlog_every(Duration::from_millis(100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_works_and_never_shows() {
    const N: u64 = 20;
    let captured = capture_tracing();
    let server = NatsServer::start_with(&["--user", "app", "--pass", PASSWORD]);
    let config = NatsConfig::new(server.url()).with_auth(Auth::UserPassword {
        user: "app".into(),
        password: Secret::new(PASSWORD),
    });
    let js = jetstream::new(config.connect("test producer").await.unwrap());
    create_stream(&js, "SECURE", &["secure.>"]).await;
    publish_ids(&js, "secure.new", 0..N).await;

    let source = JetStreamSource::connect(&config, options()).await.unwrap();
    let acks = source.ack_handle();
    let shown_source = format!("{source:?} {acks:?}");
    let (sink, out) = sink::collect();
    let (dead, dead_letters) = sink::collect();
    let pipeline = Pipeline::builder("secure")
        .source(source)
        .stage(stage::map_fn("check", |m: NatsMessage| async move {
            let id: u64 = String::from_utf8_lossy(&m.payload).parse().unwrap();
            // One dead letter, to show that dead letters carry no secret either.
            if id == 3 {
                Err(pipeline_core::error::Message(format!("refused {m:?}")))
            } else {
                Ok(id)
            }
        }))
        .sink(sink)
        .dead_letter(dead)
        .build();
    let mermaid = pipeline.graph().to_mermaid();
    let handle = pipeline.spawn();
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
    assert_eq!(report.delivered + report.dead_lettered, N);

    // A wrong password, while we are at it, for the error text.
    let wrong = NatsConfig::new(server.url()).with_auth(Auth::UserPassword {
        user: "app".into(),
        password: Secret::new("not-the-password-5521"),
    });
    let started = Instant::now();
    let error = JetStreamSource::connect(&wrong, options())
        .await
        .unwrap_err();
    let took = started.elapsed();
    println!("wrong password failed in {took:?}: {error}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(error.connect_failure(), Some(ConnectFailure::Unauthorized));
    let text = error.to_string();
    assert!(
        text.contains("nats connector `nats`") && text.contains("authorization"),
        "{text}"
    );
    assert!(
        !text.contains("not-the-password-5521") && !text.contains(PASSWORD),
        "{text}"
    );

    let traced = captured.text();
    assert!(
        traced.contains("async_nats") || traced.contains("connect"),
        "tracing captured nothing"
    );
    for (place, shown) in [
        ("tracing output", traced),
        ("report Display", report.to_string()),
        ("report JSON", serde_json::to_string(&report).unwrap()),
        ("Mermaid graph", mermaid),
        ("source Debug", shown_source),
        ("config Debug", format!("{config:?}")),
        ("dead letters", format!("{:?}", dead_letters.take())),
        ("error Debug", format!("{error:?}")),
    ] {
        assert!(
            !shown.contains(PASSWORD),
            "the password shows in the {place}"
        );
        assert!(
            !shown.contains("not-the-password-5521"),
            "the wrong password shows in the {place}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_fails_fast_and_the_right_one_works() {
    let server = NatsServer::start_with(&["--auth", TOKEN]);
    let right = NatsConfig::new(server.url()).with_auth(Auth::Token(Secret::new(TOKEN)));
    let started = Instant::now();
    let none = NatsConfig::new(server.url())
        .connect("tokenless")
        .await
        .unwrap_err();
    assert_eq!(
        none.connect_failure(),
        Some(ConnectFailure::Unauthorized),
        "{none}"
    );
    let wrong = NatsConfig::new(server.url())
        .with_auth(Auth::Token(Secret::new("nope")))
        .connect("wrong token")
        .await
        .unwrap_err();
    assert_eq!(
        wrong.connect_failure(),
        Some(ConnectFailure::Unauthorized),
        "{wrong}"
    );
    assert!(wrong.to_string().contains("`wrong token`"), "{wrong}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let client = right.connect("right token").await.unwrap();
    client.flush().await.unwrap();
    assert!(!format!("{right:?}").contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_credentials_file_fails_clearly() {
    let error = NatsConfig::new("127.0.0.1:1")
        .with_auth(Auth::CredentialsFile("/nonexistent/app.creds".into()))
        .connect("creds")
        .await
        .unwrap_err();
    assert_eq!(error.connect_failure(), Some(ConnectFailure::Credentials));
    assert!(
        error.to_string().contains("/nonexistent/app.creds"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_certificate() {
    let dir = TempDir::new("tls");
    let key =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, key.cert.pem()).unwrap();
    std::fs::write(&key_path, key.signing_key.serialize_pem()).unwrap();
    let server = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        cert_path.to_str().unwrap(),
        "--tlskey",
        key_path.to_str().unwrap(),
    ]);
    let tls = Tls {
        root_certificates: vec![cert_path.clone()],
        client_certificate: None,
    };
    let config = NatsConfig::new(format!("tls://{}", server.url())).with_tls(tls);
    let js = jetstream::new(config.connect("tls producer").await.unwrap());
    create_stream(&js, "SECURE", &["secure.>"]).await;
    publish_ids(&js, "secure.new", 0..10).await;
    let source = JetStreamSource::connect(&config, options()).await.unwrap();
    let acks = source.ack_handle();
    let (sink, out) = sink::collect();
    let handle = Pipeline::builder("tls")
        .source(source)
        .stage(stage::map_fn("id", |m: NatsMessage| async move {
            Ok::<_, std::convert::Infallible>(m.stream_sequence)
        }))
        .sink(sink)
        .spawn();
    assert!(eventually(Duration::from_secs(20), || out.len() >= 10).await);
    let report = handle
        .shutdown_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(acks.settle(Duration::from_secs(5)).await);
    assert_eq!(report.delivered, 10);

    // Without our root the server's certificate is refused, quickly.
    let started = Instant::now();
    let error = NatsConfig::new(format!("tls://{}", server.url()))
        .with_tls(Tls::default())
        .connect("untrusted")
        .await
        .unwrap_err();
    println!(
        "untrusted certificate: {error} after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(
        matches!(error.connect_failure(), Some(ConnectFailure::Tls)),
        "{error}"
    );
}

/// A JWT as nats-server reads it: `header.claims.signature`, base64url without padding,
/// signed with the issuer's NKey.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("{name}{iat}").to_uppercase(),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = b64.encode(claims.to_string());
    let signed = format!("{header}.{claims}");
    let signature = b64.encode(issuer.sign(signed.as_bytes()).unwrap());
    format!("{signed}.{signature}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_file_works_against_an_operator_mode_server() {
    let dir = TempDir::new("creds");
    let (operator, system, account, user) = (
        nkeys::KeyPair::new_operator(),
        nkeys::KeyPair::new_account(),
        nkeys::KeyPair::new_account(),
        nkeys::KeyPair::new_user(),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "conn": -1, "leaf": -1, "imports": -1, "exports": -1, "data": -1,
        "payload": -1, "wildcards": true, "mem_storage": -1, "disk_storage": -1,
        "streams": -1, "consumer": -1,
    });
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    // JetStream needs a system account in operator mode.
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "app",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "worker",
        serde_json::json!({
            "type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        }),
    );
    let seed = user.seed().unwrap();
    std::fs::write(dir.join("op.jwt"), &operator_jwt).unwrap();
    let conf = dir.join("server.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {}: \"{}\"\n  {}: \"{}\"\n}}\n",
            dir.join("op.jwt").display(),
            system.public_key(),
            system.public_key(),
            system_jwt,
            account.public_key(),
            account_jwt
        ),
    )
    .unwrap();
    let creds = dir.join("worker.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ),
    )
    .unwrap();
    let server = NatsServer::start_with(&["-c", conf.to_str().unwrap()]);

    let config = NatsConfig::new(server.url()).with_auth(Auth::CredentialsFile(creds.clone()));
    let js = jetstream::new(
        config
            .connect("creds producer")
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", server.log())),
    );
    create_stream(&js, "SECURE", &["secure.>"]).await;
    publish_ids(&js, "secure.new", 0..5).await;
    let source = JetStreamSource::connect(&config, options()).await.unwrap();
    assert!(!format!("{source:?} {config:?}").contains(&seed));
    let acks = source.ack_handle();
    let (sink, out) = sink::collect();
    let handle = Pipeline::builder("creds")
        .source(source)
        .stage(stage::map_fn("id", |m: NatsMessage| async move {
            Ok::<_, std::convert::Infallible>(m.stream_sequence)
        }))
        .sink(sink)
        .spawn();
    assert!(eventually(Duration::from_secs(20), || out.len() >= 5).await);
    let report = handle
        .shutdown_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(acks.settle(Duration::from_secs(5)).await);
    assert_eq!(report.delivered, 5);

    // Someone else's key with this user's JWT: refused, quickly.
    let forged = dir.join("forged.creds");
    let other = nkeys::KeyPair::new_user().seed().unwrap();
    std::fs::write(
        &forged,
        std::fs::read_to_string(&creds)
            .unwrap()
            .replace(&seed, &other),
    )
    .unwrap();
    let started = Instant::now();
    let error = NatsConfig::new(server.url())
        .with_auth(Auth::CredentialsFile(forged))
        .connect("forged")
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        error.connect_failure(),
        Some(ConnectFailure::Unauthorized),
        "{error}"
    );
    assert!(!error.to_string().contains(&other) && !error.to_string().contains(&seed));
}
