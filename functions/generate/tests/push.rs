//! The generate router, called in-process with the push envelopes Pub/Sub sends.

use assetgen_common::auth::DevAuth;
use assetgen_common::model::{DryRunModel, GeneratedImage, ImageModel, ImageRequest, ModelError};
use assetgen_common::problem::ErrorCode;
use assetgen_common::queue::{PushEnvelope, RowMessage};
use assetgen_common::store::ObjectStore;
use assetgen_common::testkit::{Rig, row};
use assetgen_generate::{GenerateState, Redelivery, router};
use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// A model that is always rate limited, as Gemini answers with a 429 and `RetryInfo`.
#[derive(Debug)]
struct RateLimited;

#[async_trait]
impl ImageModel for RateLimited {
    fn is_live(&self) -> bool {
        false
    }
    async fn generate(&self, _: &ImageRequest) -> Result<GeneratedImage, ModelError> {
        Err(ModelError::Retryable {
            code: ErrorCode::ModelRateLimited,
            detail: "quota per minute".into(),
            retry_after: Some(Duration::from_secs(17)),
        })
    }
}

/// The dry-run model, slowly: a delivery holds its row long enough for a duplicate to arrive.
#[derive(Debug)]
struct Slow;

#[async_trait]
impl ImageModel for Slow {
    fn is_live(&self) -> bool {
        false
    }
    async fn generate(&self, request: &ImageRequest) -> Result<GeneratedImage, ModelError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        DryRunModel.generate(request).await
    }
}

async fn app(model: Arc<dyn ImageModel>) -> (axum::Router, Vec<RowMessage>, Arc<dyn ObjectStore>) {
    app_on_queue(model, false).await
}

async fn app_on_queue(
    model: Arc<dyn ImageModel>,
    behind_pubsub: bool,
) -> (axum::Router, Vec<RowMessage>, Arc<dyn ObjectStore>) {
    let (router, messages, store, _) = app_with_rig(model, behind_pubsub).await;
    (router, messages, store)
}

/// `behind_pubsub`: generate behind Pub/Sub (quota waits published again) or the local queue
/// (nacked). The rig's queue records what is published.
async fn app_with_rig(
    model: Arc<dyn ImageModel>,
    behind_pubsub: bool,
) -> (axum::Router, Vec<RowMessage>, Arc<dyn ObjectStore>, Rig) {
    let kit = Rig::new(|p| p.dry_run = model);
    kit.submit_rows(vec![row("A", 2)]).await;
    let redelivery = if behind_pubsub { Redelivery::Republish(kit.queue.clone()) } else { Redelivery::Uncounted429 };
    let state = GenerateState { worker: kit.pipeline.worker.clone(), auth: Arc::new(DevAuth), redelivery };
    let (router, _) = router(Arc::new(state)).split_for_parts();
    (router, kit.queue.published(), kit.store.clone(), kit)
}

async fn push(
    router: &axum::Router,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::builder().method("POST").uri(path).header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = router.clone().oneshot(request.body(Body::from(body)).expect("request")).await.expect("infallible");
    let status = response.status();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap_or_default().to_owned());
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, retry_after, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn envelope(message: &RowMessage) -> Vec<u8> {
    serde_json::to_vec(&PushEnvelope::new(
        "projects/p/subscriptions/rows-push",
        "1",
        message,
        "2026-11-23T00:00:00Z".into(),
    ))
    .expect("json")
}

#[tokio::test]
async fn a_push_is_acked_once_done_and_a_redelivery_is_acked_without_work() {
    let (router, messages, store) = app(Arc::new(DryRunModel)).await;
    let (status, _, body) = push(&router, "/pubsub/rows", envelope(&messages[0]), &[]).await;
    assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("succeeded")));
    let stored = store.list("images/").await.expect("list");
    assert_eq!(stored.iter().filter(|m| m.name.ends_with(".png")).count(), 2);
    assert_eq!(stored.iter().filter(|m| m.name.ends_with(".json")).count(), 2, "a provenance sidecar per image");
    let (status, _, body) = push(&router, "/pubsub/rows", envelope(&messages[0]), &[]).await;
    assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("already_handled")));
}

#[tokio::test]
async fn the_same_body_as_an_eventarc_cloudevent_is_accepted() {
    let (router, messages, _) = app(Arc::new(DryRunModel)).await;
    let ce = [
        ("ce-id", "1"),
        ("ce-type", "google.cloud.pubsub.topic.v1.messagePublished"),
        ("ce-specversion", "1.0"),
        ("ce-source", "//pubsub.googleapis.com/projects/p/topics/rows"),
    ];
    let (status, _, body) = push(&router, "/pubsub/rows", envelope(&messages[0]), &ce).await;
    assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("succeeded")));
}

#[tokio::test]
async fn a_rate_limited_model_nacks_with_429_and_the_retry_delay() {
    let (router, messages, _) = app(Arc::new(RateLimited)).await;
    let (status, retry_after, problem) = push(&router, "/pubsub/rows", envelope(&messages[0]), &[]).await;
    assert_eq!((status, retry_after.as_deref()), (StatusCode::TOO_MANY_REQUESTS, Some("17")));
    assert_eq!(problem["code"], "MODEL_RATE_LIMITED");
    // After the last delivery Pub/Sub dead-letters it: the row fails, naming the last error.
    let (status, _, body) = push(&router, "/pubsub/dead-letter", envelope(&messages[0]), &[]).await;
    assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("failed")));
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_of_a_row_another_delivery_holds_spends_no_attempt() {
    // Behind Pub/Sub, which counts every delivery: held, published again and acknowledged (if the
    // holder's own push failed, the copy is the row's last message).
    let (router, messages, store, kit) = app_with_rig(Arc::new(Slow), true).await;
    let body = envelope(&messages[0]);
    let (first, second) = tokio::join!(
        push(&router, "/pubsub/rows", body.clone(), &[]),
        push(&router, "/pubsub/rows", body.clone(), &[])
    );
    let mut outcomes = [first, second].map(|(status, _, body)| (status, body["outcome"].as_str().map(str::to_owned)));
    outcomes.sort();
    assert_eq!(
        outcomes,
        [(StatusCode::OK, Some("busy".to_owned())), (StatusCode::OK, Some("succeeded".to_owned()))],
        "Pub/Sub counts every delivery: a busy duplicate must not spend the row's attempts"
    );
    assert_eq!(kit.queue.published().len(), 2, "the busy copy was published again");
    let stored = store.list("images/").await.expect("list");
    assert_eq!(stored.iter().filter(|m| m.name.ends_with(".png")).count(), 2, "generated once");

    // Behind the local queue, which does not count 429s: the copy comes back shortly, uncounted.
    let (router, messages, store) = app(Arc::new(Slow)).await;
    let body = envelope(&messages[0]);
    let (first, second) = tokio::join!(
        push(&router, "/pubsub/rows", body.clone(), &[]),
        push(&router, "/pubsub/rows", body.clone(), &[])
    );
    let mut outcomes = [first, second].map(|(status, retry_after, body)| {
        (status, retry_after, body["outcome"].as_str().or(body["code"].as_str()).map(str::to_owned))
    });
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            (StatusCode::OK, None, Some("succeeded".to_owned())),
            (StatusCode::TOO_MANY_REQUESTS, Some("1".to_owned()), Some("ROW_IN_PROGRESS".to_owned())),
        ],
        "the copy stays queued (uncounted) until the holder is done"
    );
    let stored = store.list("images/").await.expect("list");
    assert_eq!(stored.iter().filter(|m| m.name.ends_with(".png")).count(), 2, "generated once");
}

#[tokio::test]
async fn a_dead_letter_for_a_row_still_held_is_asked_again_later() {
    let (router, messages, _) = app(Arc::new(Slow)).await;
    let body = envelope(&messages[0]);
    let holder = {
        let (router, body) = (router.clone(), body.clone());
        tokio::spawn(async move { push(&router, "/pubsub/rows", body, &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, problem) = push(&router, "/pubsub/dead-letter", body, &[]).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("ROW_IN_PROGRESS")));
    let (status, _, done) = holder.await.expect("join");
    assert_eq!((status, done["outcome"].as_str()), (StatusCode::OK, Some("succeeded")), "the holder finished it");
}

#[tokio::test(start_paused = true)]
async fn behind_pubsub_a_row_waiting_for_the_quota_is_published_again_after_a_hold_and_acknowledged() {
    let (router, messages, store, kit) = app_with_rig(Arc::new(RateLimited), true).await;
    let started = tokio::time::Instant::now();
    let (status, _, body) = push(&router, "/pubsub/rows", envelope(&messages[0]), &[]).await;
    assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("deferred")), "a nack would spend an attempt");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(17),
        "the push is held for RetryInfo's delay, so a waiting row does not come straight back"
    );
    assert_eq!(
        kit.queue.published(),
        vec![messages[0].clone(), messages[0].clone()],
        "published again: the row comes back by itself, not when a sweep runs"
    );
    let state: assetgen_common::state::RowState = assetgen_common::store::read_json(
        store.as_ref(),
        &assetgen_common::layout::row_state(&messages[0].batch_id, messages[0].row),
    )
    .await
    .expect("row state")
    .value;
    assert_eq!(
        (state.status, state.error.map(|e| e.code)),
        (assetgen_common::api::RowStatus::Queued, Some(ErrorCode::ModelRateLimited)),
        "queued for its next delivery; the user sees why it waits"
    );
}

#[tokio::test]
async fn what_is_not_a_row_message_is_refused_or_dropped() {
    let (router, _, _) = app(Arc::new(DryRunModel)).await;
    let (status, _, problem) = push(&router, "/pubsub/rows", b"{not json".to_vec(), &[]).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_JSON")));
    // The emulator's own fixture: a real envelope, but its data is not one of our row messages. No
    // redelivery can change that, so it is acknowledged (and logged) on both subscriptions.
    let fixture =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../common/tests/fixtures/pubsub-push-envelope.json"))
            .expect("fixture");
    for path in ["/pubsub/rows", "/pubsub/dead-letter"] {
        let (status, _, body) = push(&router, path, fixture.clone(), &[]).await;
        assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("dropped")), "{path}");
        assert!(body["detail"].as_str().is_some_and(|d| d.contains("not a row message")), "{path}: {body}");
    }
    let stray = RowMessage { batch_id: assetgen_common::domain::BatchId::new(), row: 0 };
    let (status, _, body) = push(&router, "/pubsub/rows", envelope(&stray), &[]).await;
    assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("dropped")));
}

/// Every object in the store with its generation: what "nothing stored changed" compares.
async fn snapshot(store: &Arc<dyn ObjectStore>) -> Vec<(String, i64)> {
    let mut all = Vec::new();
    for prefix in ["batches/", "images/", "ledger/", "budget/", "refs/", "queue/"] {
        all.extend(store.list(prefix).await.expect("list").into_iter().map(|m| (m.name, m.generation)));
    }
    all
}

#[tokio::test]
async fn malformed_and_oversized_envelopes_get_a_problem_and_change_nothing() {
    let (router, messages, store) = app(Arc::new(DryRunModel)).await;
    let before = snapshot(&store).await;
    let nested = format!("{{\"message\":{}{}}}", "[".repeat(20_000), "]".repeat(20_000));
    let oversized = {
        let mut e: Value = serde_json::from_slice(&envelope(&messages[0])).expect("json");
        e["message"]["attributes"]["padding"] = Value::String("x".repeat(100 * 1024));
        serde_json::to_vec(&e).expect("json")
    };
    let bad: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("not JSON", b"{not json".to_vec(), StatusCode::BAD_REQUEST, "INVALID_JSON"),
        ("empty body", Vec::new(), StatusCode::BAD_REQUEST, "INVALID_JSON"),
        ("no message", b"{}".to_vec(), StatusCode::BAD_REQUEST, "INVALID_JSON"),
        ("a message that is a string", br#"{"message":"x"}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_JSON"),
        ("an array", b"[1,2]".to_vec(), StatusCode::BAD_REQUEST, "INVALID_JSON"),
        ("data that is a number", br#"{"message":{"data":1}}"#.to_vec(), StatusCode::BAD_REQUEST, "INVALID_JSON"),
        (
            "a negative delivery attempt",
            br#"{"message":{"data":""},"deliveryAttempt":-1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "INVALID_JSON",
        ),
        ("nested 20,000 deep", nested.into_bytes(), StatusCode::BAD_REQUEST, "INVALID_JSON"),
        ("invalid UTF-8", b"{\"message\":{\"data\":\"\xff\xfe\"}}".to_vec(), StatusCode::BAD_REQUEST, "INVALID_JSON"),
        ("over 64 KiB", oversized, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
    ];
    for path in ["/pubsub/rows", "/pubsub/dead-letter"] {
        for (what, body, want, code) in &bad {
            let request = Request::builder()
                .method("POST")
                .uri(path)
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .expect("request");
            let response = router.clone().oneshot(request).await.expect("infallible");
            let status = response.status();
            let content_type = response.headers().get("content-type").cloned();
            let bytes = response.into_body().collect().await.expect("body").to_bytes();
            let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            assert_eq!((status, problem["code"].as_str()), (*want, Some(*code)), "{path}, {what}: {problem}");
            assert_eq!(content_type.as_ref().and_then(|v| v.to_str().ok()), Some("application/problem+json"), "{what}");
        }
    }
    let (status, _, body) = push(&router, "/pubsub/rows", br#"{"message":{"data":"***"}}"#.to_vec(), &[]).await;
    assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("dropped")), "data that is not base64");
    assert_eq!(snapshot(&store).await, before, "nothing stored changed");
    // And the endpoint still works.
    let (status, _, body) = push(&router, "/pubsub/rows", envelope(&messages[0]), &[]).await;
    assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("succeeded")));
}
