//! The ledger: one create-only object per money event (DESIGN.md, `ledger/{YYYY-MM-DD}/{event}.json`).
//!
//! An event's name is derived from what it is about — batch, row, variant, kind and round — so a
//! duplicate delivery, a retried request or a sweep that writes it again is refused by the store
//! (`ifGenerationMatch=0`) instead of counted twice. Names start with the batch id, so one listing
//! finds a batch's events. The day is the batch's budget day (its submit date, UTC).

use crate::domain::{BatchId, Money, UserId};
use crate::observe::names;
use crate::store::{ObjectStore, Precondition, StoreError, read_json, write_json};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Money held for a batch (at submit, and again for each retry round).
    Reserve,
    /// An image was stored: its price is spent.
    Spend,
    /// A variant will not be made (row failed for good, cancelled, dead-lettered): its hold is freed.
    Release,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEvent {
    pub kind: EventKind,
    pub day: Date,
    pub user: UserId,
    pub batch_id: BatchId,
    /// Absent for batch-level reserves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<u8>,
    /// The batch's reserve round (0 at submit, +1 per retry); a row's round for spends and releases.
    pub round: u32,
    pub amount: Money,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The request that caused it (the submit, or the submit whose row was generated), for
    /// following money back to logs. Absent in events written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Spend => "spend",
            Self::Release => "release",
        }
    }
}

impl LedgerEvent {
    /// `{batch}.r{round}.reserve` or `{batch}.{row:04}.v{variant}.r{round}.{kind}`.
    pub fn id(&self) -> String {
        let kind = self.kind.as_str();
        match (self.row, self.variant) {
            (Some(row), Some(variant)) => format!("{}.{row:04}.v{variant}.r{}.{kind}", self.batch_id, self.round),
            _ => format!("{}.r{}.{kind}", self.batch_id, self.round),
        }
    }

    pub fn object_name(&self) -> String {
        format!("{}{}.json", day_prefix(self.day), self.id())
    }
}

pub fn day_prefix(day: Date) -> String {
    format!("ledger/{day}/")
}

pub fn compacted_name(day: Date) -> String {
    format!("ledger/{day}.jsonl")
}

/// Whether the event was new or already there (a duplicate absorbed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    Duplicate,
}

/// Writes an event create-only. Writing it twice is harmless and says so.
pub async fn record(store: &dyn ObjectStore, event: &LedgerEvent) -> Result<Recorded, StoreError> {
    let recorded = match write_json(store, &event.object_name(), event, Precondition::DoesNotExist).await {
        Ok(_) => Recorded::New,
        Err(StoreError::PreconditionFailed(_)) => Recorded::Duplicate,
        Err(e) => return Err(e),
    };
    let written = if recorded == Recorded::New { "new" } else { "duplicate" };
    metrics::counter!(names::LEDGER_EVENTS, "kind" => event.kind.as_str(), "written" => written).increment(1);
    if recorded == Recorded::New && event.kind == EventKind::Spend {
        metrics::counter!(names::SPENT_MICRODOLLARS).increment(event.amount.micros().max(0) as u64);
    }
    Ok(recorded)
}

/// Ledger reads in flight at once.
const PARALLEL_READS: usize = 16;

async fn read_all(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<LedgerEvent>, StoreError> {
    let names: Vec<String> =
        store.list(prefix).await?.into_iter().map(|m| m.name).filter(|n| n.ends_with(".json")).collect();
    let mut events: Vec<LedgerEvent> = futures::stream::iter(names)
        .map(|name| async move { read_json::<LedgerEvent>(store, &name).await.map(|o| o.value) })
        .buffer_unordered(PARALLEL_READS)
        .try_collect()
        .await?;
    events.sort_by_key(LedgerEvent::id);
    Ok(events)
}

/// Every event of a day.
pub async fn events_of_day(store: &dyn ObjectStore, day: Date) -> Result<Vec<LedgerEvent>, StoreError> {
    read_all(store, &day_prefix(day)).await
}

/// Every event of one batch (its names start with the batch id).
pub async fn events_of_batch(
    store: &dyn ObjectStore,
    day: Date,
    batch: &BatchId,
) -> Result<Vec<LedgerEvent>, StoreError> {
    read_all(store, &format!("{}{batch}.", day_prefix(day))).await
}

/// Sum of the events of `kind`.
pub fn total(events: &[LedgerEvent], kind: EventKind) -> Money {
    events.iter().filter(|e| e.kind == kind).map(|e| e.amount).sum()
}

/// Writes the day's events as one JSON line each, sorted by id (`ledger/{day}.jsonl`). Safe to
/// run again: it rewrites the file from the events, which stay the source of truth.
pub async fn compact(store: &dyn ObjectStore, day: Date) -> Result<usize, StoreError> {
    let events = events_of_day(store, day).await?;
    let mut body = Vec::new();
    for e in &events {
        serde_json::to_writer(&mut body, e)
            .map_err(|err| StoreError::Unavailable(format!("cannot encode {}: {err}", e.id())))?;
        body.push(b'\n');
    }
    store.put(&compacted_name(day), bytes::Bytes::from(body), "application/jsonl", Precondition::None).await?;
    Ok(events.len())
}
