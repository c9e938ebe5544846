//! Fetching one reference image (DESIGN.md "Reference fetch"): https (http only with a test flag),
//! `gs://` through the object store, `file://` for the local runner. Images only, size-capped,
//! retried on transient failures, and cached content-addressed under `refs/{sha256}`.
//!
//! A `gs://` reference is read with the service's own rights, so it may name only the deployment's
//! bucket, and in it only the reference library or an image of a batch of the same submitter as the
//! batch being generated (see [`RefFetcher::for_submitter`]); never the ledger, the budgets or other
//! users' images. Every refusal reads the same ([`GS_REFUSAL`]), whether the object exists or not.
//!
//! A reference URL comes from a spreadsheet cell, so the HTTP client is guarded against SSRF at
//! every step where an address can appear: the URL itself (IP literals never reach a resolver), every
//! redirect target (a custom redirect policy) and every name lookup (a custom resolver that drops
//! private, loopback, link-local and metadata addresses, so DNS rebinding gains nothing).

use crate::batch_view::load_manifest;
use crate::domain::{GS_REFUSAL, GsObject, RefScheme, RefUrl, UserId};
use crate::layout;
use crate::model::RefImage;
use crate::problem::ErrorCode;
use crate::refs::address_policy;
use crate::store::{ObjectStore, Precondition, StoreError};
use backon::Retryable;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{StatusCode, redirect};
use sha2::{Digest, Sha256};
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Redirects followed per request.
pub const MAX_REDIRECTS: usize = 5;

const USER_AGENT: &str = "assetgen/0.1";

/// How references are fetched. [`Default`] is the cloud setting of DESIGN.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPolicy {
    /// `http://` and private, loopback, link-local and metadata addresses: tests and local runs only.
    pub allow_private: bool,
    /// `file://` references: the local runner only.
    pub allow_local_files: bool,
    /// Per attempt, from connecting until the last byte of the body.
    pub timeout: Duration,
    /// Pauses before each retry of a transient failure; its length is the number of retries.
    pub retry_delays: Vec<Duration>,
    /// Larger references are refused.
    pub max_bytes: u64,
    /// Fetches in flight at once in [`RefFetcher::fetch_all`].
    pub concurrency: usize,
    /// The bucket `gs://` references must name: the deployment's. `None` where the store has no
    /// bucket (the local runner's disk or memory), and any bucket name means that store.
    pub bucket: Option<String>,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            allow_private: false,
            allow_local_files: false,
            timeout: Duration::from_secs(10),
            retry_delays: vec![Duration::from_secs(1), Duration::from_secs(2)],
            max_bytes: 8 * 1024 * 1024,
            concurrency: 4,
            bucket: None,
        }
    }
}

/// A fetched reference: the bytes, their sniffed type and their SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRef {
    pub url: RefUrl,
    pub image: RefImage,
}

/// Why a reference could not be used. `url` is the reference as the user wrote it; `detail` is a
/// short reason that never carries a URL of ours (nor a redirect target's path or query).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("reference {url} is refused: {detail}")]
    Forbidden { url: String, detail: String },
    /// A `gs://` reference to an object this batch may not read, whatever the reason.
    #[error("reference {url} is refused: {}", GS_REFUSAL)]
    ForbiddenObject { url: String },
    #[error("reference {url} is not an image: {detail}")]
    NotImage { url: String, detail: String },
    #[error("reference {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("reference {url} could not be fetched: {detail}")]
    Unreachable { url: String, detail: String, retryable: bool },
}

impl FetchError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Forbidden { .. } => ErrorCode::RefForbiddenAddress,
            Self::ForbiddenObject { .. } => ErrorCode::RefForbiddenObject,
            Self::NotImage { .. } => ErrorCode::RefNotImage,
            Self::TooLarge { .. } => ErrorCode::RefTooLarge,
            Self::Unreachable { .. } => ErrorCode::RefFetchFailed,
        }
    }

    /// A time-out, a connection failure, HTTP 5xx or 429: the same fetch may work later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable { retryable: true, .. })
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Forbidden { url, .. }
            | Self::ForbiddenObject { url }
            | Self::NotImage { url, .. }
            | Self::TooLarge { url, .. }
            | Self::Unreachable { url, .. } => url,
        }
    }

    /// The reason without the URL, for logs.
    fn detail(&self) -> String {
        match self {
            Self::Forbidden { detail, .. } | Self::NotImage { detail, .. } | Self::Unreachable { detail, .. } => {
                detail.clone()
            }
            Self::TooLarge { limit, .. } => format!("larger than {limit} bytes"),
            Self::ForbiddenObject { .. } => GS_REFUSAL.to_owned(),
        }
    }
}

/// The image type of `bytes` by its magic number: PNG, JPEG, WebP or GIF. What a server or an
/// object claims is not trusted.
pub fn sniff_image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else {
        None
    }
}

/// Fetches references. Cheap to clone: every clone shares one HTTP client (and its connection pool).
#[derive(Debug, Clone)]
pub struct RefFetcher {
    inner: Arc<Inner>,
    /// Whose batch the references are fetched for: the only user whose batches' images a `gs://`
    /// reference may read. `None`: only the reference library.
    submitter: Option<UserId>,
}

#[derive(Debug)]
struct Inner {
    policy: FetchPolicy,
    store: Arc<dyn ObjectStore>,
    client: reqwest::Client,
    guard: AddressGuard,
}

/// What one attempt read, before sniffing.
struct Loaded {
    bytes: Bytes,
    /// What the source said the content is, as a phrase for an error detail.
    claim: Option<String>,
}

impl RefFetcher {
    /// # Panics
    /// If the HTTP client cannot be built (no TLS backend): a broken build, not a runtime condition.
    pub fn new(policy: FetchPolicy, store: Arc<dyn ObjectStore>) -> Self {
        let guard = AddressGuard::for_policy(&policy);
        Self::with_guard(policy, store, guard)
    }

    fn with_guard(policy: FetchPolicy, store: Arc<dyn ObjectStore>, guard: AddressGuard) -> Self {
        let client = reqwest::Client::builder()
            .timeout(policy.timeout)
            .user_agent(USER_AGENT)
            .redirect(redirect_policy(guard))
            .dns_resolver(GuardedResolver { guard })
            .https_only(!guard.allow_http)
            // A proxy would resolve names itself, out of the guard's sight.
            .no_proxy()
            .build()
            .expect("the reference HTTP client can be built");
        Self { inner: Arc::new(Inner { policy, store, client, guard }), submitter: None }
    }

    /// The same fetcher, for a batch of `user`: `gs://` references may also read the images of
    /// `user`'s own batches.
    pub fn for_submitter(&self, user: UserId) -> Self {
        Self { inner: self.inner.clone(), submitter: Some(user) }
    }

    pub fn policy(&self) -> &FetchPolicy {
        &self.inner.policy
    }

    /// Fetches one reference, retrying transient failures by the policy's delays, and caches it.
    pub async fn fetch(&self, url: &RefUrl) -> Result<FetchedRef, FetchError> {
        let fetched = self.fetch_uncounted(url).await;
        let result = if fetched.is_ok() { "ok" } else { "error" };
        metrics::counter!(crate::observe::names::REFS_FETCHED, "result" => result).increment(1);
        fetched
    }

    async fn fetch_uncounted(&self, url: &RefUrl) -> Result<FetchedRef, FetchError> {
        let backoff = self.inner.policy.retry_delays.clone().into_iter();
        let loaded = (|| self.load_once(url))
            .retry(backoff)
            .when(FetchError::is_retryable)
            .notify(|err, after| {
                tracing::info!(url = %redacted(url), error = %err.detail(), ?after, "retrying a reference fetch");
            })
            .await?;
        let Some(mime_type) = sniff_image_type(&loaded.bytes) else {
            let mut detail = "the content is not a PNG, JPEG, WebP or GIF image".to_owned();
            if let Some(claim) = loaded.claim {
                detail.push_str(&format!(" ({claim})"));
            }
            return Err(FetchError::NotImage { url: url.to_string(), detail });
        };
        let sha256 = hex::encode(Sha256::digest(&loaded.bytes));
        self.cache(&sha256, mime_type, loaded.bytes.clone()).await;
        tracing::debug!(url = %redacted(url), %sha256, bytes = loaded.bytes.len(), mime_type, "fetched a reference");
        Ok(FetchedRef {
            url: url.clone(),
            image: RefImage {
                mime_type: mime_type.to_owned(),
                bytes: loaded.bytes,
                sha256,
                gs_uri: (url.scheme() == RefScheme::Gs).then(|| url.to_string()),
            },
        })
    }

    /// Fetches every URL, at most `policy.concurrency` at once; results are in the order of `urls`.
    pub async fn fetch_all(&self, urls: &[RefUrl]) -> Vec<Result<FetchedRef, FetchError>> {
        // Owned URLs in `async move` blocks: a closure borrowing `&RefUrl` makes the future fail
        // to be `Send` for every lifetime, which axum handlers require.
        futures::stream::iter(urls.iter().cloned().map(|url| async move { self.fetch(&url).await }))
            .buffered(self.inner.policy.concurrency.max(1))
            .collect()
            .await
    }

    async fn load_once(&self, url: &RefUrl) -> Result<Loaded, FetchError> {
        match url.scheme() {
            RefScheme::Http => self.load_http(url).await,
            RefScheme::Gs => self.with_timeout(url, self.load_gs(url)).await,
            RefScheme::File => self.with_timeout(url, self.load_file(url)).await,
        }
    }

    async fn with_timeout(
        &self,
        url: &RefUrl,
        load: impl Future<Output = Result<Loaded, FetchError>>,
    ) -> Result<Loaded, FetchError> {
        let limit = self.inner.policy.timeout;
        tokio::time::timeout(limit, load)
            .await
            .unwrap_or_else(|_| Err(unreachable(url, format!("no complete answer within {}", seconds(limit)), true)))
    }

    async fn load_http(&self, url: &RefUrl) -> Result<Loaded, FetchError> {
        let target = parse(url)?;
        self.inner.guard.check(&target).map_err(|detail| FetchError::Forbidden { url: url.to_string(), detail })?;
        let mut response = self
            .inner
            .client
            .get(target)
            .header(ACCEPT, "image/png, image/jpeg, image/webp, image/gif;q=0.9, */*;q=0.1")
            .send()
            .await
            .map_err(|e| self.transport_error(url, e))?;
        let status = response.status();
        if !status.is_success() {
            let retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
            return Err(unreachable(url, format!("the server answered HTTP {status}"), retryable));
        }
        let limit = self.inner.policy.max_bytes;
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(FetchError::TooLarge { url: url.to_string(), limit });
        }
        let claim = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| format!("the server sent Content-Type {}", short(&String::from_utf8_lossy(v.as_bytes()))));
        // Content-Length may be absent or wrong: count what actually arrives.
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport_error(url, e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(FetchError::TooLarge { url: url.to_string(), limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Loaded { bytes: body.freeze(), claim })
    }

    /// `gs://bucket/path/obj` is object `path/obj` of the deployment's store, once
    /// [`Self::gs_allowed`] says this batch may read it.
    async fn load_gs(&self, url: &RefUrl) -> Result<Loaded, FetchError> {
        let object = self.gs_allowed(url).await?;
        let found = self.inner.store.get(&object.name).await.map_err(|e| match e {
            StoreError::NotFound(_) => unreachable(url, "the object does not exist".to_owned(), false),
            other => unreachable(url, format!("the store failed ({other})"), other.is_retryable()),
        })?;
        let limit = self.inner.policy.max_bytes;
        if found.body.len() as u64 > limit {
            return Err(FetchError::TooLarge { url: url.to_string(), limit });
        }
        let claim = Some(format!("the object's content type is {}", short(&found.content_type)));
        Ok(Loaded { bytes: found.body, claim })
    }

    /// The object a `gs://` reference may read: the deployment's bucket, and in it the reference
    /// library or an image of a batch whose manifest names this fetcher's submitter. Anything else
    /// is the one [`GS_REFUSAL`], decided before the object itself is looked at, so that no answer
    /// depends on whether it exists.
    async fn gs_allowed(&self, url: &RefUrl) -> Result<GsObject, FetchError> {
        let refuse = || FetchError::ForbiddenObject { url: url.to_string() };
        let object = GsObject::of(&parse(url)?).ok_or_else(refuse)?;
        if self.inner.policy.bucket.as_ref().is_some_and(|b| *b != object.bucket) {
            return Err(refuse());
        }
        let Some(batch) = &object.batch else { return Ok(object) };
        let Some(submitter) = &self.submitter else { return Err(refuse()) };
        match load_manifest(self.inner.store.as_ref(), batch).await {
            Ok(manifest) if manifest.user == *submitter => Ok(object),
            Ok(_) => Err(refuse()),
            Err(p) if p.code == ErrorCode::BatchNotFound => Err(refuse()),
            Err(p) => Err(unreachable(url, "the store failed".to_owned(), p.code == ErrorCode::StoreUnavailable)),
        }
    }

    async fn load_file(&self, url: &RefUrl) -> Result<Loaded, FetchError> {
        if !self.inner.policy.allow_local_files {
            return Err(FetchError::Forbidden {
                url: url.to_string(),
                detail: "local files are not allowed here".to_owned(),
            });
        }
        let path =
            parse(url)?.to_file_path().map_err(|()| unreachable(url, "not a local file path".to_owned(), false))?;
        let io_error = |e: std::io::Error| unreachable(url, format!("the file cannot be read ({e})"), false);
        let file = tokio::fs::File::open(&path).await.map_err(io_error)?;
        let limit = self.inner.policy.max_bytes;
        if file.metadata().await.map_err(io_error)?.len() > limit {
            return Err(FetchError::TooLarge { url: url.to_string(), limit });
        }
        // The file may grow after the size check: read at most one byte past the cap.
        let mut bytes = Vec::new();
        file.take(limit.saturating_add(1)).read_to_end(&mut bytes).await.map_err(io_error)?;
        if bytes.len() as u64 > limit {
            return Err(FetchError::TooLarge { url: url.to_string(), limit });
        }
        Ok(Loaded { bytes: bytes.into(), claim: None })
    }

    /// Content-addressed, create-only: an existing object already holds these very bytes. A cache
    /// failure never fails the fetch.
    async fn cache(&self, sha256: &str, mime_type: &str, bytes: Bytes) {
        let name = layout::reference(sha256);
        match self.inner.store.put(&name, bytes, mime_type, Precondition::DoesNotExist).await {
            Ok(_) | Err(StoreError::PreconditionFailed(_)) => {}
            Err(error) => tracing::warn!(object = %name, %error, "could not cache a reference image"),
        }
    }

    fn transport_error(&self, url: &RefUrl, error: reqwest::Error) -> FetchError {
        let error = error.without_url();
        if let Some(refused) = find_cause::<Refused>(&error) {
            return FetchError::Forbidden { url: url.to_string(), detail: refused.0.clone() };
        }
        if find_cause::<TooManyRedirects>(&error).is_some() {
            return unreachable(url, format!("more than {MAX_REDIRECTS} redirects"), false);
        }
        if error.is_timeout() {
            let limit = self.inner.policy.timeout;
            return unreachable(url, format!("no complete answer within {}", seconds(limit)), true);
        }
        let cause = root_cause(&error).map(|c| format!(" ({})", short(&c))).unwrap_or_default();
        if error.is_connect() {
            return unreachable(url, format!("could not connect{cause}"), true);
        }
        if error.is_request() || error.is_body() || error.is_decode() {
            return unreachable(url, format!("the connection failed{cause}"), true);
        }
        unreachable(url, format!("the request failed{cause}"), false)
    }
}

fn unreachable(url: &RefUrl, detail: String, retryable: bool) -> FetchError {
    FetchError::Unreachable { url: url.to_string(), detail, retryable }
}

fn parse(url: &RefUrl) -> Result<url::Url, FetchError> {
    url::Url::parse(url.as_str()).map_err(|_| unreachable(url, "not a valid URL".to_owned(), false))
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// At most 100 characters of something a server or a store said.
fn short(s: &str) -> String {
    const MAX: usize = 100;
    if s.chars().count() <= MAX { s.to_owned() } else { format!("{}…", s.chars().take(MAX).collect::<String>()) }
}

/// The URL for logs: no credentials, query or fragment.
fn redacted(url: &RefUrl) -> String {
    match url::Url::parse(url.as_str()) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.into()
        }
        Err(_) => "(invalid URL)".to_owned(),
    }
}

fn find_cause<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The innermost cause, unless that is a `reqwest::Error` (whose text may carry a URL).
fn root_cause(error: &reqwest::Error) -> Option<String> {
    let mut current: &(dyn StdError + 'static) = error.source()?;
    while let Some(next) = current.source() {
        current = next;
    }
    if current.is::<reqwest::Error>() { None } else { Some(current.to_string()) }
}

/// A refusal by the address guard, raised inside reqwest (redirect policy, resolver) and found
/// again in the error's source chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

#[derive(Debug, thiserror::Error)]
#[error("too many redirects")]
struct TooManyRedirects;

/// Which schemes and addresses the HTTP client may reach. The predicates are plain function
/// pointers so a test can swap them (the real ones forbid every address a test server can use).
#[derive(Debug, Clone, Copy)]
struct AddressGuard {
    allow_http: bool,
    ip_forbidden: fn(IpAddr) -> bool,
    name_forbidden: fn(&str) -> bool,
}

impl AddressGuard {
    fn for_policy(policy: &FetchPolicy) -> Self {
        if policy.allow_private { Self::open() } else { Self::strict() }
    }

    fn strict() -> Self {
        Self {
            allow_http: false,
            ip_forbidden: address_policy::ip_is_forbidden,
            name_forbidden: |name| address_policy::host_is_forbidden(&url::Host::Domain(name)),
        }
    }

    fn open() -> Self {
        Self { allow_http: true, ip_forbidden: |_| false, name_forbidden: |_| false }
    }

    fn host_forbidden(&self, host: &url::Host<&str>) -> bool {
        match host {
            url::Host::Domain(name) => (self.name_forbidden)(name),
            url::Host::Ipv4(ip) => (self.ip_forbidden)(IpAddr::V4(*ip)),
            url::Host::Ipv6(ip) => (self.ip_forbidden)(IpAddr::V6(*ip)),
        }
    }

    /// Scheme and host of a URL about to be requested; the reason names no path or query.
    fn check(&self, url: &url::Url) -> Result<(), String> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err("plain http:// is not allowed; use https://".to_owned()),
            other => return Err(format!("scheme {other}: cannot be fetched over the network")),
        }
        let host = url.host().ok_or_else(|| "the URL has no host".to_owned())?;
        if self.host_forbidden(&host) {
            return Err(format!("{host} is a private or internal address"));
        }
        Ok(())
    }
}

fn redirect_policy(guard: AddressGuard) -> redirect::Policy {
    redirect::Policy::custom(move |attempt| {
        // `previous` starts with the original URL, so it holds one entry per redirect so far.
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(TooManyRedirects);
        }
        match guard.check(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(reason) => attempt.error(Refused(format!("a redirect was refused: {reason}"))),
        }
    })
}

/// Resolves with the system resolver, then drops forbidden addresses; refuses if none is left.
/// reqwest asks it for every connection, redirects included, so a name that resolves to a
/// public address at submit time and to a private one now is refused now.
#[derive(Debug, Clone, Copy)]
struct GuardedResolver {
    guard: AddressGuard,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            if (guard.name_forbidden)(&host) {
                return Err(Box::new(Refused(format!("{host} is an internal name"))) as _);
            }
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if found.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| !(guard.ip_forbidden)(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(Refused(format!("{host} resolves only to private or internal addresses"))) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::RefUrlPolicy;
    use crate::store::MemoryStore;
    use async_trait::async_trait;
    use axum::Router;
    use axum::body::Body;
    use axum::extract::{Path, Request};
    use axum::http::header::CONTENT_LENGTH;
    use axum::middleware::{self, Next};
    use axum::response::{IntoResponse, Redirect, Response};
    use axum::routing::get;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// A 1x1 RGB PNG whose pixel is `(seed, 0, 0)`: distinct seeds give distinct bytes.
    pub(crate) fn png(seed: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, 1, 1);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("png header");
        writer.write_image_data(&[seed, 0, 0]).expect("png data");
        writer.finish().expect("png end");
        out
    }

    /// A 1x1 grey baseline JPEG (made with `cjpeg -grayscale`, decodes with `djpeg`).
    pub(crate) const JPEG: &[u8] = &[
        0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01,
        0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x10, 0x0b, 0x0c, 0x0e, 0x0c, 0x0a, 0x10, 0x0e, 0x0d, 0x0e, 0x12,
        0x11, 0x10, 0x13, 0x18, 0x28, 0x1a, 0x18, 0x16, 0x16, 0x18, 0x31, 0x23, 0x25, 0x1d, 0x28, 0x3a, 0x33, 0x3d,
        0x3c, 0x39, 0x33, 0x38, 0x37, 0x40, 0x48, 0x5c, 0x4e, 0x40, 0x44, 0x57, 0x45, 0x37, 0x38, 0x50, 0x6d, 0x51,
        0x57, 0x5f, 0x62, 0x67, 0x68, 0x67, 0x3e, 0x4d, 0x71, 0x79, 0x70, 0x64, 0x78, 0x5c, 0x65, 0x67, 0x63, 0xff,
        0xc0, 0x00, 0x0b, 0x08, 0x00, 0x01, 0x00, 0x01, 0x01, 0x01, 0x11, 0x00, 0xff, 0xc4, 0x00, 0x14, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xc4,
        0x00, 0x14, 0x10, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3f, 0x00, 0x3f, 0xff, 0xd9,
    ];

    /// The classic 1x1 transparent GIF89a.
    const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

    pub(crate) fn sha_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    pub(crate) fn png_response(bytes: Vec<u8>) -> Response {
        ([(CONTENT_TYPE, "image/png")], bytes).into_response()
    }

    /// Requests seen by a test server, by path, counted when they arrive.
    #[derive(Clone, Default)]
    pub(crate) struct Hits(Arc<Mutex<HashMap<String, usize>>>);

    impl Hits {
        pub(crate) fn get(&self, path: &str) -> usize {
            self.0.lock().expect("hits lock").get(path).copied().unwrap_or(0)
        }

        pub(crate) fn total(&self) -> usize {
            self.0.lock().expect("hits lock").values().sum()
        }
    }

    /// Serves `router` on `ip:0`, counting requests; returns the base URL (`http://ip:port`).
    pub(crate) async fn serve_on(ip: &str, router: Router) -> (String, Hits) {
        let hits = Hits::default();
        let counter = hits.clone();
        let router = router.layer(middleware::from_fn(move |req: Request, next: Next| {
            let counter = counter.clone();
            async move {
                *counter.0.lock().expect("hits lock").entry(req.uri().path().to_owned()).or_default() += 1;
                next.run(req).await
            }
        }));
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind a test port");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (format!("http://{addr}"), hits)
    }

    pub(crate) async fn serve(router: Router) -> (String, Hits) {
        serve_on("127.0.0.1", router).await
    }

    /// Parsed as the local runner would (loopback and http allowed), whatever the fetch policy.
    pub(crate) fn ref_url(s: &str) -> RefUrl {
        RefUrl::parse(s, RefUrlPolicy { allow_private: true, allow_local_files: true }).expect("a valid test URL")
    }

    /// Open to loopback and files, with short retry delays.
    pub(crate) fn test_policy() -> FetchPolicy {
        FetchPolicy {
            allow_private: true,
            allow_local_files: true,
            timeout: Duration::from_secs(5),
            retry_delays: vec![Duration::from_millis(10), Duration::from_millis(20)],
            max_bytes: 64 * 1024,
            concurrency: 4,
            bucket: Some("bucket".to_owned()),
        }
    }

    pub(crate) fn fetcher(policy: FetchPolicy) -> (RefFetcher, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        (RefFetcher::new(policy, store.clone()), store)
    }

    #[test]
    fn default_policy_is_the_design() {
        let p = FetchPolicy::default();
        assert!(!p.allow_private && !p.allow_local_files);
        assert_eq!(p.timeout, Duration::from_secs(10));
        assert_eq!(p.retry_delays, [Duration::from_secs(1), Duration::from_secs(2)]);
        assert_eq!(p.max_bytes, 8 * 1024 * 1024);
        assert_eq!(p.concurrency, 4);
    }

    #[test]
    fn sniffs_magic_bytes_only() {
        assert_eq!(sniff_image_type(&png(1)), Some("image/png"));
        assert_eq!(sniff_image_type(JPEG), Some("image/jpeg"));
        assert_eq!(sniff_image_type(GIF), Some("image/gif"));
        assert_eq!(sniff_image_type(b"GIF87a\x01\x00"), Some("image/gif"));
        assert_eq!(sniff_image_type(b"RIFF\x24\x00\x00\x00WEBPVP8 "), Some("image/webp"));
        for not_image in [&b"RIFF\x24\x00\x00\x00WAVEfmt "[..], b"RIFF", b"<html></html>", b"GIF90a", b"\x89PNG", b""] {
            assert_eq!(sniff_image_type(not_image), None, "{not_image:?}");
        }
    }

    #[test]
    fn errors_have_codes_urls_and_retryability() {
        let u = || "https://example.com/a.png".to_owned();
        let cases = [
            (FetchError::Forbidden { url: u(), detail: "x".into() }, ErrorCode::RefForbiddenAddress, false),
            (FetchError::NotImage { url: u(), detail: "x".into() }, ErrorCode::RefNotImage, false),
            (FetchError::TooLarge { url: u(), limit: 1 }, ErrorCode::RefTooLarge, false),
            (
                FetchError::Unreachable { url: u(), detail: "x".into(), retryable: false },
                ErrorCode::RefFetchFailed,
                false,
            ),
            (
                FetchError::Unreachable { url: u(), detail: "x".into(), retryable: true },
                ErrorCode::RefFetchFailed,
                true,
            ),
        ];
        for (err, code, retryable) in cases {
            assert_eq!(err.code(), code, "{err}");
            assert_eq!(err.is_retryable(), retryable, "{err}");
            assert_eq!(err.url(), "https://example.com/a.png");
        }
    }

    #[test]
    fn logs_never_show_query_or_credentials() {
        let url = ref_url("https://example.com/a.png?X-Goog-Signature=secret#frag");
        assert_eq!(redacted(&url), "https://example.com/a.png");
    }

    #[tokio::test]
    async fn fetches_an_image_with_sha_mime_and_caches_it() {
        let image = png(7);
        let served = image.clone();
        let (base, hits) = serve(
            Router::new()
                .route("/a.png", get(move || async move { png_response(served) }))
                .route("/photo", get(|| async { ([(CONTENT_TYPE, "image/jpeg")], JPEG) })),
        )
        .await;
        let (fetcher, store) = fetcher(test_policy());

        let got = fetcher.fetch(&ref_url(&format!("{base}/a.png"))).await.expect("fetched");
        assert_eq!(got.url.as_str(), format!("{base}/a.png"));
        assert_eq!(got.image.mime_type, "image/png");
        assert_eq!(got.image.bytes.as_ref(), image.as_slice());
        assert_eq!(got.image.sha256, sha_hex(&image));
        assert_eq!(got.image.sha256.len(), 64);
        assert!(got.image.sha256.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));

        let cached = store.get(&layout::reference(&got.image.sha256)).await.expect("cached under refs/{sha}");
        assert_eq!(cached.body.as_ref(), image.as_slice());
        assert_eq!(cached.content_type, "image/png");

        // A second fetch of the same bytes meets the cached object: still fine, still one object.
        fetcher.fetch(&ref_url(&format!("{base}/a.png"))).await.expect("fetched again");
        assert_eq!(store.list("refs/").await.expect("list").len(), 1);
        assert_eq!(hits.get("/a.png"), 2);

        let jpeg = fetcher.fetch(&ref_url(&format!("{base}/photo"))).await.expect("jpeg fetched");
        assert_eq!(jpeg.image.mime_type, "image/jpeg");
        assert_eq!(jpeg.image.sha256, sha_hex(JPEG));
        assert_eq!(store.list("refs/").await.expect("list").len(), 2);
    }

    /// A store that reads but refuses every write.
    #[derive(Debug, Default)]
    struct ReadOnlyStore(MemoryStore);

    #[async_trait]
    impl ObjectStore for ReadOnlyStore {
        async fn get(&self, name: &str) -> Result<crate::store::Object, StoreError> {
            self.0.get(name).await
        }
        async fn put(&self, _: &str, _: Bytes, _: &str, _: Precondition) -> Result<i64, StoreError> {
            Err(StoreError::Unavailable("read-only".into()))
        }
        async fn list(&self, prefix: &str) -> Result<Vec<crate::store::ObjectMeta>, StoreError> {
            self.0.list(prefix).await
        }
        async fn delete(&self, name: &str, when: Precondition) -> Result<(), StoreError> {
            self.0.delete(name, when).await
        }
        fn settled_generation(&self) -> Option<i64> {
            self.0.settled_generation()
        }
    }

    #[tokio::test]
    async fn a_failing_cache_does_not_fail_the_fetch() {
        let image = png(3);
        let (base, _) = serve(Router::new().route("/a.png", get(move || async move { png_response(image) }))).await;
        let fetcher = RefFetcher::new(test_policy(), Arc::new(ReadOnlyStore::default()));
        let got = fetcher.fetch(&ref_url(&format!("{base}/a.png"))).await.expect("fetched despite the cache");
        assert_eq!(got.image.mime_type, "image/png");
    }

    #[tokio::test]
    async fn loopback_is_refused_without_allow_private_and_nothing_is_sent() {
        let image = png(1);
        let (base, hits) = serve(Router::new().route("/a.png", get(move || async move { png_response(image) }))).await;
        let port = base.rsplit(':').next().expect("port");
        let (fetcher, _) = fetcher(FetchPolicy { retry_delays: vec![], ..FetchPolicy::default() });

        for url in [
            format!("https://127.0.0.1:{port}/a.png"),
            format!("https://localhost:{port}/a.png"),
            format!("https://[::ffff:127.0.0.1]:{port}/a.png"),
            format!("{base}/a.png"),
        ] {
            // As read back from a stored batch: the fetch guard alone must refuse it.
            let err = fetcher.fetch(&stored_ref(&url)).await.expect_err("must be refused");
            assert!(matches!(err, FetchError::Forbidden { .. }), "{url}: {err}");
            assert_eq!(err.code(), ErrorCode::RefForbiddenAddress);
            assert!(!err.is_retryable());
        }
        assert_eq!(hits.total(), 0, "no request may reach the server");
    }

    #[tokio::test]
    async fn plain_http_is_refused_without_allow_private() {
        let (fetcher, _) = fetcher(FetchPolicy { retry_delays: vec![], ..FetchPolicy::default() });
        // A public name: only the scheme can be the reason (no network is touched).
        let err = fetcher.fetch(&ref_url("http://example.com/a.png")).await.expect_err("http refused");
        match err {
            FetchError::Forbidden { detail, .. } => assert!(detail.contains("http://"), "{detail}"),
            other => panic!("expected Forbidden, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn local_files_are_refused_without_the_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.png");
        std::fs::write(&path, png(1)).expect("write");
        let url = ref_url(url::Url::from_file_path(&path).expect("file url").as_str());

        let (open, _) = fetcher(test_policy());
        assert_eq!(open.fetch(&url).await.expect("allowed").image.bytes.as_ref(), png(1).as_slice());

        let (closed, _) = fetcher(FetchPolicy { allow_local_files: false, ..test_policy() });
        let err = closed.fetch(&url).await.expect_err("refused");
        assert!(matches!(err, FetchError::Forbidden { .. }), "{err}");
    }

    #[tokio::test]
    async fn local_files_are_size_capped_and_sniffed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file_url = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            ref_url(url::Url::from_file_path(&path).expect("file url").as_str())
        };
        let (fetcher, _) = fetcher(FetchPolicy { max_bytes: 1024, ..test_policy() });
        let mut big = png(1);
        big.resize(2048, 0);
        let err = fetcher.fetch(&file_url("big.png", &big)).await.expect_err("too large");
        assert!(matches!(err, FetchError::TooLarge { limit: 1024, .. }), "{err}");
        let err = fetcher.fetch(&file_url("a.txt", b"hello")).await.expect_err("not an image");
        assert!(matches!(err, FetchError::NotImage { .. }), "{err}");
        let missing = ref_url(url::Url::from_file_path(dir.path().join("nope.png")).expect("file url").as_str());
        let err = fetcher.fetch(&missing).await.expect_err("missing");
        assert!(matches!(err, FetchError::Unreachable { retryable: false, .. }), "{err}");
    }

    #[tokio::test]
    async fn gs_refs_read_the_reference_library_through_the_store() {
        let (fetcher, store) = fetcher(test_policy());
        store
            .put(&layout::reference(LIB_A), Bytes::from(png(9)), "image/png", Precondition::None)
            .await
            .expect("seed the store");
        store
            .put(&layout::reference(LIB_B), Bytes::from_static(b"hello"), "text/plain", Precondition::None)
            .await
            .expect("seed");

        let got = fetcher.fetch(&ref_url(&format!("gs://bucket/refs/{LIB_A}"))).await.expect("read from the store");
        assert_eq!(got.image.bytes.as_ref(), png(9).as_slice());
        assert_eq!(got.image.mime_type, "image/png");
        assert_eq!(got.image.gs_uri, Some(format!("gs://bucket/refs/{LIB_A}")));

        // The library is shared: saying that one of its objects is missing tells nothing private.
        let err = fetcher.fetch(&ref_url(&format!("gs://bucket/refs/{LIB_C}"))).await.expect_err("missing");
        assert!(matches!(err, FetchError::Unreachable { retryable: false, .. }), "{err}");

        let err = fetcher.fetch(&ref_url(&format!("gs://bucket/refs/{LIB_B}"))).await.expect_err("not an image");
        match err {
            FetchError::NotImage { detail, .. } => assert!(detail.contains("text/plain"), "{detail}"),
            other => panic!("expected NotImage, got {other:?}"),
        }
    }

    /// Names in the reference library (`refs/{sha256}`).
    const LIB_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
    const LIB_B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
    const LIB_C: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";

    /// A `gs://` URL the form check of [`RefUrl::parse`] would refuse: as read back from a manifest
    /// written before that check existed.
    fn stored_ref(s: &str) -> RefUrl {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).expect("a stored URL")
    }

    #[tokio::test]
    async fn gs_refs_outside_the_library_and_batch_images_are_refused_alike_present_or_not() {
        let (fetcher, store) = fetcher(test_policy());
        let owner = fetcher.for_submitter(UserId::new("owner@studio.test"));
        for name in ["ledger/2026-11-28/b.0.v1.r0.charge.json", "budget/2026-11-28/owner@studio.test.json"] {
            store.put(name, Bytes::from(png(1)), "image/png", Precondition::None).await.expect("seed");
        }
        store.put(&layout::reference(LIB_A), Bytes::from(png(2)), "image/png", Precondition::None).await.expect("seed");
        let mut answers = Vec::new();
        for url in [
            "gs://bucket/ledger/2026-11-28/b.0.v1.r0.charge.json".to_owned(),
            "gs://bucket/ledger/2026-11-28/nothing.json".to_owned(),
            "gs://bucket/budget/2026-11-28/owner@studio.test.json".to_owned(),
            "gs://bucket/budget/2026-11-28/nobody@studio.test.json".to_owned(),
            format!("gs://other-bucket/refs/{}", LIB_A),
            format!("gs://other-bucket/refs/{}", LIB_C),
        ] {
            let url = url.as_str();
            for who in [&fetcher, &owner] {
                let err = who.fetch(&stored_ref(url)).await.expect_err("refused");
                assert!(matches!(err, FetchError::ForbiddenObject { .. }), "{url}: {err}");
                assert_eq!(err.code(), ErrorCode::RefForbiddenObject);
                assert!(!err.is_retryable());
                answers.push(err.to_string().replace(url, "URL"));
            }
        }
        answers.dedup();
        assert_eq!(answers, [format!("reference URL is refused: {GS_REFUSAL}")], "one answer for every refusal");
        // Control: the library in the deployment's bucket is readable.
        fetcher.fetch(&ref_url(&format!("gs://bucket/refs/{LIB_A}"))).await.expect("the library");
    }

    #[tokio::test]
    async fn without_a_bucket_name_any_bucket_means_the_local_store() {
        let (fetcher, store) = fetcher(FetchPolicy { bucket: None, ..test_policy() });
        store.put(&layout::reference(LIB_A), Bytes::from(png(3)), "image/png", Precondition::None).await.expect("seed");
        fetcher.fetch(&ref_url(&format!("gs://anything/refs/{LIB_A}"))).await.expect("the local store");
    }

    #[tokio::test]
    async fn not_found_is_permanent_and_not_retried() {
        let (base, hits) =
            serve(Router::new().route("/gone", get(|| async { axum::http::StatusCode::NOT_FOUND }))).await;
        let (fetcher, _) = fetcher(test_policy());
        let err = fetcher.fetch(&ref_url(&format!("{base}/gone"))).await.expect_err("404");
        match &err {
            FetchError::Unreachable { detail, retryable: false, .. } => assert!(detail.contains("404"), "{detail}"),
            other => panic!("expected a permanent Unreachable, got {other:?}"),
        }
        assert_eq!(err.code(), ErrorCode::RefFetchFailed);
        assert_eq!(hits.get("/gone"), 1);
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_success() {
        let calls = Arc::new(AtomicUsize::new(0));
        let image = png(5);
        let flaky = {
            let calls = calls.clone();
            move || async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    png_response(image)
                }
            }
        };
        let (base, hits) = serve(
            Router::new()
                .route("/flaky", get(flaky))
                .route("/busy", get(|| async { axum::http::StatusCode::TOO_MANY_REQUESTS })),
        )
        .await;
        let (fetcher, _) = fetcher(test_policy());

        let got = fetcher.fetch(&ref_url(&format!("{base}/flaky"))).await.expect("third attempt succeeds");
        assert_eq!(got.image.bytes.as_ref(), png(5).as_slice());
        assert_eq!(hits.get("/flaky"), 3);

        let err = fetcher.fetch(&ref_url(&format!("{base}/busy"))).await.expect_err("always 429");
        assert!(err.is_retryable(), "{err}");
        assert_eq!(hits.get("/busy"), 3, "one attempt and two retries");
    }

    #[tokio::test]
    async fn a_time_out_is_retryable() {
        let (base, hits) = serve(Router::new().route(
            "/sleepy",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                png_response(png(1))
            }),
        ))
        .await;
        let policy = FetchPolicy {
            timeout: Duration::from_millis(200),
            retry_delays: vec![Duration::from_millis(10)],
            ..test_policy()
        };
        let (fetcher, _) = fetcher(policy);
        let started = Instant::now();
        let err = fetcher.fetch(&ref_url(&format!("{base}/sleepy"))).await.expect_err("times out");
        assert!(matches!(err, FetchError::Unreachable { retryable: true, .. }), "{err}");
        assert_eq!(hits.get("/sleepy"), 2, "a time-out is retried");
        assert!(started.elapsed() < Duration::from_secs(2), "gave up after {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn non_images_are_refused_whatever_the_content_type() {
        let (base, hits) = serve(
            Router::new()
                .route("/page", get(|| async { ([(CONTENT_TYPE, "text/html")], "<html></html>") }))
                .route("/liar.png", get(|| async { ([(CONTENT_TYPE, "image/png")], "not a png at all") })),
        )
        .await;
        let (fetcher, _) = fetcher(test_policy());
        let err = fetcher.fetch(&ref_url(&format!("{base}/page"))).await.expect_err("html");
        match &err {
            FetchError::NotImage { detail, .. } => assert!(detail.contains("text/html"), "{detail}"),
            other => panic!("expected NotImage, got {other:?}"),
        }
        assert_eq!(err.code(), ErrorCode::RefNotImage);
        let err = fetcher.fetch(&ref_url(&format!("{base}/liar.png"))).await.expect_err("not a png");
        assert!(matches!(err, FetchError::NotImage { .. }), "{err}");
        assert_eq!(hits.get("/page"), 1, "not retried");
    }

    #[tokio::test]
    async fn oversize_is_refused_by_content_length_and_by_counting() {
        let magic = Bytes::from_static(b"\x89PNG\r\n\x1a\n");
        // Announces 100 MiB, sends 8 bytes, then stalls: only an early Content-Length check can
        // answer TooLarge (reading on would run into the time-out).
        let announced = {
            let magic = magic.clone();
            move || async move {
                let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(magic) })
                    .chain(futures::stream::pending());
                Response::builder()
                    .header(CONTENT_TYPE, "image/png")
                    .header(CONTENT_LENGTH, "104857600")
                    .body(Body::from_stream(stream))
                    .expect("response")
            }
        };
        // No Content-Length and no end: only counting while reading can answer TooLarge.
        let endless = move || async move {
            let chunks = futures::stream::repeat_with(|| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 4096])));
            let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(magic) }).chain(chunks);
            ([(CONTENT_TYPE, "image/png")], Body::from_stream(stream))
        };
        let (base, _) = serve(Router::new().route("/announced", get(announced)).route("/endless", get(endless))).await;
        let (fetcher, _) = fetcher(FetchPolicy { timeout: Duration::from_secs(3), ..test_policy() });

        for path in ["/announced", "/endless"] {
            let started = Instant::now();
            let err = fetcher.fetch(&ref_url(&format!("{base}{path}"))).await.expect_err("too large");
            assert!(matches!(err, FetchError::TooLarge { limit: 65536, .. }), "{path}: {err}");
            assert_eq!(err.code(), ErrorCode::RefTooLarge);
            assert!(started.elapsed() < Duration::from_secs(2), "{path} took {:?}", started.elapsed());
        }
    }

    #[tokio::test]
    async fn a_reference_that_trickles_forever_is_cut_off_by_the_total_time_out() {
        // An image's magic, then one byte every 20 ms for ever: never an end, never the size cap,
        // never a pause long enough for a read time-out. Only a deadline on the whole attempt ends it.
        let sent = Arc::new(AtomicUsize::new(0));
        let trickle = {
            let sent = sent.clone();
            move || {
                let sent = sent.clone();
                async move {
                    let magic = futures::stream::once(async {
                        Ok::<_, std::io::Error>(Bytes::from_static(b"\x89PNG\r\n\x1a\n"))
                    });
                    let drip = futures::stream::unfold(sent, |sent| async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        sent.fetch_add(1, Ordering::SeqCst);
                        Some((Ok::<_, std::io::Error>(Bytes::from_static(b"\0")), sent))
                    });
                    ([(CONTENT_TYPE, "image/png")], Body::from_stream(magic.chain(drip)))
                }
            }
        };
        let (base, hits) = serve(
            Router::new().route("/trickle", get(trickle)).route("/ok.png", get(|| async { png_response(png(3)) })),
        )
        .await;
        let policy = FetchPolicy {
            timeout: Duration::from_millis(300),
            retry_delays: vec![Duration::from_millis(10)],
            ..test_policy()
        };
        let (fetcher, store) = fetcher(policy);

        let err = fetcher.fetch(&ref_url(&format!("{base}/trickle"))).await.expect_err("cut off");
        assert_eq!(
            err,
            FetchError::Unreachable {
                url: format!("{base}/trickle"),
                detail: "no complete answer within 0.3 s".to_owned(),
                retryable: true,
            }
        );
        assert_eq!(err.code(), ErrorCode::RefFetchFailed);
        assert_eq!(hits.get("/trickle"), 2, "one attempt and one retry, each cut off");
        let dripped = sent.load(Ordering::SeqCst);
        assert!(
            dripped > 0 && (dripped as u64) < test_policy().max_bytes,
            "{dripped} bytes: the cap was never the reason"
        );
        assert!(store.list("refs/").await.expect("list").is_empty(), "nothing cached");

        // The same fetcher (its client and connection pool) goes on working.
        let got = fetcher.fetch(&ref_url(&format!("{base}/ok.png"))).await.expect("a normal reference");
        assert_eq!(got.image.bytes.as_ref(), png(3).as_slice());
    }

    #[tokio::test]
    async fn the_production_resolver_refuses_names_of_loopback_addresses() {
        // The name check is bypassed here so that the address filter itself is tested.
        let guard = AddressGuard { name_forbidden: |_| false, ..AddressGuard::strict() };
        let resolver = GuardedResolver { guard };
        let name: Name = "localhost".parse().expect("a name");
        let err = match resolver.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(err) => err,
        };
        assert!(err.downcast_ref::<Refused>().is_some(), "{err}");

        let open = GuardedResolver { guard: AddressGuard::open() };
        let addrs: Vec<SocketAddr> = open.resolve("localhost".parse().expect("a name")).await.expect("open").collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    /// Forbids every address but 127.0.0.2, and allows http: test servers are plain http on loopback.
    fn only_127_0_0_2() -> AddressGuard {
        AddressGuard {
            allow_http: true,
            ip_forbidden: |ip| ip != IpAddr::from([127, 0, 0, 2]),
            name_forbidden: |_| false,
        }
    }

    #[tokio::test]
    async fn the_resolver_guards_the_client_and_redirects_cannot_escape() {
        let image = png(2);
        let (target, target_hits) =
            serve(Router::new().route("/a.png", get(move || async move { png_response(image) }))).await;
        let target_port = target.rsplit(':').next().expect("port").to_owned();
        let origin_router = {
            let port = target_port.clone();
            let to_ip = format!("http://127.0.0.1:{port}/a.png");
            let to_name = format!("http://localhost:{port}/a.png");
            Router::new()
                .route("/to-ip", get(move || async move { Redirect::temporary(&to_ip) }))
                .route("/to-name", get(move || async move { Redirect::temporary(&to_name) }))
                .route("/own.png", get(|| async { png_response(png(4)) }))
        };
        let (origin, origin_hits) = serve_on("127.0.0.2", origin_router).await;
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let guarded = RefFetcher::with_guard(test_policy(), store.clone(), only_127_0_0_2());

        // Control: the allowed address is reachable through the guarded client.
        guarded.fetch(&ref_url(&format!("{origin}/own.png"))).await.expect("the allowed origin works");

        // A name that resolves to a forbidden address, no redirect: refused at lookup.
        let err = guarded.fetch(&ref_url(&format!("http://localhost:{target_port}/a.png"))).await.expect_err("lookup");
        assert!(matches!(err, FetchError::Forbidden { .. }), "{err}");

        // Redirects to a forbidden IP literal (redirect policy) and to a forbidden name (resolver).
        for path in ["/to-ip", "/to-name"] {
            let err = guarded.fetch(&ref_url(&format!("{origin}{path}"))).await.expect_err("redirect refused");
            assert!(matches!(err, FetchError::Forbidden { .. }), "{path}: {err}");
            assert!(!err.detail().contains("/a.png"), "no redirect path in the detail: {err}");
            assert_eq!(origin_hits.get(path), 1, "refusal is permanent");
        }
        assert_eq!(target_hits.total(), 0, "no request may reach the forbidden target");

        // Without the guard the same redirects are followed: the refusals above are the guard's.
        let (open, _) = fetcher(test_policy());
        for path in ["/to-ip", "/to-name"] {
            open.fetch(&ref_url(&format!("{origin}{path}"))).await.expect("followed when private is allowed");
        }
        assert_eq!(target_hits.get("/a.png"), 2);
    }

    #[tokio::test]
    async fn redirect_loops_stop() {
        let (base, hits) = serve(Router::new().route("/loop", get(|| async { Redirect::temporary("/loop") }))).await;
        let (fetcher, _) = fetcher(test_policy());
        let err = fetcher.fetch(&ref_url(&format!("{base}/loop"))).await.expect_err("loop");
        assert!(matches!(err, FetchError::Unreachable { retryable: false, .. }), "{err}");
        assert_eq!(hits.get("/loop"), MAX_REDIRECTS + 1);
    }

    #[tokio::test]
    async fn fetch_all_keeps_order_and_bounds_concurrency() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let handler = {
            let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
            move |Path(n): Path<u8>| async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max_in_flight.fetch_max(now, Ordering::SeqCst);
                // Later URLs answer sooner, so completion order differs from request order.
                tokio::time::sleep(Duration::from_millis(20 + 60 / u64::from(n + 1))).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                png_response(png(n))
            }
        };
        let (base, hits) = serve(Router::new().route("/img/{n}", get(handler))).await;
        let (fetcher, _) = fetcher(FetchPolicy { concurrency: 3, ..test_policy() });
        let urls: Vec<RefUrl> = (0..10).map(|n| ref_url(&format!("{base}/img/{n}"))).collect();

        let results = fetcher.fetch_all(&urls).await;
        assert_eq!(results.len(), 10);
        for (n, (url, result)) in urls.iter().zip(&results).enumerate() {
            let got = result.as_ref().expect("fetched");
            assert_eq!(&got.url, url);
            assert_eq!(got.image.bytes.as_ref(), png(u8::try_from(n).expect("small")).as_slice(), "result {n}");
        }
        assert_eq!(hits.total(), 10);
        let max = max_in_flight.load(Ordering::SeqCst);
        assert!(max <= 3, "{max} requests were in flight at once");
        assert!(max >= 2, "fetches should overlap (max in flight {max})");
    }
}
