//! The `generateContent` wire format, as far as an image call needs it. Field names are the proto
//! JSON (camelCase) names both the Developer API and Vertex AI accept; responses are read leniently
//! (unknown fields ignored, snake_case aliases accepted) since Google adds fields freely.

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerateContentRequest<'a> {
    pub contents: Vec<Content<'a>>,
    pub generation_config: GenerationConfig,
}

#[derive(Debug, Serialize)]
pub(super) struct Content<'a> {
    pub role: &'static str,
    pub parts: Vec<Part<'a>>,
}

/// One part of a request: the proto's `data` oneof, serialized as `{"text": …}`,
/// `{"inlineData": {…}}` or `{"fileData": {…}}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum Part<'a> {
    Text(&'a str),
    InlineData(InlineData<'a>),
    FileData(FileData<'a>),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InlineData<'a> {
    pub mime_type: &'a str,
    /// Standard base64 with padding.
    pub data: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FileData<'a> {
    pub file_uri: &'a str,
    pub mime_type: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerationConfig {
    pub response_modalities: [&'static str; 1],
    pub image_config: ImageConfig,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ImageConfig {
    pub aspect_ratio: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerateContentResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    #[serde(default, alias = "prompt_feedback")]
    pub prompt_feedback: Option<PromptFeedback>,
    /// The answer's id, for provenance (and for quoting to Google).
    #[serde(default, alias = "response_id")]
    pub response_id: Option<String>,
    /// The model version that answered, e.g. `gemini-2.5-flash-image`.
    #[serde(default, alias = "model_version")]
    pub model_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Candidate {
    #[serde(default)]
    pub content: Option<ResponseContent>,
    #[serde(default, alias = "finish_reason")]
    pub finish_reason: Option<String>,
    #[serde(default, alias = "finish_message")]
    pub finish_message: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ResponseContent {
    #[serde(default)]
    pub parts: Vec<ResponsePart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResponsePart {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default, alias = "inline_data")]
    pub inline_data: Option<ResponseBlob>,
    /// `true` on the model's drafts and reasoning; absent on the answer.
    #[serde(default)]
    pub thought: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResponseBlob {
    #[serde(default, alias = "mime_type")]
    pub mime_type: String,
    #[serde(default)]
    pub data: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PromptFeedback {
    #[serde(default, alias = "block_reason")]
    pub block_reason: Option<String>,
    #[serde(default, alias = "block_reason_message")]
    pub block_reason_message: Option<String>,
}

/// Google's error body: `{"error": {code, message, status, details: [{"@type": …}, …]}}`.
#[derive(Debug, Deserialize)]
pub(super) struct ErrorEnvelope {
    pub error: GoogleError,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct GoogleError {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub details: Vec<serde_json::Value>,
}

pub(super) const QUOTA_FAILURE: &str = "type.googleapis.com/google.rpc.QuotaFailure";
pub(super) const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";
pub(super) const ERROR_INFO: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// A `google.rpc.QuotaFailure` detail.
#[derive(Debug, Deserialize)]
pub(super) struct QuotaFailure {
    #[serde(default)]
    pub violations: Vec<QuotaViolation>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct QuotaViolation {
    #[serde(default)]
    pub quota_metric: String,
    #[serde(default)]
    pub quota_id: String,
}

impl GoogleError {
    /// The details of one `@type`.
    pub fn details_of<'a>(&'a self, type_url: &'a str) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
        self.details.iter().filter(move |d| d.get("@type").and_then(|t| t.as_str()) == Some(type_url))
    }

    /// Every `QuotaFailure` violation.
    pub fn quota_violations(&self) -> Vec<QuotaViolation> {
        self.details_of(QUOTA_FAILURE)
            .filter_map(|d| serde_json::from_value::<QuotaFailure>(d.clone()).ok())
            .flat_map(|q| q.violations)
            .collect()
    }

    /// `RetryInfo.retryDelay`, a protobuf Duration in JSON ("17s", "0.5s").
    pub fn retry_delay(&self) -> Option<std::time::Duration> {
        self.details_of(RETRY_INFO)
            .find_map(|d| d.get("retryDelay").and_then(|v| v.as_str()).and_then(super::errors::parse_proto_duration))
    }

    /// `ErrorInfo.reason`, e.g. `API_KEY_INVALID`.
    pub fn reason(&self) -> Option<&str> {
        self.details_of(ERROR_INFO).find_map(|d| d.get("reason").and_then(|v| v.as_str()))
    }
}
