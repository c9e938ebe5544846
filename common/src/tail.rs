//! Following a batch in the store and turning state changes into progress events (see
//! [`crate::events`] for the wire form and what an event's [`Cursor`] promises).
//!
//! Each poll lists the batch's row-state objects with their generations and reads only the ones
//! whose generation moved. A row read at a newer generation than it was listed at (it changed in
//! between) is left for the next poll, so a row event always carries the generation of the state
//! it shows.
//!
//! Nothing here assumes that writes to different rows become visible in generation order: on GCS a
//! lower generation can appear after a higher one. The store says up to which generation every
//! write is surely visible ([`ObjectStore::settled_generation`], taken before each listing); a
//! cursor's watermark never passes it, and the rows sent above the watermark are named one by one.
//! A late write is then still new to every client: sent live, and sent on resume.

use crate::api::BatchProgress;
use crate::batch_view::{Presenter, StoredBatch, load_manifest, read_rows, store_problem};
use crate::domain::BatchId;
use crate::events::{BatchEvent, Cursor};
use crate::layout;
use crate::problem::Problem;
use crate::state::RowState;
use crate::store::{Generation, ObjectMeta, ObjectStore, StoreError, read_json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Times a snapshot is retried when rows change while it is being read.
const SNAPSHOT_TRIES: usize = 5;

/// Rows an event id names above its watermark at most. Naming fewer only weakens the id's claim:
/// a client that resumes from it is sent those rows again (the page and the CLI apply a row event
/// idempotently). It matters only when more rows than this changed within the store's settling
/// time (GCS: a few seconds), and keeps ids short.
pub const MAX_NAMED_ROWS: usize = 128;

/// An event, its id, and for a row event the row and the generation of the state it shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequenced {
    pub id: Cursor,
    pub event: BatchEvent,
    pub row: Option<(u32, Generation)>,
}

impl Sequenced {
    fn new(id: Cursor, event: BatchEvent) -> Self {
        Self { id, event, row: None }
    }
}

#[derive(Debug)]
pub struct BatchTail {
    store: Arc<dyn ObjectStore>,
    presenter: Presenter,
    batch: StoredBatch,
    /// What a client that was sent every event of this tail so far has.
    cursor: Cursor,
    last_progress: Option<BatchProgress>,
    done: bool,
    /// Store listings made so far (the opening ones included): what watching this batch costs.
    listings: u64,
}

/// The highest watermark a listing taken under `settled` supports, given that it showed states
/// up to `seen`: every write at or below the result is in the listing.
fn watermark(settled: Option<Generation>, seen: Generation) -> Generation {
    settled.map_or(seen, |s| s.min(seen))
}

/// A cursor at `low` naming the rows of `has` above it (the newest first when there are too many).
fn cursor_from(low: Generation, has: impl IntoIterator<Item = (u32, Generation)>) -> Cursor {
    let mut above: Vec<(u32, Generation)> = has.into_iter().filter(|(_, g)| *g > low).collect();
    if above.len() > MAX_NAMED_ROWS {
        above.sort_by_key(|(_, g)| std::cmp::Reverse(*g));
        above.truncate(MAX_NAMED_ROWS);
    }
    Cursor { low, above: above.into_iter().collect() }
}

impl BatchTail {
    /// Opens the tail: a `snapshot` (and `done` if the batch has ended), or, when resuming from
    /// `resume`, the row events the client missed.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        batch_id: &BatchId,
        presenter: Presenter,
        resume: Option<Cursor>,
    ) -> Result<(Self, Vec<Sequenced>), Problem> {
        let manifest = load_manifest(store.as_ref(), batch_id).await?;
        let mut rows = BTreeMap::new();
        let mut settled = None;
        let mut listings = 0;
        for _ in 0..SNAPSHOT_TRIES {
            settled = store.settled_generation();
            listings += 1;
            let listed = list_rows(store.as_ref(), batch_id).await?;
            rows = read_rows(store.as_ref(), listed.iter().map(|m| m.name.clone()).collect()).await?;
            let consistent = listed.iter().all(|m| {
                layout::row_of_state_name(&m.name).and_then(|r| rows.get(&r)).is_some_and(|(g, _)| *g == m.generation)
            });
            if consistent {
                break;
            }
        }
        let store_ref = store.as_ref();
        let mut tail = Self {
            store: store.clone(),
            presenter,
            batch: StoredBatch {
                bulk: crate::bulk::jobs_of(store_ref, &manifest).await?,
                manifest,
                rows: BTreeMap::new(),
            },
            cursor: Cursor::default(),
            last_progress: None,
            done: false,
            listings,
        };
        let mut events = Vec::new();
        match resume {
            None => {
                tail.batch.rows = rows;
                let seen = tail.batch.rows.values().map(|(g, _)| *g).max().unwrap_or_default();
                tail.cursor = tail.named(watermark(settled, seen));
                let view = tail.presenter.view(&tail.batch);
                tail.last_progress = Some(view.progress());
                events.push(Sequenced::new(tail.cursor.clone(), BatchEvent::Snapshot(view)));
            }
            Some(from) => {
                let (seen, missed): (BTreeMap<_, _>, BTreeMap<_, _>) =
                    rows.into_iter().partition(|(row, (g, _))| from.covers(*row, *g));
                tail.batch.rows = seen;
                tail.cursor = from;
                events.extend(tail.apply(missed, settled));
            }
        }
        events.extend(tail.finish_if_done());
        Ok((tail, events))
    }

    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Store listings this tail has made since it opened.
    pub fn listings(&self) -> u64 {
        self.listings
    }

    /// A cursor at `low` for a client that has every row state this tail holds.
    fn named(&self, low: Generation) -> Cursor {
        cursor_from(low, self.batch.rows.iter().map(|(row, (g, _))| (*row, *g)))
    }

    /// What a client joining now must be sent first, from the tail's state in memory (no store
    /// read): a `snapshot`, or when resuming from `resume` the rows it lacks, then the progress;
    /// and `done` if the batch has ended. Later events follow from [`Self::poll`].
    pub fn join(&self, resume: Option<Cursor>) -> Vec<Sequenced> {
        let view = self.presenter.view(&self.batch);
        let mut events = Vec::new();
        let caught_up = match resume {
            None => {
                events.push(Sequenced::new(self.cursor.clone(), BatchEvent::Snapshot(view.clone())));
                self.cursor.clone()
            }
            Some(from) => {
                let mut missed: Vec<_> =
                    self.batch.rows.iter().filter(|(row, (g, _))| !from.covers(**row, *g)).collect();
                missed.sort_by_key(|(_, (g, _))| *g);
                // Each id claims only what the client has once that event arrived: what `from`
                // says, and the missed rows sent so far (in generation order).
                let mut has: BTreeMap<u32, Generation> = from.above.clone();
                for (row, (g, state)) in missed {
                    has.insert(*row, *g);
                    let low = from.low.max(self.cursor.low.min(*g));
                    events.push(Sequenced {
                        id: cursor_from(low, has.iter().map(|(r, g)| (*r, *g))),
                        event: BatchEvent::Row(self.presenter.row_view(&self.batch.manifest, state)),
                        row: Some((*row, *g)),
                    });
                }
                // Now it has every state this tail holds, and whatever `from` named beyond it.
                let caught_up = merge(&from, &self.cursor);
                events.push(Sequenced::new(caught_up.clone(), BatchEvent::Batch(view.progress())));
                caught_up
            }
        };
        if self.done {
            events.push(Sequenced::new(caught_up, BatchEvent::Done(view)));
        }
        events
    }

    /// Whether the `done` event has been produced: the stream should end after it.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// One look at the store: the events for whatever changed since the last one.
    pub async fn poll(&mut self) -> Result<Vec<Sequenced>, Problem> {
        if self.done {
            return Ok(Vec::new());
        }
        // Before listing: every write up to here is in the listing that follows.
        let settled = self.store.settled_generation();
        self.listings += 1;
        let listed = list_rows(self.store.as_ref(), &self.batch.manifest.batch_id).await?;
        let changed: BTreeMap<String, Generation> = listed
            .into_iter()
            .filter(|m| {
                let known = layout::row_of_state_name(&m.name).and_then(|r| self.batch.rows.get(&r)).map(|(g, _)| *g);
                known.is_none_or(|g| m.generation > g)
            })
            .map(|m| (m.name, m.generation))
            .collect();
        let bulk_moved = self.refresh_bulk(!changed.is_empty()).await?;
        if changed.is_empty() && !bulk_moved {
            return Ok(Vec::new());
        }
        let read = read_rows(self.store.as_ref(), changed.keys().cloned().collect()).await?;
        let current = read
            .into_iter()
            .filter(|(row, (g, _))| changed.get(&layout::row_state(&self.batch.manifest.batch_id, *row)) == Some(g))
            .collect();
        let mut events = self.apply(current, settled);
        events.extend(self.finish_if_done());
        Ok(events)
    }

    /// A bulk batch's job while Google has it: re-read, so the `batch` event carries its state as
    /// it moves (pending, running, succeeded…) though no row changes meanwhile. One read of the
    /// known job; a listing only when rows moved or no job is known yet (a retry's new job).
    async fn refresh_bulk(&mut self, rows_moved: bool) -> Result<bool, Problem> {
        if self.batch.manifest.spec.run_mode != crate::domain::RunMode::Bulk {
            return Ok(false);
        }
        let store = self.store.as_ref();
        let jobs = match self.batch.bulk.last() {
            Some(job) if job.settled && !rows_moved => return Ok(false),
            Some(job) if !rows_moved => {
                let name = crate::bulk::job_name(&self.batch.manifest.batch_id, job.seq);
                let mut jobs = self.batch.bulk.clone();
                match read_json::<crate::bulk::BulkJob>(store, &name).await {
                    Ok(read) => {
                        if let Some(last) = jobs.last_mut() {
                            *last = read.value;
                        }
                    }
                    Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(store_problem(e)),
                }
                jobs
            }
            _ => {
                self.listings += 1;
                crate::bulk::jobs_of(store, &self.batch.manifest).await?
            }
        };
        let moved = jobs.len() != self.batch.bulk.len()
            || jobs.iter().zip(&self.batch.bulk).any(|(now, before)| !now.looks_the_same_as(before));
        self.batch.bulk = jobs;
        Ok(moved)
    }

    /// Emits row events in generation order, then a `batch` event if the totals moved. Event `k`'s
    /// watermark is at most its own generation (the later ones of this poll are not sent yet) and
    /// at most what the listing had surely settled.
    fn apply(&mut self, changed: BTreeMap<u32, (Generation, RowState)>, settled: Option<Generation>) -> Vec<Sequenced> {
        let mut ordered: Vec<_> = changed.into_iter().collect();
        ordered.sort_by_key(|(_, (g, _))| *g);
        let mut events = Vec::new();
        for (row, (generation, state)) in ordered {
            let view = self.presenter.row_view(&self.batch.manifest, &state);
            self.batch.rows.insert(row, (generation, state));
            self.cursor = self.named(self.cursor.low.max(watermark(settled, generation)));
            events.push(Sequenced {
                id: self.cursor.clone(),
                event: BatchEvent::Row(view),
                row: Some((row, generation)),
            });
        }
        let progress = self.presenter.view(&self.batch).progress();
        if self.last_progress.as_ref() != Some(&progress) {
            self.last_progress = Some(progress.clone());
            events.push(Sequenced::new(self.cursor.clone(), BatchEvent::Batch(progress)));
        }
        events
    }

    fn finish_if_done(&mut self) -> Option<Sequenced> {
        let view = self.presenter.view(&self.batch);
        let all_written = self.batch.rows.len() == self.batch.manifest.spec.rows.len();
        if all_written && view.status.is_terminal() && !self.done {
            self.done = true;
            return Some(Sequenced::new(self.cursor.clone(), BatchEvent::Done(view)));
        }
        None
    }
}

/// One client's two true cursors as one: both claims hold, so the stronger watermark does, and
/// every row either names (at the newer generation).
pub fn merge(a: &Cursor, b: &Cursor) -> Cursor {
    let low = a.low.max(b.low);
    let mut has = a.above.clone();
    for (row, g) in &b.above {
        let entry = has.entry(*row).or_insert(*g);
        *entry = (*entry).max(*g);
    }
    cursor_from(low, has)
}

async fn list_rows(store: &dyn ObjectStore, batch: &BatchId) -> Result<Vec<ObjectMeta>, Problem> {
    store.list(&layout::rows_prefix(batch)).await.map_err(store_problem)
}
