//! Reading a batch back from the store and presenting it: `GET /v1/batches/{id}`, the SSE snapshot,
//! and what the Sheet writes back. Shared by submit and relay, which meet only through the store.

use crate::api::{BatchProgress, BatchStatus, BatchView, RowErrorView, RowStatus, RowView, Totals};
use crate::auth::LinkSigner;
use crate::domain::{BatchId, Money, SceneId};
use crate::layout;
use crate::problem::{ErrorCode, Problem};
use crate::state::{Manifest, RowState};
use crate::store::{Generation, ObjectStore, StoreError, read_json};
use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeMap;

/// Row-state reads in flight at once while loading a batch.
const PARALLEL_READS: usize = 16;

/// A batch as stored: its manifest and the latest state of each row with that state's generation.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    pub manifest: Manifest,
    pub rows: BTreeMap<u32, (Generation, RowState)>,
    /// Run mode `bulk`: its Batch API jobs, oldest first (empty otherwise).
    pub bulk: Vec<crate::bulk::BulkJob>,
}

pub async fn load_manifest(store: &dyn ObjectStore, batch: &BatchId) -> Result<Manifest, Problem> {
    match read_json(store, &layout::manifest(batch)).await {
        Ok(m) => Ok(m.value),
        Err(StoreError::NotFound(_)) => Err(Problem::batch_not_found(&batch.to_string())),
        Err(e) => Err(store_problem(e)),
    }
}

pub async fn load(store: &dyn ObjectStore, batch: &BatchId) -> Result<StoredBatch, Problem> {
    let manifest = load_manifest(store, batch).await?;
    let metas = store.list(&layout::rows_prefix(batch)).await.map_err(store_problem)?;
    let names: Vec<String> = metas.into_iter().map(|m| m.name).collect();
    let rows = read_rows(store, names).await?;
    let bulk = crate::bulk::jobs_of(store, &manifest).await?;
    Ok(StoredBatch { manifest, rows, bulk })
}

/// Reads the named row-state objects (a tailer passes only the ones that changed). A row deleted
/// between list and read is skipped.
pub async fn read_rows(
    store: &dyn ObjectStore,
    names: Vec<String>,
) -> Result<BTreeMap<u32, (Generation, RowState)>, Problem> {
    futures::stream::iter(names)
        .map(|name| async move {
            match read_json::<RowState>(store, &name).await {
                Ok(o) => Ok(Some((o.value.row, (o.generation, o.value)))),
                Err(StoreError::NotFound(_)) => Ok(None),
                Err(e) => Err(store_problem(e)),
            }
        })
        .buffer_unordered(PARALLEL_READS)
        .try_filter_map(|r| async move { Ok(r) })
        .try_collect()
        .await
}

pub fn store_problem(e: StoreError) -> Problem {
    tracing::error!(error = %e, "store error");
    match e {
        StoreError::NotFound(name) => Problem::new(ErrorCode::NotFound, format!("{name} not found")),
        _ => Problem::new(ErrorCode::StoreUnavailable, "storage did not answer"),
    }
}

/// Builds links and views; `base` is the public URL links point at (`http://host:port`; in the
/// cloud, the relay's, which serves images), `links` signs the image links.
#[derive(Debug, Clone)]
pub struct Presenter {
    pub base: String,
    pub links: LinkSigner,
}

impl Presenter {
    pub fn new(base: impl Into<String>, links: LinkSigner) -> Self {
        Self { base: base.into(), links }
    }

    /// An image link: no header, no cookie, never expires, opens this one image only.
    pub fn image_link(&self, batch: &BatchId, scene: &SceneId, variant: u8) -> String {
        let url = format!("{}/v1/images/{batch}/{scene}/{variant}", self.base);
        self.links.link(&url, &layout::image(batch, scene, variant))
    }

    /// A link to an image's provenance, opened by the image's own signature (whoever has the image
    /// has its provenance: the PNG carries it).
    pub fn provenance_link(&self, batch: &BatchId, scene: &SceneId, variant: u8) -> String {
        let url = format!("{}/v1/provenance/{batch}/{scene}/{variant}", self.base);
        self.links.link(&url, &layout::image(batch, scene, variant))
    }

    pub fn row_view(&self, manifest: &Manifest, state: &RowState) -> RowView {
        let variants = manifest.spec.row(state.row).map_or(0, |r| r.variants.get());
        let mut stored = state.variants.clone();
        stored.sort_by_key(|v| v.variant);
        RowView {
            row: state.row,
            scene_id: state.scene_id.to_string(),
            status: state.status,
            attempts: state.attempts,
            variants,
            error: state.error.as_ref().map(|e| RowErrorView {
                code: e.code,
                detail: e.detail.clone(),
                advice: e.code.advice().to_owned(),
            }),
            images: stored.iter().map(|v| self.image_link(&state.batch_id, &state.scene_id, v.variant)).collect(),
            objects: stored.iter().map(|v| v.object.clone()).collect(),
            provenance: stored
                .iter()
                .map(|v| self.provenance_link(&state.batch_id, &state.scene_id, v.variant))
                .collect(),
            refs: state.refs.clone(),
            cost_usd: state.cost().usd(),
        }
    }

    pub fn view(&self, batch: &StoredBatch) -> BatchView {
        let m = &batch.manifest;
        let states: Vec<RowState> = m
            .spec
            .rows
            .iter()
            .map(|spec| match batch.rows.get(&spec.row) {
                Some((_, state)) => state.clone(),
                // In the manifest but not (yet) a row object: submit is still writing, or died
                // before it could, and the sweep will finish the job. Either way it is queued.
                None => RowState::queued(m.batch_id.clone(), spec.row, spec.scene_id.clone(), m.created_at),
            })
            .collect();
        let rows: Vec<RowView> = states.iter().map(|s| self.row_view(m, s)).collect();
        let (status, totals) = summarize(&rows);
        // Every row has ended: the batch ended with the last of them (stored state, so any relay
        // instance and a page opened later agree).
        let ended_at = status.is_terminal().then(|| states.iter().map(|s| s.updated_at).max()).flatten();
        BatchView {
            batch_id: m.batch_id.to_string(),
            status,
            created_at: m.created_at,
            ended_at,
            run_mode: m.spec.run_mode,
            model: m.spec.model.clone(),
            estimate: m.estimate,
            totals,
            cost_usd: states.iter().map(RowState::cost).sum::<Money>().usd(),
            rows,
            bulk: batch.bulk.last().map(|job| Box::new(crate::bulk::BulkView::from(job))),
        }
    }
}

impl BatchView {
    pub fn progress(&self) -> BatchProgress {
        BatchProgress {
            batch_id: self.batch_id.clone(),
            status: self.status,
            totals: self.totals,
            cost_usd: self.cost_usd,
            ended_at: self.ended_at,
            bulk: self.bulk.clone(),
        }
    }
}

fn summarize(rows: &[RowView]) -> (BatchStatus, Totals) {
    let mut t = Totals { rows: u32::try_from(rows.len()).unwrap_or(u32::MAX), ..Totals::default() };
    for r in rows {
        match r.status {
            RowStatus::Queued => t.queued += 1,
            RowStatus::Running => t.running += 1,
            RowStatus::Succeeded => t.succeeded += 1,
            RowStatus::Failed => t.failed += 1,
            RowStatus::Cancelled => t.cancelled += 1,
        }
        t.images_done += u32::try_from(r.images.len()).unwrap_or(0);
        t.images_total += u32::from(r.variants);
    }
    let status = if t.queued + t.running > 0 {
        if t.queued == t.rows { BatchStatus::Queued } else { BatchStatus::Running }
    } else if t.succeeded == t.rows {
        BatchStatus::Succeeded
    } else if t.cancelled == t.rows {
        BatchStatus::Cancelled
    } else if t.failed == t.rows {
        BatchStatus::Failed
    } else {
        BatchStatus::CompletedWithFailures
    };
    (status, t)
}
