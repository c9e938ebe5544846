//! Accepting a batch: validate, estimate, reserve, write the manifest and row states, publish one
//! message per row. The submit function's handlers are a thin layer over [`Submitter`].
//!
//! Order matters for money: the batch's entry in the index of open batches comes first (so the
//! sweep finds whatever follows), then the budget hold (a refusal writes nothing more), its ledger
//! event, the manifest (create-only), the rows, and the messages. A crash after the hold leaves a
//! hold without a batch, which the sweep frees; never a batch without a hold.
//!
//! With an `Idempotency-Key`, the batch id comes from a create-only claim on the key, and every
//! step above is idempotent for a given batch id (the hold is per batch, the writes create-only,
//! duplicate messages are absorbed by generate), so a retried request — even one racing the first,
//! or one after a crash half-way — finishes the same batch and reserves nothing twice.

use crate::api::{BatchLinks, BatchRequest, EstimateResponse, SubmitResponse};
use crate::auth::Identity;
use crate::batch_spec::{Acceptance, BatchSpec};
use crate::batch_view::store_problem;
use crate::budget::Budget;
use crate::cost::PriceTable;
use crate::domain::{BatchId, RefUrlPolicy};
use crate::layout;
use crate::limits::Limits;
use crate::open_index::{self, OpenMarker};
use crate::problem::{ErrorCode, Problem};
use crate::queue::{RowMessage, RowQueue};
use crate::settlement::{Settlement, day_of};
use crate::state::{Manifest, RowState};
use crate::store::{ObjectStore, Precondition, StoreError, read_json, write_json};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use time::OffsetDateTime;

/// Row-state writes in flight at once during a submit.
const PARALLEL_WRITES: usize = 16;

#[derive(Debug, Clone)]
pub struct Submitter {
    pub store: Arc<dyn ObjectStore>,
    pub queue: Arc<dyn RowQueue>,
    pub budget: Arc<dyn Budget>,
    pub prices: PriceTable,
    pub limits: Limits,
    pub ref_policy: RefUrlPolicy,
    pub default_model: String,
    pub live_available: bool,
    pub bulk_available: bool,
}

/// `idempotency/{sha256(user, key)}.json`: which batch a key made, and for which request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Claim {
    batch_id: BatchId,
    request_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl Submitter {
    fn acceptance(&self) -> Acceptance<'_> {
        Acceptance {
            limits: self.limits,
            ref_policy: self.ref_policy,
            prices: &self.prices,
            default_model: &self.default_model,
            live_available: self.live_available,
            bulk_available: self.bulk_available,
        }
    }

    pub fn validate(&self, request: &BatchRequest) -> Result<BatchSpec, Problem> {
        self.acceptance().validate(request)
    }

    fn settlement(&self) -> Settlement {
        Settlement { store: self.store.clone(), budget: self.budget.clone() }
    }

    /// `POST /v1/estimate`: the same validation and price as a submit, and nothing written.
    pub async fn estimate(&self, who: &Identity, request: &BatchRequest) -> Result<EstimateResponse, Problem> {
        let spec = self.validate(request)?;
        let estimate = self.prices.estimate(spec.run_mode, &spec.model, spec.images());
        let today = OffsetDateTime::now_utc().date();
        let mut budget_after = self.budget.view(&who.user, today).await?;
        budget_after.remaining_usd -= estimate.usd;
        Ok(EstimateResponse { estimate, budget_after, models: self.prices.list() })
    }

    /// `POST /v1/batches`.
    pub async fn submit(
        &self,
        who: &Identity,
        request: &BatchRequest,
        base: &str,
        idempotency_key: Option<&str>,
    ) -> Result<SubmitResponse, Problem> {
        let spec = self.validate(request)?;
        let (batch_id, created_at, replay) = match idempotency_key {
            Some(key) => {
                let claim = self.claim(who, key, request).await?;
                (claim.batch_id, claim.created_at, true)
            }
            None => (BatchId::new(), OffsetDateTime::now_utc(), false),
        };
        let images = spec.images();
        let estimate = self.prices.estimate(spec.run_mode, &spec.model, images);
        let reserved = self.prices.charge(spec.run_mode, &spec.model, images);
        let manifest =
            Manifest { batch_id: batch_id.clone(), user: who.user.clone(), created_at, spec, estimate, reserved };

        let marker = OpenMarker::new(batch_id.clone(), who.user.clone(), day_of(&manifest));
        open_index::open(self.store.as_ref(), &marker).await.map_err(store_problem)?;
        let hold = match self.budget.reserve(&who.user, day_of(&manifest), &batch_id, reserved).await {
            Ok(hold) => hold,
            Err(refused) => {
                // Nothing of the batch was written: it leaves the index again (the sweep would too).
                if let Ok(Some(m)) = open_index::read(self.store.as_ref(), &batch_id).await {
                    let _ = open_index::close(self.store.as_ref(), &batch_id, m.generation).await;
                }
                return Err(refused);
            }
        };
        self.settlement().reserved(&manifest, 0, reserved).await.map_err(store_problem)?;
        let tolerate_existing = |r: Result<_, StoreError>| match r {
            Err(StoreError::PreconditionFailed(_)) if replay => Ok(()),
            other => other.map(|_| ()),
        };
        tolerate_existing(
            write_json(self.store.as_ref(), &layout::manifest(&batch_id), &manifest, Precondition::DoesNotExist).await,
        )
        .map_err(store_problem)?;
        // Owned states in `async move` blocks: futures borrowing the rows would not be `Send`.
        let states: Vec<RowState> = manifest
            .spec
            .rows
            .iter()
            .map(|row| RowState::queued(batch_id.clone(), row.row, row.scene_id.clone(), created_at))
            .collect();
        futures::stream::iter(states)
            .map(|state| async move {
                let name = layout::row_state(&state.batch_id, state.row);
                tolerate_existing(write_json(self.store.as_ref(), &name, &state, Precondition::DoesNotExist).await)
            })
            .buffer_unordered(PARALLEL_WRITES)
            .try_collect::<Vec<_>>()
            .await
            .map_err(store_problem)?;

        let messages: Vec<RowMessage> =
            manifest.spec.rows.iter().map(|r| RowMessage { batch_id: batch_id.clone(), row: r.row }).collect();
        self.queue.publish(&messages).await.map_err(|e| {
            tracing::error!(batch_id = %batch_id, error = %e, "publish failed after the batch was written");
            Problem::new(
                ErrorCode::QueueUnavailable,
                format!("batch {batch_id} was saved but could not be queued; the sweep will queue it"),
            )
        })?;
        tracing::info!(batch_id = %batch_id, user = %who.user, rows = messages.len(), images, %reserved, "batch accepted");

        Ok(SubmitResponse {
            links: links(base, &batch_id),
            batch_id: batch_id.to_string(),
            estimate,
            budget: hold.view,
        })
    }

    /// Claims `key` for this user and request, or finds the earlier claim of the same request.
    async fn claim(&self, who: &Identity, key: &str, request: &BatchRequest) -> Result<Claim, Problem> {
        let key = crate::idempotent_control::check_key(key)?;
        let name =
            format!("idempotency/{}.json", hex::encode(Sha256::digest(format!("{}\n{key}", who.user).as_bytes())));
        let request_sha256 = hex::encode(Sha256::digest(serde_json::to_vec(request).unwrap_or_default()));
        let fresh = Claim {
            batch_id: BatchId::new(),
            request_sha256: request_sha256.clone(),
            created_at: OffsetDateTime::now_utc(),
        };
        let claim = match write_json(self.store.as_ref(), &name, &fresh, Precondition::DoesNotExist).await {
            Ok(_) => fresh,
            Err(StoreError::PreconditionFailed(_)) => {
                read_json::<Claim>(self.store.as_ref(), &name).await.map_err(store_problem)?.value
            }
            Err(e) => return Err(store_problem(e)),
        };
        if claim.request_sha256 != request_sha256 {
            return Err(Problem::new(
                ErrorCode::IdempotencyKeyReused,
                format!("this key already made batch {} from another request", claim.batch_id),
            ));
        }
        Ok(claim)
    }
}

pub fn links(base: &str, batch: &BatchId) -> BatchLinks {
    BatchLinks {
        self_: format!("{base}/v1/batches/{batch}"),
        events: format!("{base}/v1/batches/{batch}/events"),
        page: format!("{base}/b/{batch}"),
    }
}
