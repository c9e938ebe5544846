//! Following a batch in the store and turning state changes into progress events (see
//! [`crate::events`] for the wire form and the cursor's meaning).
//!
//! Each poll lists the batch's row-state objects with their generations and reads only the ones
//! whose generation moved. A row read at a newer generation than it was listed at (it changed in
//! between) is left for the next poll, so every event's id is the generation of the state it
//! carries, and ids only grow: resuming from an id loses nothing and repeats nothing. That relies on
//! the store making writes visible in generation order, which the filesystem and memory adapters
//! guarantee (one write lock assigns generations and publishes the write together).

use crate::api::BatchProgress;
use crate::batch_view::{Presenter, StoredBatch, load_manifest, read_rows, store_problem};
use crate::domain::BatchId;
use crate::events::{BatchEvent, Cursor};
use crate::layout;
use crate::problem::Problem;
use crate::store::{Generation, ObjectMeta, ObjectStore};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Times a snapshot is retried when rows change while it is being read.
const SNAPSHOT_TRIES: usize = 5;

pub type Sequenced = (Cursor, BatchEvent);

#[derive(Debug)]
pub struct BatchTail {
    store: Arc<dyn ObjectStore>,
    presenter: Presenter,
    batch: StoredBatch,
    cursor: Cursor,
    last_progress: Option<BatchProgress>,
    done: bool,
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
        for _ in 0..SNAPSHOT_TRIES {
            let listed = list_rows(store.as_ref(), batch_id).await?;
            rows = read_rows(store.as_ref(), listed.iter().map(|m| m.name.clone()).collect()).await?;
            let consistent = listed.iter().all(|m| {
                layout::row_of_state_name(&m.name).and_then(|r| rows.get(&r)).is_some_and(|(g, _)| *g == m.generation)
            });
            if consistent {
                break;
            }
        }
        let mut tail = Self {
            store,
            presenter,
            batch: StoredBatch { manifest, rows: BTreeMap::new() },
            cursor: Cursor::default(),
            last_progress: None,
            done: false,
        };
        let mut events = Vec::new();
        match resume {
            None => {
                tail.batch.rows = rows;
                tail.cursor = Cursor(tail.batch.rows.values().map(|(g, _)| *g).max().unwrap_or_default());
                let view = tail.presenter.view(&tail.batch);
                tail.last_progress = Some(view.progress());
                events.push((tail.cursor, BatchEvent::Snapshot(view)));
            }
            Some(from) => {
                tail.cursor = from;
                let (seen, missed): (BTreeMap<_, _>, BTreeMap<_, _>) =
                    rows.into_iter().partition(|(_, (g, _))| *g <= from.0);
                tail.batch.rows = seen;
                events.extend(tail.apply(missed));
            }
        }
        events.extend(tail.finish_if_done());
        Ok((tail, events))
    }

    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// What a client joining now must be sent first, from the tail's state in memory (no store
    /// read): a `snapshot`, or when resuming from `resume` the rows that changed since, then the
    /// progress; and `done` if the batch has ended. Later events follow from [`Self::poll`].
    pub fn join(&self, resume: Option<Cursor>) -> Vec<Sequenced> {
        let view = self.presenter.view(&self.batch);
        let mut events = Vec::new();
        match resume {
            None => events.push((self.cursor, BatchEvent::Snapshot(view.clone()))),
            Some(from) => {
                let mut missed: Vec<_> = self.batch.rows.values().filter(|(g, _)| *g > from.0).collect();
                missed.sort_by_key(|(g, _)| *g);
                for (generation, state) in missed {
                    events.push((
                        Cursor(*generation),
                        BatchEvent::Row(self.presenter.row_view(&self.batch.manifest, state)),
                    ));
                }
                events.push((self.cursor.max(from), BatchEvent::Batch(view.progress())));
            }
        }
        if self.done {
            events.push((self.cursor, BatchEvent::Done(view)));
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
        let listed = list_rows(self.store.as_ref(), &self.batch.manifest.batch_id).await?;
        let changed: BTreeMap<String, Generation> = listed
            .into_iter()
            .filter(|m| {
                let known = layout::row_of_state_name(&m.name).and_then(|r| self.batch.rows.get(&r)).map(|(g, _)| *g);
                known.is_none_or(|g| m.generation > g)
            })
            .map(|m| (m.name, m.generation))
            .collect();
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let read = read_rows(self.store.as_ref(), changed.keys().cloned().collect()).await?;
        let settled = read
            .into_iter()
            .filter(|(row, (g, _))| changed.get(&layout::row_state(&self.batch.manifest.batch_id, *row)) == Some(g))
            .collect();
        let mut events = self.apply(settled);
        events.extend(self.finish_if_done());
        Ok(events)
    }

    /// Emits row events in generation order, then a `batch` event if the totals moved.
    fn apply(&mut self, changed: BTreeMap<u32, (Generation, crate::state::RowState)>) -> Vec<Sequenced> {
        let mut ordered: Vec<_> = changed.into_iter().collect();
        ordered.sort_by_key(|(_, (g, _))| *g);
        let mut events = Vec::new();
        for (row, (generation, state)) in ordered {
            let view = self.presenter.row_view(&self.batch.manifest, &state);
            self.batch.rows.insert(row, (generation, state));
            self.cursor = self.cursor.max(Cursor(generation));
            events.push((Cursor(generation), BatchEvent::Row(view)));
        }
        let progress = self.presenter.view(&self.batch).progress();
        if self.last_progress.as_ref() != Some(&progress) {
            self.last_progress = Some(progress.clone());
            events.push((self.cursor, BatchEvent::Batch(progress)));
        }
        events
    }

    fn finish_if_done(&mut self) -> Option<Sequenced> {
        let view = self.presenter.view(&self.batch);
        let all_written = self.batch.rows.len() == self.batch.manifest.spec.rows.len();
        if all_written && view.status.is_terminal() && !self.done {
            self.done = true;
            return Some((self.cursor, BatchEvent::Done(view)));
        }
        None
    }
}

async fn list_rows(store: &dyn ObjectStore, batch: &BatchId) -> Result<Vec<ObjectMeta>, Problem> {
    store.list(&layout::rows_prefix(batch)).await.map_err(store_problem)
}
