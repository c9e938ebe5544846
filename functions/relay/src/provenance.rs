use crate::RelayState;
use assetgen_common::domain::{BatchId, SceneId};
use assetgen_common::layout;
use assetgen_common::problem::{ErrorCode, Problem};
use assetgen_common::provenance::view::{self, ProvenanceView};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use std::sync::Arc;

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ProvenanceQuery {
    /// The image link's signature: whoever may open the image may read how it was made (the PNG
    /// carries the same record inside).
    pub sig: Option<String>,
    /// A page link's read token for this batch.
    pub access_token: Option<String>,
}

/// How one image was made (its sidecar: prompt as sent, references, model and response id, price
/// and spend event, user, times, attempt and round) and what the row state records about its
/// bytes. Open to exactly those who may open the image: its link's holder (`?sig=`), the batch's
/// owner, an admin, a page link.
#[utoipa::path(get, path = "/v1/provenance/{batch}/{scene_id}/{variant}", tag = "relay",
    params(
        ("batch" = String, Path, description = "Batch id"),
        ("scene_id" = String, Path),
        ("variant" = u8, Path, description = "1-based variant number"),
        ProvenanceQuery,
    ),
    responses(
        (status = 200, description = "The image's provenance", body = ProvenanceView),
        (status = 401, description = "No signature and not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Signed in, but not on the allow-list", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such image, no provenance, a signature for another image, or not yours", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage or sign-in checks unavailable: try again", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn provenance(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path((batch, scene, variant)): Path<(String, String, String)>,
    Query(query): Query<ProvenanceQuery>,
) -> Result<Json<ProvenanceView>, Problem> {
    let not_found = || Problem::new(ErrorCode::NotFound, format!("no image {batch}/{scene}/{variant}"));
    let (batch_id, scene_id, number) = match (BatchId::parse(&batch), SceneId::parse(&scene), variant.parse::<u8>()) {
        (Ok(b), Ok(s), Ok(v)) => (b, s, v),
        _ => return Err(not_found()),
    };
    let name = layout::image(&batch_id, &scene_id, number);
    match query.sig.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(sig) if state.access.links.verify(&name, sig) => {}
        Some(_) => {
            tracing::info!(object = %name, "provenance link refused: bad signature");
            return Err(not_found());
        }
        None => {
            state.authorize_read(&headers, query.access_token.as_deref(), &batch).await?;
        }
    }
    view::load(state.store.as_ref(), &batch_id, &scene_id, number).await.map(Json)
}
