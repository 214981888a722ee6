//! A web service that embeds a pipeline.
//!
//! ```text
//! cargo run -p pipeline-examples --bin service -- [--addr 127.0.0.1:8080]
//!     [--max-in-flight 512] [--body-limit 4096] [--report-json report.json]
//!     [--wait-timeout-ms 10000]
//! ```
//!
//! - `POST /events` with a JSON event (`{"id": 1, "user": "ann", "amount_cents": 250}`):
//!   `202 Accepted`, or `503` with `Retry-After` when the pipeline holds
//!   `--max-in-flight` events;
//! - `POST /events?wait=true`: waits for the event's outcome and answers it as JSON,
//!   with the stage and error when it was not delivered (`422`); `504` when no outcome
//!   came within `--wait-timeout-ms` (default 10 s);
//! - `POST /admin/directory?down=true` (or `false`) takes the simulated dependency down
//!   (or back up): `enrich`'s breaker opens and the pipeline waits instead of
//!   dead-lettering, then resumes;
//! - `GET /metrics` (Prometheus text), `GET /stats` (JSON), `GET /topology` (Mermaid,
//!   `?format=dot` for DOT), `GET /health`, and `GET /`: a live page of the topology.
//!
//! Bad requests never reach the pipeline: malformed JSON is `400` with the reason, a body
//! over `--body-limit` is `413`, a content type other than JSON is `415`.
//!
//! On SIGTERM (or Ctrl-C) the server stops accepting and finishes its requests, then the
//! pipeline drains (see [`pipeline_core::axum::serve_then_drain`] for why in that order);
//! the final report is printed on stdout as one JSON line (and written to
//! `--report-json`). The first stdout line is `listening on ADDR`.

mod page;
mod stages;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pipeline_core::source::Ingest;
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};

use stages::{Directory, Event, Ledger};

/// Command-line settings.
#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    max_in_flight: usize,
    body_limit: usize,
    report_json: Option<std::path::PathBuf>,
    wait_timeout: Duration,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        max_in_flight: 512,
        body_limit: 4096,
        report_json: None,
        wait_timeout: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("`{flag}` needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--max-in-flight" => {
                args.max_in_flight = value()?
                    .parse()
                    .map_err(|e| format!("--max-in-flight: {e}"))?;
            }
            "--body-limit" => {
                args.body_limit = value()?.parse().map_err(|e| format!("--body-limit: {e}"))?;
            }
            "--report-json" => args.report_json = Some(value()?.into()),
            "--wait-timeout-ms" => {
                let ms = value()?
                    .parse()
                    .map_err(|e| format!("--wait-timeout-ms: {e}"))?;
                args.wait_timeout = Duration::from_millis(ms);
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}`; expected --addr, --max-in-flight, --body-limit, --report-json, --wait-timeout-ms"
                ));
            }
        }
    }
    Ok(args)
}

/// What the handlers share.
#[derive(Debug, Clone)]
struct App {
    ingest: Ingest<Event>,
    metrics: PrometheusHandle,
    page: Arc<str>,
    wait_timeout: Duration,
    directory: Arc<Directory>,
}

/// `?wait=true`.
#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    wait: bool,
}

/// A refused request: the status axum chose for the body's problem (413 for a body over
/// the limit), except `415` for a missing or wrong content type and `400` for JSON that
/// does not parse or does not fit an event, each with the reason.
fn refuse(rejection: JsonRejection) -> Response {
    let status = match &rejection {
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        JsonRejection::JsonSyntaxError(_) | JsonRejection::JsonDataError(_) => {
            StatusCode::BAD_REQUEST
        }
        other => other.status(),
    };
    let body = Json(serde_json::json!({ "error": rejection.body_text() }));
    (status, body).into_response()
}

async fn post_event(
    State(app): State<App>,
    Query(params): Query<Params>,
    event: Result<Json<Event>, JsonRejection>,
) -> Response {
    let Json(event) = match event {
        Ok(event) => event,
        Err(rejection) => return refuse(rejection),
    };
    if params.wait {
        // `send_and_wait` waits for admission, then for the outcome, with no way to
        // tell the two apart: bound the whole wait. Under a saturating `try_send` load a
        // waiting sender can lose every race for a freed slot.
        match tokio::time::timeout(app.wait_timeout, app.ingest.send_and_wait(event)).await {
            Ok(Ok(settled)) => settled.into_response(),
            Ok(Err(closed)) => closed.into_response(),
            Err(_) => {
                let error = format!(
                    "no outcome within {:?}; the event may still be in the pipeline",
                    app.wait_timeout
                );
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    Json(serde_json::json!({ "error": error })),
                )
                    .into_response()
            }
        }
    } else {
        match app.ingest.try_send(event) {
            Ok(()) => (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "accepted": true })),
            )
                .into_response(),
            Err(full_or_closed) => full_or_closed.into_response(),
        }
    }
}

/// `?down=true|false`.
#[derive(Debug, Deserialize)]
struct Outage {
    down: bool,
}

/// Takes the simulated directory down or brings it back, to watch the breaker.
async fn set_directory(State(app): State<App>, Query(outage): Query<Outage>) -> Response {
    app.directory.set_down(outage.down);
    eprintln!("service: directory down = {}", outage.down);
    Json(serde_json::json!({ "down": outage.down })).into_response()
}

async fn render_metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

async fn index(State(app): State<App>) -> Html<String> {
    Html(app.page.to_string())
}

/// SIGTERM or Ctrl-C.
async fn stop_signal() {
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            eprintln!("service: no SIGTERM handler ({e}); stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    eprintln!("service: stop signal received; no longer accepting, draining");
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("service: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("service: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until the stop signal; whether the run ended cleanly and balanced.
async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });

    let ledger = Arc::new(Ledger::default());
    let directory = Arc::new(Directory::default());
    let pipeline = stages::build(
        args.max_in_flight,
        Arc::clone(&directory),
        Arc::clone(&ledger),
    );
    let graph = pipeline.graph().clone();
    let handle = pipeline.spawn();
    let ingest = handle
        .ingest::<Event>()
        .ok_or("the pipeline has no ingest source of events")?;
    let app = App {
        ingest,
        metrics,
        page: page::render(&graph).into(),
        wait_timeout: args.wait_timeout,
        directory,
    };
    let router = Router::new()
        .route("/", get(index))
        .route("/events", post(post_event))
        .route("/metrics", get(render_metrics))
        .route("/admin/directory", post(set_directory))
        .with_state(app)
        .merge(pipeline_core::axum::router(handle.control(), &graph))
        .layer(DefaultBodyLimit::max(args.body_limit));

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("listening on {}", listener.local_addr()?);

    let served =
        pipeline_core::axum::serve_then_drain(listener, router, handle, stop_signal()).await;
    eprintln!("service: pipeline drained in {:?}", served.drain);
    served.server?;
    let (report, clean) = match served.report {
        Ok(report) => (report, true),
        Err(e) => {
            eprintln!("service: {e}");
            (*e.report, false)
        }
    };
    eprint!("{report}");
    eprintln!(
        "service: ledger booked {} events",
        ledger.events.load(std::sync::atomic::Ordering::Relaxed)
    );
    let json = serde_json::to_string(&report)?;
    if let Some(path) = &args.report_json {
        std::fs::write(path, &json)?;
    }
    println!("{json}");
    Ok(clean && report.is_balanced())
}
