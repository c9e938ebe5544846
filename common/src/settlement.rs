//! Settling money as rows end (DESIGN.md "budget", "ledger"): each stored image is a `spend`
//! event, each variant that will not be made a `release`, and when a batch's last row ends its
//! hold in the day's budget is closed at what the ledger says it spent.
//!
//! Every write here is idempotent — ledger events are create-only under deterministic names, and a
//! settlement sets the batch's spend to the ledger's sum — so a duplicate delivery, a crash and a
//! redo, or a sweep running the same step again cannot charge twice.

use crate::batch_view::{read_rows, store_problem};
use crate::budget::Budget;
use crate::domain::{Money, RunMode};
use crate::layout;
use crate::ledger::{self, EventKind, LedgerEvent, Recorded};
use crate::problem::Problem;
use crate::state::{Manifest, RowState};
use crate::store::{ObjectStore, StoreError};
use std::sync::Arc;
use time::{Date, OffsetDateTime};

#[derive(Debug, Clone)]
pub struct Settlement {
    pub store: Arc<dyn ObjectStore>,
    pub budget: Arc<dyn Budget>,
}

/// The budget day of a batch: the UTC date it was submitted on.
pub fn day_of(manifest: &Manifest) -> Date {
    manifest.created_at.to_offset(time::UtcOffset::UTC).date()
}

impl Settlement {
    fn event(&self, manifest: &Manifest, kind: EventKind, row: u32, variant: u8, round: u32) -> LedgerEvent {
        LedgerEvent {
            kind,
            day: day_of(manifest),
            user: manifest.user.clone(),
            batch_id: manifest.batch_id.clone(),
            row: Some(row),
            variant: Some(variant),
            round,
            amount: manifest.price_per_image(),
            at: OffsetDateTime::now_utc(),
            request_id: crate::observe::current_request_id(),
        }
    }

    /// An image of `state`'s row was stored: its price is spent. Dry runs cost nothing and write
    /// no money events.
    pub async fn spend(&self, manifest: &Manifest, state: &RowState, variant: u8) -> Result<Recorded, StoreError> {
        if manifest.spec.run_mode == RunMode::DryRun {
            return Ok(Recorded::Duplicate);
        }
        ledger::record(self.store.as_ref(), &self.event(manifest, EventKind::Spend, state.row, variant, state.round))
            .await
    }

    /// The row ended without some of its images (failed, cancelled, dead-lettered): their holds are
    /// freed.
    pub async fn release_unmade(&self, manifest: &Manifest, state: &RowState) -> Result<(), StoreError> {
        if manifest.spec.run_mode == RunMode::DryRun {
            return Ok(());
        }
        let Some(spec) = manifest.spec.row(state.row) else { return Ok(()) };
        for variant in spec.variants.numbers().filter(|v| !state.has_variant(*v)) {
            let event = self.event(manifest, EventKind::Release, state.row, variant, state.round);
            ledger::record(self.store.as_ref(), &event).await?;
        }
        Ok(())
    }

    /// If every row of the batch has ended, closes its hold at the ledger's spend. Rows are read
    /// from the last one down and the look stops at the first that is still open, which is nearly
    /// always the first one read until the batch really is done.
    pub async fn settle_if_finished(&self, manifest: &Manifest) -> Result<bool, Problem> {
        if manifest.spec.run_mode == RunMode::DryRun {
            return Ok(false);
        }
        for spec in manifest.spec.rows.iter().rev() {
            let name = layout::row_state(&manifest.batch_id, spec.row);
            let rows = read_rows(self.store.as_ref(), vec![name]).await?;
            if !rows.get(&spec.row).is_some_and(|(_, s)| s.status.is_terminal()) {
                return Ok(false);
            }
        }
        self.settle(manifest).await?;
        Ok(true)
    }

    /// Closes the batch's hold at what the ledger says it spent (safe to repeat).
    pub async fn settle(&self, manifest: &Manifest) -> Result<(), Problem> {
        let day = day_of(manifest);
        let events =
            ledger::events_of_batch(self.store.as_ref(), day, &manifest.batch_id).await.map_err(store_problem)?;
        let spent = ledger::total(&events, EventKind::Spend);
        self.budget.settle(&manifest.user, day, &manifest.batch_id, spent).await?;
        tracing::info!(batch_id = %manifest.batch_id, %spent, "batch settled");
        Ok(())
    }

    /// The batch-level reserve event of a round (create-only; a redo writes nothing new).
    pub async fn reserved(&self, manifest: &Manifest, round: u32, amount: Money) -> Result<Recorded, StoreError> {
        if amount == Money::ZERO {
            return Ok(Recorded::Duplicate);
        }
        let event = LedgerEvent {
            kind: EventKind::Reserve,
            day: day_of(manifest),
            user: manifest.user.clone(),
            batch_id: manifest.batch_id.clone(),
            row: None,
            variant: None,
            round,
            amount,
            at: OffsetDateTime::now_utc(),
            request_id: crate::observe::current_request_id(),
        };
        ledger::record(self.store.as_ref(), &event).await
    }
}
