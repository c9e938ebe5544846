//! Nothing stuck: the sweep finds rows that no message will ever bring to an end — written but
//! never published (submit died in between), or running under a lease whose holder died — and
//! publishes them again; it settles batches that ended without being settled, and frees holds
//! of batches that were never written. It runs when `assetgen serve` starts and, in the cloud, as a
//! scheduled run of the generate job. Publishing a row twice is harmless (generate absorbs it).

use crate::api::RowStatus;
use crate::batch_view::{load, store_problem};
use crate::budget::BudgetDay;
use crate::domain::{BatchId, Money, RunMode};
use crate::layout;
use crate::problem::Problem;
use crate::queue::{RowMessage, RowQueue};
use crate::settlement::Settlement;
use crate::store::read_json;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct Sweep {
    pub settlement: Settlement,
    pub queue: Arc<dyn RowQueue>,
    /// A queued row younger than this is left to its message.
    pub queued_grace: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub batches: usize,
    pub republished: usize,
    pub settled: usize,
    pub orphan_holds_freed: usize,
}

impl Sweep {
    pub async fn run(&self) -> Result<SweepReport, Problem> {
        let store = self.settlement.store.as_ref();
        let now = OffsetDateTime::now_utc();
        let grace = time::Duration::try_from(self.queued_grace).unwrap_or(time::Duration::ZERO);
        let mut report = SweepReport::default();
        let manifests: Vec<BatchId> = store
            .list("batches/")
            .await
            .map_err(store_problem)?
            .into_iter()
            .filter(|m| m.name.ends_with("/manifest.json"))
            .filter_map(|m| m.name.split('/').nth(1).and_then(|id| BatchId::parse(id).ok()))
            .collect();
        for batch_id in &manifests {
            let batch = load(store, batch_id).await?;
            report.batches += 1;
            let mut stuck = Vec::new();
            let mut all_ended = true;
            for spec in &batch.manifest.spec.rows {
                match batch.rows.get(&spec.row).map(|(_, s)| s) {
                    None => stuck.push(spec.row),
                    Some(s) if s.status.is_terminal() => {}
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
                    .map_err(|e| Problem::new(crate::problem::ErrorCode::QueueUnavailable, e.to_string()))?;
                report.republished += messages.len();
            } else if all_ended && batch.manifest.spec.run_mode == RunMode::Live {
                self.settlement.settle(&batch.manifest).await?;
                report.settled += 1;
            }
        }
        report.orphan_holds_freed = self.free_orphan_holds(&manifests).await?;
        if report.republished + report.settled + report.orphan_holds_freed > 0 {
            tracing::info!(?report, "sweep");
        }
        Ok(report)
    }

    /// Only the rows whose delivery died holding them (running, lease expired), published again.
    /// `assetgen serve` runs this every lease period: a duplicate delivery that found such a row
    /// busy was acknowledged, so no message of the local queue brings it to an end any more.
    /// (Queued rows need no such sweep there: the local queue's journal keeps their messages.)
    pub async fn republish_abandoned(&self) -> Result<usize, Problem> {
        let store = self.settlement.store.as_ref();
        let now = OffsetDateTime::now_utc();
        let mut republished = 0;
        for meta in store.list("batches/").await.map_err(store_problem)? {
            let Some(batch_id) = meta
                .name
                .strip_suffix("/manifest.json")
                .and_then(|n| n.strip_prefix("batches/"))
                .and_then(|id| BatchId::parse(id).ok())
            else {
                continue;
            };
            let batch = load(store, &batch_id).await?;
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

    /// Holds of batches whose manifest was never written (submit died after reserving) are
    /// settled at zero once they are older than the grace period.
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
                    if !exists {
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
