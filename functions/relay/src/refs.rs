//! The reference library behind the `/refs` page: upload or fetch reference images, store them
//! content-addressed at `refs/{sha256}` (the same cache the row worker fills), list and serve them,
//! and keep the set of global references for the next batch at `refs/sets/global.json`.
//!
//! A reference's stable URL is `{base}/v1/refs/{sha256}?sig=…`: its bytes never change, so a link
//! pasted into the Sheet keeps meaning the same image, and its signature (`ASSETGEN_LINK_SECRET`)
//! lets a Sheet, a browser and the row worker's fetcher load it with no header.
//!
//! Every other route needs a signed-in user, or a reference manager token: the `/refs` page,
//! opened from the Sheet or the CLI (`/refs#token=…`, issued by submit's
//! `POST /v1/refs/manager-token`), acts as the user the token was issued to. Any allowed user may
//! list, add and set the global references, as with a Google ID token.

use crate::RelayState;
use crate::signed_redirect::signed_redirect;
use assetgen_common::batch_view::store_problem;
use assetgen_common::domain::{RefScheme, RefUrl, RefUrlError, RefUrlPolicy};
use assetgen_common::layout;
use assetgen_common::problem::{ErrorCode, FieldError, Problem};
use assetgen_common::problem_responses::{SignedInProblems, SignedLinkProblems};
use assetgen_common::refs::fetch::{FetchError, RefFetcher, sniff_image_type};
use assetgen_common::request::{base_url, read_body};
use assetgen_common::store::{
    Generation, Object, ObjectMeta, ObjectStore, Precondition, StoreError, read_json, update_json, write_json,
};
use async_trait::async_trait;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use utoipa::ToSchema;

/// Largest reference image accepted, as the row worker's fetch cap.
pub const MAX_REF_BYTES: usize = 8 * 1024 * 1024;
/// Room for a multipart form's boundaries and part headers around the image.
const MULTIPART_OVERHEAD: usize = 64 * 1024;
/// Largest JSON body of the fetch and set endpoints.
const MAX_JSON_BYTES: usize = 64 * 1024;
/// References listed at most, newest first.
pub const MAX_LISTED: usize = 500;
/// Distinct global references a set may hold (the per-row cap after merging).
pub const MAX_SET_REFS: usize = 6;
/// Where the global set lives.
pub const GLOBAL_SET: &str = "refs/sets/global.json";

/// A reference as stored: what an upload or a fetch answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredRef {
    /// Hex SHA-256 of the bytes: the reference's name.
    pub sha256: String,
    /// Stable URL of the reference, to paste into the Sheet.
    pub url: String,
    pub bytes: u64,
    #[schema(example = "image/png")]
    pub mime_type: String,
    /// The same bytes were already in the library.
    pub duplicate: bool,
    /// For a fetched reference: the URL it was fetched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
}

/// One entry of `GET /v1/refs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RefSummary {
    pub sha256: String,
    pub url: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RefList {
    /// Newest first.
    pub refs: Vec<RefSummary>,
    /// More references exist than were listed.
    pub truncated: bool,
}

/// `POST /v1/refs/fetch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchRefRequest {
    /// Its pattern is the deployment's (`wire_schema::state_deployment`).
    #[schema(example = "https://example.com/brand/palette.png")]
    pub url: String,
}

/// A named set of references; `global` is added to every row of the next batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RefSet {
    pub name: String,
    /// Reference URLs, in the order they are merged after a row's own.
    pub refs: Vec<String>,
    /// Bumped by one on every replace (compare-and-swap: no replace is lost); 0 before the first.
    pub revision: u64,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<time::OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// `PUT /v1/refs/sets/global`: the new content of the set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefSetRequest {
    #[schema(schema_with = assetgen_common::wire_schema::set_refs)]
    pub refs: Vec<String>,
}

/// A reference link: `{base}/v1/refs/{sha256}?sig=…`, which needs no header (a Sheet cell, the row
/// worker's fetcher), never expires and opens this one reference.
fn stable_url(state: &RelayState, headers: &HeaderMap, sha256: &str) -> String {
    let url = format!("{}/v1/refs/{sha256}", base_url(state.public_url.as_ref(), headers));
    state.access.links.link(&url, &layout::reference(sha256))
}

/// Which reference URLs this deployment accepts in a set or a fetch: those a batch would accept,
/// never a local file.
fn url_policy(state: &RelayState) -> RefUrlPolicy {
    RefUrlPolicy { allow_private: state.ref_fetch.allow_private, allow_local_files: false }
}

/// Stores `bytes` at `refs/{sha256}` create-only; `true` when they were there already.
async fn store_ref(store: &dyn ObjectStore, sha256: &str, mime_type: &str, bytes: Bytes) -> Result<bool, Problem> {
    match store.put(&layout::reference(sha256), bytes, mime_type, Precondition::DoesNotExist).await {
        Ok(_) => Ok(false),
        // Content-addressed: whatever is there holds these very bytes.
        Err(StoreError::PreconditionFailed(_)) => Ok(true),
        Err(e) => Err(store_problem(e)),
    }
}

fn too_large() -> Problem {
    let mut p = Problem::new(ErrorCode::RefTooLarge, format!("the image is larger than {MAX_REF_BYTES} bytes"));
    p.status = StatusCode::PAYLOAD_TOO_LARGE.as_u16();
    p
}

fn not_image(detail: impl Into<String>) -> Problem {
    Problem::new(ErrorCode::RefNotImage, detail)
}

/// Upload a reference image: the raw bytes as the body, or a `multipart/form-data` form whose
/// first file part is the image. Images only (PNG, JPEG, WebP, GIF by their content), 8 MiB at most.
#[utoipa::path(post, path = "/v1/refs", tag = "refs",
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The image bytes, or a multipart/form-data form with one file part"),
    responses(
        (status = 201, description = "Stored", body = StoredRef),
        (status = 200, description = "The same bytes were already stored", body = StoredRef),
        (status = 413, description = "Larger than 8 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an image", body = Problem, content_type = "application/problem+json"),
        SignedInProblems,
    ))]
pub async fn upload_ref(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    state.access.authenticate_refs(&headers).await?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let bytes = match multer::parse_boundary(content_type) {
        Ok(boundary) => {
            let form = read_body(body, MAX_REF_BYTES + MULTIPART_OVERHEAD).await.map_err(oversize)?;
            first_file(form, boundary).await?
        }
        Err(_) => read_body(body, MAX_REF_BYTES).await.map_err(oversize)?,
    };
    if bytes.len() > MAX_REF_BYTES {
        return Err(too_large());
    }
    if bytes.is_empty() {
        return Err(not_image("the upload is empty"));
    }
    let mime_type =
        sniff_image_type(&bytes).ok_or_else(|| not_image("the upload is not a PNG, JPEG, WebP or GIF image"))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let size = bytes.len() as u64;
    let duplicate = store_ref(state.store.as_ref(), &sha256, mime_type, bytes).await?;
    let url = stable_url(&state, &headers, &sha256);
    Ok(created(StoredRef { sha256, url, bytes: size, mime_type: mime_type.to_owned(), duplicate, source_url: None }))
}

/// The body limit of [`read_body`] is the image cap here: say so in the reference's terms.
fn oversize(p: Problem) -> Problem {
    if p.code == ErrorCode::PayloadTooLarge { too_large() } else { p }
}

fn created(stored: StoredRef) -> Response {
    let status = if stored.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    let location = HeaderValue::from_str(&stored.url).ok();
    let mut response = (status, Json(stored)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Fetch a reference from a URL (with the same address rules as a batch's references) and store it.
#[utoipa::path(post, path = "/v1/refs/fetch", tag = "refs",
    request_body = FetchRefRequest,
    responses(
        (status = 201, description = "Fetched and stored", body = StoredRef),
        (status = 200, description = "Fetched; the same bytes were already stored", body = StoredRef),
        (status = 403, description = "A private or internal address", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid URL, not reachable or not an image", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in, or the token is not valid", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage or sign-in checks unavailable: try again", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn fetch_ref(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    state.access.authenticate_refs(&headers).await?;
    let raw = read_body(body, MAX_JSON_BYTES).await?;
    let request: FetchRefRequest = serde_json::from_slice(&raw)
        .map_err(|e| Problem::new(ErrorCode::InvalidJson, format!("expected {{\"url\": \"https://…\"}}: {e}")))?;
    let url = RefUrl::check(&request.url, url_policy(&state)).map_err(ref_url_problem)?;
    if url.scheme() != RefScheme::Http {
        return Err(Problem::new(
            ErrorCode::InvalidRefUrl,
            "only https:// references are fetched here; a gs:// reference can go into the Sheet as it is",
        ));
    }
    // The fetcher would cache the bytes itself; this handler stores them, so that it can tell a
    // new reference from a duplicate and report a storage failure instead of hiding it.
    let fetcher = RefFetcher::new(state.ref_fetch.clone(), Arc::new(NoCache(state.store.clone())));
    let fetched = fetcher.fetch(&url).await.map_err(fetch_problem)?;
    let image = fetched.image;
    let size = image.bytes.len() as u64;
    let duplicate = store_ref(state.store.as_ref(), &image.sha256, &image.mime_type, image.bytes).await?;
    let url_out = stable_url(&state, &headers, &image.sha256);
    Ok(created(StoredRef {
        sha256: image.sha256,
        url: url_out,
        bytes: size,
        mime_type: image.mime_type,
        duplicate,
        source_url: Some(url.to_string()),
    }))
}

/// A malformed URL is 422; an internal host is this deployment's refusal, 403.
fn ref_url_problem(e: RefUrlError) -> Problem {
    match e {
        RefUrlError::Invalid(p) => Problem::new(ErrorCode::InvalidRefUrl, p.0),
        RefUrlError::Forbidden(p) => Problem::new(ErrorCode::RefForbiddenAddress, p.0),
    }
}

fn fetch_problem(e: FetchError) -> Problem {
    Problem::new(e.code(), e.to_string())
}

/// The store as the fetcher sees it here: reads pass through, the reference cache write does not.
#[derive(Debug)]
struct NoCache(Arc<dyn ObjectStore>);

#[async_trait]
impl ObjectStore for NoCache {
    async fn get(&self, name: &str) -> Result<Object, StoreError> {
        self.0.get(name).await
    }

    async fn put(&self, _: &str, _: Bytes, _: &str, _: Precondition) -> Result<Generation, StoreError> {
        Ok(0)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.0.list(prefix).await
    }

    async fn delete(&self, name: &str, when: Precondition) -> Result<(), StoreError> {
        self.0.delete(name, when).await
    }

    fn settled_generation(&self) -> Option<Generation> {
        self.0.settled_generation()
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The references in the library, newest first (at most 500).
#[utoipa::path(get, path = "/v1/refs", tag = "refs", responses((status = 200, body = RefList), SignedInProblems))]
pub async fn list_refs(State(state): State<Arc<RelayState>>, headers: HeaderMap) -> Result<Json<RefList>, Problem> {
    state.access.authenticate_refs(&headers).await?;
    let mut found: Vec<ObjectMeta> = state
        .store
        .list("refs/")
        .await
        .map_err(store_problem)?
        .into_iter()
        .filter(|m| m.name.strip_prefix("refs/").is_some_and(is_sha256_hex))
        .collect();
    // Generations grow with every write: the newest reference first.
    found.sort_by(|a, b| b.generation.cmp(&a.generation).then_with(|| a.name.cmp(&b.name)));
    let truncated = found.len() > MAX_LISTED;
    let refs = found
        .into_iter()
        .take(MAX_LISTED)
        .map(|m| {
            let sha256 = m.name.trim_start_matches("refs/").to_owned();
            RefSummary { url: stable_url(&state, &headers, &sha256), sha256, bytes: m.size }
        })
        .collect();
    Ok(Json(RefList { refs, truncated }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RefQuery {
    /// A reference link's signature: opens this one reference with no header.
    pub sig: Option<String>,
}

/// A reference's bytes, with their image type: to its link's holder (`?sig=`) or a signed-in
/// user. They never change, so they may be cached for long. Where the store signs URLs (GCS), a
/// signed link answers 302 to a fresh short signed URL instead.
#[utoipa::path(get, path = "/v1/refs/{sha256}", tag = "refs",
    params(("sha256" = String, Path, description = "Hex SHA-256 of the image"), RefQuery),
    responses(
        (status = 200, description = "The image", content_type = "image/*", body = Vec<u8>),
        (status = 302, description = "To a freshly signed V4 URL of the reference (GCS, signed links)"),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 404, description = "No such reference, or a signature for another one", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Signed in, but not allowed to do this", body = Problem, content_type = "application/problem+json"),
        SignedLinkProblems,
    ))]
pub async fn get_ref(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path(sha256): Path<String>,
    Query(query): Query<RefQuery>,
) -> Result<Response, Problem> {
    let sha256 = sha256.to_ascii_lowercase();
    let not_found = || Problem::new(ErrorCode::NotFound, "no reference with that SHA-256 is stored");
    if !is_sha256_hex(&sha256) {
        return Err(not_found());
    }
    let name = layout::reference(&sha256);
    match query.sig.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(sig) if state.access.links.verify(&name, sig) => {
            if let Some(redirect) = signed_redirect(state.store.as_ref(), &name).await? {
                return Ok(redirect);
            }
        }
        Some(_) => return Err(not_found()),
        None => {
            state.access.authenticate_refs(&headers).await?;
        }
    }
    let etag = format!("\"{sha256}\"");
    let cached = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').map(str::trim).any(|t| t == etag || t == "*" || t.strip_prefix("W/") == Some(etag.as_str()))
    });
    let object = match state.store.get(&name).await {
        Ok(object) => object,
        Err(StoreError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(store_problem(e)),
    };
    let mut response =
        if cached { StatusCode::NOT_MODIFIED.into_response() } else { object.body.clone().into_response() };
    // What the store says is only trusted when the bytes agree: never serve anything but an image.
    let content_type = sniff_image_type(&object.body).unwrap_or("application/octet-stream");
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    Ok(response)
}

fn empty_set() -> RefSet {
    RefSet { name: "global".to_owned(), refs: Vec::new(), revision: 0, updated_at: None, updated_by: None }
}

/// The global references: added to every row of the next batches, after the row's own.
#[utoipa::path(get, path = "/v1/refs/sets/global", tag = "refs", responses((status = 200, body = RefSet), SignedInProblems))]
pub async fn get_global_set(State(state): State<Arc<RelayState>>, headers: HeaderMap) -> Result<Json<RefSet>, Problem> {
    state.access.authenticate_refs(&headers).await?;
    match read_json::<RefSet>(state.store.as_ref(), GLOBAL_SET).await {
        Ok(set) => Ok(Json(set.value)),
        Err(StoreError::NotFound(_)) => Ok(Json(empty_set())),
        Err(e) => Err(store_problem(e)),
    }
}

/// Checks a set's URLs (as a batch would) and drops repeats; every bad URL is reported at once.
fn validate_set(request: &RefSetRequest, policy: RefUrlPolicy) -> Result<Vec<String>, Problem> {
    // Counted as sent, repeats included: what `maxItems` in `/openapi.json` says.
    if request.refs.len() > MAX_SET_REFS {
        return Err(Problem::new(
            ErrorCode::TooManyRefs,
            format!("the set has {} references; at most {MAX_SET_REFS}", request.refs.len()),
        ));
    }
    let mut refs: Vec<String> = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in request.refs.iter().enumerate() {
        match RefUrl::check(raw, policy) {
            Ok(url) if !refs.contains(&url.to_string()) => refs.push(url.to_string()),
            Ok(_) => {}
            Err(e) => {
                let code = match e {
                    RefUrlError::Invalid(_) => ErrorCode::InvalidRefUrl,
                    RefUrlError::Forbidden(_) => ErrorCode::RefForbiddenAddress,
                };
                let detail = assetgen_common::domain::ParseError::from(e).0;
                errors.push(FieldError { code, row: None, scene_id: None, field: format!("refs[{i}]"), detail });
            }
        }
    }
    if !errors.is_empty() {
        return Err(Problem::from_field_errors(errors));
    }
    Ok(refs)
}

/// Replace the global references. Created on first use; every replace is a compare-and-swap on
/// the stored set, so concurrent replaces each land (the last one wins) and the revision counts
/// them all.
#[utoipa::path(put, path = "/v1/refs/sets/global", tag = "refs",
    request_body = RefSetRequest,
    responses(
        (status = 200, description = "The set as stored", body = RefSet),
        (status = 422, description = "A URL is not valid, or too many", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        SignedInProblems,
    ))]
pub async fn put_global_set(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RefSet>, Problem> {
    let who = state.access.authenticate_refs(&headers).await?;
    let raw = read_body(body, MAX_JSON_BYTES).await?;
    let request: RefSetRequest = serde_json::from_slice(&raw)
        .map_err(|e| Problem::new(ErrorCode::InvalidJson, format!("expected {{\"refs\": [\"https://…\"]}}: {e}")))?;
    let refs = validate_set(&request, url_policy(&state))?;
    let next = |revision: u64| RefSet {
        name: "global".to_owned(),
        refs: refs.clone(),
        revision: revision + 1,
        updated_at: Some(time::OffsetDateTime::now_utc()),
        updated_by: Some(who.user.to_string()),
    };
    let store = state.store.as_ref();
    let first = next(0);
    match write_json(store, GLOBAL_SET, &first, Precondition::DoesNotExist).await {
        Ok(_) => return Ok(Json(first)),
        Err(StoreError::PreconditionFailed(_)) => {}
        Err(e) => return Err(store_problem(e)),
    }
    let stored = update_json(store, GLOBAL_SET, |current: &RefSet| Ok::<_, StoreError>(Some(next(current.revision))))
        .await
        .map_err(store_problem)?;
    Ok(Json(stored.value))
}

/// The first file field of a `multipart/form-data` body, parsed by `multer` (what axum's own
/// multipart support uses).
async fn first_file(form: bytes::Bytes, boundary: String) -> Result<bytes::Bytes, Problem> {
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(form) });
    let mut parts = multer::Multipart::new(stream, boundary);
    loop {
        match parts.next_field().await {
            Ok(Some(field)) if field.file_name().is_some() => {
                return field.bytes().await.map_err(|e| not_image(format!("the form's file could not be read: {e}")));
            }
            Ok(Some(_)) => continue,
            Ok(None) => return Err(not_image("the form has no file part (send the image as a file field)")),
            Err(e) => return Err(not_image(format!("the form is not valid multipart: {e}"))),
        }
    }
}
