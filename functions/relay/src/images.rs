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
    /// An image link's signature: opens this one image with no header, for ever (until
    /// `ASSETGEN_LINK_SECRET` is rotated). This is what the Sheet and the CLI are given.
    pub sig: Option<String>,
    /// A page link's read token for this batch (thumbnails in a browser send no headers).
    pub access_token: Option<String>,
}

/// One image of a row: to its link's holder (`?sig=`), or to whoever may read the batch (its
/// owner, an admin, a page link). Locally the bytes themselves; where the store signs URLs (GCS) a
/// 302 to a fresh short signed URL, so a link written into a Sheet never expires.
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
        (status = 401, description = "No signature and not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such image, a signature for another one, or not yours: the same answer", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Signed in, but not allowed to do this", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage or sign-in checks unavailable: try again", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn image(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path((batch, scene, variant)): Path<(String, String, String)>,
    Query(query): Query<ImageQuery>,
) -> Result<Response, Problem> {
    let not_found = || Problem::new(ErrorCode::NotFound, format!("no image {batch}/{scene}/{variant}"));
    let name = match (BatchId::parse(&batch), SceneId::parse(&scene), variant.parse::<u8>()) {
        (Ok(b), Ok(s), Ok(v)) => layout::image(&b, &s, v),
        _ => return Err(not_found()),
    };
    match query.sig.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(sig) if state.access.links.verify(&name, sig) => {}
        Some(_) => {
            tracing::info!(object = %name, "image link refused: bad signature");
            return Err(not_found());
        }
        None => {
            state.authorize_read(&headers, query.access_token.as_deref(), &batch).await?;
        }
    }
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
