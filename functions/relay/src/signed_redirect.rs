//! Where the store signs URLs (GCS), an image or a reference is not streamed through the relay: the
//! browser is sent to a fresh short-lived signed URL on every click, so a link written into a Sheet
//! never expires and no object bytes pass through here.

use assetgen_common::batch_view::store_problem;
use assetgen_common::problem::Problem;
use assetgen_common::store::ObjectStore;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// How long a signed storage URL is valid: enough to load it, short enough not to leak for long.
const SIGNED_URL_TTL: Duration = Duration::from_secs(900);

/// A 302 to a fresh signed URL of `name`, where the store signs URLs (GCS); `None` elsewhere.
pub async fn signed_redirect(store: &dyn ObjectStore, name: &str) -> Result<Option<Response>, Problem> {
    let Some(url) = store.signed_url(name, SIGNED_URL_TTL).await.map_err(store_problem)? else {
        return Ok(None);
    };
    let location =
        HeaderValue::from_str(&url).map_err(|_| Problem::internal("the signed URL is not a valid header"))?;
    let headers =
        [(header::LOCATION, location), (header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"))];
    Ok(Some((StatusCode::FOUND, headers).into_response()))
}
