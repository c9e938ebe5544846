//! The Batch API port: many image calls submitted as one job that Google runs within a day at half
//! the price (run mode `bulk`). A job is created once, polled until it ends, and its results read
//! back by key. The Gemini adapter is in `gemini/batch.rs`; tests run it against a stub that speaks
//! the same wire format.

use super::{GeneratedImage, ImageRequest, ModelError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One image call of a job, named by a key its result comes back under.
#[derive(Debug, Clone)]
pub struct KeyedRequest {
    pub key: String,
    pub request: ImageRequest,
}

/// Where a job is in Google's life cycle (`BATCH_STATE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Expired,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }

    /// From the API's enum name, with or without its `BATCH_STATE_`/`JOB_STATE_` prefix.
    pub fn from_wire(raw: &str) -> Option<Self> {
        let name = raw.trim_start_matches("BATCH_STATE_").trim_start_matches("JOB_STATE_");
        Some(match name {
            "PENDING" | "QUEUED" => Self::Pending,
            "RUNNING" => Self::Running,
            "SUCCEEDED" => Self::Succeeded,
            "FAILED" => Self::Failed,
            "CANCELLED" | "CANCELLING" => Self::Cancelled,
            "EXPIRED" => Self::Expired,
            _ => return None,
        })
    }
}

/// The result of one keyed request of a job that ended.
#[derive(Debug, Clone)]
pub struct KeyedResult {
    pub key: String,
    pub outcome: Result<GeneratedImage, ModelError>,
}

/// A job as last seen.
#[derive(Debug, Clone)]
pub struct JobStatus {
    /// Google's resource name, `batches/{id}`.
    pub name: String,
    pub state: JobState,
    pub created_at: Option<OffsetDateTime>,
    /// Per-request results, once the job has ended with any (a cancelled job may carry some).
    pub results: Vec<KeyedResult>,
    /// Google's words when the whole job failed.
    pub error: Option<String>,
    /// The JSONL file the job reads its requests from (`files/…`), when it was not sent inline: it
    /// stays in the project's Files API storage until deleted.
    pub input_file: Option<String>,
    /// The file Google wrote the results to (`output.responsesFile`, `files/…`), for a job that
    /// ended with its results in a file rather than inline (large jobs): read here, and like the
    /// input it stays in the project's Files API storage until deleted.
    pub results_file: Option<String>,
}

#[async_trait]
pub trait BatchApi: Send + Sync + std::fmt::Debug {
    /// Creates a job of `requests` for `model`, inline while the payload stays under the inline
    /// limit, through an uploaded JSONL file otherwise. `display_name` lets an operator find it.
    async fn create(&self, model: &str, display_name: &str, requests: &[KeyedRequest])
    -> Result<JobStatus, ModelError>;

    /// The job named `display_name`, if Google has one: a preparer that died between Google
    /// accepting its job and recording the job's name left it there, and it must be adopted, not
    /// submitted (and paid for) twice.
    async fn find(&self, display_name: &str) -> Result<Option<JobStatus>, ModelError>;

    /// The job's state, with its results once it has ended.
    async fn get(&self, name: &str) -> Result<JobStatus, ModelError>;

    /// Asks Google to cancel the job (it ends `cancelled`, or in the state it reached first).
    async fn cancel(&self, name: &str) -> Result<(), ModelError>;

    /// Deletes a file of a job from the Files API (its JSONL input, its results file) once the job
    /// has ended and its results are stored. A file that is already gone counts as deleted, so a
    /// repeated delete succeeds.
    async fn delete_file(&self, name: &str) -> Result<(), ModelError>;
}
