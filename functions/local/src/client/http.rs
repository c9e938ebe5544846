//! Talking to a deployment: base URL, identity headers, JSON calls, the event stream's request,
//! and what a refusal (any non-2xx answer) carries.

use super::ClientOptions;
use anyhow::{Context, bail};
use assetgen_common::problem::Problem;
use reqwest::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use url::Url;

pub const USER_HEADER: &str = "x-assetgen-user";
pub const LAST_EVENT_ID: &str = "last-event-id";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A JSON call that takes longer than this is abandoned.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// No byte for this long on any response (the event stream sends a heartbeat every 20 s) means the
/// connection is dead even if TCP has not noticed. Not an overall timeout: a stream may run for hours.
const READ_TIMEOUT: Duration = Duration::from_secs(65);

/// One deployment, with the caller's identity.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: Url,
    identity: HeaderMap,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The identity headers stay out of debug output: one of them may be a bearer token.
        f.debug_struct("Api").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

/// A non-2xx answer: the problem document when the server sent one, else the raw body.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub url: String,
    pub status: u16,
    /// Boxed: a problem document is large, and refusals travel inside small error enums.
    pub problem: Option<Box<Problem>>,
    pub body: String,
}

impl Refusal {
    async fn read(url: &Url, response: Response) -> Self {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let problem = serde_json::from_str::<Problem>(&body).ok();
        Self { url: url.to_string(), status, problem: problem.map(Box::new), body }
    }
}

/// Why the event stream could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Worth retrying: no connection, a timeout, 5xx, 429.
    Transient(String),
    /// The server said no for good (404, 401, 403…).
    Refused(Refusal),
}

impl Api {
    pub fn new(options: &ClientOptions) -> anyhow::Result<Self> {
        let mut base =
            Url::parse(options.server.trim()).with_context(|| format!("--server {:?} is not a URL", options.server))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--server {:?} must be an http:// or https:// URL", options.server);
        }
        base.set_query(None);
        base.set_fragment(None);

        let mut identity = HeaderMap::new();
        if let Some(user) = options.user.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            let value = HeaderValue::from_str(user)
                .with_context(|| format!("--user {user:?} cannot be sent as an HTTP header"))?;
            identity.insert(USER_HEADER, value);
        }
        let token = options.id_token.clone().or_else(|| std::env::var("ASSETGEN_TOKEN").ok());
        if let Some(token) = token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            // The error must not quote the token.
            let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
                bail!(
                    "the ID token (--id-token / ASSETGEN_ID_TOKEN / ASSETGEN_TOKEN) contains characters a header cannot carry"
                );
            };
            value.set_sensitive(true);
            identity.insert(AUTHORIZATION, value);
        }

        let client = reqwest::Client::builder()
            .user_agent(concat!("assetgen-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self { client, base, identity })
    }

    /// `{server}/a/b/c`, each segment percent-encoded, below any path the server URL has.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A link from a response: absolute as the server sends them, else relative to the server.
    pub fn resolve(&self, link: &str) -> anyhow::Result<Url> {
        self.base.join(link).with_context(|| format!("the server sent a link that is not a URL: {link:?}"))
    }

    /// The same client, aimed at another service (`base`) with `token` as its only identity: the
    /// reference library on the relay, reached with a manager token submit issued.
    pub fn elsewhere_with_bearer(&self, base: Url, token: &str) -> anyhow::Result<Self> {
        // The error must not quote the token.
        let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
            bail!("the server issued a token that a header cannot carry");
        };
        value.set_sensitive(true);
        let mut identity = HeaderMap::new();
        identity.insert(AUTHORIZATION, value);
        Ok(Self { client: self.client.clone(), base, identity })
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.client.request(method, url).headers(self.identity.clone())
    }

    pub async fn get<T: DeserializeOwned>(&self, url: Url) -> anyhow::Result<Result<T, Refusal>> {
        self.call(Method::GET, url, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        url: Url,
        body: &B,
    ) -> anyhow::Result<Result<T, Refusal>> {
        self.call(Method::POST, url, Some(body)).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> anyhow::Result<Result<T, Refusal>> {
        let mut request = self.request(method.clone(), url.clone()).timeout(CALL_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| unreachable_error(&url, e))?;
        if !response.status().is_success() {
            return Ok(Err(Refusal::read(&url, response).await));
        }
        let status = response.status();
        let text = response.text().await.with_context(|| format!("{method} {url}: the answer broke off"))?;
        let value = serde_json::from_str(&text).with_context(|| {
            format!("{method} {url} answered {status} with a body this client does not understand: {}", snippet(&text))
        })?;
        Ok(Ok(value))
    }

    /// The bytes at `url` (an image link), following redirects (to a signed storage URL; the
    /// identity headers are not sent to another host).
    pub async fn get_bytes(&self, url: Url) -> anyhow::Result<Result<Vec<u8>, Refusal>> {
        let response = self.request(Method::GET, url.clone()).timeout(CALL_TIMEOUT).send().await;
        let response = response.map_err(|e| unreachable_error(&url, e))?;
        if !response.status().is_success() {
            return Ok(Err(Refusal::read(&url, response).await));
        }
        let body = response.bytes().await.with_context(|| format!("GET {url}: the answer broke off"))?;
        Ok(Ok(body.to_vec()))
    }

    /// Opens the event stream, resuming after `last_event_id` when given.
    pub async fn open_events(&self, url: &Url, last_event_id: Option<&str>) -> Result<Response, OpenError> {
        let mut request = self
            .request(Method::GET, url.clone())
            .header(ACCEPT, "text/event-stream")
            .header(CACHE_CONTROL, "no-cache");
        if let Some(id) = last_event_id {
            request = request.header(LAST_EVENT_ID, id);
        }
        let response = request.send().await.map_err(|e| OpenError::Transient(describe(e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let refusal = Refusal::read(url, response).await;
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
        {
            let what = refusal.problem.as_ref().map_or_else(|| snippet(&refusal.body), |p| p.detail.clone());
            Err(OpenError::Transient(format!("the server answered {status}: {what}")))
        } else {
            Err(OpenError::Refused(refusal))
        }
    }
}

fn unreachable_error(url: &Url, e: reqwest::Error) -> anyhow::Error {
    let hint = if e.is_connect() { " (is the server running? `assetgen serve` starts one locally)" } else { "" };
    anyhow::anyhow!("cannot reach {url}: {}{hint}", describe(e))
}

/// A reqwest error with its causes, which its `Display` alone leaves out, without the URL (the
/// messages that use it name the URL once themselves).
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The start of a body, on one line, for messages.
pub fn snippet(body: &str) -> String {
    const MAX: usize = 300;
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return "(empty body)".to_owned();
    }
    match flat.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(server: &str) -> ClientOptions {
        ClientOptions { server: server.to_owned(), user: None, id_token: None }
    }

    #[test]
    fn urls_keep_a_path_prefix_and_encode_segments() -> anyhow::Result<()> {
        let api = Api::new(&options("https://host.test/prefix/?q=1"))?;
        assert_eq!(api.url(&["v1", "batches", "a b/c"]).as_str(), "https://host.test/prefix/v1/batches/a%20b%2Fc");
        let api = Api::new(&options("http://127.0.0.1:8080"))?;
        assert_eq!(api.url(&["v1", "estimate"]).as_str(), "http://127.0.0.1:8080/v1/estimate");
        assert_eq!(api.resolve("/v1/batches/x/events")?.as_str(), "http://127.0.0.1:8080/v1/batches/x/events");
        assert_eq!(api.resolve("https://relay.test/e")?.as_str(), "https://relay.test/e");
        Ok(())
    }

    #[test]
    fn bad_server_urls_and_headers_are_refused_without_echoing_the_token() {
        assert!(Api::new(&options("ftp://x")).is_err());
        assert!(Api::new(&options("not a url")).is_err());
        let secret = "abc\ndef-secret";
        let e = Api::new(&ClientOptions { id_token: Some(secret.into()), ..options("http://x.test") })
            .expect_err("newline in token");
        assert!(!format!("{e:#}").contains("secret"), "{e:#}");
    }

    #[test]
    fn debug_output_hides_the_token() -> anyhow::Result<()> {
        let api = Api::new(&ClientOptions {
            id_token: Some("tok-123".into()),
            user: Some("me@x.test".into()),
            ..options("http://x.test")
        })?;
        assert!(!format!("{api:?}").contains("tok-123"));
        Ok(())
    }

    #[test]
    fn snippets_are_short_and_flat() {
        assert_eq!(snippet("a\n  b"), "a b");
        assert_eq!(snippet(""), "(empty body)");
        assert_eq!(snippet(&"é".repeat(400)).chars().count(), 301);
    }
}
