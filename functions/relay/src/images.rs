use crate::RelayState;
use assetgen_common::domain::{BatchId, SceneId};
use assetgen_common::layout;
use assetgen_common::problem::{ErrorCode, Problem};
use assetgen_common::store::StoreError;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// How long a signed image URL is valid: enough to load it, short enough not to leak for long.
const SIGNED_URL_TTL: std::time::Duration = std::time::Duration::from_secs(900);

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ImageQuery {
    /// A capability token for this batch (thumbnails in a browser send no headers).
    pub access_token: Option<String>,
}

/// One image of a row. Locally the bytes themselves; links stay valid as long as the store does.
#[utoipa::path(get, path = "/v1/images/{batch}/{scene_id}/{variant}", tag = "relay",
    params(
        ("batch" = String, Path, description = "Batch id"),
        ("scene_id" = String, Path),
        ("variant" = u8, Path, description = "1-based variant number"),
        ImageQuery,
    ),
    responses(
        (status = 200, description = "The image (stores that cannot sign URLs)", content_type = "image/png", body = Vec<u8>),
        (status = 302, description = "To a freshly signed V4 URL of the image (GCS)"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn image(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path((batch, scene, variant)): Path<(String, String, String)>,
    Query(query): Query<ImageQuery>,
) -> Result<Response, Problem> {
    let not_found = || Problem::new(ErrorCode::NotFound, format!("no image {batch}/{scene}/{variant}"));
    let batch_id = BatchId::parse(&batch).map_err(|_| not_found())?;
    state.authorize(&headers, query.access_token.as_deref(), &batch_id).await?;
    let scene_id = SceneId::parse(&scene).map_err(|_| not_found())?;
    let variant: u8 = variant.parse().map_err(|_| not_found())?;
    let name = layout::image(&batch_id, &scene_id, variant);
    // Where the store can sign a URL (GCS), send the browser there: a fresh URL on every click, so
    // a link written into the Sheet never expires, and no image bytes pass through the relay.
    match state.store.signed_url(&name, SIGNED_URL_TTL).await {
        Ok(Some(url)) => {
            let location =
                HeaderValue::from_str(&url).map_err(|_| Problem::internal("the signed URL is not a valid header"))?;
            let headers =
                [(header::LOCATION, location), (header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"))];
            return Ok((StatusCode::FOUND, headers).into_response());
        }
        Ok(None) => {}
        Err(e) => return Err(assetgen_common::batch_view::store_problem(e)),
    }
    let object = match state.store.get(&name).await {
        Ok(object) => object,
        Err(StoreError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(assetgen_common::batch_view::store_problem(e)),
    };
    let content_type = HeaderValue::from_str(&object.content_type).unwrap_or(HeaderValue::from_static("image/png"));
    let mut response = object.body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    // An image object is written once per variant and never changes.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=86400"));
    Ok(response)
}
