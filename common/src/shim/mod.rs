//! The Cloud Run shim every function's `main` uses: bind `PORT`, log (JSON with Cloud Logging
//! fields in the cloud), tag requests with an id, answer `/healthz` and `/readyz`, turn unknown
//! routes into problems, and shut down gracefully on SIGTERM.

pub mod embedded;
mod health;
mod logging;
mod observe;
mod ops_page;
mod pipeline_start;
mod watched_io;

pub use health::{Readiness, health_routes};
pub use logging::{LogFormat, cloud_trace, init_logging};
pub use observe::{metrics_routes, observe_request};
pub use ops_page::ops_routes;
pub use pipeline_start::PipelineStart;
pub use watched_io::{Connection, ConnectionWrites, WRITE_STALL_LIMIT, WatchedListener, WatchedStream};

use crate::drain;
use crate::problem::{ErrorCode, Problem};
use axum::Router;
use axum::http::{HeaderName, Request, StatusCode};
use axum::routing::get;
use std::sync::Arc;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Google's front end sets it: `TRACE_ID/SPAN_ID;o=OPTIONS`.
pub const CLOUD_TRACE_CONTEXT: HeaderName = HeaderName::from_static("x-cloud-trace-context");

/// Wraps a function's router with what every service needs: problem answers for unknown routes
/// and methods, request ids, request tracing (the span carries the request id and Cloud Trace's
/// trace, so every log line of the request has them), and metrics by route.
pub fn finish(router: Router) -> Router {
    router
        .fallback(|| async { Problem::new(ErrorCode::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            let mut p = Problem::new(ErrorCode::NotFound, "this endpoint does not take that method");
            p.status = StatusCode::METHOD_NOT_ALLOWED.as_u16();
            p
        })
        .layer(axum::middleware::from_fn(observe_request))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let span = tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id, trace = tracing::field::Empty);
            if let Some(trace) =
                request.headers().get(CLOUD_TRACE_CONTEXT).and_then(|v| v.to_str().ok()).and_then(cloud_trace)
            {
                span.record(logging::TRACE_FIELD, trace);
            }
            span
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// What every client must know beyond the operations: who may call, and what each link grants.
const API_DESCRIPTION: &str = "Turn rows of a Sheet into images made by Gemini.

**Who may call.** `Authorization: Bearer <Google ID token>` for one of the service's audiences (the \
Sheet's OAuth client id, the service URL), with a verified email on the allow-list. Pub/Sub push \
tokens have an audience of their own and are accepted on `/pubsub/*` only; users' tokens never are. \
A batch belongs to the user who submitted it: anyone else gets the same `404 BATCH_NOT_FOUND` as for \
a batch that does not exist (status, cancel, retry, events, images). Admins may read and cancel \
any batch, never retry it (a retry spends the owner's budget).

**Links, by purpose.**
- *Image links* (`images` of `GET /v1/batches/{id}`): `/v1/images/{batch}/{scene_id}/{variant}?sig=…`, \
  an HMAC of the image's object name. No header, no expiry, one image; 302 to a short signed \
  storage URL where the store signs, the bytes otherwise. Rotating the link secret revokes them.
- *Reference links* (`url` of the reference library): `/v1/refs/{sha256}?sig=…`, the same kind.
- *Page links* (`links.page`, `links.events` of a submit): `?access_token=`, a read token for one \
  batch for 7 days: status, events, images; never cancel or retry.
- *Control tokens* (`POST /v1/batches/{id}/control-token`, for the owner only): cancel and retry of \
  that batch for one hour, sent as `Authorization: Bearer`. The returned `page` carries it in the \
  URL fragment (`#control=…`), which browsers never send; in a query string it only reads.
- *Reference manager tokens* (`POST /v1/refs/manager-token`, for a signed-in user): the `/refs` page \
  acting as that user on the reference library (`/v1/refs…`) for one hour, sent as \
  `Authorization: Bearer`; no batch route accepts one. The returned `page` carries it in the URL \
  fragment (`/refs#token=…`).";

/// A function's whole app: its routes, `/openapi.json` generated from them, health and readiness,
/// metrics, and problems for everything else.
pub fn app(api: utoipa_axum::router::OpenApiRouter, readiness: Readiness, title: &str) -> Router {
    let (router, mut doc) = api.split_for_parts();
    crate::problem_responses::add_problem_schema(&mut doc);
    doc.info.title = title.to_owned();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.info.description = Some(API_DESCRIPTION.to_owned());
    let doc = Arc::new(doc);
    let router = router
        .route("/openapi.json", get(move || std::future::ready(axum::Json(doc.as_ref().clone()))))
        .merge(health_routes(readiness))
        .merge(metrics_routes())
        .merge(ops_routes());
    finish(router)
}

/// A cloud function's `main`: JSON logs, then `run`; a failure (a wrong setting at start, say) is
/// logged with the function's name and ends the process with exit code 2.
pub async fn run_function<F, Fut>(name: &str, run: F) -> std::process::ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    init_logging(LogFormat::CloudJson);
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(function = name, error = %e, "stopped");
            std::process::ExitCode::from(2)
        }
    }
}

/// Binds `0.0.0.0:PORT` (Cloud Run sends traffic there) and serves until SIGTERM.
pub async fn listen(port: u16, app: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(port = listener.local_addr()?.port(), "listening");
    serve(listener, app).await
}

/// Serves until SIGTERM (Cloud Run's stop signal) or Ctrl-C, then drains: no new connections,
/// rows in progress get [`drain::grace`] to finish and then give their rows back (see
/// [`crate::drain`]), and the process stops at the latest [`drain::EXIT_AFTER_GRACE`] later.
/// A connection whose writes stay blocked for [`WRITE_STALL_LIMIT`] is dropped (see [`WatchedListener`]).
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    let grace = drain::grace();
    let signalled = async move {
        shutdown_signal().await;
        drain::begin(grace);
    };
    let listener = WatchedListener::new(listener, WRITE_STALL_LIMIT);
    let server = axum::serve(listener, router.into_make_service_with_connect_info::<Connection>())
        .with_graceful_shutdown(signalled)
        .into_future();
    let deadline = async move {
        drain::began().await;
        tokio::time::sleep(grace + drain::EXIT_AFTER_GRACE).await;
    };
    tokio::select! {
        served = server => served,
        () = deadline => {
            tracing::warn!("stopping with connections still open (event streams, say)");
            Ok(())
        }
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
