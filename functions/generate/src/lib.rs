//! The generate function: Pub/Sub push endpoint for rows, and the dead-letter endpoint. Handlers
//! only translate between the push protocol and [`assetgen_common::generation::RowWorker`]:
//! 2xx acknowledges, 429/503 asks Pub/Sub to redeliver later. A duplicate that finds its row
//! leased by a live delivery is acknowledged: Pub/Sub counts every delivery toward dead-lettering,
//! which must mean "the model kept failing", not "the row was busy".

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
    /// The queue counts every delivery toward dead-lettering (Pub/Sub does): a row that cannot
    /// have its turn at the quota within one push is then acknowledged and left queued, and the
    /// scheduled sweep publishes it again after its grace. The local queue does not count 429s,
    /// so there it is nacked with `Retry-After`.
    pub every_delivery_counts: bool,
}

/// `POST /pubsub/rows`, `POST /pubsub/dead-letter`.
pub fn router(state: Arc<GenerateState>) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(handlers::push_row)).routes(routes!(handlers::dead_letter)).with_state(state)
}
