//! `assetgen serve` under OIDC: its in-process queue pushes rows to its own `/pubsub/*` routes, and
//! no Google service account signs those pushes. The queue sends a random per-process bearer
//! secret instead, and only that secret is accepted there: users' ID tokens never are.

use super::{Authenticator, Identity, bearer_token};
use crate::config::Secret;
use crate::domain::UserId;
use crate::problem::{ErrorCode, Problem};
use async_trait::async_trait;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::http::HeaderMap;
use base64::Engine as _;

/// The identity pushes run as, in logs.
pub const LOCAL_PUSH_USER: &str = "local-queue@localhost";

/// Accepts `Authorization: Bearer <secret>` with this process's secret, nothing else.
#[derive(Clone)]
pub struct LocalPushAuth {
    secret: Secret,
}

impl std::fmt::Debug for LocalPushAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalPushAuth(secret: ***)")
    }
}

impl LocalPushAuth {
    /// A fresh random secret, known to this process only.
    pub fn random() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self { secret: Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)) }
    }

    /// What the local queue sends as its bearer token.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }
}

#[async_trait]
impl Authenticator for LocalPushAuth {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, Problem> {
        let token = bearer_token(headers)?;
        if verify_slices_are_equal(token.as_bytes(), self.secret.expose().as_bytes()).is_err() {
            tracing::info!("push refused: not this process's queue");
            return Err(Problem::new(ErrorCode::Unauthenticated, "Only this server's own queue may push rows here."));
        }
        Ok(Identity { user: UserId::new(LOCAL_PUSH_USER) })
    }

    fn admits(&self, user: &UserId) -> bool {
        user.as_str() == LOCAL_PUSH_USER
    }
}
