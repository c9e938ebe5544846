//! Nothing stuck: the sweep finds rows that no message will ever bring to an end — written but
//! never published (submit died in between), or running under a lease whose holder died — and
//! publishes them again; it closes batches that ended without being closed (settles their hold),
//! and frees holds of batches that were never written. It runs when `assetgen serve` starts and, in
//! the cloud, as a scheduled run of the generate job. Publishing a row twice is harmless (generate
//! absorbs it).
//!
//! It reads only the batches in the index of open batches (`open/`, see [`open_index`]), so its
//! cost follows the batches still open, not every batch ever run.

use crate::api::RowStatus;
use crate::batch_view::{load, store_problem};
use crate::budget::{BudgetDay, object_name as budget_object};
use crate::bulk::BulkRunner;
use crate::domain::{BatchId, Money, RunMode};
use crate::layout;
use crate::open_index::{self, OpenMarker};
use crate::problem::{ErrorCode, Problem};
use crate::queue::{RowMessage, RowQueue};
use crate::settlement::{Settlement, day_of};
use crate::state::RowState;
use crate::store::{Precondition, StoreError, read_json, update_json, write_json};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct Sweep {
    pub settlement: Settlement,
    pub queue: Arc<dyn RowQueue>,
    /// A queued row younger than this is left to its message.
    pub queued_grace: Duration,
    /// Polls the Batch API jobs of bulk batches.
    pub bulk: BulkRunner,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Open batches looked at.
    pub batches: usize,
    pub republished: usize,
    /// Batches closed: every row ended, the hold settled, the batch out of the index.
    pub settled: usize,
    pub orphan_holds_freed: usize,
    /// Rows a retry queued but never released (it died before holding their money), put back to
    /// failed.
    pub retries_undone: usize,
    /// Batches from before the index of open batches, indexed by the migration pass.
    pub migrated: usize,
    /// Bulk jobs that ended and whose results were stored.
    pub bulk_jobs_ended: usize,
}

/// `sweep/open-index.json`: when the index of open batches was first built from a full scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexBuilt {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

const INDEX_BUILT: &str = "sweep/open-index.json";

/// For this long after the index was first built, every sweep scans all batches again, so a batch
/// that an older submit revision (still draining its requests during the rollout) wrote without a
/// marker is indexed too.
const MIGRATION_WINDOW: time::Duration = time::Duration::hours(1);

impl Sweep {
    pub async fn run(&self) -> Result<SweepReport, Problem> {
        let store = self.settlement.store.as_ref();
        let now = OffsetDateTime::now_utc();
        let grace = time::Duration::try_from(self.queued_grace).unwrap_or(time::Duration::ZERO);
        let mut report = SweepReport::default();
        self.migrate(now, &mut report).await?;
        for batch_id in open_index::list(store).await.map_err(store_problem)? {
            let Some(marker) = open_index::read(store, &batch_id).await.map_err(store_problem)? else { continue };
            let batch = match load(store, &batch_id).await {
                Ok(batch) => batch,
                Err(p) if p.code == ErrorCode::BatchNotFound => {
                    // Submit died before writing the manifest: free its hold once it is surely dead.
                    if uuid_age(&batch_id).is_some_and(|age| age > self.queued_grace) {
                        let m = &marker.value;
                        self.settlement.budget.settle(&m.user, m.day, &batch_id, Money::ZERO).await?;
                        open_index::close(store, &batch_id, marker.generation).await.map_err(store_problem)?;
                        report.orphan_holds_freed += 1;
                    }
                    continue;
                }
                Err(p) => return Err(p),
            };
            report.batches += 1;
            if batch.manifest.spec.run_mode == RunMode::Bulk {
                // Its rows wait in Google's job, not in the queue: poll the job instead.
                match self.bulk.poll(&batch.manifest).await {
                    Ok(ended) => report.bulk_jobs_ended += ended,
                    Err(p) => tracing::warn!(%batch_id, detail = %p.detail, "bulk batch not polled"),
                }
                continue;
            }
            let mut stuck = Vec::new();
            let mut all_ended = true;
            // Submit writes the manifest, then the row states, then publishes: a batch younger
            // than the grace may still be in that submit's hands.
            let past_grace = uuid_age(&batch_id).is_none_or(|age| age > self.queued_grace);
            for spec in &batch.manifest.spec.rows {
                match batch.rows.get(&spec.row).map(|(_, s)| s) {
                    None if past_grace => stuck.push(spec.row),
                    None => all_ended = false,
                    Some(s) if s.status.is_terminal() => {}
                    Some(s) if s.awaiting_hold => {
                        all_ended = false;
                        if !marker.value.retrying(now) && self.undo_retry(&batch_id, spec.row).await? {
                            report.retries_undone += 1;
                        }
                    }
                    Some(s) => {
                        all_ended = false;
                        let abandoned = s.status == RowStatus::Running && !s.leased_by_other("", now);
                        let forgotten = s.status == RowStatus::Queued && now - s.updated_at > grace;
                        if abandoned || forgotten {
                            stuck.push(spec.row);
                        }
                    }
                }
            }
            if !stuck.is_empty() {
                let messages: Vec<RowMessage> =
                    stuck.iter().map(|row| RowMessage { batch_id: batch_id.clone(), row: *row }).collect();
                self.queue
                    .publish(&messages)
                    .await
                    .map_err(|e| Problem::new(ErrorCode::QueueUnavailable, e.to_string()))?;
                report.republished += messages.len();
            } else if all_ended && self.settlement.close_if_finished(&batch.manifest).await? {
                report.settled += 1;
            }
        }
        if report.republished + report.settled + report.orphan_holds_freed + report.retries_undone > 0 {
            tracing::info!(?report, "sweep");
        }
        Ok(report)
    }

    /// Polls the Batch API jobs of every open bulk batch (`assetgen serve` runs this on a timer;
    /// the cloud's scheduled sweep does it in [`Sweep::run`]). Returns the jobs that ended.
    pub async fn poll_bulk(&self) -> Result<usize, Problem> {
        let store = self.settlement.store.as_ref();
        let mut ended = 0;
        for batch_id in open_index::list(store).await.map_err(store_problem)? {
            let manifest = match crate::batch_view::load_manifest(store, &batch_id).await {
                Ok(m) => m,
                Err(p) if p.code == ErrorCode::BatchNotFound => continue,
                Err(p) => return Err(p),
            };
            if manifest.spec.run_mode != RunMode::Bulk {
                continue;
            }
            match self.bulk.poll(&manifest).await {
                Ok(n) => ended += n,
                Err(p) => tracing::warn!(%batch_id, detail = %p.detail, "bulk batch not polled"),
            }
        }
        Ok(ended)
    }

    /// Only the rows whose delivery died holding them (running, lease expired), published again.
    /// `assetgen serve` runs this every lease period: a duplicate delivery that found such a row
    /// busy was acknowledged, so no message of the local queue brings it to an end any more.
    /// (Queued rows need no such sweep there: the local queue's journal keeps their messages.)
    pub async fn republish_abandoned(&self) -> Result<usize, Problem> {
        let store = self.settlement.store.as_ref();
        let now = OffsetDateTime::now_utc();
        let mut republished = 0;
        // Only open batches can have running rows (batches from before the index are indexed by
        // `run`'s migration pass).
        for batch_id in open_index::list(store).await.map_err(store_problem)? {
            let batch = match load(store, &batch_id).await {
                Ok(batch) => batch,
                Err(p) if p.code == ErrorCode::BatchNotFound => continue,
                Err(p) => return Err(p),
            };
            let abandoned: Vec<RowMessage> = batch
                .rows
                .values()
                .filter(|(_, s)| s.status == RowStatus::Running && !s.leased_by_other("", now))
                .map(|(_, s)| RowMessage { batch_id: batch_id.clone(), row: s.row })
                .collect();
            if !abandoned.is_empty() {
                tracing::info!(%batch_id, rows = abandoned.len(), "rows whose delivery died are published again");
                self.queue
                    .publish(&abandoned)
                    .await
                    .map_err(|e| Problem::new(crate::problem::ErrorCode::QueueUnavailable, e.to_string()))?;
                republished += abandoned.len();
            }
        }
        Ok(republished)
    }

    /// A row a retry took but never released: the retry died before (or was refused) holding its
    /// money. Back to failed, so it can be retried again; the batch then closes as usual.
    async fn undo_retry(&self, batch: &BatchId, row: u32) -> Result<bool, Problem> {
        let mut undone = false;
        update_json::<RowState, StoreError, _>(self.settlement.store.as_ref(), &layout::row_state(batch, row), |s| {
            undone = s.awaiting_hold && s.status == RowStatus::Queued;
            if !undone {
                return Ok(None);
            }
            let mut next = s.clone();
            next.status = RowStatus::Failed;
            next.awaiting_hold = false;
            next.updated_at = OffsetDateTime::now_utc();
            Ok(Some(next))
        })
        .await
        .map_err(store_problem)?;
        Ok(undone)
    }

    /// Batches submitted before the index of open batches existed have no marker. Until the index
    /// has been complete for [`MIGRATION_WINDOW`], every sweep scans all batches (the old way) and
    /// indexes those that may still need it: a row not ended, or a live hold not settled. Holds
    /// whose submit died before writing its manifest, from before the index, are freed here too.
    async fn migrate(&self, now: OffsetDateTime, report: &mut SweepReport) -> Result<(), Problem> {
        let store = self.settlement.store.as_ref();
        let built = match read_json::<IndexBuilt>(store, INDEX_BUILT).await {
            Ok(b) => Some(b.value.at),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(store_problem(e)),
        };
        if built.is_some_and(|at| now - at > MIGRATION_WINDOW) {
            return Ok(());
        }
        let indexed: BTreeSet<BatchId> = open_index::list(store).await.map_err(store_problem)?.into_iter().collect();
        let manifests: Vec<BatchId> = store
            .list("batches/")
            .await
            .map_err(store_problem)?
            .into_iter()
            .filter(|m| m.name.ends_with("/manifest.json"))
            .filter_map(|m| m.name.split('/').nth(1).and_then(|id| BatchId::parse(id).ok()))
            .collect();
        let mut days: BTreeMap<String, BudgetDay> = BTreeMap::new();
        let mut migrated = 0;
        for batch_id in manifests.iter().filter(|b| !indexed.contains(*b)) {
            let batch = load(store, batch_id).await?;
            let m = &batch.manifest;
            let ended = m.spec.rows.iter().all(|r| batch.rows.get(&r.row).is_some_and(|(_, s)| s.status.is_terminal()));
            let unsettled = m.spec.run_mode.costs_money() && {
                let name = budget_object(day_of(m), &m.user);
                if !days.contains_key(&name) {
                    match read_json::<BudgetDay>(store, &name).await {
                        Ok(d) => {
                            days.insert(name.clone(), d.value);
                        }
                        Err(StoreError::NotFound(_)) => {}
                        Err(e) => return Err(store_problem(e)),
                    }
                }
                days.get(&name).and_then(|d| d.batches.get(&batch_id.to_string())).is_some_and(|h| h.settled.is_none())
            };
            if !ended || unsettled {
                open_index::open(store, &OpenMarker::new(batch_id.clone(), m.user.clone(), day_of(m)))
                    .await
                    .map_err(store_problem)?;
                migrated += 1;
            }
        }
        report.orphan_holds_freed += self.free_orphan_holds(&manifests).await?;
        if built.is_none() {
            let first = IndexBuilt { at: now };
            match write_json(store, INDEX_BUILT, &first, Precondition::DoesNotExist).await {
                Ok(_) | Err(StoreError::PreconditionFailed(_)) => {}
                Err(e) => return Err(store_problem(e)),
            }
        }
        if migrated > 0 {
            tracing::info!(migrated, "batches from before the index of open batches indexed");
        }
        report.migrated = migrated;
        Ok(())
    }

    /// Holds of batches whose manifest was never written (submit died after reserving, before the
    /// index existed) are settled at zero once they are older than the grace period.
    async fn free_orphan_holds(&self, manifests: &[BatchId]) -> Result<usize, Problem> {
        let store = self.settlement.store.as_ref();
        let mut freed = 0;
        for meta in store.list("budget/").await.map_err(store_problem)? {
            let day: BudgetDay = read_json(store, &meta.name).await.map_err(store_problem)?.value;
            for (batch, hold) in &day.batches {
                let Ok(batch_id) = BatchId::parse(batch) else { continue };
                let old = uuid_age(&batch_id).is_some_and(|age| age > self.queued_grace);
                if hold.settled.is_none() && old && !manifests.contains(&batch_id) {
                    let exists = store.get(&layout::manifest(&batch_id)).await.is_ok();
                    let indexed = open_index::read(store, &batch_id).await.map_err(store_problem)?.is_some();
                    if !exists && !indexed {
                        self.settlement.budget.settle(&day.user, day.day, &batch_id, Money::ZERO).await?;
                        freed += 1;
                    }
                }
            }
        }
        Ok(freed)
    }
}

/// A batch id is a UUIDv7: its first 48 bits are its creation time in milliseconds.
fn uuid_age(batch: &BatchId) -> Option<Duration> {
    let id = uuid::Uuid::parse_str(&batch.to_string()).ok()?;
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    let created = std::time::UNIX_EPOCH + Duration::new(secs, nanos);
    std::time::SystemTime::now().duration_since(created).ok()
}
