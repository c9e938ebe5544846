//! `assetgen ledger check --date D`: the day's ledger against the day's budget objects and the
//! stored images, to the micro-dollar. Any difference is listed; none means the money is right.
//!
//! What must hold, batch by batch:
//! - the budget hold's reserve rounds equal the ledger's reserve events, round by round;
//! - what the ledger spent never exceeds what was reserved (never a cent over);
//! - a settled batch's spend in the budget equals the ledger's spend events;
//! - every spend event has its image in the store, and every stored image of a live batch has
//!   exactly one spend event (nothing generated and not paid, nothing paid twice).
//!
//! And for the day, what the user's batches commit stays within the limit in force.

use crate::batch_view::load_manifest;
use crate::budget::BudgetDay;
use crate::domain::{BatchId, Money, RunMode};
use crate::layout;
use crate::ledger::{EventKind, LedgerEvent, events_of_day, total};
use crate::store::{ObjectStore, StoreError, read_json};
use std::collections::{BTreeMap, BTreeSet};
use time::Date;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckReport {
    pub events: usize,
    pub batches: usize,
    pub reserved: Money,
    pub spent: Money,
    pub released: Money,
    pub differences: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

pub async fn check(store: &dyn ObjectStore, day: Date) -> Result<CheckReport, StoreError> {
    let events = events_of_day(store, day).await?;
    let mut report = CheckReport {
        events: events.len(),
        reserved: total(&events, EventKind::Reserve),
        spent: total(&events, EventKind::Spend),
        released: total(&events, EventKind::Release),
        ..CheckReport::default()
    };
    let mut by_batch: BTreeMap<String, Vec<LedgerEvent>> = BTreeMap::new();
    for e in events {
        by_batch.entry(e.batch_id.to_string()).or_default().push(e);
    }
    let mut in_budget = BTreeSet::new();
    for meta in store.list(&format!("budget/{day}/")).await? {
        let budget: BudgetDay = read_json(store, &meta.name).await?.value;
        if budget.committed() > budget.limit {
            report.differences.push(format!(
                "{}: commits {} over the limit {}",
                budget.user,
                budget.committed(),
                budget.limit
            ));
        }
        for (batch, hold) in &budget.batches {
            in_budget.insert(batch.clone());
            report.batches += 1;
            let empty = Vec::new();
            let events = by_batch.get(batch).unwrap_or(&empty);
            let mut rounds: Vec<(u32, Money)> =
                events.iter().filter(|e| e.kind == EventKind::Reserve).map(|e| (e.round, e.amount)).collect();
            rounds.sort_unstable();
            let held: Vec<(u32, Money)> = hold.reserves.iter().enumerate().map(|(i, m)| (i as u32, *m)).collect();
            if rounds != held {
                report
                    .differences
                    .push(format!("batch {batch}: budget holds {held:?} but the ledger reserved {rounds:?}"));
            }
            let spent = total(events, EventKind::Spend);
            if spent > hold.reserved() {
                report
                    .differences
                    .push(format!("batch {batch}: spent {spent}, more than the {} reserved", hold.reserved()));
            }
            if let Some(settled) = hold.settled
                && settled != spent
            {
                report
                    .differences
                    .push(format!("batch {batch}: budget settled at {settled} but the ledger spent {spent}"));
            }
            if let Ok(batch_id) = BatchId::parse(batch) {
                check_images(store, &batch_id, events, &mut report).await?;
            }
        }
    }
    for batch in by_batch.keys().filter(|b| !in_budget.contains(*b)) {
        report.differences.push(format!("batch {batch}: has ledger events but no budget hold on {day}"));
    }
    Ok(report)
}

/// Spend events and stored images must match one to one (per round, an image is paid once).
async fn check_images(
    store: &dyn ObjectStore,
    batch: &BatchId,
    events: &[LedgerEvent],
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    let manifest = match load_manifest(store, batch).await {
        Ok(m) => m,
        Err(_) => {
            if events.iter().any(|e| e.kind == EventKind::Spend) {
                report.differences.push(format!("batch {batch}: spend events but no manifest"));
            }
            return Ok(());
        }
    };
    if manifest.spec.run_mode == RunMode::DryRun {
        return Ok(());
    }
    let stored: BTreeSet<String> = store
        .list(&format!("images/{batch}/"))
        .await?
        .into_iter()
        .map(|m| m.name)
        .filter(|name| layout::is_image(name))
        .collect();
    let mut paid: BTreeMap<String, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == EventKind::Spend) {
        let (Some(row), Some(variant)) = (e.row, e.variant) else { continue };
        let Some(spec) = manifest.spec.row(row) else {
            report.differences.push(format!("{}: names a row the batch does not have", e.id()));
            continue;
        };
        let object = layout::image(batch, &spec.scene_id, variant);
        if !stored.contains(&object) {
            report.differences.push(format!("{}: paid for {object}, which is not stored", e.id()));
        }
        *paid.entry(object).or_default() += 1;
    }
    for object in &stored {
        match paid.get(object).copied().unwrap_or(0) {
            1 => {}
            0 => report.differences.push(format!("{object} is stored but was never paid for")),
            n => report.differences.push(format!("{object} was paid for {n} times")),
        }
    }
    Ok(())
}
