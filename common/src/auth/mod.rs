//! Who is calling. The port is [`Authenticator`]; locally [`DevAuth`] trusts a header, in the cloud
//! the OIDC verifier checks Google ID tokens.
//!
//! - [`OidcAuth`]: users, a Google ID token on the [`AllowList`] (`ASSETGEN_ALLOWED`).
//! - [`PushAuth`]: Pub/Sub push, a Google ID token of `ASSETGEN_PUSH_SA`.
//! - [`CapabilityTokens`] and [`BatchAuth`]: a browser's `?access_token=` for one batch.
//! - [`JwksCache`]: the signing keys both OIDC checks share.

mod allow;
mod capability;
mod jwks;
mod oidc;

pub use allow::AllowList;
pub use capability::{
    BatchAuth, CapabilityTokens, DEFAULT_CAPABILITY_TTL, MIN_CAPABILITY_SECRET_BYTES, WeakCapabilitySecret,
    authorize_batch,
};
pub use jwks::{GOOGLE_JWKS_URL, JwksCache, JwksOptions, KeyError};
pub use oidc::{GOOGLE_ISSUERS, OIDC_LEEWAY_SECS, OidcAuth, OidcVerifier, PushAuth, bearer_token};

use crate::domain::UserId;
use crate::problem::Problem;
use async_trait::async_trait;
use axum::http::HeaderMap;

pub const DEV_USER_HEADER: &str = "x-assetgen-user";
pub const DEV_USER: &str = "dev@localhost";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
}

#[async_trait]
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, Problem>;
}

/// Local development: the caller is whoever `X-Assetgen-User` says, or `dev@localhost`.
/// Never use it where a network other than loopback can reach the server.
#[derive(Debug, Clone, Default)]
pub struct DevAuth;

#[async_trait]
impl Authenticator for DevAuth {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, Problem> {
        let user = headers
            .get(DEV_USER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .unwrap_or(DEV_USER);
        Ok(Identity { user: UserId::new(user) })
    }
}
