//! Google OIDC verification, Pub/Sub push authentication and batch capability tokens, against a
//! local JWKS server (axum on 127.0.0.1:0) that serves the public half of test keys from
//! `tests/fixtures/oidc-*.pem` (generated with `openssl genrsa 2048`; test keys only) and counts
//! its hits.

use assetgen_common::auth::{
    Access, AllowList, Authenticator, BatchAction, CapabilityTokens, DEFAULT_CAPABILITY_TTL, DevAuth, Grant, Identity,
    JwksCache, JwksOptions, LinkSigner, OidcAuth, OidcVerifier, PushAuth, Scope,
};
use assetgen_common::config::Secret;
use assetgen_common::domain::{BatchId, UserId};
use assetgen_common::problem::{ErrorCode, Problem};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY_PEM: &[u8] = include_bytes!("fixtures/oidc-test-key.pem");
const PUBLIC_PEM: &[u8] = include_bytes!("fixtures/oidc-test-key.pub.pem");
const OTHER_KEY_PEM: &[u8] = include_bytes!("fixtures/oidc-other-key.pem");
const AUD: &str = "https://assetgen-submit.test.run.app";
/// The push subscription's audience: never one of the users'.
const PUSH_AUD: &str = "https://assetgen-generate.test.run.app/pubsub";
const PUSH_SA: &str = "pubsub-push@assetgen-test.iam.gserviceaccount.com";
const KID: &str = "k1";

// ---------------------------------------------------------------------------------------------
// The key server
// ---------------------------------------------------------------------------------------------

struct Served {
    keys: Vec<Value>,
    cache_control: Option<&'static str>,
    status: StatusCode,
}

#[derive(Clone)]
struct KeyServer {
    url: String,
    hits: Arc<AtomicUsize>,
    served: Arc<Mutex<Served>>,
}

impl KeyServer {
    /// Serves `k1` (the fixture key) with `Cache-Control: public, max-age=3600`.
    async fn start() -> Self {
        Self::start_with(vec![jwk(KEY_PEM, KID)], Some("public, max-age=3600")).await
    }

    async fn start_with(keys: Vec<Value>, cache_control: Option<&'static str>) -> Self {
        let served = Arc::new(Mutex::new(Served { keys, cache_control, status: StatusCode::OK }));
        let hits = Arc::new(AtomicUsize::new(0));
        let app =
            Router::new().route("/oauth2/v3/certs", get(certs)).with_state((Arc::clone(&served), Arc::clone(&hits)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a free port");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("key server") });
        Self { url: format!("http://{addr}/oauth2/v3/certs"), hits, served }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn set_keys(&self, keys: Vec<Value>) {
        self.served.lock().expect("lock").keys = keys;
    }

    fn set_status(&self, status: StatusCode) {
        self.served.lock().expect("lock").status = status;
    }

    fn verifier(&self, options: JwksOptions) -> Arc<OidcVerifier> {
        Arc::new(OidcVerifier::new([AUD], Arc::new(JwksCache::with_options(&self.url, options))))
    }

    fn users(&self, allowed: &[&str]) -> OidcAuth {
        OidcAuth::with_verifier(self.verifier(JwksOptions::default()), AllowList::new(allowed))
    }
}

async fn certs(State((served, hits)): State<(Arc<Mutex<Served>>, Arc<AtomicUsize>)>) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let served = served.lock().expect("lock");
    if served.status != StatusCode::OK {
        return served.status.into_response();
    }
    let mut response = axum::Json(json!({ "keys": served.keys })).into_response();
    if let Some(cc) = served.cache_control {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
    }
    response
}

/// Rate limit short enough for a test to wait it out.
fn quick_refresh() -> JwksOptions {
    JwksOptions { min_refresh_interval: Duration::from_millis(300), ..JwksOptions::default() }
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/// The public JWK of a private key, as Google publishes them.
fn jwk(private_pem: &[u8], kid: &str) -> Value {
    let key = EncodingKey::from_rsa_pem(private_pem).expect("fixture key");
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).expect("public components"))
        .expect("jwk json");
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk["alg"] = json!("RS256");
    jwk
}

fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).expect("a timestamp")
}

/// The claims of a valid Google ID token for `email`.
fn claims(email: &str) -> Value {
    json!({
        "iss": "https://accounts.google.com",
        "aud": AUD,
        "azp": "1234567890-apps-script.apps.googleusercontent.com",
        "sub": "110169484474386276334",
        "email": email,
        "email_verified": true,
        "iat": now() - 10,
        "exp": now() + 3600,
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("claims object").remove(key);
    claims
}

fn sign_with(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

/// RS256 with the fixture key, `kid: k1`.
fn sign(claims: &Value) -> String {
    sign_with(Algorithm::RS256, &EncodingKey::from_rsa_pem(KEY_PEM).expect("key"), Some(KID), claims)
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).expect("header"));
    headers
}

fn accepted(result: Result<Identity, Problem>) -> String {
    match result {
        Ok(identity) => identity.user.as_str().to_owned(),
        Err(problem) => panic!("expected the token to be accepted, got {problem:?}"),
    }
}

/// Asserts the refusal's code and status, and that its body quotes no part of the token.
#[track_caller]
fn refused(result: Result<Identity, Problem>, code: ErrorCode, token: &str) -> Problem {
    let problem = match result {
        Ok(identity) => panic!("expected {code}, but {} was accepted", identity.user),
        Err(problem) => problem,
    };
    assert_eq!((problem.code, problem.status), (code, code.status().as_u16()), "{problem:?}");
    let body = serde_json::to_string(&problem).expect("problem json");
    for part in std::iter::once(token).chain(token.split('.')).filter(|p| p.len() >= 8) {
        assert!(!body.contains(part), "the problem quotes the token: {body}");
    }
    problem
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_token_gives_its_email_as_the_identity() {
    let server = KeyServer::start().await;
    let auth = server.users(&["lead@studio.com"]);
    let token = sign(&claims("Lead@Studio.com"));
    assert_eq!(accepted(auth.authenticate(&bearer(&token)).await), "lead@studio.com");
    // The older issuer spelling and a lower-case scheme are Google's too.
    let token = sign(&with(claims("lead@studio.com"), "iss", json!("accounts.google.com")));
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("bearer  {token}")).expect("header"));
    assert_eq!(accepted(auth.authenticate(&headers).await), "lead@studio.com");
    // The plain-config constructor works the same.
    let auth = OidcAuth::new([AUD], server.url.clone(), ["lead@studio.com"]);
    assert_eq!(accepted(auth.authenticate(&bearer(&token)).await), "lead@studio.com");
}

#[tokio::test]
async fn the_allow_list_admits_exact_emails_and_whole_domains_case_insensitively() {
    let server = KeyServer::start().await;
    let auth = server.users(&["Lead@Studio.com", "@Corp.Example"]);
    for email in ["lead@studio.com", "LEAD@studio.COM", "anyone@corp.example", "Another.One@CORP.example"] {
        assert_eq!(accepted(auth.authenticate(&bearer(&sign(&claims(email)))).await), email.to_ascii_lowercase());
    }
    for email in ["intern@studio.com", "anyone@sub.corp.example", "anyone@evilcorp.example", "corp.example@evil.test"] {
        let token = sign(&claims(email));
        let problem = refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Forbidden, &token);
        assert!(problem.detail.contains("allow-list"), "{}", problem.detail);
    }
}

#[tokio::test]
async fn an_empty_allow_list_refuses_every_valid_token_with_403() {
    let server = KeyServer::start().await;
    let auth = server.users(&[]);
    let token = sign(&claims("lead@studio.com"));
    refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Forbidden, &token);
}

#[tokio::test]
async fn an_unverified_email_is_refused_and_a_missing_one_is_unauthenticated() {
    let server = KeyServer::start().await;
    let auth = server.users(&["@studio.com"]);
    let token = sign(&with(claims("lead@studio.com"), "email_verified", json!(false)));
    refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Forbidden, &token);
    let token = sign(&with(claims("lead@studio.com"), "email_verified", json!("false")));
    refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Forbidden, &token);
    // Absent is not verified either: an address nobody proved they own passes no allow-list.
    let token = sign(&without(claims("lead@studio.com"), "email_verified"));
    let problem = refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Forbidden, &token);
    assert!(problem.detail.contains("not verified"), "{}", problem.detail);
    for verified in [json!(true), json!("true")] {
        let token = sign(&with(claims("lead@studio.com"), "email_verified", verified));
        assert_eq!(accepted(auth.authenticate(&bearer(&token)).await), "lead@studio.com");
    }
    let token = sign(&without(claims("lead@studio.com"), "email"));
    refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
}

#[tokio::test]
async fn no_or_a_non_bearer_authorization_is_unauthenticated() {
    let server = KeyServer::start().await;
    let auth = server.users(&["@studio.com"]);
    refused(auth.authenticate(&HeaderMap::new()).await, ErrorCode::Unauthenticated, "");
    let token = sign(&claims("lead@studio.com"));
    for value in [format!("Basic {token}"), "Bearer".to_owned(), "Bearer    ".to_owned(), token.clone()] {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&value).expect("header"));
        refused(auth.authenticate(&headers).await, ErrorCode::Unauthenticated, &token);
    }
    for garbage in ["not-a-jwt", "a.b.c", "a.b.c.d", "..", "eyJhbGciOiJSUzI1NiJ9.e30"] {
        refused(auth.authenticate(&bearer(garbage)).await, ErrorCode::Unauthenticated, garbage);
    }
    let huge = format!("{}.{}.{}", "e".repeat(10_000), "e".repeat(10_000), "e".repeat(10));
    refused(auth.authenticate(&bearer(&huge)).await, ErrorCode::Unauthenticated, &huge);
    assert_eq!(server.hits(), 0, "nothing that is not even a token fetches keys");
}

#[tokio::test]
async fn a_signature_by_another_key_is_unauthenticated() {
    let server = KeyServer::start().await;
    let auth = server.users(&["@studio.com"]);
    let other = EncodingKey::from_rsa_pem(OTHER_KEY_PEM).expect("other key");
    let token = sign_with(Algorithm::RS256, &other, Some(KID), &claims("lead@studio.com"));
    refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
    // The genuine signature over other claims: swap the payload.
    let genuine = sign(&claims("lead@studio.com"));
    let parts: Vec<&str> = genuine.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(&claims("boss@studio.com")), parts[2]);
    refused(auth.authenticate(&bearer(&forged)).await, ErrorCode::Unauthenticated, &forged);
}

#[tokio::test]
async fn expiry_and_not_before_are_checked_with_a_small_leeway() {
    let server = KeyServer::start().await;
    let auth = server.users(&["@studio.com"]);
    let base = claims("lead@studio.com");
    for exp in [now() - 3600, now() - 45] {
        let token = sign(&with(base.clone(), "exp", json!(exp)));
        let problem = refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
        assert!(problem.detail.contains("expired"), "{}", problem.detail);
    }
    // A few seconds of clock skew pass.
    let token = sign(&with(base.clone(), "exp", json!(now() - 5)));
    accepted(auth.authenticate(&bearer(&token)).await);
    let token = sign(&without(base.clone(), "exp"));
    refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
    let token = sign(&with(base.clone(), "nbf", json!(now() + 600)));
    refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
    let token = sign(&with(base, "nbf", json!(now() - 60)));
    accepted(auth.authenticate(&bearer(&token)).await);
}

#[tokio::test]
async fn another_audience_is_unauthenticated() {
    let server = KeyServer::start().await;
    let auth = server.users(&["@studio.com"]);
    for aud in [json!("https://someone-else.run.app"), json!(""), json!(["https://someone-else.run.app"])] {
        let token = sign(&with(claims("lead@studio.com"), "aud", aud));
        let problem = refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
        assert!(problem.detail.contains("audience"), "{}", problem.detail);
    }
    let token = sign(&without(claims("lead@studio.com"), "aud"));
    refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
}

#[tokio::test]
async fn another_issuer_is_unauthenticated() {
    let server = KeyServer::start().await;
    let auth = server.users(&["@studio.com"]);
    for iss in ["https://evil.example", "https://accounts.google.com.evil.example", "http://accounts.google.com"] {
        let token = sign(&with(claims("lead@studio.com"), "iss", json!(iss)));
        let problem = refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
        assert!(problem.detail.contains("issued"), "{}", problem.detail);
    }
    let token = sign(&without(claims("lead@studio.com"), "iss"));
    refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
}

#[tokio::test]
async fn alg_none_is_unauthenticated_without_fetching_keys() {
    let server = KeyServer::start().await;
    let auth = server.users(&["@studio.com"]);
    let payload = b64(&claims("lead@studio.com"));
    for header in [json!({"alg": "none", "typ": "JWT"}), json!({"alg": "none", "kid": KID}), json!({"alg": "None"})] {
        for signature in ["", "c2lnbmF0dXJl"] {
            let token = format!("{}.{payload}.{signature}", b64(&header));
            let problem = refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
            assert!(problem.detail.contains("RS256"), "{}", problem.detail);
        }
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_unauthenticated() {
    let server = KeyServer::start().await;
    let auth = server.users(&["@studio.com"]);
    // The classic confusion: a verifier that feeds the RSA public key to HMAC would accept this.
    let public_der = {
        let pem = std::str::from_utf8(PUBLIC_PEM).expect("pem text");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(body).expect("pem body")
    };
    for secret in [PUBLIC_PEM.to_vec(), public_der] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = sign_with(alg, &EncodingKey::from_secret(&secret), Some(KID), &claims("lead@studio.com"));
            refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
        }
    }
    // Other RSA algorithms with the genuine key are refused too: RS256 only.
    let key = EncodingKey::from_rsa_pem(KEY_PEM).expect("key");
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let token = sign_with(alg, &key, Some(KID), &claims("lead@studio.com"));
        refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
    }
    assert_eq!(server.hits(), 0, "a token refused for its algorithm costs no key fetch");
}

#[tokio::test]
async fn a_token_without_a_kid_is_unauthenticated() {
    let server = KeyServer::start().await;
    let auth = server.users(&["@studio.com"]);
    let key = EncodingKey::from_rsa_pem(KEY_PEM).expect("key");
    let token = sign_with(Algorithm::RS256, &key, None, &claims("lead@studio.com"));
    refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
}

// ---------------------------------------------------------------------------------------------
// The key cache
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn keys_are_fetched_once_and_cached() {
    let server = KeyServer::start().await;
    let auth = server.users(&["@studio.com"]);
    for _ in 0..5 {
        accepted(auth.authenticate(&bearer(&sign(&claims("lead@studio.com")))).await);
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn an_unknown_kid_triggers_one_refresh_within_the_rate_limit() {
    let server = KeyServer::start().await;
    let auth = OidcAuth::with_verifier(server.verifier(quick_refresh()), AllowList::new(["@studio.com"]));
    let other = EncodingKey::from_rsa_pem(OTHER_KEY_PEM).expect("other key");
    let by_k2 = sign_with(Algorithm::RS256, &other, Some("k2"), &claims("lead@studio.com"));
    let by_k3 = sign_with(Algorithm::RS256, &other, Some("k3"), &claims("lead@studio.com"));

    accepted(auth.authenticate(&bearer(&sign(&claims("lead@studio.com")))).await);
    assert_eq!(server.hits(), 1);

    // Google rotates: k2 appears. Right after a fetch, the rate limit holds.
    server.set_keys(vec![jwk(KEY_PEM, KID), jwk(OTHER_KEY_PEM, "k2")]);
    refused(auth.authenticate(&bearer(&by_k2)).await, ErrorCode::Unauthenticated, &by_k2);
    assert_eq!(server.hits(), 1, "no fetch within the rate limit");

    // Once it has passed, the unknown kid refreshes the set, once.
    tokio::time::sleep(Duration::from_millis(350)).await;
    accepted(auth.authenticate(&bearer(&by_k2)).await);
    assert_eq!(server.hits(), 2);
    accepted(auth.authenticate(&bearer(&by_k2)).await);
    accepted(auth.authenticate(&bearer(&sign(&claims("lead@studio.com")))).await);
    assert_eq!(server.hits(), 2, "k1 and k2 are both cached now");

    // A kid nobody publishes does not hammer the key server.
    for _ in 0..10 {
        refused(auth.authenticate(&bearer(&by_k3)).await, ErrorCode::Unauthenticated, &by_k3);
    }
    assert_eq!(server.hits(), 2);
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..10 {
        refused(auth.authenticate(&bearer(&by_k3)).await, ErrorCode::Unauthenticated, &by_k3);
    }
    assert_eq!(server.hits(), 3, "one more fetch per interval, however many tokens");
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_fetch() {
    let server = KeyServer::start().await;
    let auth = Arc::new(OidcAuth::with_verifier(server.verifier(quick_refresh()), AllowList::new(["@studio.com"])));
    let other = EncodingKey::from_rsa_pem(OTHER_KEY_PEM).expect("other key");
    let tokens: Vec<String> = (0..20)
        .map(|i| sign_with(Algorithm::RS256, &other, Some(&format!("made-up-{i}")), &claims("lead@studio.com")))
        .collect();
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let auth = Arc::clone(&auth);
            tokio::spawn(async move { auth.authenticate(&bearer(&token)).await.map(|i| i.user) })
        })
        .collect();
    for task in tasks {
        let result = task.await.expect("task");
        assert_eq!(result.expect_err("unknown kid").code, ErrorCode::Unauthenticated);
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn the_set_is_refetched_when_its_max_age_runs_out() {
    let short = KeyServer::start_with(vec![jwk(KEY_PEM, KID)], Some("public, max-age=1")).await;
    let long = KeyServer::start_with(vec![jwk(KEY_PEM, KID)], Some("public, max-age=3600")).await;
    let options = JwksOptions { min_refresh_interval: Duration::from_millis(100), ..JwksOptions::default() };
    let short_auth = OidcAuth::with_verifier(short.verifier(options.clone()), AllowList::new(["@studio.com"]));
    let long_auth = OidcAuth::with_verifier(long.verifier(options), AllowList::new(["@studio.com"]));
    let token = sign(&claims("lead@studio.com"));
    for _ in 0..3 {
        accepted(short_auth.authenticate(&bearer(&token)).await);
        accepted(long_auth.authenticate(&bearer(&token)).await);
    }
    assert_eq!((short.hits(), long.hits()), (1, 1));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    accepted(short_auth.authenticate(&bearer(&token)).await);
    accepted(long_auth.authenticate(&bearer(&token)).await);
    assert_eq!((short.hits(), long.hits()), (2, 1), "max-age=1 has run out, max-age=3600 has not");
}

#[tokio::test]
async fn a_withdrawn_key_is_refused_after_the_next_refresh() {
    let server = KeyServer::start_with(vec![jwk(KEY_PEM, KID)], Some("no-cache")).await;
    let auth = OidcAuth::with_verifier(server.verifier(quick_refresh()), AllowList::new(["@studio.com"]));
    let token = sign(&claims("lead@studio.com"));
    accepted(auth.authenticate(&bearer(&token)).await);
    server.set_keys(vec![jwk(OTHER_KEY_PEM, "k2")]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    refused(auth.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_failing_key_server_keeps_the_last_good_keys_and_is_not_blamed_on_the_caller() {
    let server = KeyServer::start_with(vec![jwk(KEY_PEM, KID)], Some("no-cache")).await;
    let auth = OidcAuth::with_verifier(server.verifier(quick_refresh()), AllowList::new(["@studio.com"]));
    let token = sign(&claims("lead@studio.com"));
    accepted(auth.authenticate(&bearer(&token)).await);
    server.set_status(StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The stale set is refreshed, the refresh fails, the known key still verifies.
    accepted(auth.authenticate(&bearer(&token)).await);
    assert_eq!(server.hits(), 2);
    // A key that may exist but cannot be fetched is the service's problem (503), not a forgery.
    let other = EncodingKey::from_rsa_pem(OTHER_KEY_PEM).expect("other key");
    let by_k2 = sign_with(Algorithm::RS256, &other, Some("k2"), &claims("lead@studio.com"));
    refused(auth.authenticate(&bearer(&by_k2)).await, ErrorCode::AuthUnavailable, &by_k2);

    // Never fetched at all: nothing verifies, and the answer says so.
    let down = KeyServer::start().await;
    down.set_status(StatusCode::INTERNAL_SERVER_ERROR);
    let auth = down.users(&["@studio.com"]);
    refused(auth.authenticate(&bearer(&token)).await, ErrorCode::AuthUnavailable, &token);
    let nowhere = OidcAuth::new([AUD], "http://127.0.0.1:9/certs", ["@studio.com"]);
    refused(nowhere.authenticate(&bearer(&token)).await, ErrorCode::AuthUnavailable, &token);
}

// ---------------------------------------------------------------------------------------------
// Pub/Sub push
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn push_accepts_only_the_push_service_account() {
    let server = KeyServer::start().await;
    let jwks = Arc::new(JwksCache::new(&server.url));
    let verifier = Arc::new(OidcVerifier::new([PUSH_AUD], Arc::clone(&jwks)));
    let push = PushAuth::with_verifier(Arc::clone(&verifier), Some(PUSH_SA.to_ascii_uppercase()));
    let sa_token = sign(&with(claims(PUSH_SA), "aud", json!(PUSH_AUD)));
    assert_eq!(accepted(push.authenticate(&bearer(&sa_token)).await), PUSH_SA);

    // Another account with a token for the push audience is not the push service account.
    let user_token = sign(&with(claims("lead@studio.com"), "aud", json!(PUSH_AUD)));
    refused(push.authenticate(&bearer(&user_token)).await, ErrorCode::Forbidden, &user_token);
    let other_sa = sign(&with(claims("someone-else@assetgen-test.iam.gserviceaccount.com"), "aud", json!(PUSH_AUD)));
    refused(push.authenticate(&bearer(&other_sa)).await, ErrorCode::Forbidden, &other_sa);

    // The push SA's token is still checked like any other.
    let wrong_aud = sign(&with(claims(PUSH_SA), "aud", json!("https://other.run.app")));
    refused(push.authenticate(&bearer(&wrong_aud)).await, ErrorCode::Unauthenticated, &wrong_aud);
    let forged = sign_with(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(OTHER_KEY_PEM).expect("key"),
        Some(KID),
        &with(claims(PUSH_SA), "aud", json!(PUSH_AUD)),
    );
    refused(push.authenticate(&bearer(&forged)).await, ErrorCode::Unauthenticated, &forged);
    refused(push.authenticate(&HeaderMap::new()).await, ErrorCode::Unauthenticated, "");

    // Unset: every push is refused.
    for unset in [None, Some(String::new()), Some("  ".to_owned())] {
        let push = PushAuth::with_verifier(Arc::clone(&verifier), unset);
        refused(push.authenticate(&bearer(&sa_token)).await, ErrorCode::Forbidden, &sa_token);
    }
    let push = PushAuth::new([PUSH_AUD], server.url.clone(), Some(PUSH_SA.to_owned()));
    assert_eq!(accepted(push.authenticate(&bearer(&sa_token)).await), PUSH_SA);
}

#[tokio::test]
async fn each_audience_is_bound_to_what_it_may_call() {
    let server = KeyServer::start().await;
    let jwks = Arc::new(JwksCache::new(&server.url));
    const SHEET_CLIENT: &str = "1234567890-apps-script.apps.googleusercontent.com";
    // Even with the push service account on the users' allow-list, the audiences keep them apart.
    let users = OidcAuth::with_verifier(
        Arc::new(OidcVerifier::new([SHEET_CLIENT, AUD], Arc::clone(&jwks))),
        AllowList::new(["@studio.com", PUSH_SA]),
    );
    let push =
        PushAuth::with_verifier(Arc::new(OidcVerifier::new([PUSH_AUD], Arc::clone(&jwks))), Some(PUSH_SA.to_owned()));

    // Users: the Sheet's client id and the service URL are both accepted.
    for aud in [SHEET_CLIENT, AUD] {
        let token = sign(&with(claims("lead@studio.com"), "aud", json!(aud)));
        assert_eq!(accepted(users.authenticate(&bearer(&token)).await), "lead@studio.com", "{aud}");
    }
    // A push token on the user routes, and a user's token (even the push account's) on /pubsub.
    let push_token = sign(&with(claims(PUSH_SA), "aud", json!(PUSH_AUD)));
    let problem = refused(users.authenticate(&bearer(&push_token)).await, ErrorCode::Unauthenticated, &push_token);
    assert!(problem.detail.contains("audience"), "{}", problem.detail);
    for (email, aud) in [("lead@studio.com", SHEET_CLIENT), (PUSH_SA, AUD), (PUSH_SA, SHEET_CLIENT)] {
        let token = sign(&with(claims(email), "aud", json!(aud)));
        refused(push.authenticate(&bearer(&token)).await, ErrorCode::Unauthenticated, &token);
    }
    assert_eq!(accepted(push.authenticate(&bearer(&push_token)).await), PUSH_SA);
}

// ---------------------------------------------------------------------------------------------
// Capability tokens
// ---------------------------------------------------------------------------------------------

const SECRET: &str = "test-capability-secret-0123456789abcdef";

fn tokens() -> CapabilityTokens {
    CapabilityTokens::new(&Secret::new(SECRET)).expect("a strong enough secret")
}

#[test]
fn a_capability_token_opens_its_batch_and_no_other() {
    let tokens = tokens();
    let (a, b) = (BatchId::new(), BatchId::new());
    let token = tokens.issue(&a, &UserId::new("Lead@Studio.com"), DEFAULT_CAPABILITY_TTL);
    assert!(token.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)), "URL-safe: {token}");
    assert_eq!(accepted(tokens.verify(&token, &a).map(|g| g.issued_to)), "lead@studio.com");
    refused(tokens.verify(&token, &b).map(|g| g.issued_to), ErrorCode::BatchNotFound, &token);
    // Another instance with the same secret accepts it; one with another secret does not.
    assert_eq!(accepted(tokens_with(SECRET).verify(&token, &a).map(|g| g.issued_to)), "lead@studio.com");
    refused(
        tokens_with("another-secret-that-is-long-enough-0000").verify(&token, &a).map(|g| g.issued_to),
        ErrorCode::Unauthenticated,
        &token,
    );
}

fn tokens_with(secret: &str) -> CapabilityTokens {
    CapabilityTokens::new(&Secret::new(secret)).expect("secret")
}

#[test]
fn an_expired_capability_token_is_refused() {
    let tokens = tokens();
    let batch = BatchId::new();
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let craft = |exp: i64| {
        let claims = json!({ "sub": "lead@studio.com", "bid": batch.to_string(), "aud": "assetgen:batch",
                             "iat": now() - 7200, "exp": exp });
        sign_with(Algorithm::HS256, &key, None, &claims)
    };
    // The same claims, unexpired, pass: so only the expiry refuses the next one.
    assert_eq!(accepted(tokens.verify(&craft(now() + 60), &batch).map(|g| g.issued_to)), "lead@studio.com");
    let expired = craft(now() - 60);
    let problem = refused(tokens.verify(&expired, &batch).map(|g| g.issued_to), ErrorCode::Unauthenticated, &expired);
    assert!(problem.detail.contains("expired"), "{}", problem.detail);
    // `issue` sets exp = now + ttl: zero means now; a page link's default is days.
    let token = tokens.issue(&batch, &UserId::new("lead@studio.com"), Duration::ZERO);
    let exp = jsonwebtoken::dangerous::insecure_decode::<Value>(&token).expect("claims").claims["exp"].clone();
    assert!((exp.as_i64().expect("exp") - now()).abs() <= 1);
    let token = tokens.issue(&batch, &UserId::new("lead@studio.com"), DEFAULT_CAPABILITY_TTL);
    let exp = jsonwebtoken::dangerous::insecure_decode::<Value>(&token).expect("claims").claims["exp"].clone();
    assert!((exp.as_i64().expect("exp") - now() - 7 * 24 * 3600).abs() <= 1, "a page link works for a week");
}

#[test]
fn a_tampered_capability_token_is_refused() {
    let tokens = tokens();
    let (a, b) = (BatchId::new(), BatchId::new());
    let token = tokens.issue(&a, &UserId::new("intern@studio.com"), DEFAULT_CAPABILITY_TTL);
    let parts: Vec<&str> = token.split('.').collect();

    // The payload rewritten for batch B (and a more interesting user), the signature kept.
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("payload")).expect("claims");
    claims["bid"] = json!(b.to_string());
    claims["sub"] = json!("boss@studio.com");
    let rewritten = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    refused(tokens.verify(&rewritten, &b).map(|g| g.issued_to), ErrorCode::Unauthenticated, &rewritten);

    // One character of the signature flipped.
    let mut signature = parts[2].to_owned();
    let last = signature.pop().expect("a signature");
    signature.push(if last == 'A' { 'B' } else { 'A' });
    let flipped = format!("{}.{}.{signature}", parts[0], parts[1]);
    refused(tokens.verify(&flipped, &a).map(|g| g.issued_to), ErrorCode::Unauthenticated, &flipped);

    // Unsigned, or truncated.
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), parts[1]);
    refused(tokens.verify(&unsigned, &a).map(|g| g.issued_to), ErrorCode::Unauthenticated, &unsigned);
    let truncated = format!("{}.{}", parts[0], parts[1]);
    refused(tokens.verify(&truncated, &a).map(|g| g.issued_to), ErrorCode::Unauthenticated, &truncated);

    // A Google ID token is no capability token, even for the right batch id.
    let id_token = sign(&with(claims, "bid", json!(a.to_string())));
    refused(tokens.verify(&id_token, &a).map(|g| g.issued_to), ErrorCode::Unauthenticated, &id_token);
}

#[test]
fn the_capability_secret_must_be_strong_and_never_shows() {
    assert!(CapabilityTokens::new(&Secret::new("")).is_err());
    assert!(CapabilityTokens::new(&Secret::new("short-secret")).is_err());
    let debug = format!("{:?}", tokens());
    assert!(!debug.contains(SECRET), "{debug}");
    // Random secrets work within one process and differ between two.
    let (one, two) = (CapabilityTokens::random(), CapabilityTokens::random());
    let batch = BatchId::new();
    let token = one.issue(&batch, &UserId::new("lead@studio.com"), DEFAULT_CAPABILITY_TTL);
    assert_eq!(accepted(one.verify(&token, &batch).map(|g| g.issued_to)), "lead@studio.com");
    refused(two.verify(&token, &batch).map(|g| g.issued_to), ErrorCode::Unauthenticated, &token);
}

/// A memory store holding one batch owned by `owner`, for [`Access::authorize`].
async fn store_with_batch(owner: &str) -> (Arc<dyn assetgen_common::store::ObjectStore>, BatchId) {
    let kit = assetgen_common::testkit::Rig::new(|_| {});
    let accepted = kit
        .submit(
            owner,
            assetgen_common::api::BatchRequest {
                rows: vec![assetgen_common::testkit::row("A", 1)],
                ..Default::default()
            },
        )
        .await;
    (kit.store.clone(), BatchId::parse(&accepted.batch_id).expect("id"))
}

#[tokio::test]
async fn batches_open_to_their_owner_admins_and_tokens_and_to_nobody_else() {
    let server = KeyServer::start().await;
    let access = Access {
        auth: Arc::new(server.users(&["@studio.com"])),
        tokens: tokens(),
        links: LinkSigner::random(),
        admins: AllowList::new(["boss@studio.com"]),
    };
    let (store, a) = store_with_batch("lead@studio.com").await;
    let store = store.as_ref();
    let id = a.to_string();
    let none = HeaderMap::new();
    let owner = bearer(&sign(&claims("lead@studio.com")));
    let intern = bearer(&sign(&claims("intern@studio.com")));
    let boss = bearer(&sign(&claims("boss@studio.com")));
    let read = access.tokens.issue(&a, &UserId::new("lead@studio.com"), DEFAULT_CAPABILITY_TTL);
    let control =
        access.tokens.issue_scoped(&a, &UserId::new("lead@studio.com"), Scope::Control, Duration::from_secs(60));
    let code = |r: Result<_, Problem>| r.map(|_| ()).map_err(|p| p.code);

    for action in [BatchAction::Read, BatchAction::Cancel, BatchAction::Retry, BatchAction::IssueControlToken] {
        assert_eq!(code(access.authorize(store, &owner, None, &id, action).await), Ok(()), "{action:?}");
        assert_eq!(
            code(access.authorize(store, &intern, None, &id, action).await),
            Err(ErrorCode::BatchNotFound),
            "another allowed user: {action:?}"
        );
        assert_eq!(code(access.authorize(store, &none, None, &id, action).await), Err(ErrorCode::Unauthenticated));
    }
    assert_eq!(code(access.authorize(store, &boss, None, &id, BatchAction::Read).await), Ok(()));
    assert_eq!(code(access.authorize(store, &boss, None, &id, BatchAction::Cancel).await), Ok(()));
    assert_eq!(code(access.authorize(store, &boss, None, &id, BatchAction::Retry).await), Err(ErrorCode::Forbidden));

    // A page link reads, from the query or as a bearer; it never controls.
    let (_, caller) = access.authorize(store, &none, Some(&read), &id, BatchAction::Read).await.expect("read");
    assert_eq!(
        caller,
        assetgen_common::auth::Caller::Token(Grant {
            issued_to: Identity { user: UserId::new("lead@studio.com") },
            scope: Scope::Read
        })
    );
    assert_eq!(code(access.authorize(store, &bearer(&read), None, &id, BatchAction::Read).await), Ok(()));
    for action in [BatchAction::Cancel, BatchAction::Retry] {
        assert_eq!(code(access.authorize(store, &none, Some(&read), &id, action).await), Err(ErrorCode::Forbidden));
        assert_eq!(code(access.authorize(store, &bearer(&read), None, &id, action).await), Err(ErrorCode::Forbidden));
        // A control token controls as a bearer, and only reads from a URL.
        assert_eq!(code(access.authorize(store, &bearer(&control), None, &id, action).await), Ok(()));
        assert_eq!(code(access.authorize(store, &none, Some(&control), &id, action).await), Err(ErrorCode::Forbidden));
    }
    // A bearer ID token decides over a query token, whatever the query says.
    assert_eq!(
        code(access.authorize(store, &intern, Some(&read), &id, BatchAction::Read).await),
        Err(ErrorCode::BatchNotFound)
    );

    // Tokens for another batch, and ids that do not exist, answer alike.
    let (_, b) = store_with_batch("lead@studio.com").await;
    let other = b.to_string();
    assert_eq!(
        code(access.authorize(store, &none, Some(&read), &other, BatchAction::Read).await),
        Err(ErrorCode::BatchNotFound)
    );
    assert_eq!(
        code(access.authorize(store, &bearer(&control), None, &other, BatchAction::Cancel).await),
        Err(ErrorCode::BatchNotFound)
    );

    // Locally the dev identity stands in for the bearer token; it owns nothing here.
    let local = Access { auth: Arc::new(DevAuth), ..access.clone() };
    assert_eq!(code(local.authorize(store, &none, None, &id, BatchAction::Read).await), Err(ErrorCode::BatchNotFound));
    assert_eq!(code(local.authorize(store, &none, Some(&read), &id, BatchAction::Read).await), Ok(()));
}
