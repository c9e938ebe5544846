//! The cloud topology on loopback, with OIDC on: submit, generate and relay as three processes on
//! three ports (three browser origins), one fake-gcs-server bucket, Google's Pub/Sub emulator
//! pushing rows to generate, and a key set of the test's own that signs every ID token.
//!
//! Google's push carries an ID token of the subscription's service account; the emulator's carries
//! no `Authorization` header at all (`../shared/TOOLING.md`). So the push subscription points at a
//! [`PushForwarder`] that adds a freshly minted token for the push service account and audience, as
//! Google's push would, and records what generate answered. With [`PushForwarder::set_signing`]
//! off it passes the emulator's request on as it came.
//!
//! Used by `tests/tests/cloud_oidc.rs` and, through the `topology` binary, by the browser tests
//! in `web/tests/cloud.test.js`.

use crate::workspace_binary;
use anyhow::{Context, bail};
use assetgen_common::testkit::{FakeGcs, PubSubEmulator, SubscriptionSpec};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The test key that signs every ID token here (`openssl genrsa 2048`; a test key only).
const KEY_PEM: &[u8] = include_bytes!("../../common/tests/fixtures/oidc-test-key.pem");
const KEY_ID: &str = "topology-k1";

/// The audience of users' ID tokens: the Sheet's Apps Script OAuth client id, as Google issues them.
pub const USER_AUDIENCE: &str = "1234567890-assetgen-sheet.apps.googleusercontent.com";
/// The service account the push subscription's tokens are minted for.
pub const PUSH_SERVICE_ACCOUNT: &str = "rows-push@assetgen-test.iam.gserviceaccount.com";
/// The batches' owner, another allow-listed user, and an admin.
pub const OWNER: &str = "owner@studio.test";
pub const OTHER: &str = "other@studio.test";
pub const ADMIN: &str = "admin@studio.test";

// ---------------------------------------------------------------------------------------------
// The key set
// ---------------------------------------------------------------------------------------------

/// A JWKS endpoint on loopback serving the public half of the test key, and a minter of Google-
/// shaped ID tokens signed by it.
#[derive(Clone)]
pub struct TestIssuer {
    key: EncodingKey,
    /// `http://127.0.0.1:PORT/oauth2/v3/certs`, for `ASSETGEN_OIDC_JWKS_URL`.
    pub jwks_url: String,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer").field("jwks_url", &self.jwks_url).finish()
    }
}

impl TestIssuer {
    pub async fn start() -> anyhow::Result<Self> {
        let key = EncodingKey::from_rsa_pem(KEY_PEM)?;
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256)?)?;
        jwk["kid"] = json!(KEY_ID);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!("RS256");
        let body = json!({ "keys": [jwk] });
        let app = Router::new().route(
            "/oauth2/v3/certs",
            get(move || {
                let body = body.clone();
                async move { ([(header::CACHE_CONTROL, "public, max-age=3600")], axum::Json(body)) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let jwks_url = format!("http://{}/oauth2/v3/certs", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { key, jwks_url })
    }

    /// An ID token as Google issues them: `email` (verified), for `audience`, valid for an hour.
    pub fn id_token(&self, email: &str, audience: &str) -> String {
        let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX);
        let claims = json!({
            "iss": "https://accounts.google.com",
            "aud": audience,
            "azp": audience,
            "sub": format!("sub-{email}"),
            "email": email,
            "email_verified": true,
            "iat": now - 5,
            "exp": now + 3600,
        });
        self.sign(&claims)
    }

    /// Any claims, signed as Google signs ID tokens (RS256, this set's key id): for tokens that
    /// differ from [`Self::id_token`]'s in one claim.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEY_ID.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key)
            .unwrap_or_else(|e| unreachable!("RS256 signing of plain claims with a valid key cannot fail: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// The push forwarder
// ---------------------------------------------------------------------------------------------

/// One push the forwarder passed on.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub path: String,
    /// Whether the emulator's own request carried an `Authorization` header.
    pub arrived_with_authorization: bool,
    /// Whether the forwarder added an ID token.
    pub signed: bool,
    /// What generate answered.
    pub status: u16,
    /// The push's body as the emulator sent it.
    pub body: Bytes,
}

/// Between the emulator's push and generate: adds the ID token Google's push would carry.
#[derive(Clone)]
pub struct PushForwarder {
    inner: Arc<ForwarderState>,
    /// `http://127.0.0.1:PORT`: push endpoints are this plus generate's path.
    pub base: String,
}

struct ForwarderState {
    issuer: TestIssuer,
    target: String,
    audience: String,
    signing: AtomicBool,
    /// At most this many pushes are in flight at once (Cloud Run's instances × concurrency).
    gate: tokio::sync::Semaphore,
    log: Mutex<Vec<Forwarded>>,
    http: reqwest::Client,
}

impl PushForwarder {
    /// Forwards every request to the same path on `target`, with a token for `audience` when
    /// signing is on, `concurrency` at a time.
    pub async fn start(issuer: TestIssuer, target: &str, audience: &str, concurrency: usize) -> anyhow::Result<Self> {
        let inner = Arc::new(ForwarderState {
            issuer,
            target: target.trim_end_matches('/').to_owned(),
            audience: audience.to_owned(),
            signing: AtomicBool::new(true),
            gate: tokio::sync::Semaphore::new(concurrency.max(1)),
            log: Mutex::new(Vec::new()),
            http: reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?,
        });
        let app = Router::new().fallback(forward).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { inner, base })
    }

    /// On: add an ID token, as Google's push does. Off: pass the emulator's bare request on.
    pub fn set_signing(&self, on: bool) {
        self.inner.signing.store(on, Ordering::SeqCst);
    }

    /// Every push passed on so far, in order.
    pub fn forwarded(&self) -> Vec<Forwarded> {
        self.inner.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

async fn forward(
    State(state): State<Arc<ForwarderState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(_turn) = state.gate.acquire().await else { return StatusCode::SERVICE_UNAVAILABLE.into_response() };
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let signed = state.signing.load(Ordering::SeqCst);
    let sent = body.clone();
    let mut request = state.http.request(method, format!("{}{path}", state.target)).body(body);
    for name in [header::CONTENT_TYPE, header::USER_AGENT] {
        if let Some(value) = headers.get(&name) {
            request = request.header(name, value);
        }
    }
    if signed {
        let token = state.issuer.id_token(PUSH_SERVICE_ACCOUNT, &state.audience);
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    } else if let Some(value) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, value);
    }
    let (status, body) = match request.send().await {
        Ok(answer) => (answer.status(), answer.bytes().await.unwrap_or_default()),
        Err(_) => (StatusCode::BAD_GATEWAY, Bytes::new()),
    };
    state.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Forwarded {
        path,
        arrived_with_authorization: headers.contains_key(header::AUTHORIZATION),
        signed,
        status: status.as_u16(),
        body: sent,
    });
    (status, body).into_response()
}

// ---------------------------------------------------------------------------------------------
// The functions' processes
// ---------------------------------------------------------------------------------------------

/// A function's binary, running on its own port; killed when dropped.
pub struct FunctionProcess {
    child: Child,
    pub name: &'static str,
    pub base: String,
    /// Process start to first `/healthz` 200.
    pub cold_start: Duration,
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl FunctionProcess {
    /// Its process id (the benchmark reads its peak RSS).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `assetgen-{name}` on `port` with `env` (and nothing of this process's `ASSETGEN_*`)
    /// and waits for its first `/healthz` 200.
    pub async fn start(name: &'static str, port: u16, env: &[(String, String)]) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut command = Command::new(workspace_binary(&format!("assetgen-{name}"))?);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("ASSETGEN_") || k.starts_with("GEMINI_")) {
            command.env_remove(key);
        }
        let child = command
            .env("PORT", port.to_string())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting assetgen-{name}"))?;
        let mut process = Self { child, name, base: format!("http://127.0.0.1:{port}"), cold_start: Duration::ZERO };
        let client = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = process.child.try_wait() {
                bail!("assetgen-{name} exited at start: {status}");
            }
            let health = client.get(format!("{}/healthz", process.base)).timeout(Duration::from_secs(1)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                process.cold_start = started.elapsed();
                return Ok(process);
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("assetgen-{name} never answered /healthz");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The whole topology
// ---------------------------------------------------------------------------------------------

/// What to vary between runs.
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    /// Pushes in flight at once (1 keeps rows queued long enough to cancel some).
    pub push_concurrency: usize,
    /// Start with the forwarder adding tokens (true) or passing the emulator's bare push on.
    pub sign_pushes: bool,
    /// Deliveries of a row message before it is dead-lettered.
    pub max_delivery_attempts: u32,
    /// More settings for all three functions (`KEY=VALUE`), after the topology's own.
    pub extra_env: Vec<(String, String)>,
    /// Rows reach generate through a [`PullPusher`] (Pub/Sub push's semantics at
    /// `push_concurrency` pushes in flight) instead of the emulator's own push, which keeps only
    /// about two pushes in flight whatever the load (seen in the pacing benchmark: 100 rows
    /// delivered one after another as each was acknowledged). For throughput runs.
    pub pull_pushes: bool,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        Self {
            push_concurrency: 4,
            sign_pushes: true,
            max_delivery_attempts: 5,
            extra_env: Vec::new(),
            pull_pushes: false,
        }
    }
}

/// Everything running; dropping it stops the functions, then the emulators.
pub struct Topology {
    // Field order is drop order: the functions go before the emulators they talk to.
    pub submit: FunctionProcess,
    pub relay: FunctionProcess,
    pub generate: FunctionProcess,
    pub pull_pusher: Option<PullPusher>,
    pub forwarder: PushForwarder,
    pub issuer: TestIssuer,
    pub pubsub: PubSubEmulator,
    pub gcs: FakeGcs,
    pub bucket: String,
    /// Generate's push audience (its URL, as on Cloud Run).
    pub push_audience: String,
}

impl Topology {
    pub async fn start(options: TopologyOptions) -> anyhow::Result<Self> {
        let issuer = TestIssuer::start().await?;
        let gcs = FakeGcs::start().await;
        let bucket = {
            let store = gcs.store().await;
            store.bucket().to_owned()
        };
        let pubsub = PubSubEmulator::start().await;
        pubsub.create_topic("rows").await;
        pubsub.create_topic("rows-dead").await;

        // Every function's URL is known before any starts: each names the others in its settings.
        let (submit_port, generate_port, relay_port) = (free_port()?, free_port()?, free_port()?);
        let submit_url = format!("http://127.0.0.1:{submit_port}");
        let generate_url = format!("http://127.0.0.1:{generate_port}");
        let relay_url = format!("http://127.0.0.1:{relay_port}");
        let push_audience = generate_url.clone();

        let secret = |label: &str| format!("{label}-{}", random_hex());
        // What every function reads, as Terraform sets it (terraform/modules/assetgen/run.tf).
        let common = vec![
            ("ASSETGEN_STORE".to_owned(), format!("gs://{bucket}")),
            ("STORAGE_EMULATOR_HOST".to_owned(), gcs.endpoint.clone()),
            ("ASSETGEN_QUEUE".to_owned(), format!("pubsub://projects/{}/topics/rows", pubsub.project)),
            ("PUBSUB_EMULATOR_HOST".to_owned(), pubsub.host.clone()),
            ("ASSETGEN_AUTH".to_owned(), "oidc".to_owned()),
            ("ASSETGEN_OIDC_JWKS_URL".to_owned(), issuer.jwks_url.clone()),
            ("ASSETGEN_ALLOWED".to_owned(), "@studio.test".to_owned()),
            ("ASSETGEN_ADMINS".to_owned(), ADMIN.to_owned()),
            ("ASSETGEN_CAPABILITY_SECRET".to_owned(), secret("capability")),
            ("ASSETGEN_LINK_SECRET".to_owned(), secret("link")),
            // Links point at the relay, which serves the pages, the events and the images.
            ("ASSETGEN_PUBLIC_URL".to_owned(), relay_url.clone()),
            // References are served from loopback in tests.
            ("ASSETGEN_ALLOW_PRIVATE_REFS".to_owned(), "true".to_owned()),
        ];
        let with = |own: &[(&str, &str)]| {
            let mut env = common.clone();
            env.extend(own.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            env.extend(options.extra_env.iter().cloned());
            env
        };

        let generate = FunctionProcess::start(
            "generate",
            generate_port,
            &with(&[
                ("ASSETGEN_OIDC_AUDIENCE", &push_audience),
                ("ASSETGEN_PUSH_AUDIENCE", &push_audience),
                ("ASSETGEN_PUSH_SA", PUSH_SERVICE_ACCOUNT),
            ]),
        )
        .await?;
        let forwarder =
            PushForwarder::start(issuer.clone(), &generate.base, &push_audience, options.push_concurrency).await?;
        forwarder.set_signing(options.sign_pushes);
        let rows_endpoint = format!("{}/pubsub/rows", forwarder.base);
        let rows = if options.pull_pushes {
            SubscriptionSpec::pull("rows")
        } else {
            SubscriptionSpec::push("rows", &rows_endpoint)
        };
        let rows_subscription = pubsub
            .create_subscription(
                "rows-push",
                &rows
                    .with_ack_deadline(120)
                    .with_retry_backoff(Duration::from_secs(1), Duration::from_secs(2))
                    .with_dead_letter("rows-dead", options.max_delivery_attempts),
            )
            .await;
        let pull_pusher = options
            .pull_pushes
            .then(|| PullPusher::start(&pubsub.endpoint, &rows_subscription, &rows_endpoint, options.push_concurrency));
        pubsub
            .create_subscription(
                "rows-dead-push",
                &SubscriptionSpec::push("rows-dead", &format!("{}/pubsub/dead-letter", forwarder.base)),
            )
            .await;
        let submit = FunctionProcess::start(
            "submit",
            submit_port,
            &with(&[("ASSETGEN_OIDC_AUDIENCE", USER_AUDIENCE), ("ASSETGEN_CORS_ORIGINS", &relay_url)]),
        )
        .await?;
        let relay = FunctionProcess::start(
            "relay",
            relay_port,
            &with(&[("ASSETGEN_OIDC_AUDIENCE", USER_AUDIENCE), ("ASSETGEN_SUBMIT_URL", &submit_url)]),
        )
        .await?;
        Ok(Self { submit, relay, generate, pull_pusher, forwarder, issuer, pubsub, gcs, bucket, push_audience })
    }

    /// A user's ID token for the Sheet's audience.
    pub fn user_token(&self, email: &str) -> String {
        self.issuer.id_token(email, USER_AUDIENCE)
    }

    /// The URLs and tokens a client of the topology needs, as JSON.
    pub fn describe(&self) -> Value {
        json!({
            "submit": self.submit.base,
            "generate": self.generate.base,
            "relay": self.relay.base,
            "bucket": self.bucket,
            "gcs": self.gcs.endpoint,
            "pubsub": self.pubsub.host,
            "push_audience": self.push_audience,
            "user_audience": USER_AUDIENCE,
            "users": { "owner": OWNER, "other": OTHER, "admin": ADMIN },
            "tokens": {
                "owner": self.user_token(OWNER),
                "other": self.user_token(OTHER),
                "admin": self.user_token(ADMIN),
            },
            "cold_start_ms": {
                "submit": self.submit.cold_start.as_millis(),
                "generate": self.generate.cold_start.as_millis(),
                "relay": self.relay.cold_start.as_millis(),
            },
        })
    }
}

/// Pub/Sub push's semantics over a pull subscription: up to `concurrency` messages in flight, each
/// POSTed as a push envelope (through the forwarder, which signs it); a 2xx acknowledges, anything
/// else nacks (ack deadline 0), so the subscription's retry and dead-letter policies apply as they
/// do to a push. Stops when dropped.
pub struct PullPusher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PullPusher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PullPusher {
    pub fn start(emulator: &str, subscription: &str, endpoint: &str, concurrency: usize) -> Self {
        let http = reqwest::Client::new();
        let rpc = format!("{emulator}/v1/{subscription}");
        let (subscription, endpoint) = (subscription.to_owned(), endpoint.to_owned());
        let slots = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let task = tokio::spawn(async move {
            loop {
                let free = slots.available_permits().min(100);
                if free == 0 {
                    // Wait for one push to end before pulling again.
                    drop(slots.clone().acquire_owned().await);
                    continue;
                }
                let pulled = http
                    .post(format!("{rpc}:pull"))
                    .json(&json!({ "maxMessages": free, "returnImmediately": true }))
                    .send()
                    .await;
                let messages: Vec<assetgen_common::testkit::PulledMessage> = match pulled {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| serde_json::from_value(v["receivedMessages"].clone()).ok())
                        .unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                if messages.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                for message in messages {
                    let Ok(slot) = slots.clone().acquire_owned().await else { return };
                    let (http, rpc, endpoint) = (http.clone(), rpc.clone(), endpoint.clone());
                    let envelope = message.envelope(&subscription);
                    tokio::spawn(async move {
                        let _slot = slot;
                        let answer = http.post(&endpoint).json(&envelope).send().await;
                        let acked = answer.is_ok_and(|r| r.status().is_success());
                        let (verb, body) = if acked {
                            ("acknowledge", json!({ "ackIds": [message.ack_id] }))
                        } else {
                            ("modifyAckDeadline", json!({ "ackIds": [message.ack_id], "ackDeadlineSeconds": 0 }))
                        };
                        let _ = http.post(format!("{rpc}:{verb}")).json(&body).send().await;
                    });
                }
            }
        });
        Self { task }
    }
}

/// A fresh random secret per run (64 hex digits).
fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}
