//! Where Vertex AI calls get their bearer token: Application Default Credentials in the cloud and on
//! a developer's machine, a fixed token in tests.

use async_trait::async_trait;
use google_cloud_auth::credentials::{AccessTokenCredentials, Builder};

/// Why no token could be had. Never carries a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct TokenError {
    pub detail: String,
    /// A passing failure (the metadata server did not answer…): the row is retried later.
    pub retryable: bool,
}

/// An OAuth 2.0 access token for `Authorization: Bearer`, fresh enough for one call.
#[async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    async fn access_token(&self) -> Result<String, TokenError>;
}

/// Application Default Credentials via the official `google-cloud-auth` crate (scope
/// `cloud-platform`): the Cloud Run service account, `GOOGLE_APPLICATION_CREDENTIALS`, or
/// `gcloud auth application-default login`. Tokens are cached and refreshed by the crate.
#[derive(Debug, Clone)]
pub struct AdcTokenSource {
    credentials: AccessTokenCredentials,
}

impl AdcTokenSource {
    /// Finds the credentials; fails when there are none or they cannot be read.
    pub fn new() -> Result<Self, super::GeminiSetupError> {
        let credentials = Builder::default()
            .build_access_token_credentials()
            .map_err(|e| super::GeminiSetupError(format!("no usable Application Default Credentials: {e}")))?;
        Ok(Self { credentials })
    }
}

#[async_trait]
impl TokenSource for AdcTokenSource {
    async fn access_token(&self) -> Result<String, TokenError> {
        self.credentials.access_token().await.map(|t| t.token).map_err(|e| TokenError {
            detail: format!("could not get an access token from Application Default Credentials: {e}"),
            retryable: e.is_transient(),
        })
    }
}

/// A fixed token (tests, or a token minted elsewhere). `Debug` does not show it.
#[derive(Clone)]
pub struct StaticToken(String);

impl StaticToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(***)")
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    async fn access_token(&self) -> Result<String, TokenError> {
        Ok(self.0.clone())
    }
}
