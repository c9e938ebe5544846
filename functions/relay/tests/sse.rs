//! The relay's event stream, read frame by frame from the router.

use assetgen_common::api::{BatchRequest, RowRequest};
use assetgen_common::auth::{DevAuth, Identity};
use assetgen_common::budget::Unmetered;
use assetgen_common::cost::{DEFAULT_MODEL, PriceTable};
use assetgen_common::domain::{Money, RefUrlPolicy, UserId};
use assetgen_common::generation::RowWorker;
use assetgen_common::limits::Limits;
use assetgen_common::model::DryRunModel;
use assetgen_common::queue::{QueueError, RowMessage, RowQueue};
use assetgen_common::refs::fetch::{FetchPolicy, RefFetcher};
use assetgen_common::store::{MemoryStore, ObjectStore};
use assetgen_common::submission::Submitter;
use assetgen_relay::{RelayConfig, RelayState, router};
use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

#[derive(Debug, Default)]
struct Recorded(Mutex<Vec<RowMessage>>);

#[async_trait]
impl RowQueue for Recorded {
    async fn publish(&self, messages: &[RowMessage]) -> Result<(), QueueError> {
        self.0.lock().expect("lock").extend_from_slice(messages);
        Ok(())
    }
}

struct Rig {
    store: Arc<dyn ObjectStore>,
    batch_id: String,
    messages: Vec<RowMessage>,
    worker: RowWorker,
}

async fn rig(rows: usize) -> Rig {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let queue = Arc::new(Recorded::default());
    let submitter = Submitter {
        store: store.clone(),
        queue: queue.clone(),
        budget: Arc::new(Unmetered { limit: Money::from_micros(1) }),
        prices: PriceTable::default(),
        limits: Limits::default(),
        ref_policy: RefUrlPolicy::default(),
        default_model: DEFAULT_MODEL.into(),
        live_available: false,
    };
    let rows =
        (0..rows).map(|i| RowRequest { scene_id: format!("S{i}"), prompt: "p".into(), ..Default::default() }).collect();
    let accepted = submitter
        .submit(&Identity { user: UserId::new("a@b.test") }, &BatchRequest { rows, ..Default::default() }, "http://t")
        .await
        .expect("submit");
    let worker = RowWorker {
        store: store.clone(),
        dry_run: Arc::new(DryRunModel),
        live: None,
        fetcher: RefFetcher::new(FetchPolicy::default(), store.clone()),
        prices: PriceTable::default(),
        max_refs: 6,
        lease_ttl: Duration::from_secs(60),
    };
    let messages = queue.0.lock().expect("lock").clone();
    Rig { store, batch_id: accepted.batch_id, messages, worker }
}

fn app(store: Arc<dyn ObjectStore>, config: RelayConfig) -> axum::Router {
    let state = RelayState { store, auth: Arc::new(DevAuth), public_url: None, config };
    router(Arc::new(state)).split_for_parts().0
}

fn fast() -> RelayConfig {
    RelayConfig { poll_every: Duration::from_millis(20), ..RelayConfig::default() }
}

/// Reads frames until the stream ends or `limit` passes; returns the text.
async fn read(
    app: axum::Router,
    uri: &str,
    last_event_id: Option<&str>,
    limit: Duration,
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::builder().uri(uri);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = app.oneshot(request.body(Body::empty()).expect("request")).await.expect("infallible");
    let status = response.status();
    let buffering = response.headers().get("x-accel-buffering").map(|v| v.to_str().unwrap_or_default().to_owned());
    let mut body = response.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
    }
    (status, buffering, text)
}

fn events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
            Some((field("event: ")?, field("id: ").unwrap_or_default()))
        })
        .collect()
}

#[tokio::test]
async fn a_client_sees_the_snapshot_every_row_and_done_then_the_stream_ends() {
    let r = rig(3).await;
    let uri = format!("/v1/batches/{}/events", r.batch_id);
    let router = app(r.store.clone(), fast());
    let reader = tokio::spawn(async move { read(router, &uri, None, Duration::from_secs(10)).await });
    for m in &r.messages {
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.worker.process(m).await.expect("process");
    }
    let (status, buffering, text) = reader.await.expect("reader");
    assert_eq!((status, buffering.as_deref()), (StatusCode::OK, Some("no")));
    let got = events(&text);
    assert_eq!(got.first().map(|e| e.0.as_str()), Some("snapshot"), "{text}");
    assert_eq!(got.last().map(|e| e.0.as_str()), Some("done"), "the stream ends after done: {text}");
    let rows = got.iter().filter(|e| e.0 == "row").count();
    assert!(rows >= 3, "every row's change reaches the client ({rows} row events)");
    let ids: Vec<i64> = got.iter().map(|e| e.1.parse().expect("numeric id")).collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "ids never go back: {ids:?}");
}

#[tokio::test]
async fn a_resume_skips_the_snapshot_and_sends_only_what_changed() {
    let r = rig(2).await;
    let uri = format!("/v1/batches/{}/events", r.batch_id);
    r.worker.process(&r.messages[0]).await.expect("process");
    let (_, _, first) = read(app(r.store.clone(), fast()), &uri, None, Duration::from_millis(300)).await;
    let last_id = events(&first).last().map(|e| e.1.clone()).expect("an id");
    r.worker.process(&r.messages[1]).await.expect("process");
    let (_, _, resumed) = read(app(r.store.clone(), fast()), &uri, Some(&last_id), Duration::from_secs(5)).await;
    let got = events(&resumed);
    assert!(got.iter().all(|e| e.0 != "snapshot"), "no snapshot on resume: {resumed}");
    assert_eq!(got.iter().filter(|e| e.0 == "row").count(), 1, "only row 1 changed since: {resumed}");
    assert!(resumed.contains("\"scene_id\":\"S1\""));
    assert_eq!(got.last().map(|e| e.0.as_str()), Some("done"));
}

#[tokio::test]
async fn an_idle_stream_sends_heartbeats_then_closes_itself_with_a_retry_hint() {
    let r = rig(1).await;
    let config = RelayConfig {
        poll_every: Duration::from_millis(20),
        heartbeat: Duration::from_millis(100),
        max_stream: Duration::from_millis(450),
        retry_base: Duration::from_millis(1000),
        retry_jitter: Duration::from_millis(500),
    };
    let (_, _, text) =
        read(app(r.store.clone(), config), &format!("/v1/batches/{}/events", r.batch_id), None, Duration::from_secs(5))
            .await;
    assert!(text.matches(": heartbeat").count() >= 2, "{text}");
    let retry: u64 = text.lines().find_map(|l| l.strip_prefix("retry: ")).expect("a retry hint").parse().expect("ms");
    assert!((1000..=1500).contains(&retry), "retry {retry} ms is the base plus jitter");
    assert!(!text.contains("event: done"), "the batch has not ended");
}

#[tokio::test]
async fn unknown_batches_are_a_problem_not_an_empty_stream() {
    let r = rig(1).await;
    let (status, _, text) = read(
        app(r.store.clone(), fast()),
        "/v1/batches/0190b5c6-0000-7000-8000-000000000000/events",
        None,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(text.contains("BATCH_NOT_FOUND"));
}
