//! The submit function: accepts batches from the Sheet and the CLI. Handlers are thin; the work
//! is in [`assetgen_common::submission::Submitter`].

pub mod cors;
mod handlers;

use assetgen_common::auth::Access;
use assetgen_common::batch_control::BatchControl;
use assetgen_common::store::ObjectStore;
use assetgen_common::submission::Submitter;
use assetgen_common::wire_schema::{Deployment, state_deployment};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Debug)]
pub struct SubmitState {
    pub submitter: Submitter,
    pub control: BatchControl,
    pub store: Arc<dyn ObjectStore>,
    /// Who may call, who owns which batch, and the page links, control tokens and image links.
    pub access: Access,
    pub public_url: Option<url::Url>,
}

/// `POST /v1/batches`, `POST /v1/estimate`, `GET /v1/batches/{id}`, `GET /v1/budget`,
/// `POST /v1/batches/{id}/cancel`, `POST /v1/batches/{id}/retry`,
/// `POST /v1/batches/{id}/control-token`, `POST /v1/refs/manager-token`.
pub fn router(state: Arc<SubmitState>) -> OpenApiRouter {
    let mut router = OpenApiRouter::new()
        .routes(routes!(handlers::create_batch))
        .routes(routes!(handlers::estimate))
        .routes(routes!(handlers::get_batch))
        .routes(routes!(handlers::get_budget))
        .routes(routes!(handlers::cancel))
        .routes(routes!(handlers::retry))
        .routes(routes!(handlers::control_token))
        .routes(routes!(handlers::refs_manager_token));
    let deployment = Deployment {
        limits: state.submitter.limits,
        ref_policy: state.submitter.ref_policy,
        prices: state.submitter.prices.clone(),
    };
    state_deployment(router.get_openapi_mut(), &deployment);
    router.with_state(state)
}
