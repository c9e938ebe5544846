//! The index of open batches: one small object `open/{batch_id}` per batch that may still need the
//! sweep (a row to republish, a hold to settle), so the sweep reads only those and its cost does not
//! grow with every batch ever run.
//!
//! - Submit writes the marker create-only before anything else of the batch (before its hold and
//!   its manifest), so no batch is visible without one.
//! - A batch is closed — its hold settled, then its marker deleted — once every row has ended. The
//!   delete is conditional on the marker's generation as read *before* the rows were looked at.
//! - A retry marks the marker (`retry_started`) before it queues rows again, and clears the mark
//!   after; while the mark is fresh nobody closes the batch. A retry that dies half-way leaves the
//!   mark to expire ([`RETRY_WINDOW`]), by which time its rows are either queued (not closable) or
//!   put back to failed by the sweep.
//!
//! Batches submitted before the index existed are indexed by the sweep's migration pass (see
//! `sweep`).

use crate::domain::{BatchId, UserId};
use crate::store::{JsonObject, ObjectStore, Precondition, StoreError, read_json, write_json};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use time::{Date, OffsetDateTime};

pub const PREFIX: &str = "open/";

/// How long a retry's mark keeps its batch from being closed: far longer than a retry takes.
pub const RETRY_WINDOW: Duration = Duration::from_secs(300);

/// `open/{batch_id}`: what the sweep needs to free a hold even when the manifest was never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenMarker {
    pub batch_id: BatchId,
    pub user: UserId,
    /// The batch's budget day.
    pub day: Date,
    /// Set while a retry queues rows again.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub retry_started: Option<OffsetDateTime>,
}

impl OpenMarker {
    pub fn new(batch_id: BatchId, user: UserId, day: Date) -> Self {
        Self { batch_id, user, day, retry_started: None }
    }

    /// Whether a retry is (or may still be) queueing rows of this batch.
    pub fn retrying(&self, now: OffsetDateTime) -> bool {
        self.retry_started.is_some_and(|at| now - at < RETRY_WINDOW)
    }
}

pub fn name(batch: &BatchId) -> String {
    format!("{PREFIX}{batch}")
}

/// The batch id of an index entry's object name.
pub fn batch_of(name: &str) -> Option<BatchId> {
    name.strip_prefix(PREFIX).and_then(|id| BatchId::parse(id).ok())
}

/// Opens the batch in the index (create-only: a replayed submit finds it there and keeps it).
pub async fn open(store: &dyn ObjectStore, marker: &OpenMarker) -> Result<(), StoreError> {
    match write_json(store, &name(&marker.batch_id), marker, Precondition::DoesNotExist).await {
        Ok(_) | Err(StoreError::PreconditionFailed(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the marker whatever is there: (re)opens the batch and changes the marker's generation,
/// so a close that looked before this write cannot delete it.
pub async fn touch(store: &dyn ObjectStore, marker: &OpenMarker) -> Result<(), StoreError> {
    write_json(store, &name(&marker.batch_id), marker, Precondition::None).await.map(|_| ())
}

/// The batch's marker, `None` when the batch is not in the index.
pub async fn read(store: &dyn ObjectStore, batch: &BatchId) -> Result<Option<JsonObject<OpenMarker>>, StoreError> {
    match read_json(store, &name(batch)).await {
        Ok(m) => Ok(Some(m)),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the batch from the index if its marker is still the one read at `generation`.
pub async fn close(store: &dyn ObjectStore, batch: &BatchId, generation: i64) -> Result<bool, StoreError> {
    match store.delete(&name(batch), Precondition::GenerationMatch(generation)).await {
        Ok(()) => Ok(true),
        Err(StoreError::PreconditionFailed(_) | StoreError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every batch in the index.
pub async fn list(store: &dyn ObjectStore) -> Result<Vec<BatchId>, StoreError> {
    Ok(store.list(PREFIX).await?.iter().filter_map(|m| batch_of(&m.name)).collect())
}
