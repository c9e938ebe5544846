//! `Idempotency-Key` on cancel and retry, through the router: a repeated request gets the first
//! one's answer.

use assetgen_common::auth::Access;
use assetgen_common::testkit::Rig;
use assetgen_submit::{SubmitState, router};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

async fn call(app: &axum::Router, uri: &str, key: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = Request::builder().method("POST").uri(uri).header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let request = request.body(body.map_or(Body::empty(), |b| Body::from(b.to_string()))).expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_repeated_keyed_cancel_returns_the_first_answer() {
    let kit = Rig::new(|_| {});
    let state = SubmitState {
        submitter: kit.pipeline.submitter.clone(),
        control: kit.pipeline.control.clone(),
        store: kit.store.clone(),
        access: Access::dev(),
        public_url: None,
    };
    let (app, _) = router(Arc::new(state)).split_for_parts();
    let body = json!({"rows": [{"scene_id": "A", "prompt": "a"}, {"scene_id": "B", "prompt": "b"}]});
    let (status, accepted) = call(&app, "/v1/batches", None, Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let cancel = format!("/v1/batches/{}/cancel", accepted["batch_id"].as_str().expect("id"));

    let (status, first) = call(&app, &cancel, Some("click-1"), None).await;
    assert_eq!((status, &first["rows"]), (StatusCode::OK, &json!([0, 1])), "{first}");
    let (status, again) = call(&app, &cancel, Some("click-1"), None).await;
    assert_eq!((status, &again), (StatusCode::OK, &first), "the first answer, not an empty cancel");
    let (_, unkeyed) = call(&app, &cancel, None, None).await;
    assert_eq!(unkeyed["rows"], json!([]), "without the key, a second cancel changes nothing and says so");
    let retry = cancel.replace("/cancel", "/retry");
    let (status, reused) = call(&app, &retry, Some("click-1"), None).await;
    assert_eq!((status.as_u16(), reused["code"].as_str()), (422, Some("IDEMPOTENCY_KEY_REUSED")), "{reused}");
}
