//! The relay function: live progress over SSE, image links, the pages (progress, references) and
//! the reference library. Apart from references, it only reads the store.

mod events;
pub mod hub;
mod image_access;
mod images;
mod provenance;
pub mod refs;
mod signed_redirect;
mod unsent;
mod web;

use assetgen_common::auth::{Access, BatchAction};
use assetgen_common::batch_view::Presenter;
use assetgen_common::cost::PriceTable;
use assetgen_common::domain::{BatchId, RefUrlPolicy};
use assetgen_common::limits::Limits;
use assetgen_common::problem::Problem;
use assetgen_common::refs::fetch::FetchPolicy;
use assetgen_common::request::base_url;
use assetgen_common::store::ObjectStore;
use assetgen_common::tail_pace::PollPace;
use assetgen_common::wire_schema::{Deployment, state_deployment};
use axum::http::HeaderMap;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// How often a batch's tail looks at the store while its rows move.
    pub poll_every: Duration,
    /// How long the tail keeps that pace after the last change it saw; then the interval doubles
    /// with every look that finds nothing new, up to `poll_slowest`. Any change snaps it back.
    pub poll_fast_for: Duration,
    pub poll_slowest: Duration,
    /// How long a tail outlives its last client, so a stream that closed for its lifetime
    /// reconnects to the same tail (and its pace) within the `retry:` hint it was given.
    pub tail_linger: Duration,
    /// Comment line sent when nothing else was, so proxies keep the connection.
    pub heartbeat: Duration,
    /// A stream closes itself after this long (before Cloud Run's request time-out) and tells the
    /// client when to come back, with jitter so clients do not all reconnect at once.
    pub max_stream: Duration,
    pub retry_base: Duration,
    pub retry_jitter: Duration,
    /// Where the progress page calls submit's batch routes (status, cancel, retry) when submit
    /// is another origin (`ASSETGEN_SUBMIT_URL`; submit allows the relay's origin by CORS).
    pub submit_url: Option<url::Url>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            poll_every: Duration::from_millis(250),
            poll_fast_for: Duration::from_secs(60),
            poll_slowest: Duration::from_secs(30),
            tail_linger: Duration::from_secs(10),
            heartbeat: Duration::from_secs(20),
            max_stream: Duration::from_secs(280),
            retry_base: Duration::from_millis(500),
            retry_jitter: Duration::from_millis(2500),
            submit_url: None,
        }
    }
}

impl RelayConfig {
    /// The tails' polling pace.
    pub fn pace(&self) -> PollPace {
        PollPace { fast: self.poll_every, fast_for: self.poll_fast_for, slowest: self.poll_slowest }
    }
}

#[derive(Debug)]
pub struct RelayState {
    pub store: Arc<dyn ObjectStore>,
    /// Who may call, who owns which batch, and the page links and image and reference links.
    pub access: Access,
    pub public_url: Option<url::Url>,
    pub config: RelayConfig,
    /// How `POST /v1/refs/fetch` fetches a reference: the row worker's policy (address rules, size cap).
    pub ref_fetch: FetchPolicy,
}

impl RelayState {
    /// The batch named by `raw_id`, once the caller may read it (its owner, an admin, a page link).
    pub async fn authorize_read(
        &self,
        headers: &HeaderMap,
        access_token: Option<&str>,
        raw_id: &str,
    ) -> Result<BatchId, Problem> {
        let (batch, _) =
            self.access.authorize(self.store.as_ref(), headers, access_token, raw_id, BatchAction::Read).await?;
        Ok(batch)
    }

    /// Links point here: `ASSETGEN_PUBLIC_URL`, or the request's own origin.
    pub fn presenter(&self, headers: &HeaderMap) -> Presenter {
        Presenter::new(base_url(self.public_url.as_ref(), headers), self.access.links.clone())
    }
}

/// `GET /v1/batches/{id}/events`, `GET /v1/images/{batch}/{scene_id}/{variant}`, the reference
/// library under `/v1/refs`, and the pages: `/b/{batch_id}`, `/refs` and their files under `/web/`.
pub fn router(state: Arc<RelayState>) -> OpenApiRouter {
    // One hub per router: every client of a batch on this instance shares one tail.
    let hub = Arc::new(hub::TailHub::new(state.store.clone(), state.config.clone()));
    let mut router = OpenApiRouter::new()
        .routes(routes!(events::batch_events))
        .routes(routes!(images::image))
        .routes(routes!(provenance::provenance))
        .routes(routes!(refs::list_refs, refs::upload_ref))
        .routes(routes!(refs::fetch_ref))
        .routes(routes!(refs::get_ref))
        .routes(routes!(refs::get_global_set, refs::put_global_set))
        .route("/b/{id}", axum::routing::get(web::progress_page))
        .route("/refs", axum::routing::get(web::refs_page))
        .route("/web/{file}", axum::routing::get(web::asset))
        .layer(axum::Extension(hub));
    let deployment = Deployment {
        limits: Limits::default(),
        ref_policy: RefUrlPolicy { allow_private: state.ref_fetch.allow_private, allow_local_files: false },
        prices: PriceTable::default(),
    };
    state_deployment(router.get_openapi_mut(), &deployment);
    router.with_state(state)
}
