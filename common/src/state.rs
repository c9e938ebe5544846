//! What is stored about a batch: the manifest (written once) and one state object per row
//! (updated by compare-and-swap).

use crate::api::{Estimate, RefReport, RowStatus};
use crate::batch_spec::BatchSpec;
use crate::domain::{BatchId, Money, SceneId, UserId};
use crate::problem::ErrorCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `batches/{id}/manifest.json`: the request as accepted, create-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub batch_id: BatchId,
    pub user: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub spec: BatchSpec,
    /// The estimate as accepted (prices can change later; this is what the user was told).
    pub estimate: Estimate,
    /// What the batch reserved from the user's budget (0 for a dry run).
    pub reserved: Money,
}

impl Manifest {
    /// The price of one image of this batch: the price it was accepted at (its hold divided by its
    /// images, exact in micro-dollars), not today's table, which may have changed since. Every
    /// spend, release and retry hold of the batch uses it, so the ledger matches what the user was
    /// told. Zero for a dry run.
    pub fn price_per_image(&self) -> Money {
        match self.estimate.images {
            0 => Money::ZERO,
            images => Money::from_micros(self.reserved.micros() / images as i64),
        }
    }
}

/// A row's lease: who is generating it and until when. Another delivery of the same row waits
/// (nack) while it is held; a lease past `until` is abandoned (its holder crashed) and can be taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

/// One stored image of a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVariant {
    pub variant: u8,
    pub object: String,
    pub sha256: String,
    pub bytes: u64,
    pub model: String,
    pub cost: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    pub code: ErrorCode,
    pub detail: String,
}

/// `batches/{id}/rows/{row:04}.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowState {
    pub batch_id: BatchId,
    pub row: u32,
    pub scene_id: SceneId,
    pub status: RowStatus,
    /// Deliveries that took the lease.
    pub attempts: u32,
    /// Retry rounds: 0, then +1 each time a failed row is retried. Ledger events carry it, so a
    /// retried variant's spend or release is a new event, not a duplicate of the first round's.
    #[serde(default)]
    pub round: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    pub variants: Vec<StoredVariant>,
    #[serde(default)]
    pub refs: Vec<RefReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RowError>,
    /// Queued again by a retry that has not yet held the money for it: no delivery may start it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_hold: bool,
    /// Run mode `bulk`: the job (`batches/{id}/bulk/{seq}.json`) that makes this row's images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_job: Option<u32>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl RowState {
    pub fn queued(batch_id: BatchId, row: u32, scene_id: SceneId, now: OffsetDateTime) -> Self {
        Self {
            batch_id,
            row,
            scene_id,
            status: RowStatus::Queued,
            attempts: 0,
            round: 0,
            lease: None,
            variants: Vec::new(),
            refs: Vec::new(),
            error: None,
            awaiting_hold: false,
            bulk_job: None,
            updated_at: now,
        }
    }

    pub fn has_variant(&self, variant: u8) -> bool {
        self.variants.iter().any(|v| v.variant == variant)
    }

    pub fn cost(&self) -> Money {
        self.variants.iter().map(|v| v.cost).sum()
    }

    /// Whether someone else holds a live lease on this row.
    pub fn leased_by_other(&self, holder: &str, now: OffsetDateTime) -> bool {
        self.lease.as_ref().is_some_and(|l| l.holder != holder && l.until > now)
    }
}
