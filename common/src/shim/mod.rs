//! The Cloud Run shim every function's `main` uses: bind `PORT`, log (JSON with Cloud Logging
//! fields in the cloud), tag requests with an id, answer `/healthz` and `/readyz`, turn unknown
//! routes into problems, and shut down gracefully on SIGTERM.

mod logging;

pub use logging::{LogFormat, init_logging};

use crate::problem::{ErrorCode, Problem};
use crate::store::ObjectStore;
use axum::Router;
use axum::http::{HeaderName, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `/healthz` (the process answers) and `/readyz` (its store answers too).
pub fn health_routes(store: Arc<dyn ObjectStore>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let store = store.clone();
            async move {
                match store.list("readyz/").await {
                    Ok(_) => "ready".into_response(),
                    Err(e) => {
                        tracing::warn!(error = %e, "not ready: store unreachable");
                        Problem::new(ErrorCode::StoreUnavailable, "storage does not answer").into_response()
                    }
                }
            }
        }),
    )
}

/// Wraps a function's router with what every service needs: problem answers for unknown routes
/// and methods, request ids, and request tracing.
pub fn finish(router: Router) -> Router {
    router
        .fallback(|| async { Problem::new(ErrorCode::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            let mut p = Problem::new(ErrorCode::NotFound, "this endpoint does not take that method");
            p.status = StatusCode::METHOD_NOT_ALLOWED.as_u16();
            p
        })
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// A function's whole app: its routes, `/openapi.json` generated from them, health, and problems
/// for everything else.
pub fn app(api: utoipa_axum::router::OpenApiRouter, store: Arc<dyn ObjectStore>, title: &str) -> Router {
    let (router, mut doc) = api.split_for_parts();
    doc.info.title = title.to_owned();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.info.description = Some("Turn rows of a Sheet into images made by Gemini.".to_owned());
    let doc = Arc::new(doc);
    let router = router
        .route("/openapi.json", get(move || std::future::ready(axum::Json(doc.as_ref().clone()))))
        .merge(health_routes(store));
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

/// Serves until SIGTERM (Cloud Run's stop signal) or Ctrl-C, then lets in-flight requests finish.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await
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
