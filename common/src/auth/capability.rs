//! Capability tokens for browsers: `EventSource` cannot send an `Authorization` header, so the
//! page's events (and image) links carry `?access_token=…`, a short-lived HMAC-SHA256 token
//! (a JWT, HS256) bound to one batch and one user. The secret is shared by the instances that
//! issue and check tokens and is never logged.

use super::{Authenticator, Identity};
use crate::config::Secret;
use crate::domain::{BatchId, UserId};
use crate::problem::{ErrorCode, Problem};
use axum::http::{HeaderMap, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How long an issued link works unless the issuer says otherwise.
pub const DEFAULT_CAPABILITY_TTL: Duration = Duration::from_secs(3600);

/// The shortest secret accepted: 256 bits, the size of the HMAC-SHA256 output.
pub const MIN_CAPABILITY_SECRET_BYTES: usize = 32;

/// The `aud` of every capability token: no other HS256 token of ours can pass for one.
const CAPABILITY_AUDIENCE: &str = "assetgen:batch";

/// Clock skew tolerated on `exp` between the instance that issued and the one that checks.
const CAPABILITY_LEEWAY_SECS: u64 = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the capability secret must be at least {MIN_CAPABILITY_SECRET_BYTES} bytes long")]
pub struct WeakCapabilitySecret;

#[derive(Debug, Serialize, Deserialize)]
struct CapabilityClaims {
    /// The user the link was issued to.
    sub: String,
    /// The one batch it opens.
    bid: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// Issues and checks batch-scoped capability tokens.
#[derive(Clone)]
pub struct CapabilityTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for CapabilityTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapabilityTokens(secret: ***)")
    }
}

impl CapabilityTokens {
    /// Every instance that issues or checks links must share `secret`.
    pub fn new(secret: &Secret) -> Result<Self, WeakCapabilitySecret> {
        Self::from_bytes(secret.expose().as_bytes())
    }

    /// A fresh random secret: links work only on this process (local `serve`, tests).
    pub fn random() -> Self {
        let secret: [u8; 32] = rand::random();
        Self::from_bytes(&secret).unwrap_or_else(|_| unreachable!("32 random bytes are a strong enough secret"))
    }

    fn from_bytes(secret: &[u8]) -> Result<Self, WeakCapabilitySecret> {
        if secret.len() < MIN_CAPABILITY_SECRET_BYTES {
            return Err(WeakCapabilitySecret);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[CAPABILITY_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = CAPABILITY_LEEWAY_SECS;
        validation.validate_exp = true;
        Ok(Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation })
    }

    /// A token that lets `user` read `batch` (events, images) for `ttl`
    /// ([`DEFAULT_CAPABILITY_TTL`] is the usual choice). URL-safe as it is.
    pub fn issue(&self, batch: &BatchId, user: &UserId, ttl: Duration) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = CapabilityClaims {
            sub: user.as_str().to_owned(),
            bid: batch.to_string(),
            aud: CAPABILITY_AUDIENCE.to_owned(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_else(|e| unreachable!("HS256 signing of plain claims cannot fail: {e}"))
    }

    /// The user a token was issued to, when it is genuine, unexpired and issued for `batch`.
    /// A refusal is `UNAUTHENTICATED` (forged, tampered, expired) or `FORBIDDEN` (another batch);
    /// its detail never quotes the token.
    pub fn verify(&self, token: &str, batch: &BatchId) -> Result<Identity, Problem> {
        let refuse = |reason: &'static str, code: ErrorCode, detail: &str| {
            tracing::info!(reason, %batch, "capability token refused");
            Problem::new(code, detail)
        };
        let claims = jsonwebtoken::decode::<CapabilityClaims>(token.trim(), &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => refuse(
                    "expired",
                    ErrorCode::Unauthenticated,
                    "This link's access token has expired; open the batch again from the Sheet or the CLI.",
                ),
                _ => refuse("invalid", ErrorCode::Unauthenticated, "This link's access token is not valid."),
            })?
            .claims;
        if claims.bid != batch.to_string() {
            return Err(refuse(
                "other batch",
                ErrorCode::Forbidden,
                "This link's access token was issued for another batch.",
            ));
        }
        let user = UserId::new(claims.sub);
        if user.as_str().is_empty() {
            return Err(refuse("no user", ErrorCode::Unauthenticated, "This link's access token is not valid."));
        }
        Ok(Identity { user })
    }
}

/// Authentication for one batch's resources (the relay's events, image links): a bearer token
/// checked by the inner [`Authenticator`] (OIDC in the cloud, dev locally), or a capability
/// token for that batch from the query string.
#[derive(Debug, Clone)]
pub struct BatchAuth {
    inner: Arc<dyn Authenticator>,
    tokens: CapabilityTokens,
}

impl BatchAuth {
    pub fn new(inner: Arc<dyn Authenticator>, tokens: CapabilityTokens) -> Self {
        Self { inner, tokens }
    }

    pub fn tokens(&self) -> &CapabilityTokens {
        &self.tokens
    }

    pub fn inner(&self) -> &Arc<dyn Authenticator> {
        &self.inner
    }

    /// An `Authorization` header, when present, decides (a bad one is refused even with a good
    /// `access_token`); without one, a non-empty `query_token` must be a capability token for
    /// `batch`; with neither, the inner authenticator decides (OIDC refuses with 401).
    pub async fn authenticate_for_batch(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        batch: &BatchId,
    ) -> Result<Identity, Problem> {
        if headers.contains_key(header::AUTHORIZATION) {
            return self.inner.authenticate(headers).await;
        }
        match query_token.map(str::trim).filter(|t| !t.is_empty()) {
            Some(token) => self.tokens.verify(token, batch),
            None => self.inner.authenticate(headers).await,
        }
    }
}

/// Who may see or act on `batch`: a bearer identity, or — where capability tokens are configured —
/// a browser's token for this very batch. The relay and submit both decide this way.
pub async fn authorize_batch(
    auth: &Arc<dyn Authenticator>,
    capabilities: Option<&CapabilityTokens>,
    headers: &HeaderMap,
    access_token: Option<&str>,
    batch: &BatchId,
) -> Result<Identity, Problem> {
    match capabilities {
        Some(tokens) => {
            BatchAuth::new(auth.clone(), tokens.clone()).authenticate_for_batch(headers, access_token, batch).await
        }
        None => auth.authenticate(headers).await,
    }
}
