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
