//! Google OIDC ID tokens: users calling from the Sheet (`ScriptApp.getIdentityToken()`) and
//! Pub/Sub push requests, both sent as `Authorization: Bearer <ID token>`.
//!
//! A token is accepted when all of these hold: it is a compact JWS whose header says `RS256`
//! (nothing else: not `none`, not `HS256`, not another RSA variant); its `kid` names a key of the
//! configured JWKS ([`JwksCache`]) and the signature verifies with it; `iss` is Google's; `aud` is
//! one of the verifier's audiences; `exp` is in the future and `nbf`, when present, in the past
//! (30 s leeway); it carries an `email` and `email_verified: true`. Users must then be on the
//! [`AllowList`]; pushes must come from the configured service account.
//!
//! Users and Pub/Sub push have separate audiences (`ASSETGEN_OIDC_AUDIENCE`, a list: the Sheet's
//! OAuth client id, the service URL; `ASSETGEN_PUSH_AUDIENCE`: generate's push audience), each
//! checked by its own verifier on its own routes: a push token is refused on the user-facing
//! routes and a user's token on `/pubsub/*`, whatever their accounts.
//!
//! A refusal is a [`Problem`]: `UNAUTHENTICATED` (401) when the token is missing or not a valid
//! token for this service, `FORBIDDEN` (403) when it is valid but its account may not call. The
//! detail names the reason, never the token.

use super::allow::AllowList;
use super::jwks::{JwksCache, KeyError};
use super::{Authenticator, Identity};
use crate::domain::UserId;
use crate::problem::{ErrorCode, Problem};
use async_trait::async_trait;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use std::sync::Arc;

/// The `iss` values of Google ID tokens.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const OIDC_LEEWAY_SECS: u64 = 30;

/// Longer than any ID token; a header this long is refused before any parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

fn unauthenticated(reason: &'static str, detail: impl Into<String>) -> Problem {
    tracing::info!(reason, "bearer token refused");
    Problem::new(ErrorCode::Unauthenticated, detail)
}

fn forbidden(reason: &'static str, detail: impl Into<String>) -> Problem {
    tracing::info!(reason, "caller refused");
    Problem::new(ErrorCode::Forbidden, detail)
}

/// The token of an `Authorization: Bearer` header (scheme case-insensitive), or a 401.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Problem> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthenticated(
            "missing",
            "No Authorization header: send `Authorization: Bearer <Google ID token>`.",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    token.ok_or_else(|| unauthenticated("not bearer", "The Authorization header is not `Bearer <Google ID token>`."))
}

/// The claims this service reads; `exp`, `nbf`, `iss` and `aud` are checked by `jsonwebtoken`.
#[derive(Deserialize)]
struct GoogleClaims {
    email: Option<String>,
    /// A boolean in Google's tokens; some issuers send the string "true".
    email_verified: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: Option<String>,
    kid: Option<String>,
}

/// Verifies Google ID tokens for a set of audiences. [`OidcAuth`] and [`PushAuth`] each have
/// their own (their audiences differ) and may share the key cache.
#[derive(Debug)]
pub struct OidcVerifier {
    jwks: Arc<JwksCache>,
    audiences: Vec<String>,
    validation: Validation,
}

impl OidcVerifier {
    /// Accepts tokens whose `aud` is one of `audiences` (blank entries are dropped).
    pub fn new<I, S>(audiences: I, jwks: Arc<JwksCache>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let audiences: Vec<String> =
            audiences.into_iter().map(|a| a.into().trim().to_owned()).filter(|a| !a.is_empty()).collect();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&audiences);
        validation.set_issuer(&GOOGLE_ISSUERS);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = OIDC_LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        Self { jwks, audiences, validation }
    }

    /// A verifier with its own key cache at `jwks_url` (default options).
    pub fn for_url<I, S>(audiences: I, jwks_url: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(audiences, Arc::new(JwksCache::new(jwks_url)))
    }

    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    pub fn jwks(&self) -> &Arc<JwksCache> {
        &self.jwks
    }

    /// The verified, lower-cased email of the token's account. Allow-lists are the callers' job.
    pub async fn verify(&self, token: &str) -> Result<Identity, Problem> {
        if self.audiences.is_empty() {
            tracing::error!(
                "no OIDC audience is configured (ASSETGEN_OIDC_AUDIENCE, ASSETGEN_PUSH_AUDIENCE): refusing every token"
            );
            return Err(Problem::new(
                ErrorCode::Internal,
                "This service has no OIDC audience configured, so it cannot check any token.",
            ));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(unauthenticated("too long", "The bearer token is too long to be a Google ID token."));
        }
        let header = jose_header(token)?;
        // Checked here, before any key lookup, and again by `decode` (RS256 only).
        if header.alg.as_deref() != Some("RS256") {
            return Err(unauthenticated(
                "algorithm",
                "The token is not signed with RS256; only Google ID tokens are accepted.",
            ));
        }
        let Some(kid) = header.kid.filter(|k| !k.is_empty()) else {
            return Err(unauthenticated("no kid", "The token names no signing key (kid)."));
        };
        let key = match self.jwks.key(&kid).await {
            Ok(key) => key,
            Err(KeyError::UnknownKey) => {
                return Err(unauthenticated("unknown kid", "The token is signed by a key Google does not publish."));
            }
            Err(KeyError::Unavailable) => {
                // Our side cannot check right now: 503, so callers (and Pub/Sub) come back later.
                return Err(Problem::new(
                    ErrorCode::AuthUnavailable,
                    "Google's signing keys could not be fetched to check the token; try again in a minute.",
                ));
            }
        };
        let claims =
            jsonwebtoken::decode::<GoogleClaims>(token, &key, &self.validation).map_err(|e| refusal(e.kind()))?.claims;
        let Some(email) = claims.email.map(|e| e.trim().to_ascii_lowercase()).filter(|e| e.contains('@')) else {
            return Err(unauthenticated(
                "no email",
                "The token carries no email address; request the ID token with the email scope.",
            ));
        };
        // Absent counts as unverified: an address nobody proved they own must not pass an allow-list.
        let verified = match &claims.email_verified {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        if !verified {
            return Err(forbidden("email not verified", format!("The email address {email} is not verified.")));
        }
        Ok(Identity { user: UserId::new(email) })
    }
}

/// The header of a compact JWS, parsed by hand so that `alg: none` and unknown algorithms are
/// told apart from garbage.
fn jose_header(token: &str) -> Result<JoseHeader, Problem> {
    let malformed = || unauthenticated("malformed", "The bearer token is not a well-formed JWT.");
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(malformed());
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| malformed())?;
    serde_json::from_slice(&bytes).map_err(|_| malformed())
}

/// A `jsonwebtoken` failure as a 401 whose detail never quotes the token or its claims.
fn refusal(kind: &ErrorKind) -> Problem {
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            unauthenticated("signature", "The token's signature does not verify.")
        }
        ErrorKind::ExpiredSignature => unauthenticated("expired", "The token has expired; get a fresh one."),
        ErrorKind::ImmatureSignature => unauthenticated("not yet valid", "The token is not valid yet (nbf)."),
        ErrorKind::InvalidAudience => unauthenticated("audience", "The token was issued for another audience."),
        ErrorKind::InvalidIssuer => unauthenticated("issuer", "The token was not issued by Google."),
        ErrorKind::MissingRequiredClaim(_) => {
            unauthenticated("missing claim", "The token lacks a required claim (exp, iss or aud).")
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm | ErrorKind::InvalidAlgorithmName => {
            unauthenticated("algorithm", "The token is not signed with RS256; only Google ID tokens are accepted.")
        }
        _ => unauthenticated("malformed", "The bearer token is not a well-formed JWT."),
    }
}

/// Users: a verified Google ID token whose email is on the allow-list.
#[derive(Debug, Clone)]
pub struct OidcAuth {
    verifier: Arc<OidcVerifier>,
    allowed: AllowList,
}

impl OidcAuth {
    /// From plain config values: `ASSETGEN_OIDC_AUDIENCE` (a list), `ASSETGEN_OIDC_JWKS_URL`
    /// ([`super::GOOGLE_JWKS_URL`] by default) and `ASSETGEN_ALLOWED` (empty = refuse everyone).
    pub fn new<A, T, I, S>(audiences: A, jwks_url: impl Into<String>, allowed: I) -> Self
    where
        A: IntoIterator<Item = T>,
        T: Into<String>,
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::with_verifier(Arc::new(OidcVerifier::for_url(audiences, jwks_url)), AllowList::new(allowed))
    }

    pub fn with_verifier(verifier: Arc<OidcVerifier>, allowed: AllowList) -> Self {
        if allowed.is_empty() {
            tracing::warn!("ASSETGEN_ALLOWED is empty: every caller will be refused");
        }
        Self { verifier, allowed }
    }

    pub fn verifier(&self) -> &Arc<OidcVerifier> {
        &self.verifier
    }
}

#[async_trait]
impl Authenticator for OidcAuth {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, Problem> {
        let identity = self.verifier.verify(bearer_token(headers)?).await?;
        if !self.allowed.allows(identity.user.as_str()) {
            return Err(forbidden(
                "not allowed",
                format!("{} is not on this service's allow-list (ASSETGEN_ALLOWED).", identity.user),
            ));
        }
        Ok(identity)
    }

    fn admits(&self, user: &UserId) -> bool {
        self.allowed.allows(user.as_str())
    }
}

/// Pub/Sub push: a verified Google ID token for the push audience (`ASSETGEN_PUSH_AUDIENCE`) of
/// the one configured service account (`ASSETGEN_PUSH_SA`). Without one, every push is refused.
#[derive(Debug, Clone)]
pub struct PushAuth {
    verifier: Arc<OidcVerifier>,
    service_account: Option<String>,
}

impl PushAuth {
    pub fn new<A, T>(audiences: A, jwks_url: impl Into<String>, service_account: Option<String>) -> Self
    where
        A: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self::with_verifier(Arc::new(OidcVerifier::for_url(audiences, jwks_url)), service_account)
    }

    pub fn with_verifier(verifier: Arc<OidcVerifier>, service_account: Option<String>) -> Self {
        let service_account = service_account.map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty());
        if service_account.is_none() {
            tracing::warn!("ASSETGEN_PUSH_SA is not set: every Pub/Sub push will be refused");
        }
        Self { verifier, service_account }
    }
}

#[async_trait]
impl Authenticator for PushAuth {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, Problem> {
        let token = bearer_token(headers)?;
        let Some(expected) = &self.service_account else {
            return Err(forbidden(
                "push not configured",
                "Pub/Sub pushes are refused: no push service account is configured (ASSETGEN_PUSH_SA).",
            ));
        };
        let identity = self.verifier.verify(token).await?;
        if identity.user.as_str() != expected {
            return Err(forbidden(
                "not the push service account",
                format!("{} is not the service account this service accepts pushes from.", identity.user),
            ));
        }
        Ok(identity)
    }

    fn admits(&self, user: &UserId) -> bool {
        self.service_account.as_deref() == Some(user.as_str())
    }
}
