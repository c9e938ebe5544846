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
use crate::open_index;
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

    /// If every row of the batch has ended, closes it: its hold is settled at the ledger's spend,
    /// then it leaves the index of open batches. Safe to repeat, and to run from anywhere (the
    /// delivery that ended the last row, any later duplicate, the sweep); returns whether the batch
    /// is closed now.
    ///
    /// Order matters against a concurrent retry, which queues rows *before* it holds their money:
    /// the marker and the hold's rounds are read first, the rows after. If the rows were all seen
    /// ended, a retry that reopened the batch since has changed either the marker (so it is not
    /// deleted) or the rounds (so the hold is not settled).
    pub async fn close_if_finished(&self, manifest: &Manifest) -> Result<bool, Problem> {
        let store = self.store.as_ref();
        let batch = &manifest.batch_id;
        let Some(marker) = open_index::read(store, batch).await.map_err(store_problem)? else {
            // Closed already — or submitted before the index existed, which the sweep indexes.
            return Ok(false);
        };
        if marker.value.retrying(OffsetDateTime::now_utc()) {
            return Ok(false);
        }
        let live = manifest.spec.run_mode.costs_money();
        let rounds = if live { self.budget.rounds(&manifest.user, day_of(manifest), batch).await? } else { None };
        // From the last row down: the look stops at the first row still open, which is nearly
        // always the first one read until the batch really is done.
        for spec in manifest.spec.rows.iter().rev() {
            let name = layout::row_state(batch, spec.row);
            let rows = read_rows(store, vec![name]).await?;
            if !rows.get(&spec.row).is_some_and(|(_, s)| s.status.is_terminal()) {
                return Ok(false);
            }
        }
        if live && !self.settle(manifest, rounds).await? {
            return Ok(false);
        }
        open_index::close(store, batch, marker.generation).await.map_err(store_problem)
    }

    /// Closes the batch's hold at what the ledger says it spent (safe to repeat), unless it has
    /// gained a reserve round since it had `rounds`.
    async fn settle(&self, manifest: &Manifest, rounds: Option<u32>) -> Result<bool, Problem> {
        let day = day_of(manifest);
        let events =
            ledger::events_of_batch(self.store.as_ref(), day, &manifest.batch_id).await.map_err(store_problem)?;
        let spent = ledger::total(&events, EventKind::Spend);
        let settled =
            self.budget.settle_unless_reopened(&manifest.user, day, &manifest.batch_id, spent, rounds).await?;
        if settled {
            tracing::info!(batch_id = %manifest.batch_id, %spent, "batch settled");
        }
        Ok(settled)
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
