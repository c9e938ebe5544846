//! `generate` as a Cloud Run job. Scheduled, it sweeps (rows no message will finish are published
//! again, ended batches settled, orphan holds freed) and compacts yesterday's and today's ledger.
//! With `ASSETGEN_JOB_BATCH=<id>` it re-runs that batch's open rows in bulk, split between the
//! job's tasks by `CLOUD_RUN_TASK_INDEX` / `CLOUD_RUN_TASK_COUNT`.

use assetgen_common::api::RowStatus;
use assetgen_common::batch_view::load;
use assetgen_common::domain::BatchId;
use assetgen_common::generation::Delivery;
use assetgen_common::ledger;
use assetgen_common::pipeline::Pipeline;
use assetgen_common::queue::RowMessage;
use assetgen_common::store::ObjectStore;
use std::sync::Arc;

/// Which slice of the work this task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    pub index: u32,
    pub count: u32,
}

impl Task {
    /// From Cloud Run's variables; one task when they are absent.
    pub fn from_env() -> Result<Self, String> {
        let read = |name: &str, default: u32| match std::env::var(name) {
            Ok(v) => v.trim().parse::<u32>().map_err(|_| format!("{name}={v:?} is not a number")),
            Err(_) => Ok(default),
        };
        let task = Self { index: read("CLOUD_RUN_TASK_INDEX", 0)?, count: read("CLOUD_RUN_TASK_COUNT", 1)?.max(1) };
        if task.index >= task.count {
            return Err(format!(
                "CLOUD_RUN_TASK_INDEX {} is not below CLOUD_RUN_TASK_COUNT {}",
                task.index, task.count
            ));
        }
        Ok(task)
    }

    pub fn owns(&self, row: u32) -> bool {
        row % self.count == self.index
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct JobReport {
    pub rows_run: usize,
    pub rows_ended: usize,
    pub rows_to_retry: usize,
}

/// Runs this task's share of a batch's open rows, one after the other.
pub async fn rerun_batch(
    pipeline: &Pipeline,
    store: &dyn ObjectStore,
    batch: &BatchId,
    task: Task,
) -> Result<JobReport, String> {
    let stored = load(store, batch).await.map_err(|p| p.detail)?;
    let mut report = JobReport::default();
    for spec in stored.manifest.spec.rows.iter().filter(|r| task.owns(r.row)) {
        let open = stored
            .rows
            .get(&spec.row)
            .is_none_or(|(_, s)| !matches!(s.status, RowStatus::Succeeded | RowStatus::Cancelled));
        if !open {
            continue;
        }
        report.rows_run += 1;
        match pipeline.worker.process(&RowMessage { batch_id: batch.clone(), row: spec.row }).await {
            Ok(Delivery::Finished(_) | Delivery::AlreadyHandled) => report.rows_ended += 1,
            Ok(other) => {
                tracing::warn!(row = spec.row, outcome = ?other, "row not finished by the job; it stays queued for Pub/Sub");
                report.rows_to_retry += 1;
            }
            Err(p) => return Err(p.detail),
        }
    }
    Ok(report)
}

/// The scheduled run: task 0 sweeps and compacts; other tasks have nothing to do.
pub async fn scheduled(pipeline: &Pipeline, store: Arc<dyn ObjectStore>, task: Task) -> Result<(), String> {
    if task.index != 0 {
        return Ok(());
    }
    let report = pipeline.sweep.run().await.map_err(|p| p.detail)?;
    tracing::info!(?report, "sweep done");
    let today = time::OffsetDateTime::now_utc().date();
    for day in [today.previous_day(), Some(today)].into_iter().flatten() {
        let n = ledger::compact(store.as_ref(), day).await.map_err(|e| e.to_string())?;
        tracing::info!(%day, events = n, "ledger compacted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_split_rows_without_overlap_or_gap() {
        let tasks: Vec<Task> = (0..3).map(|index| Task { index, count: 3 }).collect();
        for row in 0..30 {
            assert_eq!(tasks.iter().filter(|t| t.owns(row)).count(), 1, "row {row}");
        }
    }
}
