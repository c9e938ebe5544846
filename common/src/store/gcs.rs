//! The GCS adapter of the [`ObjectStore`] port (`ASSETGEN_STORE=gs://BUCKET`).
//!
//! Object reads and writes go through the official `google-cloud-storage` client (JSON API media
//! download, single-shot multipart upload with `ifGenerationMatch`, CRC32C checked both ways).
//! Listing and deleting are plain calls to the GCS JSON API over `reqwest`: the crate offers them
//! only in its gRPC control client, which fake-gcs-server (the emulator the tests use) does not
//! speak. In the cloud those calls carry a bearer token from the same Application Default
//! Credentials the crate uses; against an emulator (`STORAGE_EMULATOR_HOST`) no credentials at all.
//!
//! Every call has a per-attempt time-out and a small, bounded retry loop of our own (the crate's
//! retries are switched off: its default policy may keep retrying for five minutes and applies no
//! per-attempt time-out to reads and writes). An attempt is retried only when repeating it is
//! safe: reads, lists, writes and deletes that carry a generation precondition, or any call whose
//! request never left (connection refused).
//!
//! A conditional write whose answer is lost (time-out, dropped connection) may still have landed;
//! its retry then meets its own write and fails its precondition. Each write carries a unique
//! write id in its custom metadata, so such a retry checks whether the object now holds that id
//! and, if it does, reports the write as done instead of a lost race — otherwise a
//! compare-and-swap loop would apply its update twice.

use super::{Generation, Object, ObjectMeta, ObjectStore, Precondition, StoreError, check_name};
use async_trait::async_trait;
use bytes::Bytes;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_storage::client::Storage;
use google_cloud_storage::read_resume_policy::NeverResume;
use serde::Deserialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The public GCS endpoint (JSON API).
const GOOGLE_ENDPOINT: &str = "https://storage.googleapis.com";
/// Custom metadata key holding the id of the write that made the object's current generation.
const WRITE_ID_KEY: &str = "assetgen-write-id";
/// Custom metadata key holding the content type the object was written with. GCS keeps the one
/// in the upload's metadata; fake-gcs-server (1.54) replaces it with the media part's, which the
/// crate leaves empty, and then sniffs one. Reads prefer this copy, so both behave the same.
const CONTENT_TYPE_KEY: &str = "assetgen-content-type";
/// Objects up to this size are written in one request (assetgen's largest are images of a few
/// MiB); larger ones use a resumable upload.
const SINGLE_SHOT_LIMIT: usize = 32 * 1024 * 1024;
/// How long after its generation (a timestamp in microseconds, taken as the write starts
/// committing) a write may still be missing from a listing, clocks' skew included. GCS commits a
/// small write in well under a second; a relay cursor claims only generations older than this.
pub const VISIBILITY_SETTLE: Duration = Duration::from_secs(3);
/// Names per list page by default (the JSON API's maximum).
const LIST_PAGE_SIZE: u32 = 1000;

/// How long each attempt may take and how often a failed one is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcsRetry {
    /// Time-out of one attempt, from connecting to the last byte of the answer.
    pub attempt_timeout: Duration,
    /// Attempts per call, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; it doubles for each further one (with jitter).
    pub first_backoff: Duration,
}

impl Default for GcsRetry {
    /// 10 s per attempt, 3 attempts, 250 ms then 500 ms between them: a call gives up after at
    /// most ~31 s.
    fn default() -> Self {
        Self { attempt_timeout: Duration::from_secs(10), attempts: 3, first_backoff: Duration::from_millis(250) }
    }
}

/// An [`ObjectStore`] on a GCS bucket (or on an emulator speaking its JSON API). Cheap to clone:
/// clones share their connections and credentials.
#[derive(Clone)]
pub struct GcsStore {
    inner: Arc<Inner>,
    retry: GcsRetry,
    list_page_size: u32,
    /// Signs V4 URLs for browsers (ADC's signer: a key file signs locally, else IAM signBlob).
    signer: Option<google_cloud_auth::signer::Signer>,
}

struct Inner {
    /// The bucket's plain name, as in `gs://NAME`.
    bucket: String,
    /// The bucket as the crate names it: `projects/_/buckets/NAME`.
    bucket_path: String,
    /// JSON API base URL, no trailing slash.
    endpoint: String,
    emulator: bool,
    storage: Storage,
    http: reqwest::Client,
    /// Credentials for the JSON API calls; `None` against an emulator.
    credentials: Option<Credentials>,
}

impl std::fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately not the credentials.
        f.debug_struct("GcsStore")
            .field("bucket", &self.inner.bucket)
            .field("endpoint", &self.inner.endpoint)
            .field("emulator", &self.inner.emulator)
            .field("retry", &self.retry)
            .field("list_page_size", &self.list_page_size)
            .finish()
    }
}

impl GcsStore {
    /// Opens `bucket` (its plain name, as in `gs://NAME`). With `emulator_host` (the value of
    /// `STORAGE_EMULATOR_HOST`, e.g. `http://127.0.0.1:4443` or `localhost:4443`) every call goes
    /// there, unauthenticated; otherwise to GCS with Application Default Credentials. Nothing is
    /// sent yet: a wrong bucket or missing permission shows at the first call.
    pub async fn connect(bucket: &str, emulator_host: Option<&str>) -> Result<Self, StoreError> {
        check_bucket(bucket)?;
        let emulator = emulator_host.map(str::trim).filter(|h| !h.is_empty());
        let (endpoint, credentials_for_crate, credentials) = match emulator {
            Some(host) => {
                let endpoint = if host.contains("://") { host.to_owned() } else { format!("http://{host}") };
                let anonymous = google_cloud_auth::credentials::anonymous::Builder::new().build();
                (endpoint.trim_end_matches('/').to_owned(), anonymous, None)
            }
            None => {
                let adc = google_cloud_auth::credentials::Builder::default().build().map_err(|e| {
                    StoreError::Unavailable(format!(
                        "no Google credentials for gs://{bucket} (Application Default Credentials): {e}"
                    ))
                })?;
                (GOOGLE_ENDPOINT.to_owned(), adc.clone(), Some(adc))
            }
        };
        let mut builder = Storage::builder()
            .with_credentials(credentials_for_crate)
            .with_retry_policy(NeverRetry)
            .with_read_resume_policy(NeverResume)
            .with_resumable_upload_threshold(SINGLE_SHOT_LIMIT);
        if emulator.is_some() {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let storage = builder
            .build()
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot set up the GCS client for gs://{bucket}: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot set up an HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                bucket: bucket.to_owned(),
                bucket_path: format!("projects/_/buckets/{bucket}"),
                endpoint,
                emulator: emulator.is_some(),
                storage,
                http,
                credentials,
            }),
            retry: GcsRetry::default(),
            list_page_size: LIST_PAGE_SIZE,
            signer: match emulator {
                // An emulator needs no credentials: sign only with a key file given explicitly
                // (tests signing for fake-gcs-server).
                Some(_) if std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_none() => None,
                _ => match google_cloud_auth::credentials::Builder::default().build_signer() {
                    Ok(signer) => Some(signer),
                    Err(e) => {
                        tracing::warn!(error = %e, "no URL signer: image links will be served through the relay");
                        None
                    }
                },
            },
        })
    }

    /// The same store signing URLs with `signer` (e.g. a service-account key's).
    pub fn with_signer(mut self, signer: google_cloud_auth::signer::Signer) -> Self {
        self.signer = Some(signer);
        self
    }

    /// The same store with other time-outs and retries.
    pub fn with_retry(mut self, retry: GcsRetry) -> Self {
        self.retry = GcsRetry { attempts: retry.attempts.max(1), ..retry };
        self
    }

    /// The same store listing at most `size` names per request (1 to 1000; 1000 by default).
    pub fn with_list_page_size(mut self, size: u32) -> Self {
        self.list_page_size = size.clamp(1, LIST_PAGE_SIZE);
        self
    }

    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// Runs `attempt` under the retry policy. `attempt` is told whether an earlier attempt may
    /// have reached the server and been carried out although its answer was lost.
    async fn run<T, F, Fut>(&self, what: &str, idempotent: bool, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut(bool) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let GcsRetry { attempt_timeout, attempts, first_backoff } = self.retry;
        let mut maybe_done = false;
        let mut n = 0;
        loop {
            n += 1;
            let outcome = match tokio::time::timeout(attempt_timeout, attempt(maybe_done)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::Transient {
                    error: StoreError::Unavailable(format!("{what}: no answer within {attempt_timeout:?}")),
                    sent: true,
                }),
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Transient { error, sent }) => {
                    maybe_done |= sent;
                    if n >= attempts || (sent && !idempotent) {
                        tracing::warn!(what, attempts = n, %error, "GCS call failed");
                        return Err(error);
                    }
                    let backoff = jittered(first_backoff.saturating_mul(1 << (n - 1).min(16)));
                    tracing::debug!(what, attempt = n, ?backoff, %error, "GCS call failed; retrying");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// The request headers that authenticate a JSON API call (none against an emulator).
    async fn auth_headers(&self) -> Result<reqwest::header::HeaderMap, Failure> {
        let Some(credentials) = &self.inner.credentials else { return Ok(reqwest::header::HeaderMap::new()) };
        match credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(data),
            Ok(CacheableResource::NotModified) => {
                Err(Failure::Final(StoreError::Unavailable("Google credentials returned no headers".into())))
            }
            Err(e) => {
                let error = StoreError::Unavailable(format!("cannot get a Google access token: {e}"));
                if e.is_transient() {
                    Err(Failure::Transient { error, sent: false })
                } else {
                    Err(Failure::Final(error))
                }
            }
        }
    }

    fn object_url(&self, name: &str) -> String {
        format!("{}/storage/v1/b/{}/o/{}", self.inner.endpoint, self.inner.bucket, encode_path_segment(name))
    }

    /// Sends one JSON API request and returns the body of a 2xx answer.
    async fn json_call(&self, request: reqwest::RequestBuilder, what: &str, name: &str) -> Result<Bytes, Failure> {
        let headers = self.auth_headers().await?;
        let response = request.headers(headers).send().await.map_err(|e| reqwest_failure(what, &e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| reqwest_failure(what, &e))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(status_failure(status.as_u16(), what, name, &body))
    }

    /// The object's current generation and write id, or `None` if it does not exist.
    async fn current(&self, name: &str) -> Result<Option<(Generation, Option<String>)>, Failure> {
        let request = self.inner.http.get(self.object_url(name)).query(&[("fields", "generation,metadata")]);
        match self.json_call(request, "read metadata of", name).await {
            Ok(body) => {
                let meta: JsonObjectMeta = serde_json::from_slice(&body).map_err(|e| {
                    Failure::Final(StoreError::Unavailable(format!("GCS sent unreadable metadata for {name}: {e}")))
                })?;
                let generation = parse_i64(&meta.generation, name)?;
                Ok(Some((generation, meta.metadata.and_then(|mut m| m.remove(WRITE_ID_KEY)))))
            }
            Err(Failure::Final(StoreError::NotFound(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get_once(&self, name: &str) -> Result<Object, Failure> {
        let mut response = self
            .inner
            .storage
            .read_object(&self.inner.bucket_path, name)
            .send()
            .await
            .map_err(|e| gax_failure("read", name, &e))?;
        let mut highlights = response.object();
        let mut body = Vec::with_capacity(usize::try_from(highlights.size).unwrap_or_default());
        while let Some(chunk) = response.next().await {
            body.extend_from_slice(&chunk.map_err(|e| gax_failure("read", name, &e))?);
        }
        let content_type = match highlights.metadata.remove(CONTENT_TYPE_KEY) {
            Some(written) if !written.is_empty() => written,
            _ if highlights.content_type.is_empty() => "application/octet-stream".to_owned(),
            _ => highlights.content_type,
        };
        Ok(Object {
            meta: ObjectMeta { name: name.to_owned(), generation: highlights.generation, size: body.len() as u64 },
            content_type,
            body: Bytes::from(body),
        })
    }

    async fn put_once(
        &self,
        name: &str,
        body: Bytes,
        content_type: &str,
        when: Precondition,
        write_id: &str,
        maybe_done: bool,
    ) -> Result<Generation, Failure> {
        // The checksum goes in the upload's metadata part, where GCS (and the emulator) check
        // it; the crate's default sends it in a trailing third part that emulators mis-parse.
        let crc32c = crc32c::crc32c(&body);
        let write = self
            .inner
            .storage
            .write_object(&self.inner.bucket_path, name, body)
            .with_known_crc32c(crc32c)
            .set_content_type(content_type)
            .set_metadata([(WRITE_ID_KEY, write_id), (CONTENT_TYPE_KEY, content_type)]);
        let write = match when {
            Precondition::None => write,
            Precondition::DoesNotExist => write.set_if_generation_match(0),
            Precondition::GenerationMatch(g) => write.set_if_generation_match(g),
        };
        match write.send_unbuffered().await {
            Ok(object) => Ok(object.generation),
            Err(e) => match gax_failure("write", name, &e) {
                // An earlier attempt of this very write may be what the precondition now meets.
                Failure::Final(StoreError::PreconditionFailed(_)) if maybe_done => match self.current(name).await? {
                    Some((generation, Some(id))) if id == write_id => Ok(generation),
                    _ => Err(Failure::Final(StoreError::PreconditionFailed(name.to_owned()))),
                },
                failure => Err(failure),
            },
        }
    }

    /// One page of the listing: its objects and the token of the next page, if any.
    async fn list_page(
        &self,
        prefix: &str,
        page_token: Option<&str>,
    ) -> Result<(Vec<ObjectMeta>, Option<String>), Failure> {
        let url = format!("{}/storage/v1/b/{}/o", self.inner.endpoint, self.inner.bucket);
        let page_size = self.list_page_size.to_string();
        let mut query = vec![
            ("prefix", prefix),
            ("maxResults", page_size.as_str()),
            ("fields", "items(name,generation,size),nextPageToken"),
        ];
        if let Some(token) = page_token {
            query.push(("pageToken", token));
        }
        let body = self.json_call(self.inner.http.get(&url).query(&query), "list", prefix).await?;
        let page: ListPage = serde_json::from_slice(&body).map_err(|e| {
            Failure::Final(StoreError::Unavailable(format!("GCS sent an unreadable list for {prefix:?}: {e}")))
        })?;
        let mut objects = Vec::with_capacity(page.items.len());
        for item in page.items {
            let generation = parse_i64(&item.generation, &item.name)?;
            let size = item.size.parse().map_err(|_| bad_number(&item.name, &item.size))?;
            objects.push(ObjectMeta { name: item.name, generation, size });
        }
        Ok((objects, page.next_page_token.filter(|t| !t.is_empty())))
    }

    async fn delete_once(&self, name: &str, when: Precondition, maybe_done: bool) -> Result<(), Failure> {
        let expected = match when {
            Precondition::None => None,
            // GCS checks `ifGenerationMatch` itself, atomically. The read before it answers the
            // same question for emulators that ignore preconditions on delete (fake-gcs-server:
            // 1.54, and its main branch in 2026-11), and tells a missing object (NotFound) from a
            // changed one. A failed read changed nothing, so it does not count as sent.
            Precondition::DoesNotExist | Precondition::GenerationMatch(_) => {
                match self.current(name).await.map_err(Failure::unsent)? {
                    None if maybe_done => return Ok(()),
                    None => return Err(Failure::Final(StoreError::NotFound(name.to_owned()))),
                    Some((current, _)) => match when {
                        Precondition::GenerationMatch(g) if g == current => Some(g),
                        _ => return Err(Failure::Final(StoreError::PreconditionFailed(name.to_owned()))),
                    },
                }
            }
        };
        let mut request = self.inner.http.delete(self.object_url(name));
        if let Some(g) = expected {
            request = request.query(&[("ifGenerationMatch", g.to_string())]);
        }
        match self.json_call(request, "delete", name).await {
            Ok(_) => Ok(()),
            // The lost answer of an earlier attempt was a success.
            Err(Failure::Final(StoreError::NotFound(_))) if maybe_done => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl ObjectStore for GcsStore {
    /// Generations are microseconds since the epoch: every write older than
    /// [`VISIBILITY_SETTLE`] is in a listing that starts now.
    fn settled_generation(&self) -> Option<Generation> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
        Some(Generation::try_from(now).unwrap_or(Generation::MAX) - VISIBILITY_SETTLE.as_micros() as Generation)
    }

    async fn get(&self, name: &str) -> Result<Object, StoreError> {
        check_name(name)?;
        self.run(&format!("read gs://{}/{name}", self.inner.bucket), true, |_| self.get_once(name)).await
    }

    async fn put(
        &self,
        name: &str,
        body: Bytes,
        content_type: &str,
        when: Precondition,
    ) -> Result<Generation, StoreError> {
        check_name(name)?;
        let write_id = uuid::Uuid::now_v7().to_string();
        // An unconditional write is not repeated once sent: it could overwrite a later write.
        let idempotent = when != Precondition::None;
        self.run(&format!("write gs://{}/{name}", self.inner.bucket), idempotent, |maybe_done| {
            self.put_once(name, body.clone(), content_type, when, &write_id, maybe_done)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // Each page is one call, with its own time-out and retries.
        let what = format!("list gs://{}/{prefix}", self.inner.bucket);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (objects, next) = self.run(&what, true, |_| self.list_page(prefix, token.as_deref())).await?;
            out.extend(objects);
            match next {
                Some(next) if token.as_ref() != Some(&next) => token = Some(next),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn delete(&self, name: &str, when: Precondition) -> Result<(), StoreError> {
        check_name(name)?;
        // Without a generation a repeated delete could remove a newer object.
        let idempotent = when != Precondition::None;
        self.run(&format!("delete gs://{}/{name}", self.inner.bucket), idempotent, |maybe_done| {
            self.delete_once(name, when, maybe_done)
        })
        .await
    }

    async fn signed_url(&self, name: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        check_name(name)?;
        let Some(signer) = &self.signer else { return Ok(None) };
        let mut builder =
            google_cloud_storage::builder::storage::SignedUrlBuilder::for_object(self.inner.bucket_path.clone(), name)
                .with_method(http::Method::GET)
                .with_expiration(ttl);
        if self.inner.emulator {
            builder = builder.with_endpoint(self.inner.endpoint.clone());
        }
        let url = tokio::time::timeout(self.retry.attempt_timeout, builder.sign_with(signer))
            .await
            .map_err(|_| StoreError::Unavailable(format!("signing a URL for {name} timed out")))?
            .map_err(|e| StoreError::Unavailable(format!("cannot sign a URL for {name}: {e}")))?;
        Ok(Some(url))
    }
}

/// Why one attempt failed.
#[derive(Debug)]
enum Failure {
    /// Trying again cannot help (or it is the answer: not found, precondition failed).
    Final(StoreError),
    /// Trying again may help; `sent` when the request may have reached the server.
    Transient { error: StoreError, sent: bool },
}

impl Failure {
    /// The failure of a request that cannot have changed anything (a read).
    fn unsent(self) -> Self {
        match self {
            Self::Transient { error, .. } => Self::Transient { error, sent: false },
            other => other,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<ListItem>,
    next_page_token: Option<String>,
}

/// The JSON API sends 64-bit numbers as strings.
#[derive(Deserialize)]
struct ListItem {
    name: String,
    generation: String,
    size: String,
}

#[derive(Deserialize)]
struct JsonObjectMeta {
    generation: String,
    metadata: Option<std::collections::HashMap<String, String>>,
}

/// Bucket names: 3–222 characters of lowercase letters, digits, `-`, `_` and `.`.
fn check_bucket(bucket: &str) -> Result<(), StoreError> {
    let ok = (3..=222).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok { Ok(()) } else { Err(StoreError::InvalidName(format!("gs://{bucket}"))) }
}

/// Percent-encodes an object name as one URL path segment (everything but RFC 3986 unreserved
/// characters; `/` too).
fn encode_path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn parse_i64(value: &str, name: &str) -> Result<i64, Failure> {
    value.parse().map_err(|_| bad_number(name, value))
}

fn bad_number(name: &str, value: &str) -> Failure {
    Failure::Final(StoreError::Unavailable(format!("GCS sent a malformed number {value:?} for {name}")))
}

/// Up to `base`, at least half of it: spreads retries of concurrent callers apart.
fn jittered(base: Duration) -> Duration {
    let half = base / 2;
    half + half.mul_f64(rand::random::<f64>())
}

fn status_failure(status: u16, what: &str, name: &str, body: &[u8]) -> Failure {
    match status {
        404 => Failure::Final(StoreError::NotFound(name.to_owned())),
        412 => Failure::Final(StoreError::PreconditionFailed(name.to_owned())),
        408 | 429 | 500..=599 => Failure::Transient {
            error: StoreError::Unavailable(format!("GCS answered {status} to {what} {name}{}", detail(body))),
            sent: true,
        },
        _ => Failure::Final(StoreError::Unavailable(format!("GCS refused to {what} {name}: {status}{}", detail(body)))),
    }
}

/// The error message of a JSON API error body, if it has one.
fn detail(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: ErrorDetail,
    }
    #[derive(Deserialize)]
    struct ErrorDetail {
        message: String,
    }
    serde_json::from_slice::<ErrorBody>(body).map(|b| format!(" ({})", b.error.message)).unwrap_or_default()
}

fn reqwest_failure(what: &str, e: &reqwest::Error) -> Failure {
    // reqwest's messages name the URL (bucket and object) but never the request headers.
    let error = StoreError::Unavailable(format!("cannot {what} in GCS: {e}"));
    Failure::Transient { error, sent: !e.is_connect() }
}

fn gax_failure(what: &str, name: &str, e: &google_cloud_storage::Error) -> Failure {
    if let Some(status) = e.http_status_code() {
        let body = e.http_payload().map(|b| b.as_ref()).unwrap_or_default();
        return status_failure(status, what, name, body);
    }
    if let Some(status) = e.status() {
        use google_cloud_gax::error::rpc::Code;
        match status.code {
            Code::NotFound => return Failure::Final(StoreError::NotFound(name.to_owned())),
            Code::FailedPrecondition => return Failure::Final(StoreError::PreconditionFailed(name.to_owned())),
            _ => {}
        }
    }
    let error = StoreError::Unavailable(format!("cannot {what} {name} in GCS: {e}"));
    if e.is_connect() {
        Failure::Transient { error, sent: false }
    } else if e.is_authentication() {
        // The request was not sent: no token. A metadata-server hiccup is worth another try.
        let source = std::error::Error::source(e);
        let transient = source
            .and_then(|s| s.downcast_ref::<google_cloud_gax::error::CredentialsError>())
            .is_some_and(google_cloud_gax::error::CredentialsError::is_transient);
        if transient { Failure::Transient { error, sent: false } } else { Failure::Final(error) }
    } else if e.is_timeout() || e.is_io() || e.status().is_some() {
        Failure::Transient { error, sent: true }
    } else {
        Failure::Final(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_as_one_path_segment() {
        assert_eq!(encode_path_segment("batches/a b/0001.json"), "batches%2Fa%20b%2F0001.json");
        assert_eq!(encode_path_segment("x+y?z#w%~é"), "x%2By%3Fz%23w%25~%C3%A9");
    }

    #[test]
    fn bucket_names_are_checked() {
        assert!(check_bucket("assetgen-dev_1.x").is_ok());
        for bad in ["", "ab", "Upper", "a/b", "gs://x"] {
            assert!(matches!(check_bucket(bad), Err(StoreError::InvalidName(_))), "{bad:?}");
        }
    }

    #[test]
    fn statuses_map_to_store_errors() {
        let kind = |s| match status_failure(s, "read", "n", b"") {
            Failure::Final(StoreError::NotFound(_)) => "not found",
            Failure::Final(StoreError::PreconditionFailed(_)) => "precondition",
            Failure::Transient { error: StoreError::Unavailable(_), .. } => "retry",
            Failure::Final(StoreError::Unavailable(_)) => "final",
            _ => "other",
        };
        assert_eq!(kind(404), "not found");
        assert_eq!(kind(412), "precondition");
        for s in [408, 429, 500, 503] {
            assert_eq!(kind(s), "retry", "{s}");
        }
        for s in [400, 401, 403] {
            assert_eq!(kind(s), "final", "{s}");
        }
        let message = br#"{"error":{"code":403,"message":"caller lacks storage.objects.get"}}"#;
        let Failure::Final(StoreError::Unavailable(text)) = status_failure(403, "read", "a/b", message) else {
            panic!("403 is final")
        };
        assert!(text.contains("403") && text.contains("lacks storage.objects.get") && text.contains("a/b"), "{text}");
    }

    #[test]
    fn backoff_is_jittered_within_bounds() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(400));
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400), "{d:?}");
        }
    }
}
