//! A cached JSON Web Key Set: Google's signing keys for ID tokens, fetched over HTTPS.
//!
//! - A key set is fresh for the `Cache-Control: max-age` of the answer that brought it (clamped to
//!   [`JwksOptions::max_age_cap`]; [`JwksOptions::default_max_age`] without one).
//! - A token signed by a key the set does not hold (an unknown `kid`) triggers a refresh, because
//!   Google rotates its keys; so does a stale set.
//! - No two fetches start within [`JwksOptions::min_refresh_interval`] of each other, whatever
//!   the callers send: a flood of tokens with made-up `kid`s costs the key server one request per
//!   interval. Concurrent callers wait for one fetch instead of starting their own.
//! - When a refresh fails, the last good set keeps serving (its keys were Google's a moment ago);
//!   a key that was never fetched is then reported as [`KeyError::Unavailable`], not as forged.
//! - Fetches are bounded: connect and total time-outs, and a cap on the answer's size.

use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Where Google publishes the keys that sign its ID tokens (JWK format).
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// A key set is a few kilobytes; anything much larger is not one.
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksOptions {
    /// No fetch starts sooner than this after the previous one (default 30 s).
    pub min_refresh_interval: Duration,
    /// How long a set stays fresh when its answer carries no `max-age` (default 1 h).
    pub default_max_age: Duration,
    /// The longest a set is trusted to stay fresh, whatever `max-age` says (default 24 h).
    pub max_age_cap: Duration,
    /// Time-out to connect to the key server (default 5 s).
    pub connect_timeout: Duration,
    /// Time-out for the whole fetch, body included (default 10 s).
    pub timeout: Duration,
}

impl Default for JwksOptions {
    fn default() -> Self {
        Self {
            min_refresh_interval: Duration::from_secs(30),
            default_max_age: Duration::from_secs(3600),
            max_age_cap: Duration::from_secs(24 * 3600),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why no key could be had for a `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The key set, fetched and current, has no such key: the token was not signed by Google.
    UnknownKey,
    /// The key set could not be fetched, so the key may exist: try again later.
    Unavailable,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Arc<DecodingKey>>,
    /// When the set goes stale; `None` before the first successful fetch.
    fresh_until: Option<Instant>,
    /// When the last fetch started (success or not): the rate limit counts from here.
    last_attempt: Option<Instant>,
    /// Whether the last fetch failed.
    last_failed: bool,
}

/// Google's (or a test's) signing keys, fetched on demand and cached. Share one per process.
pub struct JwksCache {
    url: String,
    client: reqwest::Client,
    options: JwksOptions,
    state: RwLock<KeySet>,
    /// Held while a fetch runs, so concurrent misses wait for one fetch instead of each starting one.
    refresh: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("JwksCache")
            .field("url", &self.url)
            .field("keys", &state.keys.len())
            .field("options", &self.options)
            .finish()
    }
}

impl JwksCache {
    /// A cache for the key set at `url` ([`GOOGLE_JWKS_URL`] in production), with default options.
    /// Nothing is fetched until the first token needs a key.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_options(url, JwksOptions::default())
    }

    pub fn with_options(url: impl Into<String>, options: JwksOptions) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            .user_agent(concat!("assetgen/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            url: url.into(),
            client,
            options,
            state: RwLock::new(KeySet::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The verification key named `kid`, from the cache or, when the set is stale or lacks it and
    /// the rate limit allows, from a fresh fetch.
    pub async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, KeyError> {
        if let Some(key) = self.cached(kid, Instant::now(), true) {
            return Ok(key);
        }
        let _one_fetch_at_a_time = self.refresh.lock().await;
        // Another caller may have fetched while this one waited.
        let now = Instant::now();
        if let Some(key) = self.cached(kid, now, true) {
            return Ok(key);
        }
        let may_fetch = {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            let allowed =
                state.last_attempt.is_none_or(|last| now.duration_since(last) >= self.options.min_refresh_interval);
            if allowed {
                state.last_attempt = Some(now);
            }
            allowed
        };
        if may_fetch {
            let fetched = self.fetch().await;
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            match fetched {
                Ok((keys, max_age)) => {
                    tracing::debug!(url = %self.url, keys = keys.len(), max_age_secs = max_age.as_secs(), "fetched JWKS");
                    state.keys = keys;
                    state.fresh_until = Some(Instant::now() + max_age);
                    state.last_failed = false;
                }
                Err(why) => {
                    tracing::warn!(url = %self.url, error = %why, "could not fetch the JWKS; keeping the last good key set");
                    state.last_failed = true;
                }
            }
        }
        // Stale keys still serve when the refresh was rate limited or failed.
        if let Some(key) = self.cached(kid, Instant::now(), false) {
            return Ok(key);
        }
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        if state.last_failed { Err(KeyError::Unavailable) } else { Err(KeyError::UnknownKey) }
    }

    fn cached(&self, kid: &str, now: Instant, fresh_only: bool) -> Option<Arc<DecodingKey>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let fresh = state.fresh_until.is_some_and(|until| now < until);
        if fresh_only && !fresh {
            return None;
        }
        state.keys.get(kid).cloned()
    }

    async fn fetch(&self) -> Result<(HashMap<String, Arc<DecodingKey>>, Duration), String> {
        let mut response = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("the key server answered {}", response.status()));
        }
        if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(format!("the key set is larger than {MAX_JWKS_BYTES} bytes"));
        }
        let max_age = self.max_age(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading the key set failed: {e}"))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the key set is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_key_set(&body)?;
        Ok((keys, max_age))
    }

    fn max_age(&self, headers: &reqwest::header::HeaderMap) -> Duration {
        let directives = headers
            .get_all(reqwest::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|d| d.trim().to_ascii_lowercase())
            .collect::<Vec<_>>();
        if directives.iter().any(|d| d == "no-cache" || d == "no-store") {
            return Duration::ZERO;
        }
        directives
            .iter()
            .find_map(|d| d.strip_prefix("max-age=").and_then(|n| n.trim_matches('"').parse::<u64>().ok()))
            .map(Duration::from_secs)
            .unwrap_or(self.options.default_max_age)
            .min(self.options.max_age_cap)
    }
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

/// The RS256 signing keys of a JWK set. Keys of other types or uses are skipped one by one, so
/// one odd key does not hide the others; a set with no usable key is an error.
fn parse_key_set(body: &[u8]) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
    #[derive(Deserialize)]
    struct RawKey {
        kty: String,
        kid: Option<String>,
        #[serde(rename = "use")]
        key_use: Option<String>,
        alg: Option<String>,
        n: Option<String>,
        e: Option<String>,
    }

    let set: RawKeySet = serde_json::from_slice(body).map_err(|e| format!("the key set is not a JWK set: {e}"))?;
    let mut keys = HashMap::new();
    for value in set.keys {
        let Ok(raw) = serde_json::from_value::<RawKey>(value) else { continue };
        let usable = raw.kty == "RSA"
            && raw.key_use.as_deref().is_none_or(|u| u == "sig")
            && raw.alg.as_deref().is_none_or(|a| a == "RS256");
        let (Some(kid), Some(n), Some(e), true) = (raw.kid, raw.n, raw.e, usable) else { continue };
        if let Ok(key) = DecodingKey::from_rsa_components(&n, &e) {
            keys.insert(kid, Arc::new(key));
        }
    }
    if keys.is_empty() {
        return Err("the key set holds no RS256 signing key".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_age(values: &[&str]) -> Duration {
        let cache = JwksCache::new("http://127.0.0.1:9/certs");
        let mut headers = reqwest::header::HeaderMap::new();
        for v in values {
            headers.append(reqwest::header::CACHE_CONTROL, v.parse().expect("header value"));
        }
        cache.max_age(&headers)
    }

    #[test]
    fn max_age_is_read_clamped_and_defaulted() {
        assert_eq!(max_age(&["public, max-age=19917, must-revalidate, no-transform"]), Duration::from_secs(19917));
        assert_eq!(max_age(&["public", "Max-Age=60"]), Duration::from_secs(60));
        assert_eq!(max_age(&["max-age=999999999"]), Duration::from_secs(24 * 3600));
        assert_eq!(max_age(&["no-store"]), Duration::ZERO);
        assert_eq!(max_age(&[]), Duration::from_secs(3600));
        assert_eq!(max_age(&["max-age=soon"]), Duration::from_secs(3600));
    }

    #[test]
    fn key_sets_keep_only_rs256_signing_keys() {
        let body = serde_json::json!({ "keys": [
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB" },
            { "kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA" },
            { "kty": "RSA", "kid": "ps", "alg": "PS256", "n": "AQAB", "e": "AQAB" },
            { "kty": "RSA", "n": "AQAB", "e": "AQAB" },
            { "kty": "RSA", "kid": "good", "alg": "RS256", "use": "sig", "n": "AQAB", "e": "AQAB" },
            "not even an object"
        ]});
        let keys = parse_key_set(body.to_string().as_bytes()).expect("one usable key");
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["good"]);
        assert!(parse_key_set(br#"{"keys":[]}"#).is_err());
        assert!(parse_key_set(b"<html>").is_err());
    }
}
