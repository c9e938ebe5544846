//! The generate function: Pub/Sub push endpoint for rows, and the dead-letter endpoint. Handlers
//! only translate between the push protocol and [`assetgen_common::generation::RowWorker`]:
//! 2xx acknowledges, 429/503 asks Pub/Sub to redeliver later.

mod handlers;

use assetgen_common::auth::Authenticator;
use assetgen_common::generation::RowWorker;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Debug)]
pub struct GenerateState {
    pub worker: RowWorker,
    /// Who may push: Pub/Sub's service account in the cloud.
    pub auth: Arc<dyn Authenticator>,
}

/// `POST /pubsub/rows`, `POST /pubsub/dead-letter`.
pub fn router(state: Arc<GenerateState>) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(handlers::push_row)).routes(routes!(handlers::dead_letter)).with_state(state)
}
