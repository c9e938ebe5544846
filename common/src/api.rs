//! The HTTP contract's wire types (DESIGN.md, "HTTP contract"). They derive `ToSchema` so the
//! OpenAPI document is generated from the very types the handlers use and cannot drift.

use crate::domain::RunMode;
use crate::problem::ErrorCode;
use crate::wire_schema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/batches` and `POST /v1/estimate`. Every constraint the server checks is in this
/// schema (see `wire_schema`), but two that span rows: scene ids are unique within the batch
/// (ignoring case), and each row's references with the global ones name at most 6 distinct URLs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The deployment's `ASSETGEN_MAX_ROWS` at most.
    #[schema(min_items = 1, max_items = 10)]
    pub rows: Vec<RowRequest>,
    #[serde(default)]
    #[schema(schema_with = wire_schema::global_refs)]
    pub global_refs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = wire_schema::run_mode)]
    pub run_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = wire_schema::model)]
    pub model: Option<String>,
}

/// One scene of the Sheet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RowRequest {
    #[schema(schema_with = wire_schema::scene_id)]
    pub scene_id: String,
    #[schema(schema_with = wire_schema::prompt)]
    pub prompt: String,
    /// 1 to 3; 1 when absent.
    #[serde(default, deserialize_with = "crate::json_integer::option_i64", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3)]
    pub variants: Option<i64>,
    #[serde(default)]
    #[schema(schema_with = wire_schema::row_refs)]
    pub refs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = wire_schema::ref_mode)]
    pub ref_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = wire_schema::aspect_ratio)]
    pub aspect_ratio: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Estimate {
    pub images: u64,
    /// What this batch will be charged: 0 for a dry run.
    pub usd: f64,
    /// What the same batch would cost live, so a dry run tells you the price too.
    pub usd_if_live: f64,
    /// What it would cost through Gemini's Batch API (`run_mode: "bulk"`: half price, within a
    /// day). Absent in manifests written before bulk runs existed.
    #[serde(default)]
    pub usd_if_bulk: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetView {
    pub limit_usd: f64,
    pub spent_usd: f64,
    pub reserved_usd: f64,
    pub remaining_usd: f64,
}

/// A batch's links. `events` and `page` carry `?access_token=`, a read token for this batch that
/// works for days with no header (browsers' `EventSource` cannot send one): whoever holds them can
/// watch the batch, never cancel or retry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub events: String,
    pub page: String,
}

/// 200 from `POST /v1/batches/{id}/control-token`: cancel and retry of one batch, for its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ControlTokenResponse {
    pub batch_id: String,
    /// Send as `Authorization: Bearer` to `POST /v1/batches/{id}/cancel` and `/retry`. Never put it
    /// in a query string: a URL is forwarded, logged and kept in histories.
    pub token: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: time::OffsetDateTime,
    /// The progress page with a read token in its query and this token in its fragment
    /// (`#control=…`), which browsers never send to a server.
    pub page: String,
}

/// 200 from `POST /v1/refs/manager-token`: the reference manager (`/refs`) for the signed-in user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ManagerTokenResponse {
    /// Send as `Authorization: Bearer` to the reference library routes (`/v1/refs…`); it opens
    /// nothing else. Never put it in a query string.
    pub token: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: time::OffsetDateTime,
    /// The reference manager page with this token in its fragment (`/refs#token=…`), which
    /// browsers never send to a server.
    pub page: String,
}

/// 202 from `POST /v1/batches`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubmitResponse {
    pub batch_id: String,
    pub estimate: Estimate,
    pub budget: BudgetView,
    pub links: BatchLinks,
}

/// 200 from `POST /v1/estimate`: what a submit would reserve, and the budget after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EstimateResponse {
    pub estimate: Estimate,
    pub budget_after: BudgetView,
    /// Models this deployment can use, with their price per image.
    pub models: Vec<ModelPrice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelPrice {
    pub model: String,
    pub usd_per_image: f64,
    /// Through the Batch API (`run_mode: "bulk"`).
    pub usd_per_image_bulk: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RowStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Queued,
    Running,
    Succeeded,
    /// Every row ended, some of them failed or were cancelled.
    CompletedWithFailures,
    Failed,
    Cancelled,
}

impl BatchStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RowErrorView {
    pub code: ErrorCode,
    pub detail: String,
    pub advice: String,
}

/// What happened to one reference of a row: visible so a user can see dedup and the cap at work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefReport {
    pub url: String,
    pub source: RefSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    pub outcome: RefOutcome,
    /// For a duplicate: the URL whose content it repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefSource {
    Row,
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefOutcome {
    /// Sent to the model.
    Used,
    /// Same bytes as an earlier reference: sent once.
    Duplicate,
    /// Beyond the cap of 6.
    DroppedOverCap,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RowView {
    pub row: u32,
    pub scene_id: String,
    pub status: RowStatus,
    pub attempts: u32,
    pub variants: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RowErrorView>,
    /// Links to the stored images, one per finished variant, in variant order.
    pub images: Vec<String>,
    /// Object names of the stored images (`images/{batch}/{scene_id}-v{n}.png`).
    pub objects: Vec<String>,
    /// Links to each stored image's provenance (`/v1/provenance/…`, opened by the image's own
    /// signature: the image carries the same record inside), in variant order.
    pub provenance: Vec<String>,
    pub refs: Vec<RefReport>,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Totals {
    pub rows: u32,
    pub queued: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
    pub images_done: u32,
    pub images_total: u32,
}

/// `GET /v1/batches/{id}`, the SSE `snapshot` and `done` events: what the Sheet writes back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchView {
    pub batch_id: String,
    pub status: BatchStatus,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    /// When the batch ended: its rows' last state change, once every row has ended; absent while
    /// it runs (and again once a retry reopens it). With `created_at`, the batch's duration.
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<time::OffsetDateTime>,
    pub run_mode: RunMode,
    pub model: String,
    pub estimate: Estimate,
    pub totals: Totals,
    pub cost_usd: f64,
    pub rows: Vec<RowView>,
    /// Run mode `bulk`: the batch's latest Batch API job (its state at Google, when it was
    /// submitted and last polled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<Box<crate::bulk::BulkView>>,
}

/// The SSE `batch` event: the header of the progress view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchProgress {
    pub batch_id: String,
    pub status: BatchStatus,
    pub totals: Totals,
    pub cost_usd: f64,
    /// When the batch ended: its rows' last state change, once every row has ended; absent while
    /// it runs (and again once a retry reopens it). With `created_at`, the batch's duration.
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<time::OffsetDateTime>,
    /// Run mode `bulk`: the latest Batch API job, so a page sees it move at Google (pending,
    /// running, succeeded…) while no row changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<Box<crate::bulk::BulkView>>,
}
