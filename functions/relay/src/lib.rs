//! The relay function: live progress over SSE, and image links. It only reads the store.

mod events;
pub mod hub;
mod images;

use assetgen_common::auth::Authenticator;
use assetgen_common::store::ObjectStore;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// How often a stream looks at the store.
    pub poll_every: Duration,
    /// Comment line sent when nothing else was, so proxies keep the connection.
    pub heartbeat: Duration,
    /// A stream closes itself after this long (before Cloud Run's request time-out) and tells the
    /// client when to come back, with jitter so clients do not all reconnect at once.
    pub max_stream: Duration,
    pub retry_base: Duration,
    pub retry_jitter: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            poll_every: Duration::from_millis(250),
            heartbeat: Duration::from_secs(20),
            max_stream: Duration::from_secs(280),
            retry_base: Duration::from_millis(500),
            retry_jitter: Duration::from_millis(2500),
        }
    }
}

#[derive(Debug)]
pub struct RelayState {
    pub store: Arc<dyn ObjectStore>,
    pub auth: Arc<dyn Authenticator>,
    pub public_url: Option<url::Url>,
    pub config: RelayConfig,
}

/// `GET /v1/batches/{id}/events`, `GET /v1/images/{batch}/{scene_id}/{variant}`.
pub fn router(state: Arc<RelayState>) -> OpenApiRouter {
    // One hub per router: every client of a batch on this instance shares one tail.
    let hub = Arc::new(hub::TailHub::new(state.store.clone(), state.config.clone()));
    OpenApiRouter::new()
        .routes(routes!(events::batch_events))
        .routes(routes!(images::image))
        .layer(axum::Extension(hub))
        .with_state(state)
}
