//! The submit function: accepts batches from the Sheet and the CLI. Handlers are thin; the work
//! is in [`assetgen_common::submission::Submitter`].

pub mod cors;
mod handlers;

use assetgen_common::auth::{Authenticator, CapabilityTokens, Identity, authorize_batch};
use assetgen_common::batch_control::BatchControl;
use assetgen_common::domain::BatchId;
use assetgen_common::problem::Problem;
use assetgen_common::store::ObjectStore;
use assetgen_common::submission::Submitter;
use axum::http::HeaderMap;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Debug)]
pub struct SubmitState {
    pub submitter: Submitter,
    pub control: BatchControl,
    pub store: Arc<dyn ObjectStore>,
    pub auth: Arc<dyn Authenticator>,
    pub public_url: Option<url::Url>,
    /// Issues browsers' per-batch tokens (put in the page and events links) and accepts them on
    /// that batch's status, cancel and retry.
    pub capabilities: Option<CapabilityTokens>,
}

impl SubmitState {
    /// Who may act on `batch`: a bearer identity, or a capability token for this very batch.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        access_token: Option<&str>,
        batch: &BatchId,
    ) -> Result<Identity, Problem> {
        authorize_batch(&self.auth, self.capabilities.as_ref(), headers, access_token, batch).await
    }
}

/// `POST /v1/batches`, `POST /v1/estimate`, `GET /v1/batches/{id}`, `GET /v1/budget`,
/// `POST /v1/batches/{id}/cancel`, `POST /v1/batches/{id}/retry`.
pub fn router(state: Arc<SubmitState>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(handlers::create_batch))
        .routes(routes!(handlers::estimate))
        .routes(routes!(handlers::get_batch))
        .routes(routes!(handlers::get_budget))
        .routes(routes!(handlers::cancel))
        .routes(routes!(handlers::retry))
        .with_state(state)
}
