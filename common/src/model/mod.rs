//! The image-model port: one call makes one image. Adapters: the dry-run placeholder (no network,
//! no cost) and Gemini; and [`PacedModel`], which paces any of them to the quota.

pub mod batch;
pub(crate) mod dry_run;
mod gemini;
mod paced;

pub use batch::{BatchApi, JobState, JobStatus, KeyedRequest, KeyedResult};
pub use dry_run::DryRunModel;
pub use gemini::{
    AdcTokenSource, GeminiBatchApi, GeminiModel, GeminiSetupError, GeminiTimeouts, INLINE_LIMIT_BYTES, StaticToken,
    TokenError, TokenSource,
};
pub use paced::{CALL_SECONDS, HEADROOM, MAX_WAIT_CAP, PacedModel, Pacer, Pacing, Turn};

use crate::domain::AspectRatio;
use crate::problem::ErrorCode;
use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;

/// A reference image as sent to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefImage {
    pub mime_type: String,
    pub bytes: Bytes,
    pub sha256: String,
    /// The `gs://` URL the image was read from, if it came from Cloud Storage: Vertex AI is sent
    /// this URL (`fileData`) instead of the bytes.
    pub gs_uri: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub model: String,
    pub scene_id: String,
    pub variant: u8,
    /// The full text sent: the row's prompt plus the reference-mode instruction when there are refs.
    pub prompt: String,
    pub aspect_ratio: AspectRatio,
    pub refs: Vec<RefImage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedImage {
    pub mime_type: String,
    pub bytes: Bytes,
    /// The model's id for its answer (Gemini's `responseId`), when it gives one.
    pub response_id: Option<String>,
    /// The model version that answered (Gemini's `modelVersion`), when it says.
    pub model_version: Option<String>,
}

impl GeneratedImage {
    /// An image with no response id or model version.
    pub fn new(mime_type: impl Into<String>, bytes: Bytes) -> Self {
        Self { mime_type: mime_type.into(), bytes, response_id: None, model_version: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Try again later (429, 5xx, time-out): the message is nacked and redelivered.
    #[error("{code}: {detail}")]
    Retryable { code: ErrorCode, detail: String, retry_after: Option<Duration> },
    /// Trying again will not help (safety block, bad request, daily quota): the row fails.
    #[error("{code}: {detail}")]
    Permanent { code: ErrorCode, detail: String },
}

impl ModelError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }
}

#[async_trait]
pub trait ImageModel: Send + Sync + std::fmt::Debug {
    /// Whether calls cost money (false for the dry run).
    fn is_live(&self) -> bool;

    async fn generate(&self, request: &ImageRequest) -> Result<GeneratedImage, ModelError>;
}
