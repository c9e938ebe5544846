//! Reading an image's provenance back: its sidecar, and what the row state records about the
//! stored bytes, so a reader can check that a file is the image the pipeline recorded. The relay's
//! provenance route and `assetgen provenance gs://…` both read it here.

use super::Sidecar;
use crate::batch_view::store_problem;
use crate::domain::{BatchId, SceneId};
use crate::layout;
use crate::problem::{ErrorCode, Problem};
use crate::state::RowState;
use crate::store::{ObjectStore, StoreError, read_json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/provenance/{batch}/{scene_id}/{variant}`: the sidecar and the row state's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProvenanceView {
    pub sidecar: Sidecar,
    /// What the row state records for this variant (absent while it is not recorded yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<Recorded>,
}

/// The row state's record of a stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Recorded {
    pub sha256: String,
    pub bytes: u64,
}

/// The provenance of `images/{batch}/{scene}-v{variant}.png`, or a 404 problem that says there is
/// none (no such image, or an image stored before provenance existed).
pub async fn load(
    store: &dyn ObjectStore,
    batch: &BatchId,
    scene: &SceneId,
    variant: u8,
) -> Result<ProvenanceView, Problem> {
    let object = layout::image(batch, scene, variant);
    let sidecar: Sidecar = match read_json(store, &layout::sidecar(&object)).await {
        Ok(found) => found.value,
        Err(StoreError::NotFound(_)) => {
            return Err(Problem::new(
                ErrorCode::NotFound,
                format!("{object} has no provenance: no such image, or it was stored before images carried one"),
            ));
        }
        Err(e) => return Err(store_problem(e)),
    };
    let state: Option<RowState> = match read_json(store, &layout::row_state(batch, sidecar.provenance.row)).await {
        Ok(found) => Some(found.value),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(store_problem(e)),
    };
    let recorded = state
        .and_then(|s| s.variants.into_iter().find(|v| v.variant == variant))
        .map(|v| Recorded { sha256: v.sha256, bytes: v.bytes });
    Ok(ProvenanceView { sidecar, recorded })
}
