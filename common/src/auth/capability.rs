//! Batch tokens for browsers and delegates, HMAC-SHA256 JWTs (HS256) bound to one batch, signed
//! with `ASSETGEN_CAPABILITY_SECRET`. Two scopes:
//!
//! - **read** (the page link): `EventSource` cannot send an `Authorization` header, so the page's
//!   events and status calls carry `?access_token=…`. It lets whoever holds the link watch one batch
//!   (status, events, images) for days ([`PAGE_LINK_TTL`]) and nothing else: it may be forwarded.
//! - **control**: cancel and retry of one batch for an hour ([`CONTROL_TOKEN_TTL`]), issued only to
//!   the batch's owner (`POST /v1/batches/{id}/control-token`). The Sheet and the CLI put it in the
//!   page URL's fragment (`#control=…`, which browsers never send), and the page sends it as
//!   `Authorization: Bearer`; from a query string it counts as a read token only.
//!
//!
//! A third kind, under its own audience, is not bound to a batch: the **reference manager token**
//! (`POST /v1/refs/manager-token`, [`REFS_MANAGER_TOKEN_TTL`]) lets the `/refs` page act as its
//! signed-in user on the reference library routes only, for the same reason: a browser opened from
//! the Sheet or the CLI has no Google ID token of its own. It rides in the fragment (`/refs#token=…`).
//! The audiences keep the kinds apart: a batch token is no manager token, and a manager token
//! opens no batch.
//!
//! The secret is shared by the instances that issue and check tokens and is never logged.

use super::Identity;
use crate::config::Secret;
use crate::domain::{BatchId, UserId};
use crate::problem::{ErrorCode, Problem};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a page link (a read token) works: a batch is watched for days, not an hour.
pub const PAGE_LINK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a control token works: long enough to watch a batch and press Retry, short enough
/// that a leaked one soon stops mattering.
pub const CONTROL_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// How long a reference manager token works: as long as the Google ID token it was issued for.
pub const REFS_MANAGER_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Kept for callers that issue read tokens with the old name.
pub const DEFAULT_CAPABILITY_TTL: Duration = PAGE_LINK_TTL;

/// The shortest secret accepted: 256 bits, the size of the HMAC-SHA256 output.
pub const MIN_CAPABILITY_SECRET_BYTES: usize = 32;

/// The `aud` of every capability token: no other HS256 token of ours can pass for one.
const CAPABILITY_AUDIENCE: &str = "assetgen:batch";

/// The `aud` of reference manager tokens.
const REFS_MANAGER_AUDIENCE: &str = "assetgen:refs";

/// Clock skew tolerated on `exp` between the instance that issued and the one that checks.
const CAPABILITY_LEEWAY_SECS: u64 = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the capability secret must be at least {MIN_CAPABILITY_SECRET_BYTES} bytes long")]
pub struct WeakCapabilitySecret;

/// What a token lets its holder do to its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Status, events and images.
    #[default]
    Read,
    /// Read, cancel and retry.
    Control,
}

/// A checked token: who it was issued to and what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The user the token was issued to (the batch's owner for a control token).
    pub issued_to: Identity,
    pub scope: Scope,
}

#[derive(Debug, Serialize, Deserialize)]
struct CapabilityClaims {
    /// The user the link was issued to.
    sub: String,
    /// The one batch it opens.
    bid: String,
    /// Tokens issued before scopes existed were page links: read.
    #[serde(default)]
    scope: Scope,
    aud: String,
    iat: u64,
    exp: u64,
}

/// A reference manager token's claims: a user, and no batch.
#[derive(Debug, Serialize, Deserialize)]
struct RefsManagerClaims {
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// Issues and checks batch-scoped capability tokens and reference manager tokens.
#[derive(Clone)]
pub struct CapabilityTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    refs_validation: Validation,
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
        let mut refs_validation = validation.clone();
        refs_validation.set_audience(&[REFS_MANAGER_AUDIENCE]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            refs_validation,
        })
    }

    /// A read token (a page link) for `batch`, issued to `user`; [`PAGE_LINK_TTL`] is the usual `ttl`.
    /// URL-safe as it is.
    pub fn issue(&self, batch: &BatchId, user: &UserId, ttl: Duration) -> String {
        self.issue_scoped(batch, user, Scope::Read, ttl)
    }

    /// A token of `scope` for `batch`, issued to `user`, valid for `ttl`.
    pub fn issue_scoped(&self, batch: &BatchId, user: &UserId, scope: Scope, ttl: Duration) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = CapabilityClaims {
            sub: user.as_str().to_owned(),
            bid: batch.to_string(),
            scope,
            aud: CAPABILITY_AUDIENCE.to_owned(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_else(|e| unreachable!("HS256 signing of plain claims cannot fail: {e}"))
    }

    /// Whether `token` is shaped like one of these (an HS256 JWT) rather than a Google ID token
    /// (RS256): it says which check a bearer token goes to, not whether it is genuine.
    pub fn is_capability_token(token: &str) -> bool {
        jsonwebtoken::decode_header(token.trim()).is_ok_and(|h| h.alg == Algorithm::HS256)
    }

    /// What a token allows, when it is genuine, unexpired and issued for `batch`. A refusal is
    /// `UNAUTHENTICATED` (forged, tampered, expired) or `BATCH_NOT_FOUND` (issued for another
    /// batch: the same answer as a batch that does not exist); its detail never quotes the token.
    pub fn verify(&self, token: &str, batch: &BatchId) -> Result<Grant, Problem> {
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
            tracing::info!(reason = "other batch", %batch, "capability token refused");
            return Err(Problem::batch_not_found(&batch.to_string()));
        }
        let user = UserId::new(claims.sub);
        if user.as_str().is_empty() {
            return Err(refuse("no user", ErrorCode::Unauthenticated, "This link's access token is not valid."));
        }
        Ok(Grant { issued_to: Identity { user }, scope: claims.scope })
    }

    /// A reference manager token for `user` (the `/refs` page acting as them on the reference
    /// library), valid for `ttl`; [`REFS_MANAGER_TOKEN_TTL`] is the usual one.
    pub fn issue_refs_manager(&self, user: &UserId, ttl: Duration) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = RefsManagerClaims {
            sub: user.as_str().to_owned(),
            aud: REFS_MANAGER_AUDIENCE.to_owned(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_else(|e| unreachable!("HS256 signing of plain claims cannot fail: {e}"))
    }

    /// The user a reference manager token was issued to, when it is genuine and unexpired. A
    /// refusal is `UNAUTHENTICATED`, with a detail that says how to get a fresh one and never
    /// quotes the token; a batch token (another audience) is refused the same way.
    pub fn verify_refs_manager(&self, token: &str) -> Result<Identity, Problem> {
        let refuse = |reason: &'static str, detail: &str| {
            tracing::info!(reason, "reference manager token refused");
            Problem::new(ErrorCode::Unauthenticated, detail)
        };
        let claims = jsonwebtoken::decode::<RefsManagerClaims>(token.trim(), &self.decoding, &self.refs_validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => refuse(
                    "expired",
                    "This reference manager link has expired: such links work for an hour, then the Sheet \
                     or `assetgen refs` gives a fresh one.",
                ),
                _ => refuse("invalid", "This is not a valid reference manager token."),
            })?
            .claims;
        let user = UserId::new(claims.sub);
        if user.as_str().is_empty() {
            return Err(refuse("no user", "This is not a valid reference manager token."));
        }
        Ok(Identity { user })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> CapabilityTokens {
        CapabilityTokens::new(&Secret::new("a-capability-secret-of-at-least-32-bytes")).expect("secret")
    }

    #[test]
    fn a_refs_manager_token_names_its_user_and_no_batch_token_passes_for_one() {
        let tokens = tokens();
        let user = UserId::new("owner@studio.test");
        let token = tokens.issue_refs_manager(&user, REFS_MANAGER_TOKEN_TTL);
        assert!(CapabilityTokens::is_capability_token(&token));
        assert_eq!(tokens.verify_refs_manager(&token).expect("genuine").user, user);

        let batch = BatchId::new();
        // The audiences keep the kinds apart, both ways.
        let control = tokens.issue_scoped(&batch, &user, Scope::Control, CONTROL_TOKEN_TTL);
        let refused = tokens.verify_refs_manager(&control).expect_err("a control token is no manager token");
        assert_eq!(refused.code, ErrorCode::Unauthenticated);
        let refused = tokens.verify(&token, &batch).expect_err("a manager token opens no batch");
        assert_eq!(refused.code, ErrorCode::Unauthenticated);

        let other = CapabilityTokens::random().issue_refs_manager(&user, REFS_MANAGER_TOKEN_TTL);
        assert_eq!(tokens.verify_refs_manager(&other).expect_err("another secret").code, ErrorCode::Unauthenticated);
        let mut tampered = token.clone();
        tampered.push('x');
        assert!(tokens.verify_refs_manager(&tampered).is_err());
    }

    #[test]
    fn an_expired_refs_manager_token_says_how_to_get_a_fresh_one() {
        let tokens = tokens();
        let now = jsonwebtoken::get_current_timestamp();
        let claims = RefsManagerClaims {
            sub: "owner@studio.test".to_owned(),
            aud: REFS_MANAGER_AUDIENCE.to_owned(),
            iat: now - 7200,
            exp: now - 3600,
        };
        let expired = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &tokens.encoding).expect("token");
        let refused = tokens.verify_refs_manager(&expired).expect_err("expired");
        assert_eq!(refused.code, ErrorCode::Unauthenticated);
        assert!(refused.detail.contains("expired") && refused.detail.contains("assetgen refs"), "{}", refused.detail);
        assert!(!refused.detail.contains(&expired));
    }
}
