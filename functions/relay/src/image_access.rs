//! Who may open one image, and what is recorded about it: the image's routes (its bytes, its
//! provenance) let in the same callers by the same rules. The holder of the image's link
//! (`?sig=`), or whoever may read its batch (its owner, an admin, a page link). A bad signature
//! gets the same 404 as a missing image, so a guessed link tells nothing.

use crate::RelayState;
use assetgen_common::domain::{BatchId, SceneId};
use assetgen_common::layout;
use assetgen_common::problem::{ErrorCode, Problem};
use axum::http::HeaderMap;

/// The query of an image's routes.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ImageQuery {
    /// An image link's signature: opens this one image with no header, for ever (until
    /// `ASSETGEN_LINK_SECRET` is rotated), and how it was made (the PNG carries the same record
    /// inside). This is what the Sheet and the CLI are given.
    pub sig: Option<String>,
    /// A page link's read token for this batch (thumbnails in a browser send no headers).
    pub access_token: Option<String>,
}

/// One image its caller may open.
#[derive(Debug)]
pub struct Image {
    pub batch: BatchId,
    pub scene: SceneId,
    pub variant: u8,
    /// Its object name in the store.
    pub object: String,
}

/// The path of an image's routes, `{batch}/{scene_id}/{variant}`, as sent: [`open_image`] parses
/// it, so a malformed one gets the same 404 as a missing image (not axum's 400).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ImagePath {
    /// Batch id
    pub batch: String,
    pub scene_id: String,
    /// 1-based variant number
    #[param(value_type = u8)]
    pub variant: String,
}

/// The image's routes' one 404: no such image, a signature for another one, or not yours.
pub fn no_image(path: &ImagePath) -> Problem {
    Problem::new(ErrorCode::NotFound, format!("no image {}/{}/{}", path.batch, path.scene_id, path.variant))
}

/// The image `path` names, once its caller may open it; `route` names the route in the log line
/// of a refused signature.
pub async fn open_image(
    state: &RelayState,
    headers: &HeaderMap,
    path: &ImagePath,
    query: &ImageQuery,
    route: &str,
) -> Result<Image, Problem> {
    let parsed = (BatchId::parse(&path.batch), SceneId::parse(&path.scene_id), path.variant.parse::<u8>());
    let (batch_id, scene_id, number) = match parsed {
        (Ok(b), Ok(s), Ok(v)) => (b, s, v),
        _ => return Err(no_image(path)),
    };
    let object = layout::image(&batch_id, &scene_id, number);
    match query.sig.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(sig) if state.access.links.verify(&object, sig) => {}
        Some(_) => {
            tracing::info!(object = %object, "{route} link refused: bad signature");
            return Err(no_image(path));
        }
        None => {
            state.authorize_read(headers, query.access_token.as_deref(), &path.batch).await?;
        }
    }
    Ok(Image { batch: batch_id, scene: scene_id, variant: number, object })
}
