//! What generate does with provenance: build the record of an image the model just made, stamp it
//! into the PNG before the image is stored, and write the sidecar from the bytes that were stored.

use super::png_text;
use super::{FORMAT, LedgerRef, Price, Provenance, Sidecar, StoredImage};
use crate::api::RefReport;
use crate::batch_spec::RowSpec;
use crate::domain::RunMode;
use crate::layout;
use crate::ledger::{EventKind, LedgerEvent};
use crate::model::{GeneratedImage, ImageRequest};
use crate::settlement::day_of;
use crate::state::{Manifest, RowState};
use crate::store::{ObjectStore, Precondition, StoreError, write_json};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// One model call's facts, gathered while generate runs the variant.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub request: &'a ImageRequest,
    pub image: &'a GeneratedImage,
    pub refs: &'a [RefReport],
    pub requested_at: OffsetDateTime,
    pub generated_at: OffsetDateTime,
}

/// The record of `call`, the variant `call.request.variant` of `spec`'s row, made by the delivery
/// that leased `state`. The price is the batch's accepted price, and the ledger event is the spend
/// the settlement writes for this very variant and round (same name, same amount).
pub fn of_call(manifest: &Manifest, spec: &RowSpec, state: &RowState, call: Call<'_>) -> Provenance {
    let variant = call.request.variant;
    let price = manifest.price_per_image();
    let ledger = (manifest.spec.run_mode != RunMode::DryRun).then(|| {
        let spend = LedgerEvent {
            kind: EventKind::Spend,
            day: day_of(manifest),
            user: manifest.user.clone(),
            batch_id: manifest.batch_id.clone(),
            row: Some(spec.row),
            variant: Some(variant),
            round: state.round,
            amount: price,
            at: call.generated_at,
            request_id: None,
        };
        LedgerRef { event: spend.id(), object: spend.object_name() }
    });
    Provenance {
        format: FORMAT.to_owned(),
        batch_id: manifest.batch_id.clone(),
        row: spec.row,
        scene_id: spec.scene_id.clone(),
        variant,
        object: layout::image(&manifest.batch_id, &spec.scene_id, variant),
        prompt: call.request.prompt.clone(),
        model: call.request.model.clone(),
        model_version: call.image.model_version.clone(),
        response_id: call.image.response_id.clone(),
        run_mode: manifest.spec.run_mode,
        aspect_ratio: spec.aspect_ratio,
        ref_mode: spec.ref_mode,
        refs: call.refs.to_vec(),
        price: Price::of(price),
        ledger,
        user: manifest.user.clone(),
        submitted_at: manifest.created_at,
        requested_at: call.requested_at,
        generated_at: call.generated_at,
        attempt: state.attempts,
        round: state.round,
        request_id: crate::observe::current_request_id(),
        software: Provenance::software(),
    }
}

/// The image's bytes with `provenance` inside. An image that is not a PNG, or one the chunks
/// cannot be added to without breaking it, is stored as the model made it (the sidecar still says
/// everything); that is logged, never an error.
pub fn stamp(bytes: Bytes, provenance: &Provenance) -> Bytes {
    match png_text::embed(&bytes, provenance) {
        Ok(stamped) => Bytes::from(stamped),
        Err(e) => {
            tracing::warn!(object = %provenance.object, error = %e, "provenance not embedded; the image is stored as made");
            bytes
        }
    }
}

/// Writes the sidecar of the image `object` whose stored bytes are `body`, create-only. Its record
/// comes from the chunks of `body` — the image that stands, also when it is another delivery's —
/// or, for an image that cannot carry one, from `made` (what this delivery made). Without either
/// there is nothing true to write, and nothing is. A sidecar that exists already stays: it was
/// derived from the same stored bytes.
pub async fn write_sidecar(
    store: &dyn ObjectStore,
    object: &str,
    body: &Bytes,
    content_type: &str,
    made: Option<&Provenance>,
) -> Result<(), StoreError> {
    let (provenance, embedded) = match png_text::read(body) {
        Ok(Some(record)) => (record, true),
        Ok(None) | Err(_) => match made {
            Some(made) if !png_text::is_png(body) => (made.clone(), false),
            _ => {
                tracing::warn!(%object, "the stored image carries no provenance; no sidecar is written");
                return Ok(());
            }
        },
    };
    let sidecar = Sidecar {
        provenance,
        image: StoredImage {
            object: object.to_owned(),
            sha256: hex::encode(Sha256::digest(body)),
            bytes: body.len() as u64,
            content_type: content_type.to_owned(),
            embedded,
        },
    };
    let name = layout::sidecar(object);
    match write_json(store, &name, &sidecar, Precondition::DoesNotExist).await {
        Ok(_) | Err(StoreError::PreconditionFailed(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
