//! `POST /v1/batches/{id}/cancel` and `/retry`: what a user can do to a running or ended batch.

use crate::api::RowStatus;
use crate::batch_view::{StoredBatch, load, store_problem};
use crate::domain::{BatchId, Money};
use crate::layout;
use crate::open_index::{self, OpenMarker};
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ControlOutcome {
    pub batch_id: String,
    /// Rows this call changed (cancelled, or queued again).
    pub rows: Vec<u32>,
    /// Money held again for a retry, in dollars (0 for a dry run or a cancel).
    pub reserved_usd: f64,
}

impl BatchControl {
    /// Cancels every row that has not started; rows being generated finish. Their unmade images'
    /// holds are freed, and the batch is settled if nothing else runs. A bulk batch's rows that
    /// Google has in a job are cancelled with the job, by the poller (and reported here).
    pub async fn cancel(&self, batch_id: &BatchId) -> Result<ControlOutcome, Problem> {
        let batch = load(self.settlement.store.as_ref(), batch_id).await?;
        let now = OffsetDateTime::now_utc();
        let mut cancelled = Vec::new();
        // Rows in a bulk job Google has: the poller cancels the job and ends them as it ended.
        let in_google = if batch.manifest.spec.run_mode == crate::domain::RunMode::Bulk {
            crate::bulk::BulkRunner::request_cancel(self.settlement.store.as_ref(), batch_id).await?
        } else {
            Default::default()
        };
        for spec in batch.manifest.spec.rows.iter().filter(|r| !in_google.contains(&r.row)) {
            let name = layout::row_state(batch_id, spec.row);
            let mut changed = false;
            let updated = update_json::<RowState, StoreError, _>(self.settlement.store.as_ref(), &name, |s| {
                changed = false; // this may run again after a lost race
                // Only rows no delivery holds: a queued row, or a running one whose holder crashed.
                let abandoned = s.status == RowStatus::Running && !s.leased_by_other("", now);
                if s.status != RowStatus::Queued && !abandoned {
                    return Ok(None);
                }
                let mut next = s.clone();
                next.status = RowStatus::Cancelled;
                next.lease = None;
                next.awaiting_hold = false;
                next.updated_at = now;
                changed = true;
                Ok(Some(next))
            })
            .await;
            match updated {
                Ok(stored) if stored.value.status == RowStatus::Cancelled => {
                    // Also for a row cancelled earlier: that cancel may have died before this step.
                    self.settlement.release_unmade(&batch.manifest, &stored.value).await.map_err(store_problem)?;
                    if changed {
                        cancelled.push(spec.row);
                    }
                }
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(store_problem(e)),
            }
        }
        self.settlement.close_if_finished(&batch.manifest).await?;
        cancelled
            .extend(in_google.iter().filter(|row| batch.rows.get(row).is_some_and(|(_, s)| !s.status.is_terminal())));
        cancelled.sort_unstable();
        Ok(ControlOutcome { batch_id: batch_id.to_string(), rows: cancelled, reserved_usd: 0.0 })
    }

    /// Queues the failed rows again, after holding the money their missing images need. Images
    /// already stored are kept and never paid again.
    ///
    /// Each failed row is first taken by compare-and-swap (queued, `awaiting_hold`: no delivery
    /// starts it yet), and money is held for the rows this call took and no others, so two retries
    /// racing each other hold it once between them. Only then are the rows released and published.
    /// If the hold is refused the rows go back to failed.
    pub async fn retry(&self, batch_id: &BatchId) -> Result<ControlOutcome, Problem> {
        let store = self.settlement.store.as_ref();
        let batch = load(store, batch_id).await?;
        let failed: Vec<u32> =
            batch.rows.values().map(|(_, s)| s).filter(|s| s.status == RowStatus::Failed).map(|s| s.row).collect();
        if failed.is_empty() {
            return Err(nothing_to_retry(batch_id));
        }
        let m = &batch.manifest;
        // Keeps the batch in the index, and anyone from closing it, while rows are queued again.
        let mut marker = OpenMarker::new(batch_id.clone(), m.user.clone(), day_of(m));
        marker.retry_started = Some(OffsetDateTime::now_utc());
        open_index::touch(store, &marker).await.map_err(store_problem)?;
        let taken = self.take_failed(batch_id, &failed).await;
        let outcome = match taken {
            Ok(taken) if taken.is_empty() => Err(nothing_to_retry(batch_id)),
            Ok(taken) => self.hold_and_queue(&batch, taken).await,
            Err(e) => Err(e),
        };
        marker.retry_started = None;
        open_index::touch(store, &marker).await.map_err(store_problem)?;
        let outcome = outcome?;
        tracing::info!(%batch_id, rows = outcome.rows.len(), reserved_usd = outcome.reserved_usd, "failed rows queued again");
        Ok(outcome)
    }

    /// Moves each of `rows` that is still failed to queued-awaiting-hold; returns the rows moved,
    /// with what they were.
    async fn take_failed(&self, batch_id: &BatchId, rows: &[u32]) -> Result<Vec<RowState>, Problem> {
        let now = OffsetDateTime::now_utc();
        let mut taken = Vec::new();
        for row in rows {
            let mut before = None;
            let stored = update_json::<RowState, StoreError, _>(
                self.settlement.store.as_ref(),
                &layout::row_state(batch_id, *row),
                |s| {
                    before = None; // this may run again after a lost race
                    if s.status != RowStatus::Failed {
                        return Ok(None); // taken meanwhile by another retry
                    }
                    before = Some(s.clone());
                    let mut next = s.clone();
                    next.status = RowStatus::Queued;
                    next.round += 1;
                    next.awaiting_hold = true;
                    next.bulk_job = None; // a bulk row goes into a new job
                    next.lease = None;
                    next.updated_at = now;
                    Ok(Some(next))
                },
            )
            .await
            .map_err(store_problem)?;
            if let Some(before) =
                before.filter(|_| stored.value.awaiting_hold && stored.value.status == RowStatus::Queued)
            {
                taken.push(before);
            }
        }
        Ok(taken)
    }

    /// Holds the money the taken rows' missing images need, then releases them to the queue; if
    /// the hold is refused, puts them back to failed.
    async fn hold_and_queue(&self, batch: &StoredBatch, taken: Vec<RowState>) -> Result<ControlOutcome, Problem> {
        let m = &batch.manifest;
        let batch_id = &m.batch_id;
        let missing: u64 = taken.iter().map(|s| missing_images(batch, s)).sum();
        // At the price the batch was accepted at, like every other event of the batch.
        let amount = m.price_per_image().times(missing);
        if amount > Money::ZERO {
            let hold = match self.settlement.budget.extend(&m.user, day_of(m), batch_id, amount).await {
                Ok(hold) => hold,
                Err(refused) => {
                    for before in &taken {
                        self.set_awaiting(batch_id, before.row, |s| {
                            let mut back = before.clone();
                            back.updated_at = s.updated_at;
                            back
                        })
                        .await?;
                    }
                    return Err(refused);
                }
            };
            self.settlement.reserved(m, hold.round, amount).await.map_err(store_problem)?;
        }
        let now = OffsetDateTime::now_utc();
        let mut queued = Vec::new();
        for before in &taken {
            let released = self
                .set_awaiting(batch_id, before.row, |s| {
                    let mut next = s.clone();
                    next.awaiting_hold = false;
                    next.error = None;
                    next.updated_at = now;
                    next
                })
                .await?;
            if released {
                queued.push(before.row);
            }
        }
        let messages: Vec<RowMessage> =
            queued.iter().map(|row| RowMessage { batch_id: batch_id.clone(), row: *row }).collect();
        self.queue.publish(&messages).await.map_err(|e| Problem::new(ErrorCode::QueueUnavailable, e.to_string()))?;
        Ok(ControlOutcome { batch_id: batch_id.to_string(), rows: queued, reserved_usd: amount.usd() })
    }

    /// Rewrites a row this retry took, if it is still queued awaiting its hold (a cancel or a
    /// dead letter may have ended it meanwhile, or the sweep put it back after a long stall).
    async fn set_awaiting(
        &self,
        batch_id: &BatchId,
        row: u32,
        change: impl Fn(&RowState) -> RowState,
    ) -> Result<bool, Problem> {
        let mut changed = false;
        update_json::<RowState, StoreError, _>(
            self.settlement.store.as_ref(),
            &layout::row_state(batch_id, row),
            |s| {
                changed = s.awaiting_hold && s.status == RowStatus::Queued;
                Ok(changed.then(|| change(s)))
            },
        )
        .await
        .map_err(store_problem)?;
        Ok(changed)
    }
}

fn nothing_to_retry(batch_id: &BatchId) -> Problem {
    Problem::new(ErrorCode::NothingToRetry, format!("batch {batch_id} has no failed rows"))
}

fn missing_images(batch: &StoredBatch, state: &RowState) -> u64 {
    batch
        .manifest
        .spec
        .row(state.row)
        .map_or(0, |spec| spec.variants.numbers().filter(|v| !state.has_variant(*v)).count() as u64)
}
