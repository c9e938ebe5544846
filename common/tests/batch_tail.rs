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
    Presenter { base: "http://t".into() }
}

fn row_events(events: &[Sequenced]) -> Vec<(Cursor, u32, RowStatus)> {
    events
        .iter()
        .filter_map(|(c, e)| match e {
            BatchEvent::Row(r) => Some((*c, r.row, r.status)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_stream_starts_with_a_snapshot_and_ends_with_done() {
    let (store, id, worker, messages) = batch(3).await;
    let (mut tail, first) = BatchTail::open(store.clone(), &id, presenter(), None).await.expect("open");
    assert_eq!(first.len(), 1);
    let BatchEvent::Snapshot(snapshot) = &first[0].1 else { panic!("first event must be a snapshot: {first:?}") };
    assert_eq!((snapshot.status, snapshot.totals.rows, snapshot.totals.images_total), (BatchStatus::Queued, 3, 6));
    assert!(tail.poll().await.expect("poll").is_empty(), "nothing changed, nothing sent");

    let mut all = Vec::new();
    for m in &messages {
        worker.process(m).await.expect("process");
        all.extend(tail.poll().await.expect("poll"));
    }
    let rows = row_events(&all);
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "ids only grow: {rows:?}");
    assert_eq!(rows.iter().filter(|r| r.2 == RowStatus::Succeeded).count(), 3, "every row's success is seen once");
    let Some((_, BatchEvent::Done(done))) = all.last() else { panic!("the last event is done: {all:?}") };
    assert_eq!((done.status, done.totals.images_done), (BatchStatus::Succeeded, 6));
    assert!(tail.is_done());
    assert!(
        all.iter().any(|(_, e)| matches!(e, BatchEvent::Batch(p) if p.totals.succeeded == 1)),
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
    for (k, (cursor, _)) in all.iter().enumerate() {
        let (_, resumed) = BatchTail::open(store.clone(), &id, presenter(), Some(*cursor)).await.expect("resume");
        let replayed = row_events(&resumed);
        assert!(replayed.iter().all(|r| r.2 == RowStatus::Succeeded), "a resume sends current states");
        let newer: Vec<u32> = reference
            .iter()
            .filter(|r| r.0 > *cursor)
            .map(|r| r.1)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut replayed_rows: Vec<u32> = replayed.iter().map(|r| r.1).collect();
        replayed_rows.sort_unstable();
        assert_eq!(replayed_rows, newer, "after event {k} the resume sends exactly the rows that changed since");
        assert!(matches!(resumed.last(), Some((_, BatchEvent::Done(_)))), "and ends with done");
    }
}
