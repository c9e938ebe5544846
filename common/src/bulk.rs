//! Run mode `bulk`: a batch's rows go to Gemini's Batch API as one job (half the price, results
//! within a day) instead of one call per image.
//!
//! The life of a bulk batch, all through the store (functions still meet only there):
//! - submit accepts it like a live one, holding its estimate at the bulk price, and publishes one
//!   message per row;
//! - the first delivery to generate creates `batches/{id}/bulk/{seq:04}.json` (create-only, with a
//!   lease), claims every queued row for it (`bulk_job` in the row state, by compare-and-swap),
//!   fetches the rows' references, submits one job with a request per missing image (key
//!   `r{row:04}-v{variant}`) and records Google's job name; the other deliveries find their row
//!   claimed and are acknowledged;
//! - a poller (the sweep, scheduled in the cloud; a timer in `assetgen serve`) reads the job
//!   (`GET …/batches/{id}`) until it ends, then stores its results exactly as live rows are stored:
//!   PNGs written create-only, a `spend` ledger event per image at the batch's accepted (bulk)
//!   price, the row states by compare-and-swap. A request that failed fails only its row; a job that
//!   expired or failed fails its rows; a cancelled one cancels them. Every unmade image's hold is
//!   released and the batch settled as usual, so the ledger reconciles to the cent;
//! - cancel marks the job `cancel_requested`; the poller cancels it at Google and ends its rows once
//!   Google says how it ended (results that arrived first are kept and paid for, never dropped);
//! - a retry queues failed rows without a job; the next delivery or poll submits a new job for them;
//! - a preparer that takes over a job left in preparing first looks the job up at Google by its
//!   display name: if Google has it, the job is adopted with the rows its first preparer claimed
//!   (the ones it asked Google for), and rows queued since then go into the next job;
//! - once a job has ended and its results are stored, the files it left in Google's Files API are
//!   deleted: the JSONL input it was submitted with (over the inline limit) and the file Google
//!   wrote its results to (a large job's `responsesFile`), so they do not pile up in the project's
//!   file storage.
//!
//! Every step is safe to repeat: the job object is created once per sequence number, rows are
//! claimed and ended by compare-and-swap, images and ledger events are create-only.

use crate::api::RowStatus;
use crate::batch_spec::RowSpec;
use crate::batch_view::store_problem;
use crate::domain::BatchId;
use crate::layout;
use crate::model::{BatchApi, JobState, JobStatus, KeyedRequest, ModelError};
use crate::model::{GeneratedImage, ImageRequest};
use crate::problem::{ErrorCode, Problem};
use crate::provenance::record as provenance;
use crate::refs::fetch::RefFetcher;
use crate::refs::merge::merge_refs;
use crate::settlement::Settlement;
use crate::state::{Lease, Manifest, RowError, RowState, StoredVariant};
use crate::store::{ObjectStore, Precondition, StoreError, read_json, update_json, write_json};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Where a bulk job stands: being prepared here, or Google's state of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkState {
    /// References are being fetched and the job submitted (a lease guards it).
    Preparing,
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Expired,
}

impl From<JobState> for BulkState {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Pending => Self::Pending,
            JobState::Running => Self::Running,
            JobState::Succeeded => Self::Succeeded,
            JobState::Failed => Self::Failed,
            JobState::Cancelled => Self::Cancelled,
            JobState::Expired => Self::Expired,
        }
    }
}

impl BulkState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled | Self::Expired)
    }
}

/// `batches/{id}/bulk/{seq:04}.json`: one Batch API job of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkJob {
    pub seq: u32,
    pub state: BulkState,
    /// Google's name of the job (`batches/…`), once submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The rows this job makes images for.
    #[serde(default)]
    pub rows: Vec<u32>,
    /// Images requested.
    #[serde(default)]
    pub requests: u32,
    /// Held while preparing, so one delivery submits the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub polled_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<OffsetDateTime>,
    /// The user cancelled the batch: the poller cancels the job at Google.
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(default)]
    pub cancel_sent: bool,
    /// The job's results are stored and its rows ended.
    #[serde(default)]
    pub settled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The JSONL file uploaded for the job's requests (`files/…`; none for an inline job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_file: Option<String>,
    /// The input file was deleted at Google once the job ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub input_deleted: bool,
    /// The file Google wrote the job's results to (`files/…`; none when they came inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results_file: Option<String>,
    /// The results file was deleted at Google once the results were stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub results_deleted: bool,
}

impl BulkJob {
    /// A new job, held by the preparer that made it: nothing asked of Google yet.
    fn preparing(seq: u32, lease: Lease, created_at: OffsetDateTime) -> Self {
        Self {
            seq,
            state: BulkState::Preparing,
            job: None,
            rows: Vec::new(),
            requests: 0,
            lease: Some(lease),
            created_at,
            submitted_at: None,
            polled_at: None,
            ended_at: None,
            cancel_requested: false,
            cancel_sent: false,
            settled: false,
            error: None,
            input_file: None,
            input_deleted: false,
            results_file: None,
            results_deleted: false,
        }
    }

    /// The files of this job still at Google that it no longer needs: once it has ended, its input;
    /// once its results are stored, its results file.
    fn files_left(&self) -> impl Iterator<Item = (FileRole, &str)> {
        let input = self.input_file.as_deref().filter(|_| !self.input_deleted).map(|f| (FileRole::Input, f));
        let results = self.results_file.as_deref().filter(|_| !self.results_deleted).map(|f| (FileRole::Results, f));
        input.into_iter().chain(results)
    }

    /// Whether a watcher would see a change from `other` to `self`. The poller stamps `polled_at`
    /// (and a preparing delivery its lease) on every pass while Google holds the job; those tell a
    /// page nothing, and counting them as moves would wake the relay's tail every poll and keep it
    /// at its fast pace for the whole day a bulk job may take.
    pub fn looks_the_same_as(&self, other: &Self) -> bool {
        let shown = |j: &Self| Self { polled_at: None, lease: None, ..j.clone() };
        shown(self) == shown(other)
    }
}

/// What a file of a job at Google holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileRole {
    /// The JSONL requests the job was uploaded with.
    Input,
    /// The JSONL results Google wrote.
    Results,
}

impl std::fmt::Display for FileRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Input => "input",
            Self::Results => "results",
        })
    }
}

/// The job as the status API, the page and the CLI show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkView {
    pub state: BulkState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    pub rows: u32,
    pub requests: u32,
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<OffsetDateTime>,
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub polled_at: Option<OffsetDateTime>,
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<OffsetDateTime>,
    pub cancel_requested: bool,
}

impl From<&BulkJob> for BulkView {
    fn from(j: &BulkJob) -> Self {
        Self {
            state: j.state,
            job: j.job.clone(),
            rows: u32::try_from(j.rows.len()).unwrap_or(u32::MAX),
            requests: j.requests,
            submitted_at: j.submitted_at,
            polled_at: j.polled_at,
            ended_at: j.ended_at,
            cancel_requested: j.cancel_requested,
        }
    }
}

impl BulkView {
    /// What a person is told while the job is at Google ("waiting for Google's batch, submitted
    /// 14:02 UTC"); `None` once it has ended.
    pub fn waiting_text(&self) -> Option<String> {
        let at = self
            .submitted_at
            .map(|t| {
                let t = t.to_offset(time::UtcOffset::UTC);
                format!(", submitted {:02}:{:02} UTC", t.hour(), t.minute())
            })
            .unwrap_or_default();
        let cancelling = if self.cancel_requested { " (cancelling)" } else { "" };
        match self.state {
            BulkState::Preparing => Some(format!("preparing Google's batch{cancelling}")),
            BulkState::Pending => Some(format!("waiting for Google's batch{at}{cancelling}")),
            BulkState::Running => Some(format!("Google is running the batch{at}{cancelling}")),
            _ => None,
        }
    }
}

pub fn jobs_prefix(batch: &BatchId) -> String {
    format!("batches/{batch}/bulk/")
}

pub fn job_name(batch: &BatchId, seq: u32) -> String {
    format!("batches/{batch}/bulk/{seq:04}.json")
}

/// The display name of a batch's job at Google: the same every time the job is prepared.
pub fn job_display_name(batch: &BatchId, seq: u32) -> String {
    format!("assetgen-{batch}-{seq}")
}

/// The key of one image's request: `r{row:04}-v{variant}`.
pub fn request_key(row: u32, variant: u8) -> String {
    format!("r{row:04}-v{variant}")
}

fn parse_key(key: &str) -> Option<(u32, u8)> {
    let (row, variant) = key.strip_prefix('r')?.split_once("-v")?;
    Some((row.parse().ok()?, variant.parse().ok()?))
}

/// Every job of a batch, in order.
pub async fn jobs(store: &dyn ObjectStore, batch: &BatchId) -> Result<Vec<BulkJob>, StoreError> {
    let mut names: Vec<String> = store.list(&jobs_prefix(batch)).await?.into_iter().map(|m| m.name).collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match read_json::<BulkJob>(store, &name).await {
            Ok(j) => out.push(j.value),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A batch's jobs if it is a bulk batch (none otherwise, without a listing).
pub async fn jobs_of(store: &dyn ObjectStore, manifest: &Manifest) -> Result<Vec<BulkJob>, Problem> {
    if manifest.spec.run_mode != crate::domain::RunMode::Bulk {
        return Ok(Vec::new());
    }
    jobs(store, &manifest.batch_id).await.map_err(store_problem)
}

/// What a delivery of a bulk row came to.
#[derive(Debug, Clone, PartialEq)]
pub enum BulkDelivery {
    /// The row is in a job (submitted now or earlier), or ended: acknowledge.
    Handled,
    /// Another delivery is preparing the job: acknowledge; the poller takes over if it dies.
    Busy,
    /// Google or a reference host failed for now: redeliver later.
    Retry { code: ErrorCode, detail: String, retry_after: Option<Duration> },
}

/// The bulk side of generate: submits jobs and brings them to an end.
#[derive(Debug, Clone)]
pub struct BulkRunner {
    pub store: Arc<dyn ObjectStore>,
    /// `None` where no Batch API is configured: bulk rows then fail with `LIVE_NOT_CONFIGURED`.
    pub api: Option<Arc<dyn BatchApi>>,
    pub fetcher: RefFetcher,
    pub settlement: Settlement,
    pub max_refs: usize,
    /// How long a job being prepared stays leased to the delivery preparing it.
    pub lease_ttl: Duration,
}

/// How preparing a job ended.
enum Prepared {
    /// Submitted (or ended without reaching Google: nothing to ask, cancelled, refused).
    Done,
    /// The job taken over was at Google already and is now recorded; rows queued since its first
    /// preparer claimed its rows are in no job yet.
    Adopted,
}

/// Why preparing a job stopped short.
enum Stop {
    Busy,
    Retry(ModelError),
    Problem(Problem),
}

impl From<Problem> for Stop {
    fn from(p: Problem) -> Self {
        Self::Problem(p)
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Self::Problem(store_problem(e))
    }
}

impl BulkRunner {
    fn store(&self) -> &dyn ObjectStore {
        self.store.as_ref()
    }

    /// A push delivery of one row of a bulk batch.
    pub async fn deliver(&self, manifest: &Manifest, row: u32) -> Result<BulkDelivery, Problem> {
        let state: RowState = match read_json(self.store(), &layout::row_state(&manifest.batch_id, row)).await {
            Ok(s) => s.value,
            // Submit died before this row's state; the poller starts the row once it exists.
            Err(StoreError::NotFound(_)) => return Ok(BulkDelivery::Handled),
            Err(e) => return Err(store_problem(e)),
        };
        if state.status.is_terminal() || state.awaiting_hold || state.bulk_job.is_some() {
            return Ok(BulkDelivery::Handled);
        }
        self.start_job(manifest).await
    }

    /// Starts a job for the batch's queued rows that are in no job yet (or takes over one whose
    /// preparer died).
    async fn start_job(&self, manifest: &Manifest) -> Result<BulkDelivery, Problem> {
        loop {
            let outcome = self.prepare_and_submit(manifest).await;
            // Rows queued while the adopted job sat in preparing go into a job of their own now
            // (each adoption turns a job in preparing into one at Google, so this ends).
            if matches!(outcome, Ok(Prepared::Adopted)) && self.has_unclaimed_rows(manifest).await? {
                continue;
            }
            return match outcome {
                Ok(Prepared::Done | Prepared::Adopted) => Ok(BulkDelivery::Handled),
                Err(Stop::Busy) => Ok(BulkDelivery::Busy),
                Err(Stop::Retry(ModelError::Retryable { code, detail, retry_after })) => {
                    Ok(BulkDelivery::Retry { code, detail, retry_after })
                }
                Err(Stop::Retry(ModelError::Permanent { code, detail })) => {
                    Ok(BulkDelivery::Retry { code, detail, retry_after: None })
                }
                Err(Stop::Problem(p)) => Err(p),
            };
        }
    }

    /// Takes (or creates) the job being prepared, claims rows for it, builds the requests and
    /// submits them; or adopts the job Google has already, when taking over.
    async fn prepare_and_submit(&self, manifest: &Manifest) -> Result<Prepared, Stop> {
        let batch = &manifest.batch_id;
        let holder = uuid::Uuid::now_v7().to_string();
        let now = OffsetDateTime::now_utc();
        let existing = jobs(self.store(), batch).await?;
        // `resumed`: the job object was made by a preparer before us, which may have reached Google.
        let (seq, resumed) = match existing.iter().find(|j| j.state == BulkState::Preparing) {
            Some(j) => {
                // Another preparer: busy while its lease holds, ours once it has run out.
                let seq = j.seq;
                let mut taken = false;
                update_json::<BulkJob, StoreError, _>(self.store(), &job_name(batch, seq), |current| {
                    taken = false;
                    let live = current.lease.as_ref().is_some_and(|l| l.until > now);
                    if current.state != BulkState::Preparing || live {
                        return Ok(None);
                    }
                    let mut next = current.clone();
                    next.lease = Some(Lease { holder: holder.clone(), until: now + self.lease_ttl });
                    taken = true;
                    Ok(Some(next))
                })
                .await?;
                if !taken {
                    return Err(Stop::Busy);
                }
                (seq, true)
            }
            None => {
                let seq = existing.iter().map(|j| j.seq + 1).max().unwrap_or(0);
                let lease = Lease { holder: holder.clone(), until: now + self.lease_ttl };
                let job = BulkJob::preparing(seq, lease, now);
                match write_json(self.store(), &job_name(batch, seq), &job, Precondition::DoesNotExist).await {
                    Ok(_) => (seq, false),
                    Err(StoreError::PreconditionFailed(_)) => return Err(Stop::Busy),
                    Err(e) => return Err(e.into()),
                }
            }
        };

        // One name per job of a batch, so a job Google accepted can be found again: a preparer
        // that died (or timed out) after Google took its job and before recording the job's name
        // leaves it running at Google, and submitting again would pay for it twice. Looked up
        // before claiming any row: rows queued since the first preparer claimed its rows (a retry,
        // a row state submit wrote late) are not in Google's job, and must not be counted in it.
        if resumed && let Some(api) = &self.api {
            match api.find(&job_display_name(batch, seq)).await {
                Ok(Some(found)) => return self.adopt(manifest, seq, &holder, found).await,
                Ok(None) => {}
                // Not knowing whether Google has the job is no licence to submit it: try again later.
                Err(e) => {
                    self.let_go(batch, seq, &holder).await?;
                    return Err(Stop::Retry(e));
                }
            }
        }

        // Claim the rows: queued, not waiting for a retry's hold, in no job (or in this one already,
        // when taking over a job Google does not have).
        let mut claimed: Vec<RowState> = Vec::new();
        for spec in &manifest.spec.rows {
            let name = layout::row_state(batch, spec.row);
            let mut mine = false;
            let result = update_json::<RowState, StoreError, _>(self.store(), &name, |s| {
                mine = s.status == RowStatus::Queued && !s.awaiting_hold && s.bulk_job.is_none_or(|j| j == seq);
                if !mine || s.bulk_job == Some(seq) {
                    return Ok(None);
                }
                let mut next = s.clone();
                next.bulk_job = Some(seq);
                next.updated_at = OffsetDateTime::now_utc();
                Ok(Some(next))
            })
            .await;
            match result {
                Ok(stored) if mine => claimed.push(stored.value),
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }

        // The requests: one per missing image, with the row's merged references.
        let fetcher = self.fetcher.for_submitter(manifest.user.clone());
        let mut requests = Vec::new();
        let mut rows = Vec::new();
        for state in &claimed {
            let Some(spec) = manifest.spec.row(state.row) else { continue };
            let merged = match merge_refs(&fetcher, &spec.refs, &manifest.spec.global_refs, self.max_refs).await {
                Ok(merged) => merged,
                Err(e) if e.is_retryable() => {
                    self.let_go(batch, seq, &holder).await?;
                    return Err(Stop::Retry(ModelError::Retryable {
                        code: e.code(),
                        detail: e.to_string(),
                        retry_after: None,
                    }));
                }
                Err(e) => {
                    self.end_row(manifest, seq, state.row, RowStatus::Failed, Some((e.code(), e.to_string()))).await?;
                    continue;
                }
            };
            let report = merged.report.clone();
            update_json::<RowState, StoreError, _>(self.store(), &layout::row_state(batch, state.row), |s| {
                let mut next = s.clone();
                next.refs = report.clone();
                Ok(Some(next))
            })
            .await?;
            let prompt = prompt_of(spec, !merged.images.is_empty());
            for variant in spec.variants.numbers().filter(|v| !state.has_variant(*v)) {
                requests.push(KeyedRequest {
                    key: request_key(state.row, variant),
                    request: ImageRequest {
                        model: manifest.spec.model.clone(),
                        scene_id: spec.scene_id.to_string(),
                        variant,
                        prompt: prompt.clone(),
                        aspect_ratio: spec.aspect_ratio,
                        refs: merged.images.clone(),
                    },
                });
            }
            rows.push(state.row);
        }

        if requests.is_empty() {
            // Nothing to ask Google for (no row was free, or every one failed its references).
            self.update_job(batch, seq, |j| {
                j.state = BulkState::Succeeded;
                j.rows.clone_from(&rows);
                j.lease = None;
                j.ended_at = Some(OffsetDateTime::now_utc());
                j.settled = true;
            })
            .await?;
            self.settlement.close_if_finished(manifest).await?;
            return Ok(Prepared::Done);
        }

        let Some(api) = &self.api else {
            let detail = "this deployment has no Batch API configured".to_owned();
            self.fail_job(manifest, seq, ErrorCode::LiveNotConfigured, detail).await?;
            return Ok(Prepared::Done);
        };
        // Still ours (a preparer that stalled past its lease must not submit a second job).
        let current = read_json::<BulkJob>(self.store(), &job_name(batch, seq)).await?.value;
        if current.lease.as_ref().is_none_or(|l| l.holder != holder) || current.state != BulkState::Preparing {
            return Err(Stop::Busy);
        }
        if current.cancel_requested {
            // Cancelled before it reached Google: nothing is submitted, its rows are cancelled.
            let job = self
                .update_job(batch, seq, |j| {
                    j.state = BulkState::Cancelled;
                    j.rows.clone_from(&rows);
                    j.lease = None;
                    j.ended_at = Some(OffsetDateTime::now_utc());
                })
                .await?;
            self.end_rows(manifest, &job, &BTreeMap::new(), None).await?;
            self.update_job(batch, seq, |j| j.settled = true).await?;
            self.settlement.close_if_finished(manifest).await?;
            return Ok(Prepared::Done);
        }
        match api.create(&manifest.spec.model, &job_display_name(batch, seq), &requests).await {
            Ok(status) => {
                let count = u32::try_from(requests.len()).unwrap_or(u32::MAX);
                self.update_job(batch, seq, |j| {
                    j.state = status.state.into();
                    j.job = Some(status.name.clone());
                    j.rows.clone_from(&rows);
                    j.requests = count;
                    j.lease = None;
                    j.submitted_at = Some(OffsetDateTime::now_utc());
                    j.input_file.clone_from(&status.input_file);
                })
                .await?;
                tracing::info!(batch_id = %batch, job = %status.name, requests = count, "bulk job submitted");
                Ok(Prepared::Done)
            }
            Err(e @ ModelError::Retryable { .. }) => {
                self.let_go(batch, seq, &holder).await?;
                Err(Stop::Retry(e))
            }
            Err(ModelError::Permanent { code, detail }) => {
                self.fail_job(manifest, seq, code, detail).await?;
                Ok(Prepared::Done)
            }
        }
    }

    /// Records `found`, the job Google already has under this job's display name, as this job. Its
    /// rows are the open rows claimed for it: its first preparer claimed them before asking Google
    /// for their images, and nothing claims rows for a job while another holds its lease.
    async fn adopt(&self, manifest: &Manifest, seq: u32, holder: &str, found: JobStatus) -> Result<Prepared, Stop> {
        let batch = &manifest.batch_id;
        let stored = crate::batch_view::load(self.store(), batch).await?;
        let mut rows = Vec::new();
        let mut requests = 0_u32;
        for spec in &manifest.spec.rows {
            let Some((_, state)) = stored.rows.get(&spec.row) else { continue };
            if state.bulk_job == Some(seq) && !state.status.is_terminal() {
                rows.push(spec.row);
                requests += u32::try_from(spec.variants.numbers().filter(|v| !state.has_variant(*v)).count())
                    .unwrap_or(u32::MAX);
            }
        }
        let now = OffsetDateTime::now_utc();
        let mut ours = false;
        update_json::<BulkJob, StoreError, _>(self.store(), &job_name(batch, seq), |j| {
            // Still ours (a preparer that stalled past its lease must not record a job either).
            ours = j.state == BulkState::Preparing && j.lease.as_ref().is_some_and(|l| l.holder == holder);
            if !ours {
                return Ok(None);
            }
            let mut next = j.clone();
            next.state = found.state.into();
            next.job = Some(found.name.clone());
            next.rows.clone_from(&rows);
            next.requests = requests;
            next.lease = None;
            next.submitted_at = Some(now);
            next.input_file.clone_from(&found.input_file);
            Ok(Some(next))
        })
        .await?;
        if !ours {
            return Err(Stop::Busy);
        }
        tracing::info!(batch_id = %batch, job = %found.name, rows = rows.len(), "bulk job found at Google, adopted");
        Ok(Prepared::Adopted)
    }

    /// Gives up the lease of a job being prepared, so the next delivery or poll tries again at once.
    async fn let_go(&self, batch: &BatchId, seq: u32, holder: &str) -> Result<(), StoreError> {
        update_json::<BulkJob, StoreError, _>(self.store(), &job_name(batch, seq), |j| {
            if j.lease.as_ref().is_none_or(|l| l.holder != holder) {
                return Ok(None);
            }
            let mut next = j.clone();
            next.lease = None;
            Ok(Some(next))
        })
        .await
        .map(|_| ())
    }

    async fn update_job(
        &self,
        batch: &BatchId,
        seq: u32,
        change: impl Fn(&mut BulkJob),
    ) -> Result<BulkJob, StoreError> {
        update_json::<BulkJob, StoreError, _>(self.store(), &job_name(batch, seq), |j| {
            let mut next = j.clone();
            change(&mut next);
            Ok((next != *j).then_some(next))
        })
        .await
        .map(|o| o.value)
    }

    /// The job could not be submitted for good: its rows fail, their holds are released.
    async fn fail_job(&self, manifest: &Manifest, seq: u32, code: ErrorCode, detail: String) -> Result<(), Stop> {
        tracing::warn!(batch_id = %manifest.batch_id, seq, %code, %detail, "bulk job failed");
        let job = self
            .update_job(&manifest.batch_id, seq, |j| {
                j.state = BulkState::Failed;
                j.lease = None;
                j.error = Some(detail.clone());
                j.ended_at = Some(OffsetDateTime::now_utc());
            })
            .await?;
        self.end_rows(manifest, &job, &BTreeMap::new(), Some((code, detail))).await?;
        self.update_job(&manifest.batch_id, seq, |j| j.settled = true).await?;
        self.settlement.close_if_finished(manifest).await?;
        Ok(())
    }

    /// The poller's step for one bulk batch: submits what is waiting, polls every job that has not
    /// ended, and stores the results of those that have. Returns the jobs that ended now.
    pub async fn poll(&self, manifest: &Manifest) -> Result<usize, Problem> {
        let batch = &manifest.batch_id;
        let mut ended = 0;
        let all = jobs(self.store(), batch).await.map_err(store_problem)?;
        let now = OffsetDateTime::now_utc();
        for job in all.iter().filter(|j| j.settled) {
            // An earlier poll could not delete this ended job's files.
            self.delete_files(batch, job).await?;
        }
        for job in all.iter().filter(|j| !j.settled) {
            if job.state == BulkState::Preparing {
                if job.lease.as_ref().is_none_or(|l| l.until <= now) {
                    self.start_job(manifest).await?;
                }
                continue;
            }
            if self.advance(manifest, job).await? {
                ended += 1;
            }
        }
        // Rows no job covers (a message lost, or failed rows queued again by a retry).
        if !all.iter().any(|j| j.state == BulkState::Preparing) && self.has_unclaimed_rows(manifest).await? {
            self.start_job(manifest).await?;
        }
        self.settlement.close_if_finished(manifest).await?;
        Ok(ended)
    }

    async fn has_unclaimed_rows(&self, manifest: &Manifest) -> Result<bool, Problem> {
        let batch = crate::batch_view::load(self.store(), &manifest.batch_id).await?;
        Ok(batch.rows.values().any(|(_, s)| s.status == RowStatus::Queued && !s.awaiting_hold && s.bulk_job.is_none()))
    }

    /// One submitted job: cancel it if asked, read its state, store its results once it ended.
    async fn advance(&self, manifest: &Manifest, job: &BulkJob) -> Result<bool, Problem> {
        let batch = &manifest.batch_id;
        let Some(api) = &self.api else {
            tracing::warn!(batch_id = %batch, "a bulk job waits for a deployment with the Batch API configured");
            return Ok(false);
        };
        let Some(name) = job.job.clone() else { return Ok(false) };
        let model_problem = |e: ModelError| match e {
            ModelError::Retryable { detail, .. } => Problem::new(ErrorCode::ModelUnavailable, detail),
            ModelError::Permanent { code, detail } => Problem::new(code, detail),
        };
        let mut job = job.clone();
        if job.cancel_requested && !job.cancel_sent && !job.state.is_terminal() {
            api.cancel(&name).await.map_err(model_problem)?;
            job = self.update_job(batch, job.seq, |j| j.cancel_sent = true).await.map_err(store_problem)?;
            tracing::info!(batch_id = %batch, job = %name, "bulk job cancel sent");
        }
        let status = api.get(&name).await.map_err(model_problem)?;
        let state: BulkState = status.state.into();
        let now = OffsetDateTime::now_utc();
        job = self
            .update_job(batch, job.seq, |j| {
                j.state = state;
                j.polled_at = Some(now);
                if state.is_terminal() && j.ended_at.is_none() {
                    j.ended_at = Some(now);
                }
                if let Some(error) = &status.error {
                    j.error = Some(error.clone());
                }
            })
            .await
            .map_err(store_problem)?;
        if !state.is_terminal() {
            return Ok(false);
        }
        self.ingest(manifest, &job, &status).await?;
        // Settled (with the files it names) before a file is deleted: a poll after a crash in
        // between finds the job settled and deletes what is left, and never reads the job's results
        // again from a results file that is gone.
        let job = self
            .update_job(batch, job.seq, |j| {
                j.settled = true;
                // A job adopted from Google may name its input only now.
                if j.input_file.is_none() {
                    j.input_file.clone_from(&status.input_file);
                }
                if j.results_file.is_none() {
                    j.results_file.clone_from(&status.results_file);
                }
            })
            .await
            .map_err(store_problem)?;
        tracing::info!(batch_id = %batch, job = %name, ?state, results = status.results.len(), "bulk job ended");
        self.delete_files(batch, &job).await?;
        Ok(true)
    }

    /// Deletes the files a settled job left in Google's Files API (its input, its results file).
    /// Whether each delete worked is only recorded: the results are stored already, a file left
    /// behind costs nothing but storage (the Files API drops files after 48 hours), and the next
    /// poll of the batch, if any, tries again.
    async fn delete_files(&self, batch: &BatchId, job: &BulkJob) -> Result<(), Problem> {
        let Some(api) = &self.api else { return Ok(()) };
        let name = job.job.as_deref().unwrap_or_default();
        let mut deleted = Vec::new();
        for (role, file) in job.files_left() {
            match api.delete_file(file).await {
                Ok(()) => {
                    tracing::info!(batch_id = %batch, job = %name, %file, %role, "bulk job's file deleted at Google");
                    deleted.push(role);
                }
                Err(e) => {
                    tracing::warn!(batch_id = %batch, job = %name, %file, %role, error = %e, "bulk job's file not deleted at Google");
                }
            }
        }
        if !deleted.is_empty() {
            self.update_job(batch, job.seq, |j| {
                j.input_deleted |= deleted.contains(&FileRole::Input);
                j.results_deleted |= deleted.contains(&FileRole::Results);
            })
            .await
            .map_err(store_problem)?;
        }
        Ok(())
    }

    /// Stores a finished job's images and ends its rows.
    async fn ingest(&self, manifest: &Manifest, job: &BulkJob, status: &JobStatus) -> Result<(), Problem> {
        let mut errors: BTreeMap<u32, (ErrorCode, String)> = BTreeMap::new();
        for result in &status.results {
            let Some((row, variant)) = parse_key(&result.key).filter(|(row, _)| job.rows.contains(row)) else {
                tracing::warn!(key = %result.key, "a bulk result for no row of this job is ignored");
                continue;
            };
            match &result.outcome {
                Ok(image) => {
                    let submitted_at = job.submitted_at.unwrap_or(job.created_at);
                    self.store_image(manifest, job.seq, row, variant, image, submitted_at).await?;
                }
                Err(ModelError::Permanent { code, detail } | ModelError::Retryable { code, detail, .. }) => {
                    errors.entry(row).or_insert((*code, detail.clone()));
                }
            }
        }
        let whole = match job.state {
            BulkState::Expired => Some((
                ErrorCode::BulkJobExpired,
                "Google's batch expired (it ran for 48 hours) before making this row's images".to_owned(),
            )),
            BulkState::Failed => Some((
                ErrorCode::BulkJobFailed,
                format!("Google's batch failed: {}", job.error.as_deref().unwrap_or("no reason given")),
            )),
            _ => None,
        };
        self.end_rows(manifest, job, &errors, whole).await.map_err(|s| match s {
            Stop::Problem(p) => p,
            _ => Problem::new(ErrorCode::Internal, "ending a bulk job's rows"),
        })
    }

    /// Stores one image of a bulk result like a live one: create-only PNG (a second poller adopts
    /// the first one's), a `spend` event, the variant in the row state.
    async fn store_image(
        &self,
        manifest: &Manifest,
        seq: u32,
        row: u32,
        variant: u8,
        image: &GeneratedImage,
        submitted_at: OffsetDateTime,
    ) -> Result<(), Problem> {
        let batch = &manifest.batch_id;
        let name = layout::row_state(batch, row);
        let state: RowState = read_json(self.store(), &name).await.map_err(store_problem)?.value;
        if state.status.is_terminal() || state.bulk_job != Some(seq) || state.has_variant(variant) {
            return Ok(());
        }
        let Some(spec) = manifest.spec.row(row) else { return Ok(()) };
        if !spec.variants.numbers().any(|v| v == variant) {
            return Ok(());
        }
        let object = layout::image(batch, &spec.scene_id, variant);
        // Provenance as for a live image: what was sent (rebuilt from the row, as it was built for
        // the job), the references' fates, the bulk price and its spend event.
        let has_refs = state.refs.iter().any(|r| r.outcome == crate::api::RefOutcome::Used);
        let request = ImageRequest {
            model: manifest.spec.model.clone(),
            scene_id: spec.scene_id.to_string(),
            variant,
            prompt: prompt_of(spec, has_refs),
            aspect_ratio: spec.aspect_ratio,
            refs: Vec::new(),
        };
        let call = provenance::Call {
            request: &request,
            image,
            refs: &state.refs,
            requested_at: submitted_at,
            generated_at: OffsetDateTime::now_utc(),
        };
        let made = provenance::of_call(manifest, spec, &state, call);
        let stamped = provenance::stamp(image.bytes.clone(), &made);
        let body = match self.store.put(&object, stamped.clone(), &image.mime_type, Precondition::DoesNotExist).await {
            Ok(_) => stamped,
            Err(StoreError::PreconditionFailed(_)) => self.store.get(&object).await.map_err(store_problem)?.body,
            Err(e) => return Err(store_problem(e)),
        };
        // Derived from the bytes that stand (another poller's, if it stored them first).
        provenance::write_sidecar(self.store.as_ref(), &object, &body, &image.mime_type, Some(&made))
            .await
            .map_err(store_problem)?;
        let stored = StoredVariant {
            variant,
            object,
            sha256: hex::encode(Sha256::digest(&body)),
            bytes: body.len() as u64,
            model: manifest.spec.model.clone(),
            cost: manifest.price_per_image(),
        };
        // Spent before the state records it, as live rows are: a crash in between leaves the image
        // and its spend, which the next poll finds (the event is create-only).
        self.settlement.spend(manifest, &state, variant).await.map_err(store_problem)?;
        update_json::<RowState, StoreError, _>(self.store(), &name, |s| {
            if s.has_variant(variant) || s.status.is_terminal() {
                return Ok(None);
            }
            let mut next = s.clone();
            next.variants.push(stored.clone());
            next.updated_at = OffsetDateTime::now_utc();
            Ok(Some(next))
        })
        .await
        .map_err(store_problem)?;
        Ok(())
    }

    /// Ends every row of `job` that is still open: succeeded with all its images, else failed (its
    /// own request's error, or the job's) or cancelled (a cancelled job); then frees what each will
    /// not make.
    async fn end_rows(
        &self,
        manifest: &Manifest,
        job: &BulkJob,
        errors: &BTreeMap<u32, (ErrorCode, String)>,
        whole: Option<(ErrorCode, String)>,
    ) -> Result<(), Stop> {
        let rows: Vec<u32> = if job.rows.is_empty() {
            // A job that failed while being prepared: every row it claimed.
            manifest.spec.rows.iter().map(|r| r.row).collect()
        } else {
            job.rows.clone()
        };
        for row in rows {
            let Some(spec) = manifest.spec.row(row) else { continue };
            let state: RowState = match read_json(self.store(), &layout::row_state(&manifest.batch_id, row)).await {
                Ok(s) => s.value,
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            if state.bulk_job != Some(job.seq) || state.status.is_terminal() {
                continue;
            }
            let complete = spec.variants.numbers().all(|v| state.has_variant(v));
            let (status, error) = if complete {
                (RowStatus::Succeeded, None)
            } else if let Some(e) = errors.get(&row) {
                (RowStatus::Failed, Some(e.clone()))
            } else if job.state == BulkState::Cancelled {
                (RowStatus::Cancelled, None)
            } else if let Some(e) = &whole {
                (RowStatus::Failed, Some(e.clone()))
            } else {
                (
                    RowStatus::Failed,
                    Some((ErrorCode::BulkJobFailed, "Google's batch returned no image for this row".to_owned())),
                )
            };
            self.end_row(manifest, job.seq, row, status, error).await?;
        }
        Ok(())
    }

    async fn end_row(
        &self,
        manifest: &Manifest,
        seq: u32,
        row: u32,
        status: RowStatus,
        error: Option<(ErrorCode, String)>,
    ) -> Result<(), StoreError> {
        let name = layout::row_state(&manifest.batch_id, row);
        let stored = update_json::<RowState, StoreError, _>(self.store(), &name, |s| {
            if s.status.is_terminal() || s.bulk_job != Some(seq) {
                return Ok(None);
            }
            let mut next = s.clone();
            next.status = status;
            next.lease = None;
            next.error = error.as_ref().map(|(code, detail)| RowError { code: *code, detail: detail.clone() });
            next.updated_at = OffsetDateTime::now_utc();
            Ok(Some(next))
        })
        .await?;
        if stored.value.status.is_terminal() {
            self.settlement.release_unmade(manifest, &stored.value).await?;
        }
        Ok(())
    }

    /// Cancel of a bulk batch: every job not ended is marked for the poller to cancel at Google.
    /// Returns the rows of the jobs already submitted: they end when Google says how the job ended
    /// (cancelled, or done first), so images Google made are kept and paid for.
    pub async fn request_cancel(store: &dyn ObjectStore, batch: &BatchId) -> Result<BTreeSet<u32>, Problem> {
        let mut waiting = BTreeSet::new();
        for job in jobs(store, batch).await.map_err(store_problem)? {
            if job.settled || job.state.is_terminal() {
                continue;
            }
            let marked = update_json::<BulkJob, StoreError, _>(store, &job_name(batch, job.seq), |j| {
                if j.cancel_requested {
                    return Ok(None);
                }
                let mut next = j.clone();
                next.cancel_requested = true;
                Ok(Some(next))
            })
            .await
            .map_err(store_problem)?;
            if let Some(submitted) = &marked.value.job {
                tracing::info!(%batch, job = %submitted, "bulk job marked for cancel");
                waiting.extend(marked.value.rows.iter().copied());
            }
        }
        Ok(waiting)
    }
}

/// The text sent for a row: its prompt, plus the reference-mode instruction when it has refs.
pub fn prompt_of(spec: &RowSpec, has_refs: bool) -> String {
    if has_refs {
        format!("{}\n\n{}", spec.prompt.as_str(), spec.ref_mode.instruction())
    } else {
        spec.prompt.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_stamp_is_not_a_change_a_watcher_sees_but_a_state_is() {
        let at = time::macros::datetime!(2026-11-28 14:02:31 UTC);
        let made = BulkJob::preparing(0, Lease { holder: "h".into(), until: at }, at);
        let job = BulkJob {
            state: BulkState::Pending,
            job: Some("batches/x".into()),
            rows: vec![0, 1],
            requests: 3,
            lease: None,
            submitted_at: Some(at),
            polled_at: Some(at),
            ..made
        };
        let polled = BulkJob { polled_at: Some(at + time::Duration::seconds(30)), ..job.clone() };
        assert!(polled.looks_the_same_as(&job));
        let running = BulkJob { state: BulkState::Running, ..polled.clone() };
        assert!(!running.looks_the_same_as(&job));
        let cancelling = BulkJob { cancel_requested: true, ..polled };
        assert!(!cancelling.looks_the_same_as(&job));
    }

    #[test]
    fn the_wait_is_told_with_the_submit_time() {
        let submitted = time::macros::datetime!(2026-11-28 14:02:31 UTC);
        let mut view = BulkView {
            state: BulkState::Pending,
            job: Some("batches/x".into()),
            rows: 2,
            requests: 3,
            submitted_at: Some(submitted),
            polled_at: None,
            ended_at: None,
            cancel_requested: false,
        };
        assert_eq!(view.waiting_text().as_deref(), Some("waiting for Google's batch, submitted 14:02 UTC"));
        view.state = BulkState::Running;
        view.cancel_requested = true;
        assert_eq!(
            view.waiting_text().as_deref(),
            Some("Google is running the batch, submitted 14:02 UTC (cancelling)")
        );
        view.state = BulkState::Expired;
        assert_eq!(view.waiting_text(), None);
    }

    #[test]
    fn keys_round_trip() {
        assert_eq!(request_key(7, 2), "r0007-v2");
        assert_eq!(parse_key(&request_key(7, 2)), Some((7, 2)));
        assert_eq!(parse_key("r12-v3"), Some((12, 3)));
        assert_eq!(parse_key("x0007-v2"), None);
        assert_eq!(parse_key("r0007"), None);
    }
}
