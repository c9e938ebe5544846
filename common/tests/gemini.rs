//! The Gemini adapter against a local stub that speaks `generateContent`'s wire format, with
//! answers built from the fixtures in `tests/fixtures/` (real captures of Google's formats).

use assetgen_common::config::{Config, Profile, Secret};
use assetgen_common::domain::AspectRatio;
use assetgen_common::model::{
    DryRunModel, GeminiModel, GeminiTimeouts, ImageModel, ImageRequest, ModelError, RefImage, StaticToken, TokenError,
    TokenSource,
};
use assetgen_common::problem::ErrorCode;
use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use url::Url;

const API_KEY: &str = "AIzaSy-test-key-that-must-never-show";
const MODEL: &str = "gemini-2.5-flash-image";
const RESPONSE_IMAGE: &str = include_str!("fixtures/gemini-response-image.json");
const RESPONSE_BLOCKED: &str = include_str!("fixtures/gemini-response-blocked.json");
const ERROR_429: &str = include_str!("fixtures/gemini-error-429.json");
const REQUEST: &str = include_str!("fixtures/gemini-generate-request.json");

// ---------------------------------------------------------------------------------------------
// The stub
// ---------------------------------------------------------------------------------------------

/// What the stub answers every request with.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn json(status: u16, body: impl Into<String>) -> Self {
        Self { status, headers: vec![], body: body.into(), delay: Duration::ZERO }
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
    fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request as the stub received it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Value,
}

#[derive(Debug, Clone)]
struct StubState {
    reply: Reply,
    received: Arc<Mutex<Vec<Received>>>,
}

struct Stub {
    base: Url,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Stub {
    async fn start(reply: Reply) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = StubState { reply, received: received.clone() };
        let app = Router::new().fallback(answer).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the stub");
        let addr = listener.local_addr().expect("stub address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("stub serves") });
        Self { base: Url::parse(&format!("http://{addr}")).expect("stub url"), received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    fn only_request(&self) -> Received {
        let received = self.received();
        assert_eq!(received.len(), 1, "exactly one generateContent call per generate");
        received.into_iter().next().expect("one request")
    }
}

async fn answer(State(state): State<StubState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.received.lock().expect("lock").push(Received {
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body,
    });
    tokio::time::sleep(state.reply.delay).await;
    let status = StatusCode::from_u16(state.reply.status).expect("status");
    let mut response = (status, [("content-type", "application/json")], state.reply.body.clone()).into_response();
    for (name, value) in &state.reply.headers {
        response.headers_mut().insert(*name, value.parse().expect("header value"));
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn api_key() -> Secret {
    let config = Config::from_lookup(Profile::Local, |k| (k == "GEMINI_API_KEY").then(|| API_KEY.to_owned()))
        .expect("config with a key");
    config.gemini_api_key.expect("the key is read")
}

fn developer(stub: &Stub) -> GeminiModel {
    developer_with(stub, GeminiTimeouts::default())
}

fn developer_with(stub: &Stub, timeouts: GeminiTimeouts) -> GeminiModel {
    GeminiModel::developer(api_key(), Some(stub.base.clone()), timeouts).expect("developer model")
}

fn request(prompt: &str, refs: Vec<RefImage>) -> ImageRequest {
    ImageRequest {
        model: MODEL.into(),
        scene_id: "BATCH-001".into(),
        variant: 1,
        prompt: prompt.into(),
        aspect_ratio: AspectRatio::parse("16:9").expect("ratio"),
        refs,
    }
}

fn ref_image(bytes: Vec<u8>, gs_uri: Option<&str>) -> RefImage {
    RefImage {
        mime_type: "image/png".into(),
        sha256: format!("{:x}", bytes.len()),
        bytes: Bytes::from(bytes),
        gs_uri: gs_uri.map(str::to_owned),
    }
}

/// A real PNG, different per `(scene, variant)`.
async fn png(scene: &str, variant: u8) -> Vec<u8> {
    let mut r = request("a placeholder", vec![]);
    r.scene_id = scene.into();
    r.variant = variant;
    DryRunModel.generate(&r).await.expect("placeholder png").bytes.to_vec()
}

/// The image fixture with real base64 PNGs in place of its placeholders.
fn image_response(draft: &[u8], fin: &[u8]) -> String {
    assert!(
        RESPONSE_IMAGE.contains("<base64 of a draft image>") && RESPONSE_IMAGE.contains("<base64 of the final image>")
    );
    RESPONSE_IMAGE
        .replace("<base64 of a draft image>", &STANDARD.encode(draft))
        .replace("<base64 of the final image>", &STANDARD.encode(fin))
}

async fn generate_against(reply: Reply) -> (Result<assetgen_common::model::GeneratedImage, ModelError>, Stub) {
    let stub = Stub::start(reply).await;
    let result = developer(&stub).generate(&request("a cat", vec![])).await;
    (result, stub)
}

async fn error_from(reply: Reply) -> ModelError {
    generate_against(reply).await.0.expect_err("the call fails")
}

fn permanent(error: &ModelError) -> (ErrorCode, &str) {
    match error {
        ModelError::Permanent { code, detail } => (*code, detail),
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

fn retryable(error: &ModelError) -> (ErrorCode, &str, Option<Duration>) {
    match error {
        ModelError::Retryable { code, detail, retry_after } => (*code, detail, *retry_after),
        other => panic!("expected a retryable error, got {other:?}"),
    }
}

fn header<'a>(received: &'a Received, name: &str) -> Option<&'a str> {
    received.headers.get(name).map(|v| v.to_str().expect("ascii header"))
}

// ---------------------------------------------------------------------------------------------
// Success and the request on the wire
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn success_returns_the_final_image_not_the_thought_draft() {
    let (draft, fin) = (png("DRAFT", 1).await, png("FINAL", 2).await);
    assert_ne!(draft, fin);
    let (result, _stub) = generate_against(Reply::json(200, image_response(&draft, &fin))).await;
    let image = result.expect("an image");
    assert_eq!(image.mime_type, "image/png");
    assert_eq!(image.bytes.as_ref(), fin.as_slice(), "the last non-thought inlineData part");
    assert_eq!(image.model_version.as_deref(), Some("gemini-2.5-flash-image"), "the fixture's modelVersion");
    assert_eq!(image.response_id, None, "the fixture has no responseId");
}

#[tokio::test]
async fn the_answers_response_id_and_model_version_are_kept_for_provenance() {
    let fin = png("FINAL", 1).await;
    // `responseId` and `modelVersion` as the REST API names them (GenerateContentResponse).
    let mut body: Value = serde_json::from_str(&image_response(&png("DRAFT", 1).await, &fin)).expect("json");
    body["responseId"] = json!("Mh8gaNzTEtTbnvgPkd6C8Qg");
    body["modelVersion"] = json!("gemini-2.5-flash-image-preview-09-2025");
    let (result, _stub) = generate_against(Reply::json(200, body.to_string())).await;
    let image = result.expect("an image");
    assert_eq!(image.response_id.as_deref(), Some("Mh8gaNzTEtTbnvgPkd6C8Qg"));
    assert_eq!(image.model_version.as_deref(), Some("gemini-2.5-flash-image-preview-09-2025"));
}

#[tokio::test]
async fn a_thought_image_after_the_answer_is_still_not_taken() {
    let (fin, late_draft) = (png("FINAL", 1).await, png("LATE-DRAFT", 1).await);
    let body = json!({"candidates": [{"content": {"role": "model", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": STANDARD.encode(&fin)}},
        {"inlineData": {"mimeType": "image/png", "data": STANDARD.encode(&late_draft)}, "thought": true},
        {"text": "here it is"}
    ]}, "finishReason": "STOP"}]});
    let (result, _stub) = generate_against(Reply::json(200, body.to_string())).await;
    assert_eq!(result.expect("an image").bytes.as_ref(), fin.as_slice());
}

#[tokio::test]
async fn of_several_answer_images_the_last_is_taken() {
    let (first, last) = (png("FIRST", 1).await, png("LAST", 1).await);
    let body = json!({"candidates": [{"content": {"role": "model", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": STANDARD.encode(&first)}},
        {"inlineData": {"mimeType": "image/png", "data": STANDARD.encode(&last)}}
    ]}, "finishReason": "STOP"}]});
    let (result, _stub) = generate_against(Reply::json(200, body.to_string())).await;
    assert_eq!(result.expect("an image").bytes.as_ref(), last.as_slice());
}

#[tokio::test]
async fn the_request_matches_the_fixture_captured_from_googles_sdk() {
    let fixture: Value = serde_json::from_str(REQUEST).expect("request fixture");
    let fixture_parts = &fixture["body"]["contents"][0]["parts"];
    let prompt = fixture_parts[0]["text"].as_str().expect("fixture text");
    let ref_bytes = STANDARD.decode(fixture_parts[1]["inlineData"]["data"].as_str().expect("data")).expect("base64");

    let stub = Stub::start(Reply::json(200, image_response(b"draft", b"final"))).await;
    developer(&stub).generate(&request(prompt, vec![ref_image(ref_bytes, None)])).await.expect("an image");
    let got = stub.only_request();

    // The path: the fixture's, on the documented v1beta of the Developer API.
    let fixture_path = fixture["path"].as_str().expect("path");
    assert_eq!(got.path, fixture_path.replacen("/v1/", "/v1beta/", 1));
    assert_eq!(got.path, format!("/v1beta/models/{MODEL}:generateContent"));
    // The key travels in the header only.
    assert_eq!(header(&got, "x-goog-api-key"), Some(API_KEY));
    assert_eq!(header(&got, "content-type"), fixture["headers"]["content-type"].as_str());
    assert_eq!(got.query, None, "nothing (no key) in the query string");
    assert!(header(&got, "authorization").is_none());

    // The body: the SDK's, field for field (it spells the blob's `mimeType` in snake_case; the
    // API takes both, and camelCase is the documented spelling).
    let mut expected = fixture["body"].clone();
    let blob = &mut expected["contents"][0]["parts"][1]["inlineData"];
    let mime = blob.as_object_mut().expect("blob").remove("mime_type").expect("mime_type");
    blob["mimeType"] = mime;
    assert_eq!(got.body, expected);
}

#[tokio::test]
async fn parts_are_text_first_then_every_ref_in_order() {
    let (a, b) = (png("REF-A", 1).await, png("REF-B", 1).await);
    let stub = Stub::start(Reply::json(200, image_response(b"draft", b"final"))).await;
    let mut req =
        request("two refs", vec![ref_image(a.clone(), None), ref_image(b.clone(), Some("gs://bucket/b.png"))]);
    req.aspect_ratio = AspectRatio::parse("9:16").expect("ratio");
    developer(&stub).generate(&req).await.expect("an image");
    let got = stub.only_request();
    assert_eq!(
        got.body,
        json!({
            "contents": [{"role": "user", "parts": [
                {"text": "two refs"},
                {"inlineData": {"mimeType": "image/png", "data": STANDARD.encode(&a)}},
                // The Developer API cannot read gs://: the bytes go inline.
                {"inlineData": {"mimeType": "image/png", "data": STANDARD.encode(&b)}},
            ]}],
            "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "9:16"}}
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Vertex AI
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn vertex_uses_its_path_a_bearer_token_and_file_data_for_gs_refs() {
    let (fin, inline) = (png("FINAL", 1).await, png("INLINE", 1).await);
    let stub = Stub::start(Reply::json(200, image_response(b"draft", &fin))).await;
    let model = GeminiModel::vertex(
        "my-project",
        "us-central1",
        Arc::new(StaticToken::new("ya29.test-token")),
        Some(stub.base.clone()),
        GeminiTimeouts::default(),
    )
    .expect("vertex model");
    let refs = vec![ref_image(b"not sent".to_vec(), Some("gs://assets/style.png")), ref_image(inline.clone(), None)];
    let image = model.generate(&request("vertex", refs)).await.expect("an image");
    assert_eq!(image.bytes.as_ref(), fin.as_slice());

    let got = stub.only_request();
    assert_eq!(
        got.path,
        format!("/v1/projects/my-project/locations/us-central1/publishers/google/models/{MODEL}:generateContent")
    );
    assert_eq!(header(&got, "authorization"), Some("Bearer ya29.test-token"));
    assert!(header(&got, "x-goog-api-key").is_none());
    assert_eq!(
        got.body["contents"][0]["parts"],
        json!([
            {"text": "vertex"},
            {"fileData": {"fileUri": "gs://assets/style.png", "mimeType": "image/png"}},
            {"inlineData": {"mimeType": "image/png", "data": STANDARD.encode(&inline)}},
        ])
    );
    assert_eq!(got.body["generationConfig"]["imageConfig"]["aspectRatio"], "16:9");
}

#[derive(Debug)]
struct FailingTokens(bool);

#[async_trait]
impl TokenSource for FailingTokens {
    async fn access_token(&self) -> Result<String, TokenError> {
        Err(TokenError { detail: "metadata server said no".into(), retryable: self.0 })
    }
}

#[tokio::test]
async fn vertex_token_failures_map_by_their_retryability() {
    let stub = Stub::start(Reply::json(200, image_response(b"draft", b"final"))).await;
    for (transient, expect_retry) in [(true, true), (false, false)] {
        let model = GeminiModel::vertex(
            "p",
            "global",
            Arc::new(FailingTokens(transient)),
            Some(stub.base.clone()),
            GeminiTimeouts::default(),
        )
        .expect("vertex model");
        let error = model.generate(&request("x", vec![])).await.expect_err("no token");
        assert_eq!(error.is_retryable(), expect_retry, "{error:?}");
        if expect_retry {
            assert_eq!(retryable(&error).0, ErrorCode::ModelUnavailable);
        } else {
            assert_eq!(permanent(&error).0, ErrorCode::ModelRejected);
        }
        assert!(error.to_string().contains("metadata server said no"));
    }
    assert!(stub.received().is_empty(), "no call without a token");
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rate_limit_is_retryable_after_the_retry_info_delay() {
    let error = error_from(Reply::json(429, ERROR_429)).await;
    let (code, detail, after) = retryable(&error);
    assert_eq!(code, ErrorCode::ModelRateLimited);
    assert_eq!(after, Some(Duration::from_secs(17)));
    assert!(detail.contains("PerMinute"), "names the quota: {detail}");
}

#[tokio::test]
async fn a_fractional_retry_delay_is_kept() {
    assert!(ERROR_429.contains("\"17s\""));
    let error = error_from(Reply::json(429, ERROR_429.replace("\"17s\"", "\"0.5s\""))).await;
    assert_eq!(retryable(&error).2, Some(Duration::from_millis(500)));
}

#[tokio::test]
async fn a_rate_limit_without_retry_info_falls_back_to_retry_after() {
    let body = json!({"error": {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}});
    let error = error_from(Reply::json(429, body.to_string()).header("retry-after", "42")).await;
    let (code, _, after) = retryable(&error);
    assert_eq!((code, after), (ErrorCode::ModelRateLimited, Some(Duration::from_secs(42))));
}

#[tokio::test]
async fn a_per_day_quota_fails_the_row_without_retry() {
    let per_day = ERROR_429.replace(
        "GenerateContentPaidTierInputTokensPerModelPerMinute",
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
    );
    assert_ne!(per_day, ERROR_429);
    let error = error_from(Reply::json(429, per_day)).await;
    let (code, detail) = permanent(&error);
    assert_eq!(code, ErrorCode::QuotaExhausted);
    assert!(detail.contains("GenerateRequestsPerDayPerProjectPerModel-FreeTier"), "{detail}");

    // Recognised by the metric too.
    let by_metric = ERROR_429
        .replace("generate_content_paid_tier_input_token_count", "generate_content_free_tier_requests_per_day");
    assert_eq!(permanent(&error_from(Reply::json(429, by_metric)).await).0, ErrorCode::QuotaExhausted);
}

#[tokio::test]
async fn server_errors_are_retryable_and_honour_retry_after() {
    let body = json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}});
    let error = error_from(Reply::json(503, body.to_string()).header("retry-after", "30")).await;
    let (code, detail, after) = retryable(&error);
    assert_eq!(code, ErrorCode::ModelUnavailable);
    assert_eq!(after, Some(Duration::from_secs(30)));
    assert!(detail.contains("overloaded"), "{detail}");

    let error = error_from(Reply::json(500, "<html>internal</html>")).await;
    assert_eq!(retryable(&error).0, ErrorCode::ModelUnavailable);
    assert_eq!(retryable(&error).2, None);
}

#[tokio::test]
async fn the_safety_block_fixture_is_content_blocked() {
    let error = error_from(Reply::json(200, RESPONSE_BLOCKED)).await;
    let (code, detail) = permanent(&error);
    assert_eq!(code, ErrorCode::ContentBlocked);
    assert!(detail.contains("IMAGE_SAFETY") && detail.contains("rephrase"), "{detail}");
}

#[tokio::test]
async fn other_finish_reasons_without_an_image_are_content_blocked() {
    for reason in ["IMAGE_PROHIBITED_CONTENT", "PROHIBITED_CONTENT", "SAFETY", "NO_IMAGE", "IMAGE_OTHER"] {
        let body = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "sorry"}]},
            "finishReason": reason, "index": 0}]});
        let error = error_from(Reply::json(200, body.to_string())).await;
        let (code, detail) = permanent(&error);
        assert_eq!(code, ErrorCode::ContentBlocked, "{reason}");
        assert!(detail.contains(reason), "{detail}");
    }
}

#[tokio::test]
async fn a_blocked_prompt_is_content_blocked() {
    let body = json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "modelVersion": MODEL});
    let error = error_from(Reply::json(200, body.to_string())).await;
    let (code, detail) = permanent(&error);
    assert_eq!(code, ErrorCode::ContentBlocked);
    assert!(detail.contains("PROHIBITED_CONTENT") && detail.contains("prompt"), "{detail}");
}

#[tokio::test]
async fn a_bad_request_is_rejected_with_googles_message() {
    let body = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
        "message": "Request contains an invalid argument: aspect ratio 21:9 is not supported by this model."}});
    let error = error_from(Reply::json(400, body.to_string())).await;
    let (code, detail) = permanent(&error);
    assert_eq!(code, ErrorCode::ModelRejected);
    assert!(detail.contains("aspect ratio 21:9 is not supported by this model"), "{detail}");
}

#[tokio::test]
async fn refused_credentials_are_rejected_and_say_so() {
    for status in [401, 403] {
        let body = json!({"error": {"code": status, "status": "PERMISSION_DENIED",
            "message": "Method doesn't allow unregistered callers."}});
        let error = error_from(Reply::json(status, body.to_string())).await;
        let (code, detail) = permanent(&error);
        assert_eq!(code, ErrorCode::ModelRejected);
        assert!(detail.contains("credentials") && detail.contains("unregistered callers"), "{detail}");
    }
    // The Developer API answers a wrong key with 400 API_KEY_INVALID.
    let body = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
        "message": "API key not valid. Please pass a valid API key.",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
            "domain": "googleapis.com"}]}});
    let error = error_from(Reply::json(400, body.to_string())).await;
    let (code, detail) = permanent(&error);
    assert_eq!(code, ErrorCode::ModelRejected);
    assert!(detail.contains("GEMINI_API_KEY"), "{detail}");
}

#[tokio::test]
async fn a_malformed_or_imageless_success_fails_the_row() {
    let cases = [
        ("not json", "<html>proxy page</html>".to_owned()),
        ("wrong shape", json!({"candidates": "nope"}).to_string()),
        ("no candidates", json!({"candidates": []}).to_string()),
        (
            "text only",
            json!({"candidates": [{"content": {"parts": [{"text": "I drew nothing"}]}, "finishReason": "STOP"}]})
                .to_string(),
        ),
        (
            "bad base64",
            json!({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "@@@"}}]},
                "finishReason": "STOP"}]})
            .to_string(),
        ),
        (
            "only a draft",
            json!({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png",
                "data": STANDARD.encode(b"draft")}, "thought": true}]}, "finishReason": "STOP"}]})
            .to_string(),
        ),
    ];
    for (case, body) in cases {
        let error = error_from(Reply::json(200, body)).await;
        let (code, detail) = permanent(&error);
        assert_eq!(code, ErrorCode::ModelRejected, "{case}: {detail}");
        assert!(!detail.is_empty());
        if case == "text only" {
            assert!(detail.contains("I drew nothing"), "{detail}");
        }
    }
}

#[tokio::test]
async fn a_slow_answer_times_out_quickly_and_is_retryable() {
    let stub = Stub::start(Reply::json(200, image_response(b"draft", b"final")).delayed(Duration::from_secs(10))).await;
    let model = developer_with(&stub, GeminiTimeouts::with_call(Duration::from_millis(300)));
    let started = Instant::now();
    let error = model.generate(&request("slow", vec![])).await.expect_err("times out");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(290) && elapsed < Duration::from_secs(2), "took {elapsed:?}");
    let (code, detail, _) = retryable(&error);
    assert_eq!(code, ErrorCode::ModelUnavailable);
    assert!(detail.contains("0.3 s"), "{detail}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let base = Url::parse(&format!("http://{addr}")).expect("url");
    let model = GeminiModel::developer(api_key(), Some(base), GeminiTimeouts::default()).expect("model");
    let error = model.generate(&request("x", vec![])).await.expect_err("nothing listens");
    assert_eq!(retryable(&error).0, ErrorCode::ModelUnavailable);
}

#[tokio::test]
async fn the_api_key_never_appears_in_errors_or_debug_output() {
    let echo = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
        "message": format!("API key {API_KEY} not valid. Please pass a valid API key.")}});
    let replies = [
        Reply::json(400, echo.to_string()),
        Reply::json(401, echo.to_string().replace("400", "401")),
        Reply::json(403, "{}"),
        Reply::json(404, echo.to_string()),
        Reply::json(429, ERROR_429),
        Reply::json(503, echo.to_string()),
        Reply::json(200, "garbage"),
        Reply::json(200, RESPONSE_BLOCKED),
    ];
    for reply in replies {
        let status = reply.status;
        let (result, stub) = generate_against(reply).await;
        let error = result.expect_err("fails");
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains(API_KEY), "HTTP {status} leaks the key: {text}");
        }
        let model = developer(&stub);
        assert!(!format!("{model:?}").contains(API_KEY), "the model's Debug leaks the key");
    }
    // A time-out and a refused connection too.
    let stub = Stub::start(Reply::json(200, "{}").delayed(Duration::from_secs(5))).await;
    let error = developer_with(&stub, GeminiTimeouts::with_call(Duration::from_millis(100)))
        .generate(&request("x", vec![]))
        .await
        .expect_err("times out");
    assert!(!format!("{error} {error:?}").contains(API_KEY));
}

#[tokio::test]
async fn the_adapter_is_live_and_makes_one_call_per_generate() {
    let stub = Stub::start(Reply::json(503, "{}")).await;
    let model = developer(&stub);
    assert!(model.is_live());
    let _ = model.generate(&request("x", vec![])).await.expect_err("unavailable");
    assert_eq!(stub.received().len(), 1, "no retry inside the adapter");
}
