//! The generate function: Pub/Sub push endpoint for rows, and the dead-letter endpoint. Handlers
//! only translate between the push protocol and [`assetgen_common::generation::RowWorker`]:
//! 2xx acknowledges, 429/503 asks Pub/Sub to redeliver later. A duplicate that finds its row
//! leased by a live delivery is acknowledged: Pub/Sub counts every delivery toward dead-lettering,
//! which must mean "the model kept failing", not "the row was busy".

mod handlers;

use assetgen_common::auth::Authenticator;
use assetgen_common::generation::RowWorker;
use assetgen_common::queue::RowQueue;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Debug)]
pub struct GenerateState {
    pub worker: RowWorker,
    /// Who may push: Pub/Sub's service account in the cloud.
    pub auth: Arc<dyn Authenticator>,
    /// How a delivery that must wait comes back without spending the row's delivery attempts.
    pub redelivery: Redelivery,
}

/// A delivery that must wait — for the quota, or for the delivery holding its row — must neither
/// use up the row's attempts (dead-lettering means "the model kept failing") nor leave the row
/// without a message, waiting for a sweep.
#[derive(Debug, Clone)]
pub enum Redelivery {
    /// The local queue does not count 429s: nack with 429 and `Retry-After`. A copy that finds its
    /// row held is nacked the same way, so it is still there to take the row if the holder gives
    /// it back to a push nobody waits for any more (one that outlived its ack deadline).
    Uncounted429,
    /// Pub/Sub counts every delivery. A row the quota kept waiting: the push is held for the wait
    /// (at most [`handlers::MAX_DEFERRAL_HOLD`]), the row is published again on this queue, and
    /// the push acknowledged, so the row comes back as a fresh message by itself. A copy that finds
    /// its row held is held and published again the same way: if the holder's own push already
    /// failed (it could not give the row back through a store outage), this copy is the row's last
    /// message, and it takes the row once the holder's lease has run out.
    Republish(Arc<dyn RowQueue>),
}

/// `POST /pubsub/rows`, `POST /pubsub/dead-letter`.
pub fn router(state: Arc<GenerateState>) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(handlers::push_row)).routes(routes!(handlers::dead_letter)).with_state(state)
}
