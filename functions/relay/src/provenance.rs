use crate::RelayState;
use crate::image_access::{ImagePath, ImageQuery, open_image};
use assetgen_common::problem::Problem;
use assetgen_common::problem_responses::SignedLinkProblems;
use assetgen_common::provenance::view::{self, ProvenanceView};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use std::sync::Arc;

/// How one image was made (its sidecar: prompt as sent, references, model and response id, price
/// and spend event, user, times, attempt and round) and what the row state records about its
/// bytes. Open to exactly those who may open the image: its link's holder (`?sig=`), the batch's
/// owner, an admin, a page link.
#[utoipa::path(get, path = "/v1/provenance/{batch}/{scene_id}/{variant}", tag = "relay",
    params(ImagePath, ImageQuery),
    responses(
        (status = 200, description = "The image's provenance", body = ProvenanceView),
        (status = 403, description = "Signed in, but not on the allow-list", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such image, no provenance, a signature for another image, or not yours", body = Problem, content_type = "application/problem+json"),
        SignedLinkProblems,
    ))]
pub async fn provenance(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path(path): Path<ImagePath>,
    Query(query): Query<ImageQuery>,
) -> Result<Json<ProvenanceView>, Problem> {
    let image = open_image(&state, &headers, &path, &query, "provenance").await?;
    view::load(state.store.as_ref(), &image.batch, &image.scene, image.variant).await.map(Json)
}
