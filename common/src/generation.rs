//! Generating one row: what a push delivery of a [`RowMessage`] does. The generate function's
//! handlers are a thin layer over [`RowWorker`].
//!
//! Pub/Sub delivers at least once, so every step is safe to repeat: the row is leased by
//! compare-and-swap on its state object, a finished row is acknowledged without work, a variant
//! whose image is stored is never generated again (also when a crash came between storing the image
//! and recording it). The lease is renewed in the background while the row runs
//! ([`LeaseKeeper`]) and checked before every write; images are written create-only, so a delivery
//! that outlived its lease adopts the image a later holder stored instead of overwriting it.

use crate::api::RowStatus;
use crate::batch_spec::RowSpec;
use crate::batch_view::{load_manifest, store_problem};
use crate::budget::Budget;
use crate::bulk::{BulkDelivery, BulkRunner};
use crate::domain::{BatchId, RunMode};
use crate::layout;
use crate::lease::{self, LeaseKeeper};
use crate::model::{BatchApi, ImageModel, ImageRequest, ModelError};
use crate::problem::{ErrorCode, Problem};
use crate::provenance::record as provenance;
use crate::queue::RowMessage;
use crate::refs::fetch::RefFetcher;
use crate::refs::merge::merge_refs;
use crate::settlement::Settlement;
use crate::state::{Lease, Manifest, RowError, RowState, StoredVariant};
use crate::store::{ObjectStore, Precondition, StoreError, update_json, write_json};
use backon::{ExponentialBuilder, Retryable};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// What became of one delivery; decides ack (2xx) or nack.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The row ended (succeeded, or failed for good): ack.
    Finished(RowStatus),
    /// The row had already ended, or another delivery owns it now: ack, nothing to do.
    AlreadyHandled,
    /// The message names no batch or row we know: ack, so it is not redelivered for ever.
    Dropped(String),
    /// Another delivery holds the row's lease: ack. Pub/Sub counts every delivery toward
    /// dead-lettering, so a duplicate must not spend the row's attempts; the holder finishes the
    /// row, or, if it dies, the sweep publishes it again once its lease has expired.
    Busy,
    /// A passing failure (rate limit, model or reference host unavailable): nack and retry.
    Retry { code: ErrorCode, detail: String, retry_after: Option<Duration> },
}

impl Delivery {
    pub fn ack(&self) -> bool {
        matches!(self, Self::Finished(_) | Self::AlreadyHandled | Self::Dropped(_) | Self::Busy)
    }
}

#[derive(Debug, Clone)]
pub struct RowWorker {
    pub store: Arc<dyn ObjectStore>,
    pub dry_run: Arc<dyn ImageModel>,
    /// `None` where no live model is configured: live rows then fail with `LIVE_NOT_CONFIGURED`.
    pub live: Option<Arc<dyn ImageModel>>,
    pub fetcher: RefFetcher,
    /// Where finished batches are settled.
    pub budget: Arc<dyn Budget>,
    pub max_refs: usize,
    /// How long a lease holds without renewal; renewed every third of it while the row runs.
    pub lease_ttl: Duration,
    /// Gemini's Batch API, for run mode `bulk` (`None`: bulk rows cannot be submitted here).
    pub batch_api: Option<Arc<dyn BatchApi>>,
}

async fn load_row(store: &dyn ObjectStore, manifest: &Manifest, row: u32) -> Result<RowState, Problem> {
    load_row_state(store, &manifest.batch_id, row).await.map_err(store_problem)
}

async fn load_row_state(store: &dyn ObjectStore, batch: &BatchId, row: u32) -> Result<RowState, StoreError> {
    crate::store::read_json(store, &layout::row_state(batch, row)).await.map(|o| o.value)
}

/// Why an update of the row state was not made.
enum Stop {
    /// Another delivery holds the row, or it ended meanwhile.
    LostLease,
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Why a variant was not made.
enum VariantError {
    Model(ModelError),
    Stop(Stop),
}

impl From<Stop> for VariantError {
    fn from(stop: Stop) -> Self {
        Self::Stop(stop)
    }
}

enum Take {
    Taken(RowState),
    Ended(RowState),
    AwaitingHold,
    Busy,
}

impl RowWorker {
    fn settlement(&self) -> Settlement {
        Settlement { store: self.store.clone(), budget: self.budget.clone() }
    }

    /// The bulk side of this worker: submits and polls Batch API jobs (see [`crate::bulk`]).
    pub fn bulk(&self) -> BulkRunner {
        BulkRunner {
            store: self.store.clone(),
            api: self.batch_api.clone(),
            fetcher: self.fetcher.clone(),
            settlement: self.settlement(),
            max_refs: self.max_refs,
            lease_ttl: self.lease_ttl,
        }
    }

    /// After a row ended: free what it will not make, and close the batch if it was the last.
    async fn row_ended(&self, manifest: &Manifest, state: &RowState) -> Result<(), Problem> {
        let settlement = self.settlement();
        settlement.release_unmade(manifest, state).await.map_err(store_problem)?;
        settlement.close_if_finished(manifest).await?;
        Ok(())
    }

    pub async fn process(&self, message: &RowMessage) -> Result<Delivery, Problem> {
        let manifest = match load_manifest(self.store.as_ref(), &message.batch_id).await {
            Ok(m) => m,
            Err(p) if p.code == ErrorCode::BatchNotFound => return Ok(Delivery::Dropped(p.detail)),
            Err(p) => return Err(p),
        };
        let Some(spec) = manifest.spec.row(message.row).cloned() else {
            return Ok(Delivery::Dropped(format!("batch {} has no row {}", message.batch_id, message.row)));
        };
        if manifest.spec.run_mode == RunMode::Bulk {
            // The row goes to Google in its batch's job; the poller stores its images.
            return Ok(match self.bulk().deliver(&manifest, spec.row).await? {
                BulkDelivery::Handled => Delivery::AlreadyHandled,
                BulkDelivery::Busy => Delivery::Busy,
                BulkDelivery::Retry { code, detail, retry_after } => Delivery::Retry { code, detail, retry_after },
            });
        }
        let holder = uuid::Uuid::now_v7().to_string();
        let state = match self.take_lease(&manifest, &spec, &holder).await.map_err(store_problem)? {
            Take::Taken(state) => state,
            Take::Ended(ended) => {
                // The delivery that ended the row may have died before settling: every step of
                // that is idempotent, so finish it before acknowledging.
                self.row_ended(&manifest, &ended).await?;
                return Ok(Delivery::AlreadyHandled);
            }
            // A retry is holding the money for this row; it publishes the row once it has.
            Take::AwaitingHold => return Ok(Delivery::AlreadyHandled),
            Take::Busy => return Ok(Delivery::Busy),
        };
        let keeper = LeaseKeeper::start(
            self.store.clone(),
            layout::row_state(&manifest.batch_id, spec.row),
            holder.clone(),
            self.lease_ttl,
        );
        // When the instance is stopping (SIGTERM), the row is given back rather than cut off: the
        // redelivery takes it at once instead of waiting for the lease to run out.
        let outcome = tokio::select! {
            outcome = self.generate(&manifest, &spec, &holder, state) => outcome,
            () = crate::drain::rows_must_stop() => {
                drop(keeper);
                tracing::warn!(batch_id = %manifest.batch_id, row = spec.row, "instance stopping: giving the row back");
                self.give_back(&manifest, spec.row, &holder).await.map_err(store_problem)?;
                return Ok(Delivery::Retry {
                    code: ErrorCode::ShuttingDown,
                    detail: "this instance is stopping; the row goes on at its next delivery".to_owned(),
                    retry_after: None,
                });
            }
        };
        drop(keeper);
        match outcome {
            Ok(Delivery::Finished(status)) => {
                let ended = load_row(self.store.as_ref(), &manifest, spec.row).await?;
                self.row_ended(&manifest, &ended).await?;
                Ok(Delivery::Finished(status))
            }
            Ok(delivery) => Ok(delivery),
            Err(Stop::LostLease) => Ok(Delivery::AlreadyHandled),
            Err(Stop::Store(e)) => {
                // The store failed mid-row. Give the row back once it answers again (a few tries
                // over some seconds), so the redelivery takes it at once; if it stays down, the
                // lease runs out and the redelivery after that finds the row where this one stopped.
                let retries = ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(250))
                    .with_max_delay(Duration::from_secs(4))
                    .with_max_times(5);
                let given_back = (|| self.give_back(&manifest, spec.row, &holder))
                    .retry(retries)
                    .when(StoreError::is_retryable)
                    .await;
                if let Err(again) = given_back {
                    tracing::warn!(batch_id = %manifest.batch_id, row = spec.row, error = %again, "could not give the row back; its lease will run out");
                }
                Err(store_problem(e))
            }
        }
    }

    /// Gives a row this delivery holds back to the queue (queued, no lease), as it stands: what it
    /// stored stays, and the next delivery goes on from there. A row no longer ours is left alone.
    async fn give_back(&self, manifest: &Manifest, row: u32, holder: &str) -> Result<(), StoreError> {
        match self.update(manifest, row, holder, |s| s.status = RowStatus::Queued).await {
            Ok(_) | Err(Stop::LostLease) => Ok(()),
            Err(Stop::Store(e)) => Err(e),
        }
    }

    /// The dead-letter handler: the row failed on every delivery. Marks it failed unless it ended
    /// meanwhile; waits (nack) while a live delivery still holds it.
    pub async fn dead_letter(&self, message: &RowMessage, deliveries: Option<u32>) -> Result<Delivery, Problem> {
        let manifest = match load_manifest(self.store.as_ref(), &message.batch_id).await {
            Ok(m) => m,
            Err(p) if p.code == ErrorCode::BatchNotFound => return Ok(Delivery::Dropped(p.detail)),
            Err(p) => return Err(p),
        };
        let name = layout::row_state(&message.batch_id, message.row);
        let now = OffsetDateTime::now_utc();
        let mut busy = false;
        let result = update_json::<RowState, StoreError, _>(self.store.as_ref(), &name, |s| {
            busy = s.leased_by_other("", now);
            if s.status.is_terminal() || busy {
                return Ok(None);
            }
            let last = s.error.as_ref().map(|e| format!("; last error {}: {}", e.code, e.detail)).unwrap_or_default();
            let tries = deliveries.map(|n| format!(" after {n} deliveries")).unwrap_or_default();
            let mut next = s.clone();
            next.status = RowStatus::Failed;
            next.lease = None;
            next.error = Some(RowError { code: ErrorCode::DeadLettered, detail: format!("gave up{tries}{last}") });
            next.updated_at = now;
            Ok(Some(next))
        })
        .await;
        match result {
            Ok(_) if busy => Ok(Delivery::Busy),
            Ok(stored) => {
                // Also when it had ended already: a redelivered dead letter finishes a settlement
                // that a crash interrupted (every step is idempotent).
                self.row_ended(&manifest, &stored.value).await?;
                Ok(Delivery::Finished(stored.value.status))
            }
            Err(StoreError::NotFound(_)) => Ok(Delivery::Dropped(format!("{name} does not exist"))),
            Err(e) => Err(store_problem(e)),
        }
    }

    async fn take_lease(&self, manifest: &Manifest, spec: &RowSpec, holder: &str) -> Result<Take, StoreError> {
        let name = layout::row_state(&manifest.batch_id, spec.row);
        let now = OffsetDateTime::now_utc();
        let until = now + self.lease_ttl;
        let mut outcome = Take::Busy;
        let attempt = update_json::<RowState, StoreError, _>(self.store.as_ref(), &name, |s| {
            if s.status.is_terminal() {
                outcome = Take::Ended(s.clone());
                return Ok(None);
            }
            if s.awaiting_hold {
                outcome = Take::AwaitingHold;
                return Ok(None);
            }
            if s.leased_by_other(holder, now) {
                outcome = Take::Busy;
                return Ok(None);
            }
            let mut next = s.clone();
            next.status = RowStatus::Running;
            next.attempts += 1;
            next.lease = Some(Lease { holder: holder.to_owned(), until });
            next.updated_at = now;
            outcome = Take::Taken(next.clone());
            Ok(Some(next))
        })
        .await;
        match attempt {
            Ok(_) => Ok(outcome),
            Err(StoreError::NotFound(_)) => {
                // Submit wrote the manifest but died before this row's state: create it, then lease.
                let queued = RowState::queued(manifest.batch_id.clone(), spec.row, spec.scene_id.clone(), now);
                match write_json(self.store.as_ref(), &name, &queued, Precondition::DoesNotExist).await {
                    Ok(_) | Err(StoreError::PreconditionFailed(_)) => {
                        Box::pin(self.take_lease(manifest, spec, holder)).await
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Before a write that is not itself a compare-and-swap on the row state (an image, a ledger
    /// event): does this delivery still hold an unexpired lease? A delivery that stalled past its
    /// lease stops here, and the holder after it carries on.
    async fn check_lease(&self, manifest: &Manifest, row: u32, holder: &str) -> Result<(), Stop> {
        let state = load_row_state(self.store.as_ref(), &manifest.batch_id, row).await?;
        let live = state.lease.as_ref().is_some_and(|l| l.until > OffsetDateTime::now_utc());
        if lease::holds(&state, holder) && live { Ok(()) } else { Err(Stop::LostLease) }
    }

    /// Applies `change` to the row state if this delivery still holds the lease, renewing it.
    async fn update(
        &self,
        manifest: &Manifest,
        row: u32,
        holder: &str,
        change: impl Fn(&mut RowState),
    ) -> Result<RowState, Stop> {
        let name = layout::row_state(&manifest.batch_id, row);
        let until = OffsetDateTime::now_utc() + self.lease_ttl;
        update_json::<RowState, Stop, _>(self.store.as_ref(), &name, |s| {
            if !lease::holds(s, holder) {
                return Err(Stop::LostLease);
            }
            let mut next = s.clone();
            change(&mut next);
            if next.status == RowStatus::Running {
                next.lease = Some(Lease { holder: holder.to_owned(), until });
            } else {
                next.lease = None;
            }
            next.updated_at = OffsetDateTime::now_utc();
            Ok(Some(next))
        })
        .await
        .map(|o| o.value)
    }

    async fn generate(
        &self,
        manifest: &Manifest,
        spec: &RowSpec,
        holder: &str,
        mut state: RowState,
    ) -> Result<Delivery, Stop> {
        let model = match (manifest.spec.run_mode, &self.live) {
            (RunMode::DryRun, _) => self.dry_run.clone(),
            (RunMode::Live | RunMode::Bulk, Some(live)) => live.clone(),
            (RunMode::Live | RunMode::Bulk, None) => {
                let detail = "this deployment has no live image model configured".to_owned();
                return self.fail(manifest, spec, holder, ErrorCode::LiveNotConfigured, detail).await;
            }
        };
        state = self.adopt_stored_images(manifest, spec, holder, state).await?;
        if spec.variants.numbers().all(|n| state.has_variant(n)) {
            return self.succeed(manifest, spec, holder).await;
        }

        // `gs://` references may read the images of this submitter's batches, nobody else's.
        let fetcher = self.fetcher.for_submitter(manifest.user.clone());
        let merged = match merge_refs(&fetcher, &spec.refs, &manifest.spec.global_refs, self.max_refs).await {
            Ok(merged) => merged,
            Err(e) if e.is_retryable() => {
                return self.retry(manifest, spec, holder, e.code(), e.to_string(), None).await;
            }
            Err(e) => return self.fail(manifest, spec, holder, e.code(), e.to_string()).await,
        };
        let report = merged.report.clone();
        self.update(manifest, spec.row, holder, |s| s.refs = report.clone()).await?;

        let prompt = if merged.images.is_empty() {
            spec.prompt.as_str().to_owned()
        } else {
            format!("{}\n\n{}", spec.prompt.as_str(), spec.ref_mode.instruction())
        };
        // The row's missing variants are made at once, each waiting for its own turn at the quota:
        // one after another, a row would hold its last call back by the others' latency, and at the
        // end of a batch the quota would stand idle while the last rows' chains run out.
        let made =
            futures::future::join_all(spec.variants.numbers().filter(|v| !state.has_variant(*v)).map(|variant| {
                let request = ImageRequest {
                    model: manifest.spec.model.clone(),
                    scene_id: spec.scene_id.to_string(),
                    variant,
                    prompt: prompt.clone(),
                    aspect_ratio: spec.aspect_ratio,
                    refs: merged.images.clone(),
                };
                self.make_variant(manifest, spec, holder, &state, model.as_ref(), request, &merged.report)
            }))
            .await;
        // Every call has ended: what was stored is recorded. Then a lost lease or a store failure
        // stops the delivery, a permanent refusal fails the row, a passing one gives it back.
        let (mut permanent, mut retryable) = (None, None);
        for outcome in made {
            match outcome {
                Ok(()) => {}
                Err(VariantError::Stop(stop)) => return Err(stop),
                Err(VariantError::Model(ModelError::Permanent { code, detail })) => {
                    permanent.get_or_insert((code, detail));
                }
                Err(VariantError::Model(ModelError::Retryable { code, detail, retry_after })) => {
                    retryable.get_or_insert((code, detail, retry_after));
                }
            }
        }
        if let Some((code, detail)) = permanent {
            return self.fail(manifest, spec, holder, code, detail).await;
        }
        if let Some((code, detail, retry_after)) = retryable {
            return self.retry(manifest, spec, holder, code, detail, retry_after).await;
        }
        self.succeed(manifest, spec, holder).await
    }

    /// One variant: the model call, then (under the lease) the image stored create-only with its
    /// provenance, its spend recorded, and the row state updated.
    #[allow(clippy::too_many_arguments)]
    async fn make_variant(
        &self,
        manifest: &Manifest,
        spec: &RowSpec,
        holder: &str,
        state: &RowState,
        model: &dyn ImageModel,
        request: ImageRequest,
        refs: &[crate::api::RefReport],
    ) -> Result<(), VariantError> {
        let variant = request.variant;
        let requested_at = OffsetDateTime::now_utc();
        let image = model.generate(&request).await.map_err(VariantError::Model)?;
        let object = layout::image(&manifest.batch_id, &spec.scene_id, variant);
        let call = provenance::Call {
            request: &request,
            image: &image,
            refs,
            requested_at,
            generated_at: OffsetDateTime::now_utc(),
        };
        let made = provenance::of_call(manifest, spec, state, call);
        // Decoding the whole image to check it is CPU work: off the async workers.
        let stamped = {
            let (bytes, record) = (image.bytes.clone(), made.clone());
            tokio::task::spawn_blocking(move || provenance::stamp(bytes, &record))
                .await
                .unwrap_or_else(|_| image.bytes.clone())
        };
        self.check_lease(manifest, spec.row, holder).await?;
        let body = match self.store.put(&object, stamped.clone(), &image.mime_type, Precondition::DoesNotExist).await {
            Ok(_) => stamped,
            Err(StoreError::PreconditionFailed(_)) => {
                // Another holder stored this variant while this delivery's lease had lapsed:
                // its image stands, and the state describes the bytes that are stored.
                tracing::warn!(%object, "adopting the image another delivery stored first");
                self.store.get(&object).await.map_err(Stop::from)?.body
            }
            Err(e) => return Err(Stop::from(e).into()),
        };
        // The sidecar is derived from the bytes that stand (another delivery's, if adopted).
        provenance::write_sidecar(self.store.as_ref(), &object, &body, &image.mime_type, Some(&made))
            .await
            .map_err(Stop::from)?;
        let stored = StoredVariant {
            variant,
            object: object.clone(),
            sha256: hex::encode(Sha256::digest(&body)),
            bytes: body.len() as u64,
            model: manifest.spec.model.clone(),
            cost: manifest.price_per_image(),
        };
        // Spent before the state records it: a crash in between leaves an image and its spend
        // event, which the next delivery adopts without paying again (the event is create-only).
        self.check_lease(manifest, spec.row, holder).await?;
        self.settlement().spend(manifest, state, variant).await.map_err(Stop::from)?;
        self.update(manifest, spec.row, holder, |s| {
            if !s.has_variant(variant) {
                s.variants.push(stored.clone());
            }
        })
        .await?;
        Ok(())
    }

    /// Records images a crashed delivery stored but did not get to record, so they are not
    /// generated (and paid for) twice.
    async fn adopt_stored_images(
        &self,
        manifest: &Manifest,
        spec: &RowSpec,
        holder: &str,
        state: RowState,
    ) -> Result<RowState, Stop> {
        let missing: Vec<u8> = spec.variants.numbers().filter(|n| !state.has_variant(*n)).collect();
        if missing.is_empty() {
            return Ok(state);
        }
        let prefix = format!("images/{}/{}-v", manifest.batch_id, spec.scene_id);
        let listed = self.store.list(&prefix).await?;
        let mut adopted = Vec::new();
        for variant in missing {
            let object = layout::image(&manifest.batch_id, &spec.scene_id, variant);
            if !listed.iter().any(|m| m.name == object) {
                continue;
            }
            let stored = self.store.get(&object).await?;
            tracing::warn!(%object, "adopting an image stored by an interrupted delivery");
            // It may have died before writing the sidecar; the image's own chunks say what it is.
            provenance::write_sidecar(self.store.as_ref(), &object, &stored.body, &stored.content_type, None).await?;
            self.check_lease(manifest, spec.row, holder).await?;
            self.settlement().spend(manifest, &state, variant).await?;
            adopted.push(StoredVariant {
                variant,
                object,
                sha256: hex::encode(Sha256::digest(&stored.body)),
                bytes: stored.body.len() as u64,
                model: manifest.spec.model.clone(),
                cost: manifest.price_per_image(),
            });
        }
        if adopted.is_empty() {
            return Ok(state);
        }
        self.update(manifest, spec.row, holder, |s| {
            for v in &adopted {
                if !s.has_variant(v.variant) {
                    s.variants.push(v.clone());
                }
            }
        })
        .await
    }

    async fn succeed(&self, manifest: &Manifest, spec: &RowSpec, holder: &str) -> Result<Delivery, Stop> {
        self.update(manifest, spec.row, holder, |s| {
            s.status = RowStatus::Succeeded;
            s.error = None;
        })
        .await?;
        Ok(Delivery::Finished(RowStatus::Succeeded))
    }

    async fn fail(
        &self,
        manifest: &Manifest,
        spec: &RowSpec,
        holder: &str,
        code: ErrorCode,
        detail: String,
    ) -> Result<Delivery, Stop> {
        tracing::warn!(batch_id = %manifest.batch_id, row = spec.row, %code, %detail, "row failed");
        self.update(manifest, spec.row, holder, |s| {
            s.status = RowStatus::Failed;
            s.error = Some(RowError { code, detail: detail.clone() });
        })
        .await?;
        Ok(Delivery::Finished(RowStatus::Failed))
    }

    /// Gives the row back to the queue: the next delivery continues where this one stopped.
    async fn retry(
        &self,
        manifest: &Manifest,
        spec: &RowSpec,
        holder: &str,
        code: ErrorCode,
        detail: String,
        retry_after: Option<Duration>,
    ) -> Result<Delivery, Stop> {
        tracing::info!(batch_id = %manifest.batch_id, row = spec.row, %code, %detail, "row will be retried");
        self.update(manifest, spec.row, holder, |s| {
            s.status = RowStatus::Queued;
            s.error = Some(RowError { code, detail: detail.clone() });
        })
        .await?;
        Ok(Delivery::Retry { code, detail, retry_after })
    }
}
