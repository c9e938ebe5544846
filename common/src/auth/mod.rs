//! Who is calling, and what they may do. The port is [`Authenticator`]; locally [`DevAuth`] trusts
//! a header, in the cloud (and `assetgen serve` with `ASSETGEN_AUTH=oidc`) the OIDC verifier checks
//! Google ID tokens.
//!
//! - [`OidcAuth`]: users, a Google ID token for a user audience, on the [`AllowList`] (`ASSETGEN_ALLOWED`).
//! - [`PushAuth`]: Pub/Sub push, a Google ID token of `ASSETGEN_PUSH_SA` for the push audience.
//! - [`LocalPushAuth`]: `assetgen serve`'s own queue under OIDC.
//! - [`Access`]: who may read, cancel or retry a batch (its owner, admins, page links, control
//!   tokens), and the links that carry those rights.
//! - [`CapabilityTokens`]: page links (read one batch for days), control tokens (cancel and
//!   retry for an hour) and reference manager tokens (the `/refs` page acting as its signed-in
//!   user, for an hour); [`LinkSigner`]: image and reference links (one object, never expire).
//! - [`JwksCache`]: the signing keys both OIDC checks share.

mod allow;
mod batch_access;
mod capability;
mod jwks;
mod links;
mod local_push;
mod oidc;

pub use allow::AllowList;
pub use batch_access::{Access, BatchAction, Caller};
pub use capability::{
    CONTROL_TOKEN_TTL, CapabilityTokens, DEFAULT_CAPABILITY_TTL, Grant, MIN_CAPABILITY_SECRET_BYTES, PAGE_LINK_TTL,
    REFS_MANAGER_TOKEN_TTL, Scope, WeakCapabilitySecret,
};
pub use jwks::{GOOGLE_JWKS_URL, JwksCache, JwksOptions, KeyError};
pub use links::{LinkSigner, MIN_LINK_SECRET_BYTES, WeakLinkSecret};
pub use local_push::{LOCAL_PUSH_USER, LocalPushAuth};
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

    /// Whether `user` may still call (the allow-list). A token this service issued to a signed-in
    /// user earlier (a reference manager token) is honoured only while this holds, so it is never
    /// more lenient than signing in again.
    fn admits(&self, user: &UserId) -> bool;
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

    fn admits(&self, _: &UserId) -> bool {
        true
    }
}
