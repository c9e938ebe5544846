//! The progress tail: snapshot, row and batch events, done, and lossless resume.

use assetgen_common::api::{BatchStatus, RowStatus};
use assetgen_common::batch_view::Presenter;
use assetgen_common::domain::BatchId;
use assetgen_common::events::{BatchEvent, Cursor};
use assetgen_common::generation::RowWorker;
use assetgen_common::queue::RowMessage;
use assetgen_common::store::ObjectStore;
use assetgen_common::tail::{BatchTail, Sequenced};
use assetgen_common::testkit::{Rig, row};
use std::sync::Arc;

async fn batch(rows: usize) -> (Arc<dyn ObjectStore>, BatchId, RowWorker, Vec<RowMessage>) {
    let kit = Rig::new(|_| {});
    let rows = (0..rows).map(|i| row(&format!("S{i}"), 2)).collect();
    let id = kit.submit_rows(rows).await;
    (kit.store.clone(), id, kit.pipeline.worker.clone(), kit.queue.published())
}

fn presenter() -> Presenter {
    Presenter::new("http://t", assetgen_common::auth::LinkSigner::random())
}

fn row_events(events: &[Sequenced]) -> Vec<(Cursor, u32, RowStatus)> {
    events
        .iter()
        .filter_map(|s| match &s.event {
            BatchEvent::Row(r) => Some((s.id.clone(), r.row, r.status)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_stream_starts_with_a_snapshot_and_ends_with_done() {
    let (store, id, worker, messages) = batch(3).await;
    let (mut tail, first) = BatchTail::open(store.clone(), &id, presenter(), None).await.expect("open");
    assert_eq!(first.len(), 1);
    let BatchEvent::Snapshot(snapshot) = &first[0].event else { panic!("first event must be a snapshot: {first:?}") };
    assert_eq!((snapshot.status, snapshot.totals.rows, snapshot.totals.images_total), (BatchStatus::Queued, 3, 6));
    assert_eq!(snapshot.ended_at, None, "a batch that runs has not ended");
    assert!(tail.poll().await.expect("poll").is_empty(), "nothing changed, nothing sent");

    let mut all = Vec::new();
    for m in &messages {
        worker.process(m).await.expect("process");
        all.extend(tail.poll().await.expect("poll"));
    }
    let rows = row_events(&all);
    assert!(rows.iter().all(|r| r.0.above.is_empty()), "the memory store shows writes in order: one number");
    assert!(rows.windows(2).all(|w| w[0].0.low < w[1].0.low), "ids only grow: {rows:?}");
    assert_eq!(rows.iter().filter(|r| r.2 == RowStatus::Succeeded).count(), 3, "every row's success is seen once");
    let Some(BatchEvent::Done(done)) = all.last().map(|s| &s.event) else { panic!("the last event is done: {all:?}") };
    assert_eq!((done.status, done.totals.images_done), (BatchStatus::Succeeded, 6));
    assert!(tail.is_done());
    // It ended with its last row's last state: the stored time, so every reader agrees.
    let stored = assetgen_common::batch_view::load(store.as_ref(), &id).await.expect("load");
    let last_row_end = stored.rows.values().map(|(_, state)| state.updated_at).max();
    assert!(done.ended_at.is_some() && done.ended_at == last_row_end, "{:?} vs {last_row_end:?}", done.ended_at);
    assert!(done.ended_at >= Some(done.created_at));
    let progress = all.iter().rev().find_map(|s| match &s.event {
        BatchEvent::Batch(p) => Some(p.clone()),
        _ => None,
    });
    assert_eq!(progress.and_then(|p| p.ended_at), done.ended_at, "the last batch event carries it too");
    assert!(
        all.iter().any(|s| matches!(&s.event, BatchEvent::Batch(p) if p.totals.succeeded == 1)),
        "batch progress events"
    );
}

#[tokio::test]
async fn resuming_from_any_event_loses_and_repeats_nothing() {
    let (store, id, worker, messages) = batch(4).await;
    let (mut tail, _) = BatchTail::open(store.clone(), &id, presenter(), None).await.expect("open");
    let mut all = Vec::new();
    for m in &messages {
        worker.process(m).await.expect("process");
        all.extend(tail.poll().await.expect("poll"));
    }
    let reference = row_events(&all);
    // A client that disconnected right after event k resumes with its id.
    for (k, Sequenced { id: cursor, .. }) in all.iter().enumerate() {
        let (_, resumed) =
            BatchTail::open(store.clone(), &id, presenter(), Some(cursor.clone())).await.expect("resume");
        let replayed = row_events(&resumed);
        assert!(replayed.iter().all(|r| r.2 == RowStatus::Succeeded), "a resume sends current states");
        let newer: Vec<u32> = reference
            .iter()
            .filter(|r| r.0.low > cursor.low)
            .map(|r| r.1)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut replayed_rows: Vec<u32> = replayed.iter().map(|r| r.1).collect();
        replayed_rows.sort_unstable();
        assert_eq!(replayed_rows, newer, "after event {k} the resume sends exactly the rows that changed since");
        assert!(matches!(resumed.last().map(|s| &s.event), Some(BatchEvent::Done(_))), "and ends with done");
    }
}

// ---- Writes that become visible out of generation order (GCS) ----

use assetgen_common::layout;
use assetgen_common::state::RowState;
use assetgen_common::store::{Generation, MemoryStore, Precondition, read_json, write_json};
use assetgen_common::testkit::LateWrites;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

/// A batch of `rows` on a store whose chosen writes show up late.
async fn late_batch(rows: usize) -> (Arc<LateWrites>, BatchId) {
    let late = Arc::new(LateWrites::new(Arc::new(MemoryStore::new())));
    let kit = Rig::on(late.clone(), |_| {});
    let id = kit.submit_rows((0..rows).map(|i| row(&format!("S{i}"), 1)).collect()).await;
    (late, id)
}

/// Writes a new state of `row` (another attempt) and returns its generation.
async fn touch(store: &dyn ObjectStore, id: &BatchId, row: u32) -> Generation {
    let name = layout::row_state(id, row);
    let mut state: RowState = read_json(store, &name).await.expect("row state").value;
    state.attempts += 1;
    write_json(store, &name, &state, Precondition::None).await.expect("write")
}

/// Row and generation of each row event.
fn row_gens(events: &[Sequenced]) -> Vec<(u32, Generation)> {
    events.iter().filter_map(|s| s.row).collect()
}

#[tokio::test]
async fn a_write_that_shows_up_after_a_newer_one_is_sent_live_and_on_resume() {
    let (late, id) = late_batch(3).await;
    let (mut tail, _) = BatchTail::open(late.clone(), &id, presenter(), None).await.expect("open");

    // Row 0's write takes its generation first but becomes visible after row 1's.
    late.hide_next_write(&layout::row_state(&id, 0));
    let early = touch(late.as_ref(), &id, 0).await;
    let newer = touch(late.as_ref(), &id, 1).await;
    assert!(early < newer);
    let first = tail.poll().await.expect("poll");
    assert_eq!(row_gens(&first), vec![(1, newer)], "only row 1 is visible yet");
    let disconnected_at = first.last().expect("events").id.clone();
    assert!(!disconnected_at.covers(0, early), "the id must not claim row 0's unseen write: {disconnected_at}");

    assert_eq!(late.release(&layout::row_state(&id, 0)), Some(early));
    let second = tail.poll().await.expect("poll");
    assert_eq!(row_gens(&second), vec![(0, early)], "the late write is sent live");

    let (_, resumed) =
        BatchTail::open(late.clone(), &id, presenter(), Some(disconnected_at.clone())).await.expect("resume");
    assert_eq!(row_gens(&resumed), vec![(0, early)], "a resume on a new tail sends it, and only it");
    assert_eq!(row_gens(&tail.join(Some(disconnected_at))), vec![(0, early)], "and so does a join of this tail");
}

/// A client's view: each row's generation, as the events it got say.
fn follow(client: &mut BTreeMap<u32, Generation>, events: &[Sequenced]) {
    for (row, g) in row_gens(events) {
        let had = client.insert(row, g);
        assert!(had.is_none_or(|h| h < g), "row {row} sent again or out of order: had {had:?}, got {g}");
    }
}

#[tokio::test]
async fn random_late_writes_lose_nothing_and_repeat_nothing_live_or_on_resume() {
    for seed in 0..20u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let rows = 6;
        let (late, id) = late_batch(rows).await;
        let store: Arc<dyn ObjectStore> = late.clone();
        let (mut tail, first) = BatchTail::open(store.clone(), &id, presenter(), None).await.expect("open");
        // The snapshot holds every row at its submitted generation (nothing was hidden then).
        let mut client: BTreeMap<u32, Generation> = BTreeMap::new();
        for meta in store.list(&layout::rows_prefix(&id)).await.expect("list") {
            client.insert(layout::row_of_state_name(&meta.name).expect("a row"), meta.generation);
        }
        let mut stream: Vec<Sequenced> = first;
        let mut views = vec![(stream[0].id.clone(), client.clone())];
        let mut hidden: BTreeSet<u32> = BTreeSet::new();
        for _ in 0..40 {
            let row = rng.random_range(0..rows as u32);
            if !hidden.contains(&row) && rng.random_bool(0.3) {
                late.hide_next_write(&layout::row_state(&id, row));
                hidden.insert(row);
            }
            touch(store.as_ref(), &id, row).await;
            if let Some(&r) = hidden.iter().next().filter(|_| rng.random_bool(0.3)) {
                late.release(&layout::row_state(&id, r));
                hidden.remove(&r);
            }
            let events = tail.poll().await.expect("poll");
            for event in &events {
                follow(&mut client, std::slice::from_ref(event));
                views.push((event.id.clone(), client.clone()));
            }
            stream.extend(events);
        }
        for r in std::mem::take(&mut hidden) {
            late.release(&layout::row_state(&id, r));
        }
        let events = tail.poll().await.expect("poll");
        follow(&mut client, &events);
        let mut truth = BTreeMap::new();
        for meta in store.list(&layout::rows_prefix(&id)).await.expect("list") {
            truth.insert(layout::row_of_state_name(&meta.name).expect("a row"), meta.generation);
        }
        assert_eq!(client, truth, "seed {seed}: the live client ends with every row's last state");

        // A client that dropped after any event and resumes gets exactly what it lacks.
        for (k, (id_k, had)) in views.iter().enumerate() {
            let lacking: Vec<(u32, Generation)> =
                truth.iter().filter(|(r, g)| had.get(r) != Some(g)).map(|(r, g)| (*r, *g)).collect();
            let (_, reopened) =
                BatchTail::open(store.clone(), &id, presenter(), Some(id_k.clone())).await.expect("resume");
            let mut got = row_gens(&reopened);
            got.sort_unstable();
            assert_eq!(got, lacking, "seed {seed}, resume on a new tail after event {k} ({id_k})");
            let mut joined = row_gens(&tail.join(Some(id_k.clone())));
            joined.sort_unstable();
            assert_eq!(joined, lacking, "seed {seed}, join of the live tail after event {k} ({id_k})");
        }
    }
}
