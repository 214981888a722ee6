//! Test support: a private `redis-server` on a free loopback port, killed on drop, and
//! small helpers around it. A server that cannot start fails the test (never skips it).
#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pipeline_connectors::redis::{RedisConfig, StreamSource, StreamSourceBuilder};

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A private server. `args` are kept so [`restart`](Self::restart) brings it back the
/// same way on the same port and directory (so an AOF survives).
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
    password: Option<String>,
    tls: bool,
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// No persistence.
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// AOF on (`appendfsync always`), for restart tests.
    pub fn start_aof() -> Self {
        Self::start_with(&[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
    }

    /// With `requirepass`.
    pub fn start_with_password(password: &str) -> Self {
        let mut s = Self::spawn(
            &[
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                password,
            ],
            Some(password.to_owned()),
            false,
            None,
        );
        s.wait_ready();
        s
    }

    /// TLS only (`--port 0 --tls-port P`), certificates in the server's directory.
    pub fn start_tls(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Self {
        let dir = fresh_dir();
        for (name, body) in [
            ("server.crt", cert_pem),
            ("server.key", key_pem),
            ("ca.crt", ca_pem),
        ] {
            std::fs::write(dir.join(name), body).expect("write a TLS file");
        }
        let d = |n: &str| dir.join(n).display().to_string();
        let args = vec![
            "--save".to_owned(),
            String::new(),
            "--appendonly".to_owned(),
            "no".to_owned(),
            "--tls-cert-file".to_owned(),
            d("server.crt"),
            "--tls-key-file".to_owned(),
            d("server.key"),
            "--tls-ca-cert-file".to_owned(),
            d("ca.crt"),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut s = Self::spawn(&refs, None, true, Some(dir));
        s.wait_ready();
        s
    }

    pub fn start_with(args: &[&str]) -> Self {
        let mut s = Self::spawn(args, None, false, None);
        s.wait_ready();
        s
    }

    fn spawn(args: &[&str], password: Option<String>, tls: bool, dir: Option<PathBuf>) -> Self {
        let dir = dir.unwrap_or_else(fresh_dir);
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            password,
            tls,
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new(REDIS_SERVER);
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &port]);
        } else {
            cmd.args(["--port", &port]);
        }
        cmd.args(["--bind", "127.0.0.1", "--dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {REDIS_SERVER}: {e} (the Redis tests need it)")
        });
        self.child = Some(child);
    }

    /// Waits until the port accepts connections and answers PING (or LOADING).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("redis-server exited at start: {status}");
            }
            if self.answers() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        if self.tls {
            return std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
        }
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let ping = match &self.password {
            Some(p) => format!("AUTH {p}\r\nPING\r\n"),
            None => "PING\r\n".to_owned(),
        };
        if s.write_all(ping.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 256];
        let mut got = String::new();
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
            if got.contains("PONG") {
                return true;
            }
            if got.contains("LOADING") {
                return false;
            }
        }
        false
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = "127.0.0.1";
        match &self.password {
            Some(p) => format!("{scheme}://:{p}@{host}:{}", self.port),
            None => format!("{scheme}://{host}:{}", self.port),
        }
    }

    pub fn config(&self) -> RedisConfig {
        RedisConfig::new(&self.url()).expect("test URL parses")
    }

    /// `kill -9` the server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, directory and arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
        self.wait_ready();
    }

    /// Starts it again without waiting.
    pub fn relaunch(&mut self) {
        self.kill();
        self.launch();
    }

    /// A multiplexed async connection with generous timeouts.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("client");
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("connect to the test server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn fresh_dir() -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pipeline-redis-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("make a test directory");
    dir
}

/// A source builder with test timings: BLOCK 100 ms, min-idle 300 ms.
pub fn quick(
    config: RedisConfig,
    stream: &str,
    group: &str,
    consumer: &str,
) -> StreamSourceBuilder {
    StreamSource::builder(config, stream, group, consumer)
        .block(Duration::from_millis(100))
        .min_idle(Duration::from_millis(300))
        .reclaim_every(Duration::from_millis(200))
        .backlog_every(Duration::from_millis(100))
        .drain_timeout(Duration::from_secs(2))
}

/// XADDs `n` entries with field `n` = 0..n; returns their ids in order.
pub async fn produce(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    range: std::ops::Range<u64>,
) -> Vec<String> {
    let mut ids = Vec::new();
    let all: Vec<u64> = range.collect();
    for chunk in all.chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("n")
                .arg(i.to_string());
        }
        let got: Vec<String> = pipe.query_async(conn).await.expect("XADD");
        ids.extend(got);
    }
    ids
}

/// The group's pending count (XPENDING summary).
pub async fn pending(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
) -> u64 {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
        .expect("XPENDING");
    match v {
        redis::Value::Array(parts) => match parts.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

/// Polls `f` every 20 ms until it is true, failing the test after `within`.
pub async fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The field `n` of an entry.
pub fn n_of(e: &pipeline_connectors::redis::StreamEntry) -> u64 {
    e.field("n")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .expect("entry has a numeric `n`")
}

/// Waits until the group has nothing pending, failing after `within`.
pub async fn until_nothing_pending(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = pending(conn, stream, group).await;
        if n == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} entries still pending after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
