//! Accepting a batch: validate, estimate, reserve, write the manifest and row states, publish one
//! message per row. The submit function's handlers are a thin layer over [`Submitter`].

use crate::api::{BatchLinks, BatchRequest, EstimateResponse, SubmitResponse};
use crate::auth::Identity;
use crate::batch_spec::{Acceptance, BatchSpec};
use crate::batch_view::store_problem;
use crate::budget::Budget;
use crate::cost::PriceTable;
use crate::domain::{BatchId, RefUrlPolicy};
use crate::layout;
use crate::limits::Limits;
use crate::problem::{ErrorCode, Problem};
use crate::queue::{RowMessage, RowQueue};
use crate::state::{Manifest, RowState};
use crate::store::{ObjectStore, Precondition, write_json};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

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
}

impl Submitter {
    fn acceptance(&self) -> Acceptance<'_> {
        Acceptance {
            limits: self.limits,
            ref_policy: self.ref_policy,
            prices: &self.prices,
            default_model: &self.default_model,
            live_available: self.live_available,
        }
    }

    pub fn validate(&self, request: &BatchRequest) -> Result<BatchSpec, Problem> {
        self.acceptance().validate(request)
    }

    /// `POST /v1/estimate`: the same validation and price as a submit, and nothing written.
    pub async fn estimate(&self, who: &Identity, request: &BatchRequest) -> Result<EstimateResponse, Problem> {
        let spec = self.validate(request)?;
        let estimate = self.prices.estimate(spec.run_mode, &spec.model, spec.images());
        let mut budget_after = self.budget.view(&who.user).await?;
        budget_after.remaining_usd -= estimate.usd;
        Ok(EstimateResponse { estimate, budget_after, models: self.prices.list() })
    }

    /// `POST /v1/batches`. Everything is validated before the first write; the manifest is written
    /// create-only, then the rows, then the messages, so a crash leaves a batch the sweep can finish.
    pub async fn submit(&self, who: &Identity, request: &BatchRequest, base: &str) -> Result<SubmitResponse, Problem> {
        let spec = self.validate(request)?;
        let batch_id = BatchId::new();
        let images = spec.images();
        let estimate = self.prices.estimate(spec.run_mode, &spec.model, images);
        let reserved = self.prices.charge(spec.run_mode, &spec.model, images);
        let budget = self.budget.reserve(&who.user, &batch_id, reserved).await?;

        let now = time::OffsetDateTime::now_utc();
        let manifest =
            Manifest { batch_id: batch_id.clone(), user: who.user.clone(), created_at: now, spec, estimate, reserved };
        write_json(self.store.as_ref(), &layout::manifest(&batch_id), &manifest, Precondition::DoesNotExist)
            .await
            .map_err(store_problem)?;
        // Owned states in `async move` blocks: futures borrowing the rows would not be `Send`.
        let states: Vec<RowState> = manifest
            .spec
            .rows
            .iter()
            .map(|row| RowState::queued(batch_id.clone(), row.row, row.scene_id.clone(), now))
            .collect();
        futures::stream::iter(states)
            .map(|state| async move {
                let name = layout::row_state(&state.batch_id, state.row);
                write_json(self.store.as_ref(), &name, &state, Precondition::DoesNotExist).await
            })
            .buffer_unordered(PARALLEL_WRITES)
            .try_collect::<Vec<_>>()
            .await
            .map_err(store_problem)?;

        let messages: Vec<RowMessage> =
            manifest.spec.rows.iter().map(|r| RowMessage { batch_id: batch_id.clone(), row: r.row }).collect();
        self.queue.publish(&messages).await.map_err(|e| {
            tracing::error!(batch_id = %batch_id, error = %e, "publish failed after the batch was written");
            Problem::new(ErrorCode::QueueUnavailable, format!("batch {batch_id} was saved but could not be queued"))
        })?;
        tracing::info!(batch_id = %batch_id, user = %who.user, rows = messages.len(), images, "batch accepted");

        Ok(SubmitResponse { links: links(base, &batch_id), batch_id: batch_id.to_string(), estimate, budget })
    }
}

pub fn links(base: &str, batch: &BatchId) -> BatchLinks {
    BatchLinks {
        self_: format!("{base}/v1/batches/{batch}"),
        events: format!("{base}/v1/batches/{batch}/events"),
        page: format!("{base}/b/{batch}"),
    }
}
