//! A Gemini Batch API stub on loopback that speaks the wire format of Google's SDK (the requests in
//! `common/tests/fixtures/gemini-batch-*.json`) and serves a job's life cycle: pending, running,
//! then succeeded (every request answered with an image, except those whose prompt contains the
//! configured marker, which get a per-request error), expired or failed; cancelled when asked. Jobs
//! come inline or from a JSONL file uploaded through the Files API's resumable upload. A file job's
//! results (every job's, when [`BulkStubConfig::results_as_file`] asks) are a JSONL file Google
//! writes when the job succeeds, named in `output.responsesFile` and downloaded with
//! `GET /v1beta/files/{id}:download?alt=media`, as Google does for large jobs. `GET /v1beta/batches`
//! lists the jobs (`client.batches.list()`), [`LIST_PAGE`] a page at most so that callers must follow
//! `nextPageToken`. The stub remembers every file, uploaded or written with results, until
//! `DELETE /v1beta/files/{id}` (`client.files.delete()`; 404 for a file it does not have, and for a
//! download of it), so a test can see none is left.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How every job ends once it has been polled enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkOutcome {
    Succeed,
    Expire,
    Fail,
}

#[derive(Debug, Clone)]
pub struct BulkStubConfig {
    /// Polls a job answers pending (the first half) and running (the second) before it ends.
    pub polls_before_end: u32,
    pub outcome: BulkOutcome,
    /// A request whose prompt contains this (when not empty) gets a per-request error; a job whose
    /// display name contains it is refused at create (400), as Google refuses a bad batch.
    pub fail_marker: String,
    /// Results come as a file for every job that succeeds, inline ones too (Google writes a large
    /// job's results to a file); otherwise only a job that came as a file gets them as a file.
    pub results_as_file: bool,
}

/// One request as the stub received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    /// JSON bodies parsed; an uploaded file as a JSON string of its text; `null` when empty.
    pub body: Value,
}

/// A job as the stub keeps it.
#[derive(Debug, Clone)]
pub struct StubJob {
    pub name: String,
    pub display_name: String,
    /// `(key, prompt)` of each request, in order.
    pub requests: Vec<(String, String)>,
    pub from_file: bool,
    /// The uploaded file it reads (`files/…`), for a file job.
    pub input_file: Option<String>,
    pub polls: u32,
    pub cancelled: bool,
    /// The file its results were written to (`files/…`), once it succeeded with results in a file.
    pub results_file: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    received: Vec<Received>,
    jobs: Vec<StubJob>,
    files: HashMap<String, String>,
    /// Uploads started, so a name is never given twice (files are deleted).
    uploads: usize,
}

#[derive(Debug, Clone)]
struct Shared {
    config: BulkStubConfig,
    base: String,
    inner: Arc<Mutex<Inner>>,
}

/// A running stub; its base URL goes in `GEMINI_BASE_URL`.
#[derive(Debug, Clone)]
pub struct BulkStub {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl BulkStub {
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().map(|i| i.received.clone()).unwrap_or_default()
    }

    pub fn jobs(&self) -> Vec<StubJob> {
        self.inner.lock().map(|i| i.jobs.clone()).unwrap_or_default()
    }

    /// The uploaded files not deleted, by name.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.lock().map(|i| i.files.keys().cloned().collect()).unwrap_or_default();
        names.sort();
        names
    }
}

fn operation(job: &StubJob, state: &str, output: Option<Value>, error: Option<Value>) -> Value {
    let mut metadata = json!({
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "model": "models/gemini-2.5-flash-image",
        "displayName": job.display_name,
        "name": job.name,
        "createTime": "2026-11-28T14:02:00.000000Z",
        "updateTime": "2026-11-28T14:02:00.000000Z",
        "state": state,
        "batchStats": {"requestCount": job.requests.len().to_string()},
    });
    if let Some(output) = output {
        metadata["output"] = output;
    }
    // Google echoes a file job's input (`inputConfig` is a field of the batch resource).
    if let Some(file) = &job.input_file {
        metadata["inputConfig"] = json!({"fileName": file});
    }
    let mut op = json!({"name": job.name, "metadata": metadata});
    if state != "BATCH_STATE_PENDING" && state != "BATCH_STATE_RUNNING" {
        op["done"] = json!(true);
    }
    if let Some(error) = error {
        op["error"] = error;
    }
    op
}

fn prompt_of(request: &Value) -> String {
    request["contents"][0]["parts"][0]["text"].as_str().unwrap_or_default().to_owned()
}

/// One request's answer: an image (thought part first, as Gemini answers), or its error.
fn answer(shared: &Shared, n: usize, prompt: &str) -> Result<Value, Value> {
    if !shared.config.fail_marker.is_empty() && prompt.contains(&shared.config.fail_marker) {
        return Err(
            json!({"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"}),
        );
    }
    let image = base64::engine::general_purpose::STANDARD.encode(crate::png((n % 250) as u8 + 1));
    Ok(json!({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "planning the composition", "thought": true},
        {"inlineData": {"mimeType": "image/png", "data": image}}
    ]}, "finishReason": "STOP", "index": 0}], "modelVersion": "gemini-2.5-flash-image",
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302}}))
}

fn record(shared: &Shared, method: &str, path: String, headers: &HeaderMap, body: Value) {
    if let Ok(mut inner) = shared.inner.lock() {
        inner.received.push(Received { method: method.to_owned(), path, headers: headers.clone(), body });
    }
}

fn bad(message: &str) -> Response {
    let body = json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

async fn create(State(shared): State<Shared>, Path(call): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&shared, "POST", format!("/v1beta/models/{call}"), &headers, parsed.clone());
    if !call.ends_with(":batchGenerateContent") {
        return bad("this stub serves batchGenerateContent only");
    }
    let batch = &parsed["batch"];
    let marker = &shared.config.fail_marker;
    if !marker.is_empty() && batch["displayName"].as_str().is_some_and(|name| name.contains(marker.as_str())) {
        return bad("the batch was refused (its display name carries the stub's fail marker)");
    }
    let mut inner = match shared.inner.lock() {
        Ok(i) => i,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let input_file = batch["inputConfig"]["fileName"].as_str().map(str::to_owned);
    let (requests, from_file) = if let Some(file) = input_file.as_deref() {
        let Some(text) = inner.files.get(file) else { return bad("no such file") };
        let lines: Vec<(String, String)> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|l| (l["key"].as_str().unwrap_or_default().to_owned(), prompt_of(&l["request"])))
            .collect();
        (lines, true)
    } else if let Some(list) = batch["inputConfig"]["requests"]["requests"].as_array() {
        let items = list
            .iter()
            .map(|r| (r["metadata"]["key"].as_str().unwrap_or_default().to_owned(), prompt_of(&r["request"])))
            .collect();
        (items, false)
    } else {
        return bad("the batch has no inputConfig");
    };
    let job = StubJob {
        name: format!("batches/stub{}", inner.jobs.len() + 1),
        display_name: batch["displayName"].as_str().unwrap_or_default().to_owned(),
        requests,
        from_file,
        input_file,
        polls: 0,
        cancelled: false,
        results_file: None,
    };
    let answer = operation(&job, "BATCH_STATE_PENDING", None, None);
    inner.jobs.push(job);
    axum::Json(answer).into_response()
}

/// Jobs a list page holds at most, whatever `pageSize` asks (Google too may return fewer).
pub const LIST_PAGE: usize = 2;

/// A job's state as the list shows it (without counting a poll, and without its results).
fn listed_state(config: &BulkStubConfig, job: &StubJob) -> &'static str {
    let ended = match config.outcome {
        BulkOutcome::Succeed => "BATCH_STATE_SUCCEEDED",
        BulkOutcome::Expire => "BATCH_STATE_EXPIRED",
        BulkOutcome::Fail => "BATCH_STATE_FAILED",
    };
    if job.cancelled {
        "BATCH_STATE_CANCELLED"
    } else if job.polls < config.polls_before_end / 2 {
        "BATCH_STATE_PENDING"
    } else if job.polls < config.polls_before_end {
        "BATCH_STATE_RUNNING"
    } else {
        ended
    }
}

async fn batch_list(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    record(&shared, "GET", path, &headers, Value::Null);
    let asked = query.get("pageSize").and_then(|n| n.parse::<usize>().ok()).unwrap_or(LIST_PAGE);
    let size = asked.clamp(1, LIST_PAGE);
    let Ok(start) = query.get("pageToken").map_or(Ok(0), |t| t.parse::<usize>()) else {
        return bad("invalid page token");
    };
    let jobs = shared.inner.lock().map(|i| i.jobs.clone()).unwrap_or_default();
    let page: Vec<Value> = jobs
        .iter()
        .skip(start)
        .take(size)
        .map(|job| operation(job, listed_state(&shared.config, job), None, None))
        .collect();
    let mut body = json!({"operations": page});
    if start + size < jobs.len() {
        body["nextPageToken"] = json!((start + size).to_string());
    }
    axum::Json(body).into_response()
}

async fn batch_get(State(shared): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    record(&shared, "GET", format!("/v1beta/batches/{id}"), &headers, Value::Null);
    let name = format!("batches/{id}");
    let mut inner = match shared.inner.lock() {
        Ok(i) => i,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let Some(at) = inner.jobs.iter().position(|j| j.name == name) else {
        let body = json!({"error": {"code": 404, "message": "Batch not found.", "status": "NOT_FOUND"}});
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    };
    inner.jobs[at].polls += 1;
    let config = &shared.config;
    let succeeded = !inner.jobs[at].cancelled
        && inner.jobs[at].polls > config.polls_before_end
        && config.outcome == BulkOutcome::Succeed;
    if succeeded && (inner.jobs[at].from_file || config.results_as_file) && inner.jobs[at].results_file.is_none() {
        // Google writes the results file once, when the job succeeds; it stays until deleted.
        let file = format!("files/{id}-output");
        let text = results_file_text(&shared, &inner.jobs[at]);
        inner.files.insert(file.clone(), text);
        inner.jobs[at].results_file = Some(file);
    }
    let job = inner.jobs[at].clone();
    drop(inner);
    let half = config.polls_before_end / 2;
    let body = if job.cancelled {
        operation(&job, "BATCH_STATE_CANCELLED", None, None)
    } else if job.polls <= half {
        operation(&job, "BATCH_STATE_PENDING", None, None)
    } else if job.polls <= config.polls_before_end {
        operation(&job, "BATCH_STATE_RUNNING", None, None)
    } else {
        match config.outcome {
            BulkOutcome::Expire => operation(&job, "BATCH_STATE_EXPIRED", None, None),
            BulkOutcome::Fail => operation(
                &job,
                "BATCH_STATE_FAILED",
                None,
                Some(json!({"code": 13, "message": "Internal error encountered."})),
            ),
            // Named even once deleted, as Google keeps naming it in the batch's output.
            BulkOutcome::Succeed if job.results_file.is_some() => {
                operation(&job, "BATCH_STATE_SUCCEEDED", Some(json!({"responsesFile": job.results_file})), None)
            }
            BulkOutcome::Succeed => {
                let items: Vec<Value> = job
                    .requests
                    .iter()
                    .enumerate()
                    .map(|(n, (key, prompt))| match answer(&shared, n, prompt) {
                        Ok(response) => json!({"response": response, "metadata": {"key": key}}),
                        Err(error) => json!({"error": error, "metadata": {"key": key}}),
                    })
                    .collect();
                operation(
                    &job,
                    "BATCH_STATE_SUCCEEDED",
                    Some(json!({"inlinedResponses": {"inlinedResponses": items}})),
                    None,
                )
            }
        }
    };
    axum::Json(body).into_response()
}

/// A job's results as Google writes them to a file: one `{key, response|error}` line per request.
fn results_file_text(shared: &Shared, job: &StubJob) -> String {
    let mut out = String::new();
    for (n, (key, prompt)) in job.requests.iter().enumerate() {
        let line = match answer(shared, n, prompt) {
            Ok(response) => json!({"key": key, "response": response}),
            Err(error) => json!({"key": key, "error": error}),
        };
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

async fn batch_cancel(State(shared): State<Shared>, Path(call): Path<String>, headers: HeaderMap) -> Response {
    record(&shared, "POST", format!("/v1beta/batches/{call}"), &headers, Value::Null);
    let Some(id) = call.strip_suffix(":cancel") else { return bad("unknown method") };
    let name = format!("batches/{id}");
    if let Ok(mut inner) = shared.inner.lock()
        && let Some(job) = inner.jobs.iter_mut().find(|j| j.name == name)
    {
        job.cancelled = true;
        return axum::Json(json!({})).into_response();
    }
    bad("no such batch")
}

async fn upload(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = match query.get("upload_id") {
        Some(id) => format!("/upload/v1beta/files?upload_id={id}"),
        None => "/upload/v1beta/files".to_owned(),
    };
    let Ok(mut inner) = shared.inner.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    match query.get("upload_id") {
        None => {
            let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            inner.received.push(Received { method: "POST".into(), path, headers: headers.clone(), body: parsed });
            inner.uploads += 1;
            let id = inner.uploads;
            let url = format!("{}/upload/v1beta/files?upload_id=up{id}", shared.base);
            (StatusCode::OK, [("x-goog-upload-url", url), ("x-goog-upload-status", "active".to_owned())])
                .into_response()
        }
        Some(id) => {
            let text = String::from_utf8_lossy(&body).into_owned();
            inner.received.push(Received {
                method: "POST".into(),
                path,
                headers: headers.clone(),
                body: Value::String(text.clone()),
            });
            let name = format!("files/input-{id}");
            inner.files.insert(name.clone(), text);
            let file = json!({"file": {"name": name, "mimeType": "application/jsonl", "sizeBytes": body.len().to_string(), "state": "ACTIVE"}});
            (StatusCode::OK, [("x-goog-upload-status", "final")], axum::Json(file)).into_response()
        }
    }
}

async fn download(
    State(shared): State<Shared>,
    Path(call): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    record(&shared, "GET", path, &headers, Value::Null);
    let Some(id) = call.strip_suffix(":download") else { return bad("unknown method") };
    let name = format!("files/{id}");
    match shared.inner.lock().ok().and_then(|i| i.files.get(&name).cloned()) {
        Some(text) => (StatusCode::OK, [("content-type", "application/octet-stream")], text).into_response(),
        None => {
            let body =
                json!({"error": {"code": 404, "message": format!("File {id} not found."), "status": "NOT_FOUND"}});
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
        }
    }
}

/// `DELETE /v1beta/files/{id}`: forgets the file; 404 when it has none of that name, as Google.
async fn delete_file(State(shared): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    record(&shared, "DELETE", format!("/v1beta/files/{id}"), &headers, Value::Null);
    let name = format!("files/{id}");
    let removed = shared.inner.lock().map(|mut i| i.files.remove(&name).is_some()).unwrap_or(false);
    if removed {
        axum::Json(json!({})).into_response()
    } else {
        let body = json!({"error": {"code": 404, "message": format!("File {id} not found."), "status": "NOT_FOUND"}});
        (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
    }
}

/// Starts the stub on loopback.
pub async fn serve_bulk_gemini(config: BulkStubConfig) -> anyhow::Result<BulkStub> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let inner = Arc::new(Mutex::new(Inner::default()));
    let shared = Shared { config, base: base.clone(), inner: inner.clone() };
    let app = Router::new()
        .route("/v1beta/models/{call}", post(create))
        .route("/v1beta/batches", get(batch_list))
        .route("/v1beta/batches/{id}", get(batch_get).post(batch_cancel))
        .route("/upload/v1beta/files", post(upload))
        .route("/v1beta/files/{call}", get(download).delete(delete_file))
        .with_state(shared);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(BulkStub { base, inner })
}
