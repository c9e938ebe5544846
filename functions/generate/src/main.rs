//! The generate function on Cloud Run: a push endpoint for rows, or — when run as a Cloud Run job
//! (`CLOUD_RUN_TASK_INDEX` is set, or `--job`) — the sweep, ledger compaction and bulk re-runs.

mod job;

use assetgen_common::config::QueueUrl;
use assetgen_common::domain::BatchId;
use assetgen_common::shim::PipelineStart;
use assetgen_common::{cloud, shim};
use assetgen_generate::{GenerateState, Redelivery, router};
use std::process::ExitCode;
use std::sync::Arc;

#[tokio::main]
async fn main() -> ExitCode {
    shim::run_function("generate", run).await
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let PipelineStart { config, store, readiness, pipeline } = PipelineStart::from_env().await?;
    let as_job = std::env::var_os("CLOUD_RUN_TASK_INDEX").is_some() || std::env::args().any(|a| a == "--job");
    if as_job {
        let task = job::Task::from_env()?;
        return match std::env::var("ASSETGEN_JOB_BATCH").ok().filter(|b| !b.trim().is_empty()) {
            Some(batch) => {
                let batch = BatchId::parse(&batch).map_err(|e| format!("ASSETGEN_JOB_BATCH: {e}"))?;
                let report = job::rerun_batch(&pipeline, store.as_ref(), &batch, task).await?;
                tracing::info!(?report, ?task, "batch re-run");
                Ok(())
            }
            None => Ok(job::scheduled(&pipeline, store, task).await?),
        };
    }
    // Pub/Sub counts every delivery toward dead-lettering: a row the quota kept waiting is
    // published again rather than nacked.
    let redelivery = match config.queue {
        QueueUrl::PubSub { .. } => Redelivery::Republish(pipeline.sweep.queue.clone()),
        QueueUrl::Local => Redelivery::Uncounted429,
    };
    let state = GenerateState { worker: pipeline.worker, auth: cloud::push_auth(&config)?, redelivery };
    shim::listen(config.port, shim::app(router(Arc::new(state)), readiness, "assetgen generate")).await?;
    Ok(())
}
