//! HTTP glue for a service that embeds a pipeline, on [axum] 0.8 (feature `axum`).
//!
//! What every embedding service would otherwise write again:
//!
//! - [`IntoResponse`] for what the ingest side returns, so a handler can return it as is:
//!   [`TrySendError`] (`503 Service Unavailable`, with `Retry-After` when the pipeline is
//!   full), [`Closed`] (`503`), [`Settled`] (the outcome as JSON, with a status from
//!   [`settled_status`]), [`Stats`] (JSON) and [`Health`];
//! - [`router`]: `GET /stats`, `GET /health` and `GET /topology` (Mermaid, or DOT with
//!   `?format=dot`), to merge into the service's own router;
//! - [`serve_then_drain`]: serve until a signal, stop accepting, finish the requests in
//!   flight, *then* drain the pipeline, and hand back the report.
//!
//! # Examples
//!
//! A service taking events with backpressure (`202`, or `503` + `Retry-After` when full):
//!
//! ```no_run
//! use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
//! use pipeline_core::prelude::*;
//! use pipeline_core::source::{Ingest, IngestOptions, TrySendError};
//!
//! async fn accept(
//!     State(ingest): State<Ingest<u64>>,
//!     Json(event): Json<u64>,
//! ) -> Result<StatusCode, TrySendError<u64>> {
//!     ingest.try_send(event).map(|()| StatusCode::ACCEPTED)
//! }
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let pipeline = Pipeline::builder("svc")
//!     .ingest::<u64>(IngestOptions::buffer(256).max_in_flight(1024))
//!     .sink(sink::collect().0)
//!     .build();
//! let graph = pipeline.graph().clone();
//! let handle = pipeline.spawn();
//! let ingest = handle.ingest::<u64>().expect("an ingest source of u64");
//! let app = Router::new()
//!     .route("/events", post(accept))
//!     .with_state(ingest)
//!     .merge(pipeline_core::axum::router(handle.control(), &graph));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let served = pipeline_core::axum::serve_then_drain(listener, app, handle, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await;
//! served.server?;
//! println!("{}", served.report.expect("a clean run"));
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::time::Duration;

use ::axum::Json;
use ::axum::Router;
use ::axum::http::{HeaderValue, StatusCode, Uri, header};
use ::axum::response::{IntoResponse, Response};
use ::axum::routing::get;
use tokio::time::Instant;

use crate::ack::Outcome;
use crate::graph::Graph;
use crate::pipeline::{Health, PipelineControl, PipelineError, PipelineHandle, RunReport, Stats};
use crate::source::{Closed, Settled, TrySendError};

/// What `Retry-After` tells a client turned away by a full pipeline: 1 second.
pub const RETRY_AFTER_SECS: u64 = 1;

/// A JSON error body: `{"error": "..."}`.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// `503` with `{"error": "the pipeline is full"}` and `Retry-After: 1` for
/// [`TrySendError::Full`]; `503` with `{"error": "the pipeline has stopped"}` and no
/// `Retry-After` for [`TrySendError::Closed`]. The item is dropped: a handler that wants
/// it back matches on the error first.
impl<T> IntoResponse for TrySendError<T> {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let mut response = error(StatusCode::SERVICE_UNAVAILABLE, &message);
        if let TrySendError::Full(_) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

/// `503` with `{"error": "the pipeline has stopped"}`.
impl<T> IntoResponse for Closed<T> {
    fn into_response(self) -> Response {
        error(StatusCode::SERVICE_UNAVAILABLE, &self.to_string())
    }
}

/// The status a [`Settled`] answers with:
///
/// | outcome | status | why |
/// |---|---|---|
/// | `delivered`, `filtered` | `200 OK` | the pipeline finished with the event as designed |
/// | `dead_lettered`, `failed` | `422 Unprocessable Entity` | a stage gave up on this event; the body says which and why |
/// | `dropped`, `abandoned` | `503 Service Unavailable` | shed by an overflow policy or cut off by a shutdown: the event may be sent again |
pub fn settled_status(outcome: Outcome) -> StatusCode {
    match outcome {
        Outcome::Delivered | Outcome::Filtered => StatusCode::OK,
        Outcome::DeadLettered | Outcome::Failed => StatusCode::UNPROCESSABLE_ENTITY,
        Outcome::Dropped | Outcome::Abandoned => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The outcome as JSON (`{"outcome": "dead_lettered", "reason": {"stage": "validate",
/// "error": "..."}}`), with the status of [`settled_status`].
impl IntoResponse for Settled {
    fn into_response(self) -> Response {
        (settled_status(self.outcome), Json(self)).into_response()
    }
}

/// `200` with the snapshot as JSON.
impl IntoResponse for Stats {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

/// `{"health": "running"}`: `200` while running or degraded (a breaker is open but the
/// pipeline waits for its dependency), `503` once stopping or finished, so a load
/// balancer stops sending traffic during a drain.
impl IntoResponse for Health {
    fn into_response(self) -> Response {
        let status = match self {
            Health::Running | Health::Degraded => StatusCode::OK,
            Health::Stopping | Health::Finished => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(serde_json::json!({ "health": self }))).into_response()
    }
}

/// `GET /stats` (the live [`Stats`] as JSON), `GET /health` ([`Health`]) and
/// `GET /topology` (the graph as Mermaid text; `?format=dot` for Graphviz DOT), for
/// [`Router::merge`] into the service's router, whatever its state type.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use pipeline_core::prelude::*;
/// let pipeline = Pipeline::builder("svc").ingest::<u64>(8).sink(sink::collect().0).build();
/// let graph = pipeline.graph().clone();
/// let handle = pipeline.spawn();
/// let app: axum::Router = axum::Router::new()
///     .merge(pipeline_core::axum::router(handle.control(), &graph));
/// # let _ = app;
/// # }
/// ```
pub fn router<S>(control: PipelineControl, graph: &Graph) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mermaid = graph.to_mermaid();
    let dot = graph.to_dot();
    let stats = control.clone();
    Router::new()
        .route("/stats", get(move || async move { stats.stats() }))
        .route("/health", get(move || async move { control.health() }))
        .route(
            "/topology",
            get(move |uri: Uri| async move {
                let wants_dot = uri
                    .query()
                    .is_some_and(|q| q.split('&').any(|kv| kv == "format=dot"));
                let (kind, text) = if wants_dot {
                    ("text/vnd.graphviz; charset=utf-8", dot)
                } else {
                    ("text/vnd.mermaid; charset=utf-8", mermaid)
                };
                ([(header::CONTENT_TYPE, kind)], text)
            }),
        )
}

/// What [`serve_then_drain`] ends with.
#[derive(Debug)]
#[must_use = "the server's error and the pipeline's report are in here"]
pub struct Served {
    /// The server's own result (an accept loop that failed).
    pub server: io::Result<()>,
    /// The pipeline's final report, after it drained.
    pub report: Result<RunReport, PipelineError>,
    /// How long the drain took: from the server's return to the pipeline's end.
    pub drain: Duration,
}

/// Serves `router` on `listener` until `signal` resolves (or the pipeline ends by itself,
/// say because a stage failed it: then there is nothing left to serve), then shuts down
/// in this order:
///
/// 1. the server stops accepting connections and waits for the requests in flight
///    (axum's graceful shutdown);
/// 2. only then the pipeline stops its sources and drains ([`PipelineHandle::shutdown`]).
///
/// The order matters. Stopping the pipeline first would close the ingest while the server
/// still accepts requests: those would be refused with `503` half-way through a graceful
/// shutdown, and a `send_and_wait` request in flight could see its event cut off. Stopped
/// in this order, every request the server took was answered by a running pipeline, and
/// every event it answered `202` for is in the pipeline when the drain starts, so it
/// reaches an outcome and is counted in the report (as `abandoned` only if the drain
/// outlives the pipeline's shutdown deadline).
///
/// The pipeline is drained even when the server failed; both results are returned. The
/// drain is bounded by the pipeline's shutdown deadline
/// ([`Ready::shutdown_deadline`](crate::pipeline::Ready::shutdown_deadline)).
///
/// A request the server waits for in step 1 is not bounded here: put a timeout layer on
/// long `send_and_wait` routes if the pipeline can wait long (an open breaker in
/// `wait` mode).
pub async fn serve_then_drain(
    listener: tokio::net::TcpListener,
    router: Router,
    handle: PipelineHandle,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Served {
    let ended = handle.control().finished();
    let stop = async move {
        tokio::select! {
            () = signal => {}
            () = ended => {}
        }
    };
    let server = ::axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await;
    // The router (and the `Ingest` senders in its state) went with the server.
    let started = Instant::now();
    let report = handle.shutdown().await;
    Served {
        server,
        report,
        drain: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use ::axum::body::{Body, to_bytes};
    use ::axum::http::Request;
    use ::axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::ServiceExt;

    use super::*;
    use crate::ack::Reason;
    use crate::pipeline::Pipeline;
    use crate::sink;
    use crate::source::{Ingest, IngestOptions};

    async fn body(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        body(app.clone().oneshot(request).await.unwrap()).await
    }

    #[tokio::test]
    async fn full_is_503_with_retry_after_and_closed_without() {
        let full = TrySendError::Full(1u64).into_response();
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.headers()[header::RETRY_AFTER], "1");
        let (_, text) = body(full).await;
        assert_eq!(text, r#"{"error":"the pipeline is full"}"#);

        let closed = TrySendError::Closed(1u64).into_response();
        assert_eq!(closed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(closed.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(
            Closed(1u64).into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn settled_carries_the_outcome_and_the_reason() {
        let mut settled = Settled::new(Outcome::DeadLettered);
        settled.reason = Some(Box::new(Reason {
            stage: "validate".into(),
            error: "negative amount".into(),
        }));
        let (status, text) = body(settled.into_response()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["outcome"], "dead_lettered");
        assert_eq!(json["reason"]["stage"], "validate");
        assert_eq!(json["reason"]["error"], "negative amount");

        let (status, text) = body(Settled::new(Outcome::Delivered).into_response()).await;
        assert_eq!(
            (status, text.as_str()),
            (StatusCode::OK, r#"{"outcome":"delivered"}"#)
        );
        for (outcome, status) in [
            (Outcome::Filtered, StatusCode::OK),
            (Outcome::Failed, StatusCode::UNPROCESSABLE_ENTITY),
            (Outcome::Dropped, StatusCode::SERVICE_UNAVAILABLE),
            (Outcome::Abandoned, StatusCode::SERVICE_UNAVAILABLE),
        ] {
            assert_eq!(settled_status(outcome), status, "{outcome:?}");
        }
    }

    #[tokio::test]
    async fn router_serves_stats_health_and_topology() {
        let pipeline = Pipeline::builder("svc")
            .ingest::<u64>(8)
            .stage(crate::stage::map_fn("double", |n: u64| async move {
                Ok::<_, std::convert::Infallible>(n * 2)
            }))
            .sink(sink::collect().0)
            .build();
        let graph = pipeline.graph().clone();
        let handle = pipeline.spawn();
        let ingest = handle.ingest::<u64>().unwrap();
        let app: Router = router(handle.control(), &graph);
        let settled = ingest.send_and_wait(3).await.unwrap();
        assert!(settled.is_delivered());

        let (status, text) = get(&app, "/stats").await;
        assert_eq!(status, StatusCode::OK);
        let stats: Stats = serde_json::from_str(&text).unwrap();
        assert_eq!((stats.emitted, stats.finished), (1, 1));
        assert_eq!(stats.stage("double").unwrap().emitted, 1);

        assert_eq!(
            get(&app, "/health").await,
            (StatusCode::OK, r#"{"health":"running"}"#.to_owned())
        );
        let (status, mermaid) = get(&app, "/topology").await;
        assert_eq!(status, StatusCode::OK);
        assert!(mermaid.starts_with("flowchart LR") && mermaid.contains("double"));
        let (_, dot) = get(&app, "/topology?format=dot").await;
        assert!(dot.starts_with("digraph") && dot.contains("double"));

        handle.control().shutdown();
        let (status, text) = get(&app, "/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            text.contains("stopping") || text.contains("finished"),
            "{text}"
        );
        drop(ingest);
        assert_eq!(handle.join().await.unwrap().delivered, 1);
    }

    async fn accept(
        ::axum::extract::State(ingest): ::axum::extract::State<Ingest<u64>>,
        Json(n): Json<u64>,
    ) -> Result<StatusCode, TrySendError<u64>> {
        ingest.try_send(n).map(|()| StatusCode::ACCEPTED)
    }

    /// One HTTP/1.1 request over a fresh connection; the status line.
    async fn post_json(addr: std::net::SocketAddr, body: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST /events HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn serve_then_drain_answers_then_drains_what_it_accepted() {
        let handle = Pipeline::builder("svc")
            .ingest::<u64>(IngestOptions::buffer(16).max_in_flight(64))
            .sink(sink::collect().0)
            .spawn();
        let app = Router::new()
            .route("/events", post(accept))
            .with_state(handle.ingest::<u64>().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve_then_drain(listener, app, handle, async move {
            let _ = stopped.await;
        }));
        for n in 0..5 {
            assert_eq!(
                post_json(addr, &n.to_string()).await,
                "HTTP/1.1 202 Accepted"
            );
        }
        stop.send(()).unwrap();
        let served = served.await.unwrap();
        served.server.unwrap();
        let report = served.report.unwrap();
        assert_eq!((report.emitted, report.delivered), (5, 5));
        assert!(report.is_balanced());
        // The listener is gone with the server.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn serve_then_drain_stops_when_the_pipeline_ends_by_itself() {
        let handle = Pipeline::builder("finite")
            .source(crate::source::iter(0..3u64))
            .sink(sink::collect().0)
            .spawn();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let served =
            serve_then_drain(listener, Router::new(), handle, std::future::pending()).await;
        served.server.unwrap();
        assert_eq!(served.report.unwrap().delivered, 3);
    }
}
