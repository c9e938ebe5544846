use crate::RelayState;
use crate::image_access::{ImagePath, ImageQuery, no_image, open_image};
use crate::signed_redirect::signed_redirect;
use assetgen_common::problem::Problem;
use assetgen_common::problem_responses::SignedLinkProblems;
use assetgen_common::store::StoreError;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// One image of a row: to its link's holder (`?sig=`), or to whoever may read the batch (its
/// owner, an admin, a page link). Locally the bytes themselves; where the store signs URLs (GCS) a
/// 302 to a fresh short signed URL, so a link written into a Sheet never expires.
#[utoipa::path(get, path = "/v1/images/{batch}/{scene_id}/{variant}", tag = "relay",
    params(ImagePath, ImageQuery),
    responses(
        (status = 200, description = "The image (stores that cannot sign URLs)", content_type = "image/png", body = Vec<u8>),
        (status = 302, description = "To a freshly signed V4 URL of the image (GCS)"),
        (status = 404, description = "No such image, a signature for another one, or not yours: the same answer", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Signed in, but not allowed to do this", body = Problem, content_type = "application/problem+json"),
        SignedLinkProblems,
    ))]
pub async fn image(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path(path): Path<ImagePath>,
    Query(query): Query<ImageQuery>,
) -> Result<Response, Problem> {
    let image = open_image(&state, &headers, &path, &query, "image").await?;
    if let Some(redirect) = signed_redirect(state.store.as_ref(), &image.object).await? {
        return Ok(redirect);
    }
    let object = match state.store.get(&image.object).await {
        Ok(object) => object,
        Err(StoreError::NotFound(_)) => return Err(no_image(&path)),
        Err(e) => return Err(assetgen_common::batch_view::store_problem(e)),
    };
    let content_type = HeaderValue::from_str(&object.content_type).unwrap_or(HeaderValue::from_static("image/png"));
    let mut response = object.body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    // An image object is written once per variant and never changes.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=86400"));
    Ok(response)
}
