//! Provenance: every stored image says how it was made — which prompt and references, which model
//! answered (its version and response id), what it cost and who asked — so the answer to "where
//! does this hero shot come from?" travels with the image instead of being scattered over a
//! manifest, a row state and the ledger.
//!
//! The same record is kept twice: inside the PNG as `iTXt` chunks ([`png_text`]), so a copy of the
//! file still carries it, and beside it as `images/{batch}/{scene}-v{n}.json` ([`Sidecar`]), which
//! adds what a file cannot say about itself: the SHA-256 and size of the stored bytes. The sidecar
//! is always derived from the chunks of the bytes actually stored, so when a late delivery adopts
//! another's image, the sidecar describes the image that stands.

pub mod png_text;
pub mod record;
pub mod view;

use crate::api::RefReport;
use crate::domain::{AspectRatio, BatchId, Money, RefMode, RunMode, SceneId, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// The version of the record's shape, so readers can tell old records from new ones.
pub const FORMAT: &str = "assetgen.provenance/1";

/// How one image was made. Embedded in the PNG and the body of its sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Provenance {
    /// Always [`FORMAT`].
    pub format: String,
    #[schema(value_type = String)]
    pub batch_id: BatchId,
    pub row: u32,
    #[schema(value_type = String)]
    pub scene_id: SceneId,
    pub variant: u8,
    /// The object the image is stored as (`images/{batch}/{scene_id}-v{n}.png`).
    pub object: String,
    /// The text exactly as sent to the model: the row's prompt, plus the reference-mode instruction
    /// when the row had references.
    pub prompt: String,
    /// The model asked for (the batch's model).
    pub model: String,
    /// The model version that answered (Gemini's `modelVersion`), when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The id the model gave its answer (Gemini's `responseId`), to quote to Google's support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    #[schema(value_type = String)]
    pub run_mode: RunMode,
    #[schema(value_type = String, example = "16:9")]
    pub aspect_ratio: AspectRatio,
    #[schema(value_type = String)]
    pub ref_mode: RefMode,
    /// Every reference the row was given, in order, with what became of it: `used` (sent),
    /// `duplicate` (same bytes as an earlier one), `dropped_over_cap`.
    pub refs: Vec<RefReport>,
    pub price: Price,
    /// The ledger event that spent `price` (absent for dry runs, which spend nothing). Its name is
    /// fixed before the image is stored, so it can be written into the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerRef>,
    /// Who submitted the batch (and whose budget paid).
    #[schema(value_type = String)]
    pub user: UserId,
    /// When the batch was submitted, the model was called and it answered.
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub submitted_at: OffsetDateTime,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// The delivery of the row that made it (1 = the first), and its retry round (0 = before any
    /// retry).
    pub attempt: u32,
    pub round: u32,
    /// The submit request the row came from, to find its log lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The program that stored it, `assetgen {version}`.
    pub software: String,
}

/// What the image cost: the batch's accepted price, spent by the ledger event named here.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Price {
    /// Exact, in micro-dollars (what the ledger sums).
    #[schema(value_type = i64)]
    pub micros: Money,
    /// The same in dollars, for people.
    pub usd: f64,
}

impl Price {
    pub fn of(amount: Money) -> Self {
        Self { micros: amount, usd: amount.usd() }
    }
}

/// The ledger event that spent an image's price (live runs; dry runs write no money events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerRef {
    /// `{batch}.{row:04}.v{variant}.r{round}.spend`
    pub event: String,
    /// Its object, `ledger/{day}/{event}.json`.
    pub object: String,
}

/// The stored bytes, as a sidecar can say and the file itself cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoredImage {
    pub object: String,
    /// SHA-256 (hex) of the stored bytes, provenance chunks included: what the row state records.
    pub sha256: String,
    pub bytes: u64,
    pub content_type: String,
    /// Whether the provenance is inside the image as well (false only for an image that is not a
    /// PNG, which cannot carry it).
    pub embedded: bool,
}

/// `images/{batch}/{scene_id}-v{n}.json`: the provenance and the stored bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sidecar {
    #[serde(flatten)]
    pub provenance: Provenance,
    pub image: StoredImage,
}

impl Provenance {
    /// The program's name and version for [`Provenance::software`].
    pub fn software() -> String {
        format!("assetgen {}", env!("CARGO_PKG_VERSION"))
    }
}
