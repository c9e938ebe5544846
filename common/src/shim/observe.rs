//! What the shim adds to every request for the operator: the request's context (its id, for the
//! queue's messages and the ledger), metrics by route template and status, problems by code; and
//! the routes that show them, `/metrics` (Prometheus) and `/metrics-lite` (JSON).

use super::REQUEST_ID;
use crate::observe::{self, RequestContext, names};
use crate::problem::ErrorCode;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{counter, histogram};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Route label of requests no route matched: raw paths would make a series per scanner probe.
const UNMATCHED: &str = "unmatched";

/// Counts the request by route template, method and status, and its problem's code if it
/// answered one; runs the handler as part of the request's context.
pub async fn observe_request(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or(UNMATCHED, MatchedPath::as_str).to_owned();
    let method = request.method().as_str().to_owned();
    let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let started = Instant::now();
    let response = observe::with_request(RequestContext { request_id }, next.run(request)).await;
    let status = response.status().as_u16().to_string();
    histogram!(names::HTTP_DURATION, "route" => route.clone()).record(started.elapsed().as_secs_f64());
    counter!(names::HTTP_REQUESTS, "route" => route, "method" => method, "status" => status).increment(1);
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        counter!(names::PROBLEMS, "code" => code.to_string()).increment(1);
    }
    response
}

/// `GET /metrics` and `GET /metrics-lite`. Installs the process's recorder on first use.
pub fn metrics_routes() -> Router {
    let metrics = observe::install();
    start_upkeep();
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                let mut response = metrics.prometheus_text().into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
                response
            }),
        )
        .route("/metrics-lite", get(move || async move { axum::Json(metrics.lite()) }))
}

/// Keeps the exporter's histogram buffers drained between scrapes (once per process).
fn start_upkeep() {
    static STARTED: OnceLock<()> = OnceLock::new();
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    STARTED.get_or_init(|| {
        tokio::spawn(async {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                observe::install().upkeep();
            }
        });
    });
}
