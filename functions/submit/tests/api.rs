//! The submit router, called in-process with `oneshot`.

use assetgen_common::auth::{Access, AllowList, CapabilityTokens, LinkSigner};
use assetgen_common::config::Secret;
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
    app_at(None)
}

/// Submit whose links name `public_url` (the relay's, in the cloud).
fn app_at(public_url: Option<&str>) -> App {
    let kit = Rig::new(|p| p.limits = Limits { max_rows: 3, ..Limits::default() });
    let state = SubmitState {
        submitter: kit.pipeline.submitter.clone(),
        control: kit.pipeline.control.clone(),
        store: kit.store.clone(),
        access: Access::dev(),
        public_url: public_url.map(|u| url::Url::parse(u).expect("a URL")),
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
    assert_eq!(accepted["estimate"], json!({"images": 3, "usd": 0.0, "usd_if_live": 0.117, "usd_if_bulk": 0.0585}));
    let events = accepted["links"]["events"].as_str().expect("events link");
    assert!(events.starts_with(&format!("http://assetgen.test/v1/batches/{id}/events?access_token=")), "{events}");
    assert_eq!(objects(&app).await, 4, "its entry in the index of open batches, manifest and two row states");
    let queued: Vec<u32> = app.queue.published().iter().map(|m| m.row).collect();
    assert_eq!(queued, vec![0, 1]);

    let (status, _, view) = call(&app, "GET", &format!("/v1/batches/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((view["status"].as_str(), view["totals"]["images_total"].as_u64()), (Some("queued"), Some(3)));
}

#[tokio::test]
async fn in_the_cloud_the_page_and_events_are_the_relays_and_self_is_submits_own() {
    let app = app_at(Some("https://relay.example"));
    let body = json!({"rows": [{"scene_id": "A", "prompt": "a"}]});
    let (status, _, accepted) = call(&app, "POST", "/v1/batches", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["batch_id"].as_str().expect("id");
    let link = |name: &str| accepted["links"][name].as_str().expect("a link").to_owned();
    assert!(link("page").starts_with("https://relay.example/b/"), "{accepted}");
    assert!(link("events").starts_with(&format!("https://relay.example/v1/batches/{id}/events?")), "{accepted}");
    assert_eq!(link("self"), format!("http://assetgen.test/v1/batches/{id}"), "status lives on submit, not the relay");
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
        // A loopback literal is well-formed; this deployment's address policy refuses it.
        (
            json!({"rows": [{"scene_id": "A", "prompt": "a", "refs": ["https://127.0.0.1/x.png"]}]}),
            403,
            "REF_FORBIDDEN_ADDRESS",
        ),
        (
            json!({"rows": [{"scene_id": "A", "prompt": "a", "refs": [" https://example.com/x.png"]}]}),
            422,
            "INVALID_REF_URL",
        ),
        // The wire is exactly what /openapi.json states: nothing trimmed, one spelling per value.
        (json!({"rows": [{"scene_id": " A", "prompt": "a"}]}), 422, "INVALID_SCENE_ID"),
        (json!({"rows": [{"scene_id": "A", "prompt": "a", "ref_mode": "Style-Only"}]}), 422, "INVALID_REF_MODE"),
        (json!({"rows": [{"scene_id": "A", "prompt": "a", "aspect_ratio": "16 : 9"}]}), 422, "INVALID_ASPECT_RATIO"),
        (json!({"rows": [{"scene_id": "A", "prompt": "a"}], "run_mode": "Dry-Run"}), 422, "INVALID_RUN_MODE"),
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
    fn admits(&self, _: &assetgen_common::domain::UserId) -> bool {
        true
    }
}

#[tokio::test]
async fn a_submit_hands_the_browser_a_token_for_this_batch_only() {
    let owner = Owned::new(&[]);
    let (id, token) = owner.submit("artist@studio.test").await;
    let with_token = owner.call("GET", &format!("/v1/batches/{id}?access_token={token}"), &[]).await;
    assert_eq!(with_token.0, StatusCode::OK, "the token opens its batch without any header");
    let without = owner.call("GET", &format!("/v1/batches/{id}"), &[]).await;
    assert_eq!(without.0, StatusCode::UNAUTHORIZED);
    let (other, _) = owner.submit("artist@studio.test").await;
    let elsewhere = owner.call("GET", &format!("/v1/batches/{other}?access_token={token}"), &[]).await;
    assert_eq!(elsewhere.0, StatusCode::NOT_FOUND, "a page link opens its own batch only");
}

/// The submit router with [`HeaderOnly`] standing for OIDC, fixed secrets and `admins`.
struct Owned {
    router: axum::Router,
    tokens: CapabilityTokens,
    store: Arc<dyn ObjectStore>,
}

const CAPABILITY_SECRET: &str = "a-test-capability-secret-of-enough-length-0123456789";

impl Owned {
    fn new(admins: &[&str]) -> Self {
        let kit = Rig::new(|_| {});
        let tokens = CapabilityTokens::new(&Secret::new(CAPABILITY_SECRET)).expect("secret");
        let access = Access {
            auth: Arc::new(HeaderOnly),
            tokens: tokens.clone(),
            links: LinkSigner::random(),
            admins: AllowList::new(admins),
        };
        let state = SubmitState {
            submitter: kit.pipeline.submitter.clone(),
            control: kit.pipeline.control.clone(),
            store: kit.store.clone(),
            access,
            public_url: None,
        };
        Self { router: router(Arc::new(state)).split_for_parts().0, tokens, store: kit.store }
    }

    async fn call(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri).header("host", "assetgen.test");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response =
            self.router.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("infallible");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Submits one dry-run row as `user`; the batch id and its page link's read token.
    async fn submit(&self, user: &str) -> (String, String) {
        let post = Request::builder()
            .method("POST")
            .uri("/v1/batches")
            .header("host", "assetgen.test")
            .header("x-test-user", user)
            .header("content-type", "application/json")
            .body(Body::from(json!({"rows": [{"scene_id": "A", "prompt": "a"}]}).to_string()))
            .expect("request");
        let response = self.router.clone().oneshot(post).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let accepted: Value =
            serde_json::from_slice(&response.into_body().collect().await.expect("body").to_bytes()).expect("json");
        let page = accepted["links"]["page"].as_str().expect("page link");
        let token = page.split_once("?access_token=").map(|(_, t)| t.to_owned()).expect("the page link's token");
        assert!(accepted["links"]["events"].as_str().is_some_and(|e| e.ends_with(&format!("?access_token={token}"))));
        (accepted["batch_id"].as_str().expect("id").to_owned(), token)
    }

    /// Marks every row of `id` failed, as a dead-lettered live row would be.
    async fn fail_rows(&self, id: &str) {
        use assetgen_common::api::RowStatus;
        use assetgen_common::state::RowState;
        let batch = assetgen_common::domain::BatchId::parse(id).expect("id");
        let name = assetgen_common::layout::row_state(&batch, 0);
        assetgen_common::store::update_json::<RowState, assetgen_common::store::StoreError, _>(
            self.store.as_ref(),
            &name,
            |s| {
                let mut next = s.clone();
                next.status = RowStatus::Failed;
                Ok(Some(next))
            },
        )
        .await
        .expect("row failed");
    }
}

const OWNER: &str = "artist@studio.test";
const OTHER: &str = "intruder@studio.test";
const ADMIN: &str = "lead@studio.test";

/// Every batch route, as (method, path) for batch `id`.
fn batch_routes(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GET", format!("/v1/batches/{id}")),
        ("POST", format!("/v1/batches/{id}/cancel")),
        ("POST", format!("/v1/batches/{id}/retry")),
        ("POST", format!("/v1/batches/{id}/control-token")),
    ]
}

#[tokio::test]
async fn another_users_batch_answers_exactly_like_a_batch_that_does_not_exist() {
    let app = Owned::new(&[ADMIN]);
    let (id, _) = app.submit(OWNER).await;
    let missing = "0190b5c6-0000-7000-8000-000000000000";
    for ((method, theirs), (_, nowhere)) in batch_routes(&id).into_iter().zip(batch_routes(missing)) {
        let refused = app.call(method, &theirs, &[("x-test-user", OTHER)]).await;
        let absent = app.call(method, &nowhere, &[("x-test-user", OTHER)]).await;
        assert_eq!(refused.0, StatusCode::NOT_FOUND, "{method} {theirs}: {}", refused.1);
        // The same body, once each id is replaced by a placeholder.
        let text = |v: &Value, id: &str| v.to_string().replace(id, "ID");
        assert_eq!(text(&refused.1, &id), text(&absent.1, missing), "{method} {theirs}");
        assert_eq!(refused.1["code"], "BATCH_NOT_FOUND");
    }
    let (status, view) = app.call("GET", &format!("/v1/batches/{id}"), &[("x-test-user", OWNER)]).await;
    assert_eq!(status, StatusCode::OK, "the owner sees it: {view}");
}

#[tokio::test]
async fn admins_read_and_cancel_but_never_retry_on_the_owners_budget() {
    let app = Owned::new(&[ADMIN]);
    let (id, _) = app.submit(OWNER).await;
    let admin = [("x-test-user", ADMIN)];
    assert_eq!(app.call("GET", &format!("/v1/batches/{id}"), &admin).await.0, StatusCode::OK);
    app.fail_rows(&id).await;
    let (status, problem) = app.call("POST", &format!("/v1/batches/{id}/retry"), &admin).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::FORBIDDEN, Some("FORBIDDEN")), "{problem}");
    let (status, problem) = app.call("POST", &format!("/v1/batches/{id}/control-token"), &admin).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let (status, _) = app.call("POST", &format!("/v1/batches/{id}/cancel"), &admin).await;
    assert_eq!(status, StatusCode::OK);
    // And the retry the owner was refused nothing: the row is still failed, not queued.
    let (_, view) = app.call("GET", &format!("/v1/batches/{id}"), &[("x-test-user", OWNER)]).await;
    assert_eq!(view["rows"][0]["status"], "failed", "{view}");
}

#[tokio::test]
async fn a_retry_by_someone_else_spends_nothing_and_queues_nothing() {
    let app = Owned::new(&[]);
    let (id, token) = app.submit(OWNER).await;
    app.fail_rows(&id).await;
    let (status, _) = app.call("POST", &format!("/v1/batches/{id}/retry"), &[("x-test-user", OTHER)]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, problem) = app.call("POST", &format!("/v1/batches/{id}/retry?access_token={token}"), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a page link reads only: {problem}");
    let (_, view) = app.call("GET", &format!("/v1/batches/{id}"), &[("x-test-user", OWNER)]).await;
    assert_eq!(view["rows"][0]["status"], "failed", "{view}");
    let (status, outcome) = app.call("POST", &format!("/v1/batches/{id}/retry"), &[("x-test-user", OWNER)]).await;
    assert_eq!((status, outcome["rows"].clone()), (StatusCode::OK, json!([0])), "the owner may: {outcome}");
}

#[tokio::test]
async fn a_page_link_reads_but_never_cancels_or_retries() {
    let app = Owned::new(&[]);
    let (id, token) = app.submit(OWNER).await;
    assert_eq!(app.call("GET", &format!("/v1/batches/{id}?access_token={token}"), &[]).await.0, StatusCode::OK);
    let bearer = format!("Bearer {token}");
    assert_eq!(app.call("GET", &format!("/v1/batches/{id}"), &[("authorization", &bearer)]).await.0, StatusCode::OK);
    for action in ["cancel", "retry", "control-token"] {
        let uri = format!("/v1/batches/{id}/{action}");
        let (status, problem) = app.call("POST", &format!("{uri}?access_token={token}"), &[]).await;
        // The control-token route reads no query token at all: there it is just not signed in.
        let expected = if action == "control-token" { StatusCode::UNAUTHORIZED } else { StatusCode::FORBIDDEN };
        assert_eq!(status, expected, "{action} with a page link: {problem}");
        let (status, _) = app.call("POST", &uri, &[("authorization", &bearer)]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{action} with a page link as bearer");
    }
}

#[tokio::test]
async fn a_control_token_is_for_its_owner_its_batch_and_an_hour() {
    let app = Owned::new(&[]);
    let (id, _) = app.submit(OWNER).await;
    let (other_id, _) = app.submit(OWNER).await;
    let uri = format!("/v1/batches/{id}/control-token");
    let (status, _) = app.call("POST", &uri, &[("x-test-user", OTHER)]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "only the owner gets one");
    let (status, issued) = app.call("POST", &uri, &[("x-test-user", OWNER)]).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    let token = issued["token"].as_str().expect("token").to_owned();
    let page = issued["page"].as_str().expect("page");
    assert!(page.starts_with(&format!("http://assetgen.test/b/{id}?access_token=")), "{page}");
    assert!(page.ends_with(&format!("#control={token}")), "the control token rides in the fragment: {page}");
    let expires = time::OffsetDateTime::parse(
        issued["expires_at"].as_str().expect("expiry"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::minutes(55) && left <= time::Duration::minutes(60), "{left}");

    let bearer = format!("Bearer {token}");
    let (status, problem) =
        app.call("POST", &format!("/v1/batches/{other_id}/cancel"), &[("authorization", &bearer)]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another batch: {problem}");
    let (status, problem) = app.call("POST", &format!("/v1/batches/{id}/cancel?access_token={token}"), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "in a query string it only reads: {problem}");
    let (status, problem) = app.call("POST", &uri, &[("authorization", &bearer)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a control token cannot mint another: {problem}");
    let (status, outcome) = app.call("POST", &format!("/v1/batches/{id}/cancel"), &[("authorization", &bearer)]).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");

    // Expired an hour ago (beyond the checker's few seconds of leeway).
    let expired = expired_control_token(&id);
    let (status, problem) =
        app.call("POST", &format!("/v1/batches/{id}/retry"), &[("authorization", &format!("Bearer {expired}"))]).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")), "{problem}");
    // A genuine one, made the way the endpoint makes them, works until it expires.
    let fresh = app.tokens.issue_scoped(
        &assetgen_common::domain::BatchId::parse(&id).expect("id"),
        &assetgen_common::domain::UserId::new(OWNER),
        assetgen_common::auth::Scope::Control,
        std::time::Duration::from_secs(60),
    );
    let (status, _) =
        app.call("POST", &format!("/v1/batches/{id}/cancel"), &[("authorization", &format!("Bearer {fresh}"))]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_reference_manager_token_is_for_a_signed_in_user_and_opens_no_batch() {
    let app = Owned::new(&[]);
    let (id, _) = app.submit(OWNER).await;
    let (status, problem) = app.call("POST", "/v1/refs/manager-token", &[]).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")), "{problem}");
    let (status, issued) = app.call("POST", "/v1/refs/manager-token", &[("x-test-user", OWNER)]).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    let token = issued["token"].as_str().expect("token").to_owned();
    assert_eq!(issued["page"], format!("http://assetgen.test/refs#token={token}"), "the token rides in the fragment");
    let expires = time::OffsetDateTime::parse(
        issued["expires_at"].as_str().expect("expiry"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::minutes(55) && left <= time::Duration::minutes(60), "{left}");
    assert_eq!(app.tokens.verify_refs_manager(&token).expect("genuine").user.as_str(), OWNER);

    // It names its user, but no batch route takes it: not even the user's own batch.
    app.fail_rows(&id).await;
    let bearer = format!("Bearer {token}");
    for (method, uri) in batch_routes(&id) {
        let (status, problem) = app.call(method, &uri, &[("authorization", &bearer)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}: {problem}");
        let (status, _) = app.call(method, &format!("{uri}?access_token={token}"), &[]).await;
        assert!(matches!(status.as_u16(), 401 | 403), "{method} {uri} with it in the query: {status}");
    }
    let (_, view) = app.call("GET", &format!("/v1/batches/{id}"), &[("x-test-user", OWNER)]).await;
    assert_eq!(view["rows"][0]["status"], "failed", "nothing was retried: {view}");
}

/// A control token for `id` signed with the test secret whose `exp` has passed.
fn expired_control_token(id: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": OWNER, "bid": id, "scope": "control", "aud": "assetgen:batch", "iat": now - 7200, "exp": now - 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(CAPABILITY_SECRET.as_bytes()),
    )
    .expect("token")
}
