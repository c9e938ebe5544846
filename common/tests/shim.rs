//! The shim every function is served through: metrics by route template and status, problems by
//! code, the JSON view of the same counters, and readiness that really writes and reads the store
//! and asks the queue.

use assetgen_common::problem::{ErrorCode, Problem};
use assetgen_common::queue::{QueueError, RowMessage, RowQueue};
use assetgen_common::shim::{self, Readiness};
use assetgen_common::store::{Generation, MemoryStore, Object, ObjectMeta, ObjectStore, Precondition, StoreError};
use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;
use tower::ServiceExt;
use utoipa_axum::router::OpenApiRouter;

async fn call(app: &axum::Router, path: &str) -> (StatusCode, String) {
    let response = app.clone().oneshot(Request::get(path).body(Body::empty()).expect("request")).await.expect("answer");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn app_with(readiness: Readiness) -> axum::Router {
    let api = OpenApiRouter::new()
        .route("/v1/widgets/{id}", axum::routing::get(|| async { "a widget" }))
        .route("/v1/broken", axum::routing::get(|| async { Problem::new(ErrorCode::StoreUnavailable, "down") }));
    shim::app(api, readiness, "test")
}

/// The value of the Prometheus sample whose line starts with `name{` and has every label given.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_problems_by_code() {
    let app = app_with(Readiness::store(Arc::new(MemoryStore::new())));
    for id in ["w-1", "w-2", "w-3"] {
        assert_eq!(call(&app, &format!("/v1/widgets/{id}")).await.0, StatusCode::OK);
    }
    assert_eq!(call(&app, "/v1/broken").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(call(&app, "/no/such/page-xyz").await.0, StatusCode::NOT_FOUND);

    let (status, text) = call(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let widgets = ["route=\"/v1/widgets/{id}\"", "method=\"GET\"", "status=\"200\""];
    assert_eq!(sample(&text, "assetgen_http_requests_total", &widgets), Some(3.0), "{text}");
    assert!(!text.contains("w-1") && !text.contains("page-xyz"), "raw paths never become labels");
    assert!(sample(&text, "assetgen_http_requests_total", &["route=\"unmatched\"", "status=\"404\""]).is_some());
    assert!(sample(&text, "assetgen_problems_total", &["code=\"STORE_UNAVAILABLE\""]) >= Some(1.0), "{text}");
    assert!(sample(&text, "assetgen_problems_total", &["code=\"NOT_FOUND\""]) >= Some(1.0), "{text}");
    assert!(text.contains("assetgen_http_request_duration_seconds_bucket{"), "a histogram with buckets");

    let (status, json) = call(&app, "/metrics-lite").await;
    assert_eq!(status, StatusCode::OK);
    let lite: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let key = "assetgen_http_requests_total{method=\"GET\",route=\"/v1/widgets/{id}\",status=\"200\"}";
    assert_eq!(lite["counters"][key], 3, "{json}");
    assert!(lite["totals"]["assetgen_http_requests_total"].as_u64() >= Some(5));
    assert_eq!(lite["last_hour"]["images"].as_array().map(Vec::len), Some(60));
}

/// A store that answers every call with `Unavailable` (a bucket that is down).
#[derive(Debug)]
struct DownStore;

#[async_trait]
impl ObjectStore for DownStore {
    async fn get(&self, _: &str) -> Result<Object, StoreError> {
        Err(StoreError::Unavailable("503 from storage".into()))
    }
    async fn put(&self, _: &str, _: Bytes, _: &str, _: Precondition) -> Result<Generation, StoreError> {
        Err(StoreError::Unavailable("503 from storage".into()))
    }
    async fn list(&self, _: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(Vec::new()) // a list alone would call this store healthy
    }
    async fn delete(&self, _: &str, _: Precondition) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("503 from storage".into()))
    }
    fn settled_generation(&self) -> Option<Generation> {
        None
    }
}

#[derive(Debug)]
struct DownQueue;

#[async_trait]
impl RowQueue for DownQueue {
    async fn publish(&self, _: &[RowMessage]) -> Result<(), QueueError> {
        Err(QueueError::Unavailable("no topic".into()))
    }
    async fn ready(&self) -> Result<(), QueueError> {
        Err(QueueError::Unavailable("topic rows does not answer".into()))
    }
}

#[tokio::test]
async fn readiness_writes_and_reads_the_store_and_names_what_is_down() {
    let store = Arc::new(MemoryStore::new());
    let (status, body) = call(&app_with(Readiness::store(store.clone())), "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let probes = store.list("readyz/").await.expect("list");
    assert_eq!(probes.len(), 1, "one probe object per instance: {probes:?}");

    let (status, body) = call(&app_with(Readiness::store(Arc::new(DownStore))), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let problem: Problem = serde_json::from_str(&body).expect("problem+json");
    assert_eq!(problem.code, ErrorCode::StoreUnavailable);
    assert!(problem.detail.contains("store") && problem.detail.contains("503 from storage"), "{}", problem.detail);

    let readiness = Readiness::store(Arc::new(MemoryStore::new())).with_queue(Arc::new(DownQueue));
    let (status, body) = call(&app_with(readiness), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let problem: Problem = serde_json::from_str(&body).expect("problem+json");
    assert_eq!(problem.code, ErrorCode::QueueUnavailable);
    assert!(problem.detail.contains("queue") && !problem.detail.contains("store:"), "{}", problem.detail);

    let both = Readiness::store(Arc::new(DownStore)).with_queue(Arc::new(DownQueue));
    let (_, body) = call(&app_with(both), "/readyz").await;
    let problem: Problem = serde_json::from_str(&body).expect("problem+json");
    assert!(problem.detail.contains("store:") && problem.detail.contains("queue:"), "{}", problem.detail);
}
