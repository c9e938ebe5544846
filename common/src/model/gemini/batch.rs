//! Gemini's Batch API on the Developer API, as Google's SDK (google-genai) speaks it: the fixtures
//! `gemini-batch-*.json` in `common/tests/fixtures/` are its requests, captured on loopback.
//!
//! - create: `POST /v1beta/models/{model}:batchGenerateContent` with the requests inline
//!   (`batch.inputConfig.requests.requests[] = {request, metadata: {key}}`) while the body stays
//!   under the inline limit; otherwise the requests go as a JSONL file (`{key, request}` per line)
//!   uploaded through the Files API's resumable upload, and the job names it
//!   (`batch.inputConfig.fileName`).
//! - poll: `GET /v1beta/batches/{id}`: an Operation whose `metadata` is the batch (`state`,
//!   `createTime`, `output.inlinedResponses.inlinedResponses[]` or `output.responsesFile`).
//! - results of a file job: `GET /v1beta/files/{id}:download?alt=media`, one JSON line per request.
//! - cancel: `POST /v1beta/batches/{id}:cancel`.
//! - delete a job's files once it ended and its results are stored (its uploaded input, its results
//!   file): `DELETE /v1beta/files/{id}` (`client.files.delete`); 404 means it is gone already.
//! - find by display name: `GET /v1beta/batches?pageSize=…&pageToken=…` (`client.batches.list()`),
//!   a page of Operations in `operations` and `nextPageToken` while more follow.
//!
//! Vertex AI's batch prediction reads from and writes to Cloud Storage or BigQuery instead; it is
//! not supported here, and a Vertex deployment refuses bulk runs at start.

use super::{API_KEY_HEADER, Backend, GeminiModel, errors};
use crate::model::ModelError;
use crate::model::batch::{BatchApi, JobState, JobStatus, KeyedRequest, KeyedResult};
use crate::problem::ErrorCode;
use async_trait::async_trait;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

/// Google's documented limit of an inline batch: 20 MB for the whole create request.
pub const INLINE_LIMIT_BYTES: usize = 20 * 1_000_000;

/// The Batch API adapter: a [`GeminiModel`] (its key, base URL and client) and the inline limit.
#[derive(Debug, Clone)]
pub struct GeminiBatchApi {
    model: GeminiModel,
    inline_limit: usize,
}

fn permanent(detail: impl Into<String>) -> ModelError {
    ModelError::Permanent { code: ErrorCode::ModelRejected, detail: detail.into() }
}

impl GeminiBatchApi {
    /// Refuses a Vertex AI model: its batch prediction works through Cloud Storage, not this API.
    pub fn new(model: GeminiModel) -> Result<Self, super::GeminiSetupError> {
        match model.backend {
            Backend::Developer { .. } => Ok(Self { model, inline_limit: INLINE_LIMIT_BYTES }),
            Backend::Vertex { .. } => Err(super::GeminiSetupError(
                "bulk runs use Gemini's Batch API on the Developer API (GEMINI_API_KEY); Vertex AI is not supported"
                    .into(),
            )),
        }
    }

    /// Requests bodies above `bytes` go through a file (tests lower it to exercise that path).
    pub fn with_inline_limit(mut self, bytes: usize) -> Self {
        self.inline_limit = bytes;
        self
    }

    fn key(&self) -> Result<HeaderValue, ModelError> {
        match &self.model.backend {
            Backend::Developer { header, .. } => Ok(header.clone()),
            Backend::Vertex { .. } => Err(permanent("bulk runs need the Developer API")),
        }
    }

    fn secret(&self) -> Option<&str> {
        match &self.model.backend {
            Backend::Developer { api_key, .. } => Some(api_key.expose()),
            Backend::Vertex { .. } => None,
        }
    }

    /// `{base}/{segments…}`; every segment is escaped, so a name cannot walk the path.
    fn url(&self, segments: &[&str]) -> Result<Url, ModelError> {
        let mut url = self.model.base.clone();
        {
            let Ok(mut path) = url.path_segments_mut() else {
                return Err(permanent("the Gemini base URL cannot take a path"));
            };
            path.pop_if_empty();
            path.extend(segments);
        }
        Ok(url)
    }

    /// A resource name Google gave us (`batches/abc`, `files/abc`), checked before it goes in a path.
    fn resource<'a>(name: &'a str, kind: &str) -> Result<&'a str, ModelError> {
        let id = name
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .ok_or_else(|| permanent(format!("{name:?} is not a Gemini {kind} name")))?;
        Ok(id)
    }

    async fn send(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<(reqwest::header::HeaderMap, bytes::Bytes), ModelError> {
        let call = self.model.timeouts.call;
        let response =
            builder.header(API_KEY_HEADER, self.key()?).send().await.map_err(|e| errors::from_transport(&e, call))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| errors::from_transport(&e, call))?;
        if status.is_success() {
            Ok((headers, body))
        } else {
            Err(errors::from_status(status, &headers, &body, self.secret()))
        }
    }

    /// Uploads `jsonl` through the Files API (resumable: start, then upload and finalize in one).
    async fn upload(&self, display_name: &str, jsonl: Vec<u8>) -> Result<String, ModelError> {
        let size = jsonl.len();
        let start = self
            .model
            .client
            .post(self.url(&["upload", "v1beta", "files"])?)
            .header("x-goog-upload-protocol", "resumable")
            .header("x-goog-upload-command", "start")
            .header("x-goog-upload-header-content-length", size.to_string())
            .header("x-goog-upload-header-content-type", "application/jsonl")
            .json(
                &json!({"file": {"display_name": display_name, "mime_type": "application/jsonl", "size_bytes": size}}),
            );
        let (headers, _) = self.send(start).await?;
        let target = headers
            .get("x-goog-upload-url")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Url::parse(v).ok())
            .ok_or_else(|| permanent("the Files API gave no upload URL"))?;
        let finish = self
            .model
            .client
            .post(target)
            .header("content-type", "application/json")
            .header("x-goog-upload-protocol", "resumable")
            .header("x-goog-upload-command", "upload, finalize")
            .header("x-goog-upload-header-content-length", size.to_string())
            .header("x-goog-upload-header-content-type", "application/jsonl")
            .header("x-goog-upload-offset", "0")
            .body(jsonl);
        let (_, body) = self.send(finish).await?;
        let uploaded: Value =
            serde_json::from_slice(&body).map_err(|e| permanent(format!("the Files API answered {e}")))?;
        let name = uploaded["file"]["name"].as_str().ok_or_else(|| permanent("the Files API named no file"))?;
        Self::resource(name, "files")?;
        Ok(name.to_owned())
    }

    async fn download(&self, file: &str) -> Result<bytes::Bytes, ModelError> {
        let id = Self::resource(file, "files")?;
        let mut url = self.url(&["v1beta", "files", &format!("{id}:download")])?;
        url.set_query(Some("alt=media"));
        let (_, body) = self.send(self.model.client.get(url).header("content-type", "application/json")).await?;
        Ok(body)
    }

    async fn status_of(&self, operation: Operation) -> Result<JobStatus, ModelError> {
        let batch = operation.metadata;
        let state =
            batch.state.as_deref().and_then(JobState::from_wire).ok_or_else(|| {
                permanent(format!("the batch {} has an unknown state {:?}", operation.name, batch.state))
            })?;
        let created_at = batch
            .create_time
            .as_deref()
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok());
        let mut results = Vec::new();
        let mut results_file = None;
        if let Some(output) = batch.output {
            if let Some(inlined) = output.inlined_responses {
                results.extend(inlined.inlined_responses.into_iter().filter_map(KeyedLine::into_result));
            }
            if let Some(file) = output.responses_file.filter(|_| state.is_terminal()) {
                let body = self.download(&file).await?;
                for line in body.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
                    let line: KeyedLine = serde_json::from_slice(line)
                        .map_err(|e| permanent(format!("a line of the batch's results is not JSON ({e})")))?;
                    results.extend(line.into_result());
                }
                results_file = Some(file);
            }
        }
        let error = operation.error.map(|e| e.message).filter(|m| !m.is_empty());
        let input_file = batch.input_config.and_then(|c| c.file_name).filter(|f| Self::resource(f, "files").is_ok());
        Ok(JobStatus { name: operation.name, state, created_at, results, error, input_file, results_file })
    }
}

/// A batch as the API returns it: an Operation with the batch in `metadata`.
#[derive(Debug, Deserialize)]
struct Operation {
    name: String,
    #[serde(default)]
    metadata: BatchResource,
    #[serde(default)]
    error: Option<OperationError>,
}

#[derive(Debug, Deserialize)]
struct OperationError {
    #[serde(default)]
    message: String,
}

/// A page of `GET /v1beta/batches`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationPage {
    #[serde(default)]
    operations: Vec<Operation>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// Pages read at most when looking a job up (100 jobs a page): far more jobs than a project keeps.
const MAX_LIST_PAGES: usize = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchResource {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    create_time: Option<String>,
    #[serde(default)]
    output: Option<BatchOutput>,
    #[serde(default)]
    input_config: Option<InputConfig>,
}

/// The batch's input as Google echoes it: the uploaded file's name for a file job (inline requests
/// are not read back).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InputConfig {
    #[serde(default)]
    file_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchOutput {
    #[serde(default)]
    inlined_responses: Option<InlinedResponses>,
    #[serde(default)]
    responses_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InlinedResponses {
    #[serde(default)]
    inlined_responses: Vec<KeyedLine>,
}

/// One result: inline (`{response|error, metadata: {key}}`) or a line of the results file
/// (`{key, response|error}`).
#[derive(Debug, Deserialize)]
struct KeyedLine {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    response: Option<Value>,
    #[serde(default, alias = "status")]
    error: Option<Value>,
}

impl KeyedLine {
    fn into_result(self) -> Option<KeyedResult> {
        let key = self.key.or_else(|| self.metadata.as_ref()?.get("key")?.as_str().map(str::to_owned))?;
        let outcome = match (self.response, self.error) {
            (_, Some(error)) => {
                let message = error.get("message").and_then(Value::as_str).unwrap_or("no message");
                let status = error.get("status").and_then(Value::as_str).unwrap_or("");
                Err(permanent(format!(
                    "Google's batch could not make this image ({status}{}{}); change the prompt or the references",
                    if status.is_empty() { "" } else { ": " },
                    message.chars().take(400).collect::<String>()
                )))
            }
            (Some(response), None) => errors::from_success(&serde_json::to_vec(&response).unwrap_or_default()),
            (None, None) => Err(permanent("Google's batch returned neither an image nor an error for this request")),
        };
        Some(KeyedResult { key, outcome })
    }
}

#[async_trait]
impl BatchApi for GeminiBatchApi {
    async fn create(
        &self,
        model: &str,
        display_name: &str,
        requests: &[KeyedRequest],
    ) -> Result<JobStatus, ModelError> {
        let url = self.url(&["v1beta", "models", &format!("{model}:batchGenerateContent")])?;
        let bodies: Vec<(String, Value)> = requests
            .iter()
            .map(|r| (r.key.clone(), serde_json::to_value(self.model.body(&r.request)).unwrap_or_default()))
            .collect();
        let inline = json!({"batch": {
            "displayName": display_name,
            "inputConfig": {"requests": {"requests": bodies.iter().map(|(key, request)| json!({
                "request": request, "metadata": {"key": key}
            })).collect::<Vec<_>>()}},
        }});
        let inline = serde_json::to_vec(&inline).map_err(|e| permanent(e.to_string()))?;
        let mut uploaded = None;
        let body = if inline.len() <= self.inline_limit {
            inline
        } else {
            let mut jsonl = Vec::new();
            for (key, request) in &bodies {
                serde_json::to_writer(&mut jsonl, &json!({"key": key, "request": request}))
                    .map_err(|e| permanent(e.to_string()))?;
                jsonl.push(b'\n');
            }
            let file = self.upload(display_name, jsonl).await?;
            let body =
                serde_json::to_vec(&json!({"batch": {"displayName": display_name, "inputConfig": {"fileName": file}}}))
                    .map_err(|e| permanent(e.to_string()))?;
            uploaded = Some(file);
            body
        };
        let created =
            match self.send(self.model.client.post(url).header("content-type", "application/json").body(body)).await {
                Ok((_, answer)) => answer,
                Err(e @ ModelError::Permanent { .. }) => {
                    // Google refused the job for good, so nothing reads the file: delete it now. (After
                    // a retryable failure the job may exist after all; its poller deletes the file.)
                    if let Some(file) = &uploaded
                        && let Err(gone) = self.delete_file(file).await
                    {
                        tracing::warn!(%file, error = %gone, "the input file of a refused batch was not deleted");
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
        let operation: Operation = serde_json::from_slice(&created)
            .map_err(|e| permanent(format!("the Batch API answered with something that is not a batch ({e})")))?;
        Self::resource(&operation.name, "batches")?;
        let mut status = self.status_of(operation).await?;
        // What this call uploaded, whether or not Google echoes the job's input.
        status.input_file = status.input_file.or(uploaded);
        Ok(status)
    }

    async fn find(&self, display_name: &str) -> Result<Option<JobStatus>, ModelError> {
        let mut token: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let mut url = self.url(&["v1beta", "batches"])?;
            url.query_pairs_mut().append_pair("pageSize", "100");
            if let Some(token) = &token {
                url.query_pairs_mut().append_pair("pageToken", token);
            }
            let (_, body) = self.send(self.model.client.get(url).header("content-type", "application/json")).await?;
            let page: OperationPage = serde_json::from_slice(&body)
                .map_err(|e| permanent(format!("the Batch API answered with something that is not a list ({e})")))?;
            if let Some(found) =
                page.operations.into_iter().find(|o| o.metadata.display_name.as_deref() == Some(display_name))
            {
                Self::resource(&found.name, "batches")?;
                return self.status_of(found).await.map(Some);
            }
            token = page.next_page_token.filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(None);
            }
        }
        // Not knowing is not "absent": submitting now could pay for a second job.
        Err(ModelError::Retryable {
            code: ErrorCode::ModelUnavailable,
            detail: format!("Google's list of batches did not end within {MAX_LIST_PAGES} pages"),
            retry_after: None,
        })
    }

    async fn get(&self, name: &str) -> Result<JobStatus, ModelError> {
        let id = Self::resource(name, "batches")?;
        let url = self.url(&["v1beta", "batches", id])?;
        let (_, body) = self.send(self.model.client.get(url).header("content-type", "application/json")).await?;
        let operation: Operation = serde_json::from_slice(&body)
            .map_err(|e| permanent(format!("the Batch API answered with something that is not a batch ({e})")))?;
        self.status_of(operation).await
    }

    async fn cancel(&self, name: &str) -> Result<(), ModelError> {
        let id = Self::resource(name, "batches")?;
        let url = self.url(&["v1beta", "batches", &format!("{id}:cancel")])?;
        self.send(self.model.client.post(url).header("content-type", "application/json")).await?;
        Ok(())
    }

    async fn delete_file(&self, name: &str) -> Result<(), ModelError> {
        let id = Self::resource(name, "files")?;
        let url = self.url(&["v1beta", "files", id])?;
        let call = self.model.timeouts.call;
        let response = self
            .model
            .client
            .delete(url)
            .header("content-type", "application/json")
            .header(API_KEY_HEADER, self.key()?)
            .send()
            .await
            .map_err(|e| errors::from_transport(&e, call))?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| errors::from_transport(&e, call))?;
        Err(errors::from_status(status, &headers, &body, self.secret()))
    }
}
