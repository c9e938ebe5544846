//! OIDC for multi-process runs on loopback: a key set served as Google serves its certs (the test
//! key of `common/tests/fixtures`, never a real one), ID tokens minted with it, and the forwarder
//! that Google's push would be: the Pub/Sub emulator's push carries no `Authorization` header, so
//! the forwarder adds a token of the push service account before passing the push on.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Semaphore;

const KEY_PEM: &[u8] = include_bytes!("../../common/tests/fixtures/oidc-test-key.pem");
const KID: &str = "bench-k1";

/// The key set and the tokens it signs.
#[derive(Clone)]
pub struct TestKeys {
    key: EncodingKey,
    /// `http://127.0.0.1:PORT/oauth2/v3/certs`, for `ASSETGEN_OIDC_JWKS_URL`.
    pub jwks_url: String,
}

impl TestKeys {
    /// Serves the public key on loopback.
    pub async fn start() -> anyhow::Result<Self> {
        let key = EncodingKey::from_rsa_pem(KEY_PEM)?;
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256)?)?;
        jwk["kid"] = json!(KID);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!("RS256");
        let body = json!({ "keys": [jwk] }).to_string();
        let app = Router::new().route(
            "/oauth2/v3/certs",
            get(move || {
                let body = body.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "public, max-age=3600")],
                        body,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let jwks_url = format!("http://{}/oauth2/v3/certs", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { key, jwks_url })
    }

    /// A Google-shaped ID token for `email` with audience `aud`, valid for an hour.
    pub fn id_token(&self, email: &str, aud: &str) -> anyhow::Result<String> {
        let now = i64::try_from(jsonwebtoken::get_current_timestamp())?;
        let claims = json!({
            "iss": "https://accounts.google.com",
            "aud": aud,
            "sub": "110169484474386276334",
            "email": email,
            "email_verified": true,
            "iat": now - 10,
            "exp": now + 3600,
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KID.to_owned());
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

struct Forward {
    target: String,
    bearer: String,
    client: reqwest::Client,
    /// Requests passed on at once, as Cloud Run's concurrency caps an instance.
    slots: Semaphore,
}

async fn forward(
    State(f): State<Arc<Forward>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let Ok(_slot) = f.slots.acquire().await else { return StatusCode::SERVICE_UNAVAILABLE.into_response() };
    let mut request = f.client.post(format!("{}/{path}", f.target)).bearer_auth(&f.bearer).body(body);
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, kind);
    }
    match request.send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, r.bytes().await.unwrap_or_default()).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// Starts a forwarder to `target` that adds `Authorization: Bearer {token}` to every POST and
/// passes at most `concurrency` on at once. Returns its base URL.
pub async fn start_push_forwarder(target: &str, token: String, concurrency: usize) -> anyhow::Result<String> {
    let state = Arc::new(Forward {
        target: target.trim_end_matches('/').to_owned(),
        bearer: token,
        client: reqwest::Client::new(),
        slots: Semaphore::new(concurrency.max(1)),
    });
    let app = Router::new().route("/{*path}", post(forward)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}
