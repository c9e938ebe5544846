//! The live image model: Gemini's `generateContent`, one call per image, over `reqwest`.
//!
//! Two backends speak the same body: the Developer API (AI Studio key in `x-goog-api-key`, never in
//! the URL) and Vertex AI (a bearer token from Application Default Credentials). The adapter never
//! retries: a [`ModelError::Retryable`] goes back to the queue, which redelivers with backoff.

mod auth;
mod batch;
mod errors;
mod wire;

pub use auth::{AdcTokenSource, StaticToken, TokenError, TokenSource};
pub use batch::{GeminiBatchApi, INLINE_LIMIT_BYTES};

use super::{GeneratedImage, ImageModel, ImageRequest, ModelError};
use crate::config::{GeminiBackend, Secret};
use crate::problem::ErrorCode;
use async_trait::async_trait;
use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;
use wire::{Content, FileData, GenerateContentRequest, GenerationConfig, ImageConfig, InlineData, Part};

/// The Developer API (AI Studio) endpoint.
pub const DEVELOPER_BASE_URL: &str = "https://generativelanguage.googleapis.com";

const API_KEY_HEADER: &str = "x-goog-api-key";
const USER_AGENT: &str = "assetgen/0.1";

/// How long a call may take. Image calls are slow: tens of seconds are normal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeminiTimeouts {
    /// The whole call: token, connect, request and the last byte of the answer.
    pub call: Duration,
    /// Establishing the connection (TCP and TLS).
    pub connect: Duration,
}

impl Default for GeminiTimeouts {
    fn default() -> Self {
        Self { call: Duration::from_secs(120), connect: Duration::from_secs(10) }
    }
}

impl GeminiTimeouts {
    /// `call` for the whole call, the default connect time-out.
    pub fn with_call(call: Duration) -> Self {
        Self { call, ..Self::default() }
    }
}

/// A configuration the adapter cannot work with; found at start, not at the first row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Gemini is not configured correctly: {0}")]
pub struct GeminiSetupError(pub String);

#[derive(Debug, Clone)]
enum Backend {
    Developer { api_key: Secret, header: HeaderValue },
    Vertex { project: String, location: String, tokens: Arc<dyn TokenSource> },
}

/// The Gemini adapter of [`ImageModel`]. Cheap to clone: clones share one HTTP client.
#[derive(Debug, Clone)]
pub struct GeminiModel {
    backend: Backend,
    base: Url,
    client: reqwest::Client,
    timeouts: GeminiTimeouts,
}

impl GeminiModel {
    /// The Developer API with an API key. `base_url` overrides Google's endpoint (`GEMINI_BASE_URL`).
    pub fn developer(
        api_key: Secret,
        base_url: Option<Url>,
        timeouts: GeminiTimeouts,
    ) -> Result<Self, GeminiSetupError> {
        if api_key.expose().trim().is_empty() {
            return Err(GeminiSetupError("the API key is empty; set GEMINI_API_KEY".into()));
        }
        let mut header = HeaderValue::from_str(api_key.expose())
            .map_err(|_| GeminiSetupError("the API key has characters a header cannot carry".into()))?;
        header.set_sensitive(true);
        let base = match base_url {
            Some(url) => url,
            None => Url::parse(DEVELOPER_BASE_URL).map_err(|e| GeminiSetupError(e.to_string()))?,
        };
        Self::build(Backend::Developer { api_key, header }, base, timeouts)
    }

    /// Vertex AI in `project` and `location` (e.g. `us-central1`, or `global`), authorised by
    /// `tokens` (see [`AdcTokenSource`]). `base_url` overrides the regional endpoint.
    pub fn vertex(
        project: impl Into<String>,
        location: impl Into<String>,
        tokens: Arc<dyn TokenSource>,
        base_url: Option<Url>,
        timeouts: GeminiTimeouts,
    ) -> Result<Self, GeminiSetupError> {
        let (project, location) = (project.into(), location.into());
        let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain(&project) {
            return Err(GeminiSetupError(format!("{project:?} is not a Google Cloud project id")));
        }
        if !plain(&location) {
            return Err(GeminiSetupError(format!("{location:?} is not a Vertex AI location")));
        }
        let base = match base_url {
            Some(url) => url,
            None => Url::parse(&vertex_base_url(&location)).map_err(|e| GeminiSetupError(e.to_string()))?,
        };
        Self::build(Backend::Vertex { project, location, tokens }, base, timeouts)
    }

    fn build(backend: Backend, mut base: Url, timeouts: GeminiTimeouts) -> Result<Self, GeminiSetupError> {
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() || base.host().is_none() {
            return Err(GeminiSetupError(format!("the base URL {base} is not an http(s) URL")));
        }
        base.set_query(None);
        base.set_fragment(None);
        let client = reqwest::Client::builder()
            .timeout(timeouts.call)
            .connect_timeout(timeouts.connect)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| GeminiSetupError(format!("the HTTP client cannot be built: {e}")))?;
        Ok(Self { backend, base, client, timeouts })
    }

    pub fn backend(&self) -> GeminiBackend {
        match self.backend {
            Backend::Developer { .. } => GeminiBackend::Developer,
            Backend::Vertex { .. } => GeminiBackend::Vertex,
        }
    }

    /// The `generateContent` URL of `model`.
    fn endpoint(&self, model: &str) -> Result<Url, ModelError> {
        if model.trim().is_empty() {
            return Err(ModelError::Permanent {
                code: ErrorCode::ModelRejected,
                detail: "no model name was given".into(),
            });
        }
        let method = format!("{model}:generateContent");
        let mut url = self.base.clone();
        {
            // Checked in `build`: the base URL can be a base.
            let Ok(mut segments) = url.path_segments_mut() else {
                return Err(ModelError::Permanent {
                    code: ErrorCode::Internal,
                    detail: "the Gemini base URL cannot take a path".into(),
                });
            };
            segments.pop_if_empty();
            match &self.backend {
                Backend::Developer { .. } => {
                    segments.extend(["v1beta", "models", &method]);
                }
                Backend::Vertex { project, location, .. } => {
                    segments.extend([
                        "v1",
                        "projects",
                        project.as_str(),
                        "locations",
                        location.as_str(),
                        "publishers",
                        "google",
                        "models",
                    ]);
                    segments.push(&method);
                }
            }
        }
        Ok(url)
    }

    /// Text first, then the references in order: inline bytes, or the `gs://` URL on Vertex.
    fn body<'a>(&self, request: &'a ImageRequest) -> GenerateContentRequest<'a> {
        let vertex = matches!(self.backend, Backend::Vertex { .. });
        let mut parts = Vec::with_capacity(1 + request.refs.len());
        parts.push(Part::Text(&request.prompt));
        for image in &request.refs {
            parts.push(match &image.gs_uri {
                Some(uri) if vertex => Part::FileData(FileData { file_uri: uri, mime_type: &image.mime_type }),
                _ => Part::InlineData(InlineData {
                    mime_type: &image.mime_type,
                    data: base64::engine::general_purpose::STANDARD.encode(&image.bytes),
                }),
            });
        }
        GenerateContentRequest {
            contents: vec![Content { role: "user", parts }],
            generation_config: GenerationConfig {
                response_modalities: ["IMAGE"],
                image_config: ImageConfig { aspect_ratio: request.aspect_ratio.to_string() },
            },
        }
    }

    async fn call(&self, request: &ImageRequest) -> Result<GeneratedImage, ModelError> {
        let url = self.endpoint(&request.model)?;
        let mut builder = self.client.post(url).json(&self.body(request));
        let secret = match &self.backend {
            Backend::Developer { api_key, header } => {
                builder = builder.header(API_KEY_HEADER, header.clone());
                api_key.expose().to_owned()
            }
            Backend::Vertex { tokens, .. } => {
                let token = tokens.access_token().await.map_err(|e| {
                    if e.retryable {
                        ModelError::Retryable { code: ErrorCode::ModelUnavailable, detail: e.detail, retry_after: None }
                    } else {
                        ModelError::Permanent {
                            code: ErrorCode::ModelRejected,
                            detail: format!("{}; check the service account's credentials", e.detail),
                        }
                    }
                })?;
                let mut header =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ModelError::Permanent {
                        code: ErrorCode::ModelRejected,
                        detail: "the access token has characters a header cannot carry".into(),
                    })?;
                header.set_sensitive(true);
                builder = builder.header(AUTHORIZATION, header);
                token
            }
        };
        let response = builder.send().await.map_err(|e| errors::from_transport(&e, self.timeouts.call))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| errors::from_transport(&e, self.timeouts.call))?;
        if status.is_success() {
            errors::from_success(&body)
        } else {
            Err(errors::from_status(status, &headers, &body, Some(&secret)))
        }
    }
}

/// Vertex AI's endpoint for `location`: regional, or the global one.
pub fn vertex_base_url(location: &str) -> String {
    if location == "global" {
        "https://aiplatform.googleapis.com".to_owned()
    } else {
        format!("https://{location}-aiplatform.googleapis.com")
    }
}

#[async_trait]
impl ImageModel for GeminiModel {
    fn is_live(&self) -> bool {
        true
    }

    async fn generate(&self, request: &ImageRequest) -> Result<GeneratedImage, ModelError> {
        let started = Instant::now();
        let limit = self.timeouts.call;
        let result = tokio::time::timeout(limit, self.call(request)).await.unwrap_or_else(|_| {
            Err(ModelError::Retryable {
                code: ErrorCode::ModelUnavailable,
                detail: format!(
                    "the image model did not answer within {} s; the row is retried later",
                    limit.as_secs_f64()
                ),
                retry_after: None,
            })
        });
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(image) => tracing::info!(
                model = %request.model, scene_id = %request.scene_id, variant = request.variant,
                refs = request.refs.len(), bytes = image.bytes.len(), elapsed_ms, "gemini made an image"
            ),
            Err(error) => tracing::warn!(
                model = %request.model, scene_id = %request.scene_id, variant = request.variant,
                retryable = error.is_retryable(), %error, elapsed_ms, "gemini call failed"
            ),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn developer(base: Option<&str>) -> GeminiModel {
        let config = crate::config::Config::from_lookup(crate::config::Profile::Local, |k| {
            (k == "GEMINI_API_KEY").then(|| "k".to_owned())
        })
        .expect("config");
        let key = config.gemini_api_key.expect("key");
        GeminiModel::developer(key, base.map(|b| Url::parse(b).expect("url")), GeminiTimeouts::default())
            .expect("model")
    }

    fn vertex(location: &str) -> GeminiModel {
        GeminiModel::vertex("p-1", location, Arc::new(StaticToken::new("t")), None, GeminiTimeouts::default())
            .expect("model")
    }

    #[test]
    fn endpoints_follow_the_backend() {
        let m = "gemini-2.5-flash-image";
        assert_eq!(
            developer(None).endpoint(m).expect("url").as_str(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash-image:generateContent"
        );
        assert_eq!(
            developer(Some("http://127.0.0.1:9/proxy/")).endpoint(m).expect("url").as_str(),
            "http://127.0.0.1:9/proxy/v1beta/models/gemini-2.5-flash-image:generateContent"
        );
        assert_eq!(
            vertex("us-central1").endpoint(m).expect("url").as_str(),
            "https://us-central1-aiplatform.googleapis.com/v1/projects/p-1/locations/us-central1/publishers/google/models/gemini-2.5-flash-image:generateContent"
        );
        assert_eq!(
            vertex("global").endpoint(m).expect("url").as_str(),
            "https://aiplatform.googleapis.com/v1/projects/p-1/locations/global/publishers/google/models/gemini-2.5-flash-image:generateContent"
        );
        // A model name cannot walk the path.
        assert_eq!(developer(None).endpoint("../x").expect("url").path(), "/v1beta/models/..%2Fx:generateContent");
    }

    #[test]
    fn bad_settings_are_refused_at_start() {
        let token: Arc<dyn TokenSource> = Arc::new(StaticToken::new("t"));
        let bad = |project: &str, location: &str| {
            GeminiModel::vertex(project, location, token.clone(), None, GeminiTimeouts::default()).is_err()
        };
        assert!(bad("", "us-central1"));
        assert!(bad("p", "us/central"));
        assert!(!bad("p", "europe-west4"));
        let config = crate::config::Config::from_lookup(crate::config::Profile::Local, |k| {
            (k == "GEMINI_API_KEY").then(|| "k".to_owned())
        })
        .expect("config");
        let key = config.gemini_api_key.expect("key");
        let ftp = Url::parse("ftp://example.com").expect("url");
        assert!(GeminiModel::developer(key, Some(ftp), GeminiTimeouts::default()).is_err());
    }
}
