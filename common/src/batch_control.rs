//! `POST /v1/batches/{id}/cancel` and `/retry`: what a user can do to a running or ended batch.

use crate::api::RowStatus;
use crate::batch_view::{StoredBatch, load, store_problem};
use crate::domain::{BatchId, Money};
use crate::layout;
use crate::problem::{ErrorCode, Problem};
use crate::queue::{RowMessage, RowQueue};
use crate::settlement::{Settlement, day_of};
use crate::state::RowState;
use crate::store::{StoreError, update_json};
use std::sync::Arc;
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct BatchControl {
    pub settlement: Settlement,
    pub queue: Arc<dyn RowQueue>,
}

/// What a cancel or retry did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ControlOutcome {
    pub batch_id: String,
    /// Rows this call changed (cancelled, or queued again).
    pub rows: Vec<u32>,
    /// Money held again for a retry, in dollars (0 for a dry run or a cancel).
    pub reserved_usd: f64,
}

impl BatchControl {
    /// Cancels every row that has not started; rows being generated finish. Their unmade images'
    /// holds are freed, and the batch is settled if nothing else runs.
    pub async fn cancel(&self, batch_id: &BatchId) -> Result<ControlOutcome, Problem> {
        let batch = load(self.settlement.store.as_ref(), batch_id).await?;
        let now = OffsetDateTime::now_utc();
        let mut cancelled = Vec::new();
        for spec in &batch.manifest.spec.rows {
            let name = layout::row_state(batch_id, spec.row);
            let updated = update_json::<RowState, StoreError, _>(self.settlement.store.as_ref(), &name, |s| {
                // Only rows no delivery holds: a queued row, or a running one whose holder crashed.
                let abandoned = s.status == RowStatus::Running && !s.leased_by_other("", now);
                if s.status != RowStatus::Queued && !abandoned {
                    return Ok(None);
                }
                let mut next = s.clone();
                next.status = RowStatus::Cancelled;
                next.lease = None;
                next.updated_at = now;
                Ok(Some(next))
            })
            .await;
            match updated {
                Ok(stored) if stored.value.status == RowStatus::Cancelled => {
                    self.settlement.release_unmade(&batch.manifest, &stored.value).await.map_err(store_problem)?;
                    cancelled.push(spec.row);
                }
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(store_problem(e)),
            }
        }
        self.settlement.settle_if_finished(&batch.manifest).await?;
        Ok(ControlOutcome { batch_id: batch_id.to_string(), rows: cancelled, reserved_usd: 0.0 })
    }

    /// Queues the failed rows again, after holding the money their missing images need. Images
    /// already stored are kept and never paid again.
    pub async fn retry(&self, batch_id: &BatchId) -> Result<ControlOutcome, Problem> {
        let batch = load(self.settlement.store.as_ref(), batch_id).await?;
        let failed: Vec<&RowState> =
            batch.rows.values().map(|(_, s)| s).filter(|s| s.status == RowStatus::Failed).collect();
        if failed.is_empty() {
            return Err(Problem::new(ErrorCode::NothingToRetry, format!("batch {batch_id} has no failed rows")));
        }
        let missing: u64 = failed.iter().map(|s| missing_images(&batch, s)).sum();
        let m = &batch.manifest;
        // At the price the batch was accepted at, like every other event of the batch.
        let amount = m.price_per_image().times(missing);
        let mut round = 0;
        if amount > Money::ZERO {
            let hold = self.settlement.budget.extend(&m.user, day_of(m), batch_id, amount).await?;
            round = hold.round;
            self.settlement.reserved(m, round, amount).await.map_err(store_problem)?;
        }
        let now = OffsetDateTime::now_utc();
        let mut queued = Vec::new();
        for row in failed.iter().map(|s| s.row) {
            let updated = update_json::<RowState, StoreError, _>(
                self.settlement.store.as_ref(),
                &layout::row_state(batch_id, row),
                |s| {
                    if s.status != RowStatus::Failed {
                        return Ok(None); // retried meanwhile by another click
                    }
                    let mut next = s.clone();
                    next.status = RowStatus::Queued;
                    next.round += 1;
                    next.error = None;
                    next.lease = None;
                    next.updated_at = now;
                    Ok(Some(next))
                },
            )
            .await
            .map_err(store_problem)?;
            if updated.value.status == RowStatus::Queued {
                queued.push(row);
            }
        }
        let messages: Vec<RowMessage> =
            queued.iter().map(|row| RowMessage { batch_id: batch_id.clone(), row: *row }).collect();
        self.queue.publish(&messages).await.map_err(|e| Problem::new(ErrorCode::QueueUnavailable, e.to_string()))?;
        if queued.is_empty() && amount > Money::ZERO {
            // Another retry took every row first: settle, which frees this round's hold again.
            self.settlement.settle_if_finished(m).await?;
        }
        tracing::info!(%batch_id, rows = queued.len(), round, %amount, "failed rows queued again");
        Ok(ControlOutcome { batch_id: batch_id.to_string(), rows: queued, reserved_usd: amount.usd() })
    }
}

fn missing_images(batch: &StoredBatch, state: &RowState) -> u64 {
    batch
        .manifest
        .spec
        .row(state.row)
        .map_or(0, |spec| spec.variants.numbers().filter(|v| !state.has_variant(*v)).count() as u64)
}
