//! `/healthz` (the process answers) and `/readyz` (what it depends on answers too: a real write
//! and read of a small object in the store, and the queue's reachability).

use crate::problem::{ErrorCode, Problem};
use crate::queue::RowQueue;
use crate::store::{ObjectStore, Precondition};
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Serialize;
use std::sync::{Arc, OnceLock};

/// What `/readyz` checks.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub store: Arc<dyn ObjectStore>,
    /// `None` for functions that publish nothing (relay).
    pub queue: Option<Arc<dyn RowQueue>>,
}

impl Readiness {
    pub fn store(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, queue: None }
    }

    pub fn with_queue(mut self, queue: Arc<dyn RowQueue>) -> Self {
        self.queue = Some(queue);
        self
    }
}

#[derive(Debug, Serialize)]
struct Ready {
    status: &'static str,
    store: &'static str,
    queue: &'static str,
}

/// This process's probe object: one per instance, overwritten by each probe.
fn probe_object() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| format!("readyz/{}", uuid::Uuid::now_v7()))
}

async fn check_store(store: &dyn ObjectStore) -> Result<(), String> {
    let name = probe_object();
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos().to_string();
    store
        .put(name, Bytes::from(stamp.clone()), "text/plain", Precondition::None)
        .await
        .map_err(|e| format!("store: cannot write {name}: {e}"))?;
    let read = store.get(name).await.map_err(|e| format!("store: cannot read {name} back: {e}"))?;
    if read.body != stamp.as_bytes() {
        return Err(format!("store: {name} read back other bytes than were written"));
    }
    Ok(())
}

async fn readyz(readiness: Readiness) -> Response {
    let queue = async {
        match &readiness.queue {
            Some(queue) => queue.ready().await.map(|()| "ok").map_err(|e| format!("queue: {e}")),
            None => Ok("not used"),
        }
    };
    let (store, queue) = tokio::join!(check_store(readiness.store.as_ref()), queue);
    match (store, queue) {
        (Ok(()), Ok(queue)) => axum::Json(Ready { status: "ready", store: "ok", queue }).into_response(),
        (store, queue) => {
            let code = if store.is_err() { ErrorCode::StoreUnavailable } else { ErrorCode::QueueUnavailable };
            let down: Vec<String> = [store.err(), queue.err()].into_iter().flatten().collect();
            tracing::warn!(down = %down.join("; "), "not ready");
            Problem::new(code, format!("not ready: {}", down.join("; "))).into_response()
        }
    }
}

pub fn health_routes(readiness: Readiness) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(move || readyz(readiness.clone())))
}
