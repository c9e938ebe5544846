//! The submit router, called in-process with `oneshot`.

use assetgen_common::auth::DevAuth;
use assetgen_common::limits::Limits;
use assetgen_common::store::ObjectStore;
use assetgen_common::testkit::{RecordingQueue, Rig};
use assetgen_submit::{SubmitState, router};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

struct App {
    router: axum::Router,
    store: Arc<dyn ObjectStore>,
    queue: Arc<RecordingQueue>,
}

fn app() -> App {
    let kit = Rig::new(|p| p.limits = Limits { max_rows: 3, ..Limits::default() });
    let state = SubmitState {
        submitter: kit.pipeline.submitter.clone(),
        control: kit.pipeline.control.clone(),
        store: kit.store.clone(),
        auth: Arc::new(DevAuth),
        public_url: None,
        capabilities: None,
    };
    let (router, _) = router(Arc::new(state)).split_for_parts();
    App { router, store: kit.store, queue: kit.queue }
}

async fn call(app: &App, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, String, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "assetgen.test")
        .header("content-type", "application/json")
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .expect("request");
    let response = app.router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, content_type, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn objects(app: &App) -> usize {
    app.store.list("").await.expect("list").len()
}

#[tokio::test]
async fn an_accepted_batch_is_stored_and_queued_row_by_row() {
    let app = app();
    let body = json!({"rows": [{"scene_id": "A", "prompt": "a", "variants": 2}, {"scene_id": "B", "prompt": "b"}]});
    let (status, _, accepted) = call(&app, "POST", "/v1/batches", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["batch_id"].as_str().expect("id");
    assert_eq!(accepted["estimate"], json!({"images": 3, "usd": 0.0, "usd_if_live": 0.117}));
    assert_eq!(accepted["links"]["events"], format!("http://assetgen.test/v1/batches/{id}/events"));
    assert_eq!(objects(&app).await, 3, "manifest and two row states");
    let queued: Vec<u32> = app.queue.published().iter().map(|m| m.row).collect();
    assert_eq!(queued, vec![0, 1]);

    let (status, _, view) = call(&app, "GET", &format!("/v1/batches/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((view["status"].as_str(), view["totals"]["images_total"].as_u64()), (Some("queued"), Some(3)));
}

#[tokio::test]
async fn refusals_are_problems_and_write_nothing() {
    let app = app();
    let cases = [
        (json!({"rows": []}), 422, "BATCH_EMPTY"),
        (
            json!({"rows": [{"scene_id": "A", "prompt": "a"}, {"scene_id": "B", "prompt": "b"}, {"scene_id": "C", "prompt": "c"}, {"scene_id": "D", "prompt": "d"}]}),
            413,
            "TOO_MANY_ROWS",
        ),
        (json!({"rows": [{"scene_id": "A", "prompt": "a", "seed": 7}]}), 422, "UNKNOWN_FIELD"),
        (
            json!({"rows": [{"scene_id": "A", "prompt": "a", "refs": ["https://127.0.0.1/x.png"]}]}),
            422,
            "INVALID_REF_URL",
        ),
        (json!({"rows": [{"scene_id": "A", "prompt": "a"}], "run_mode": "live"}), 409, "LIVE_NOT_CONFIGURED"),
        (json!({"rows": [{"scene_id": "A", "prompt": "a", "aspect_ratio": "7:3"}]}), 422, "INVALID_ASPECT_RATIO"),
        (json!({"rows": "all of them"}), 422, "INVALID_JSON"),
    ];
    for (body, status, code) in cases {
        let (got, content_type, problem) = call(&app, "POST", "/v1/batches", Some(body.clone())).await;
        assert_eq!((got.as_u16(), problem["code"].as_str()), (status, Some(code)), "{body} → {problem}");
        assert_eq!(content_type, "application/problem+json");
        assert!(problem["advice"].as_str().is_some_and(|a| !a.is_empty()), "every problem says what to do");
    }
    let huge = json!({"rows": [{"scene_id": "A", "prompt": "x".repeat(3 * 1024 * 1024)}]});
    let (status, _, problem) = call(&app, "POST", "/v1/batches", Some(huge)).await;
    assert_eq!((status.as_u16(), problem["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")));
    assert_eq!(objects(&app).await, 0, "nothing written");
    assert!(app.queue.published().is_empty(), "nothing queued");
}

#[tokio::test]
async fn estimates_write_nothing_and_unknown_batches_are_404() {
    let app = app();
    let body =
        json!({"rows": [{"scene_id": "A", "prompt": "a", "variants": 3}], "model": "gemini-3-pro-image-preview"});
    let (status, _, estimate) = call(&app, "POST", "/v1/estimate", Some(body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(estimate["estimate"]["usd_if_live"], json!(0.402));
    assert_eq!(objects(&app).await, 0);
    for id in ["0190b5c6-0000-7000-8000-000000000000", "not-a-batch"] {
        let (status, content_type, problem) = call(&app, "GET", &format!("/v1/batches/{id}"), None).await;
        assert_eq!((status.as_u16(), problem["code"].as_str()), (404, Some("BATCH_NOT_FOUND")));
        assert_eq!(content_type, "application/problem+json");
    }
    let (status, _, budget) = call(&app, "GET", "/v1/budget", None).await;
    assert_eq!((status, budget["limit_usd"].as_f64()), (StatusCode::OK, Some(10.0)));
}

/// Lets in only requests with `x-test-user`: stands for OIDC, which a test cannot satisfy.
#[derive(Debug)]
struct HeaderOnly;

#[async_trait::async_trait]
impl assetgen_common::auth::Authenticator for HeaderOnly {
    async fn authenticate(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<assetgen_common::auth::Identity, assetgen_common::problem::Problem> {
        match headers.get("x-test-user").and_then(|v| v.to_str().ok()) {
            Some(user) => Ok(assetgen_common::auth::Identity { user: assetgen_common::domain::UserId::new(user) }),
            None => Err(assetgen_common::problem::Problem::new(
                assetgen_common::problem::ErrorCode::Unauthenticated,
                "no credentials",
            )),
        }
    }
}

#[tokio::test]
async fn a_submit_hands_the_browser_a_token_for_this_batch_only() {
    use assetgen_common::auth::CapabilityTokens;
    use assetgen_common::config::Secret;
    let kit = Rig::new(|_| {});
    let state = SubmitState {
        submitter: kit.pipeline.submitter.clone(),
        control: kit.pipeline.control.clone(),
        store: kit.store.clone(),
        auth: Arc::new(HeaderOnly),
        public_url: None,
        capabilities: Some(
            CapabilityTokens::new(&Secret::new("a-test-capability-secret-of-enough-length-0123456789"))
                .expect("secret"),
        ),
    };
    let router = router(Arc::new(state)).split_for_parts().0;
    let post = Request::builder()
        .method("POST")
        .uri("/v1/batches")
        .header("host", "assetgen.test")
        .header("x-test-user", "artist@studio.test")
        .header("content-type", "application/json")
        .body(Body::from(json!({"rows": [{"scene_id": "A", "prompt": "a"}]}).to_string()))
        .expect("request");
    let response = router.clone().oneshot(post).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value =
        serde_json::from_slice(&response.into_body().collect().await.expect("body").to_bytes()).expect("json");
    let page = accepted["links"]["page"].as_str().expect("page link");
    let token = page.split_once("?access_token=").map(|(_, t)| t.to_owned()).expect("the page link carries a token");
    assert!(accepted["links"]["events"].as_str().is_some_and(|e| e.ends_with(&format!("?access_token={token}"))));
    let id = accepted["batch_id"].as_str().expect("id");
    let get = |uri: String| Request::builder().uri(uri).body(Body::empty()).expect("request");
    let with_token =
        router.clone().oneshot(get(format!("/v1/batches/{id}?access_token={token}"))).await.expect("infallible");
    assert_eq!(with_token.status(), StatusCode::OK, "the token opens its batch without any header");
    let without = router.clone().oneshot(get(format!("/v1/batches/{id}"))).await.expect("infallible");
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
}
