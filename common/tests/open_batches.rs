//! The index of open batches: the sweep reads only batches still open, so its cost does not grow
//! with every batch ever run; batches from before the index are indexed by its migration pass.

use assetgen_common::api::BatchRequest;
use assetgen_common::budget::BudgetDay;
use assetgen_common::domain::BatchId;
use assetgen_common::model::{GeneratedImage, ImageModel, ImageRequest, ModelError};
use assetgen_common::reconcile;
use assetgen_common::store::{CountingStore, MemoryStore, ObjectStore, Precondition, StoreError, update_json};
use assetgen_common::sweep::Sweep;
use assetgen_common::testkit::{LiveRig, RecordingQueue, Rig, row, who};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// A live model that answers at once with a few bytes (drawing the placeholder costs time here).
#[derive(Debug)]
struct Tiny;

#[async_trait::async_trait]
impl ImageModel for Tiny {
    fn is_live(&self) -> bool {
        true
    }
    async fn generate(&self, _: &ImageRequest) -> Result<GeneratedImage, ModelError> {
        Ok(GeneratedImage::new("image/png", bytes::Bytes::from_static(b"\x89PNG tiny")))
    }
}

fn live_rig(store: Arc<dyn ObjectStore>) -> Rig {
    LiveRig::on(store).daily_limit_usd(1000).model(Arc::new(Tiny)).build()
}

fn live(rows: Vec<assetgen_common::api::RowRequest>) -> BatchRequest {
    BatchRequest { rows, run_mode: Some("live".into()), ..BatchRequest::default() }
}

/// Submits a one-row live batch as `user` and, if `finish`, delivers its message.
async fn batch_of(rig: &Rig, user: &str, finish: bool) -> BatchId {
    let before = rig.queue.published().len();
    let id = BatchId::parse(&rig.submit(user, live(vec![row("A", 1)])).await.batch_id).expect("id");
    if finish {
        for m in &rig.queue.published()[before..] {
            assert!(rig.pipeline.worker.process(m).await.expect("delivery").ack());
        }
    }
    id
}

async fn batch(rig: &Rig, finish: bool) -> BatchId {
    batch_of(rig, "artist@studio.test", finish).await
}

/// The index was built long ago: the sweep's migration pass is over.
async fn index_built_long_ago(store: &dyn ObjectStore) {
    let at =
        (OffsetDateTime::now_utc() - time::Duration::hours(2)).format(&time::format_description::well_known::Rfc3339);
    let body = format!(r#"{{"at":"{}"}}"#, at.expect("time"));
    store.put("sweep/open-index.json", body.into(), "application/json", Precondition::None).await.expect("put");
}

async fn assert_reconciles(store: &dyn ObjectStore) {
    let report = reconcile::check(store, OffsetDateTime::now_utc().date()).await.expect("check");
    assert!(report.is_clean(), "ledger check: {:#?}", report.differences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_reads_only_open_batches_whatever_the_batches_ever_run() {
    let counting = Arc::new(CountingStore::new(Arc::new(MemoryStore::new())));
    let store: Arc<dyn ObjectStore> = counting.clone();
    let rig = live_rig(store.clone());
    index_built_long_ago(store.as_ref()).await;
    for _ in 0..3 {
        batch(&rig, false).await;
    }
    let sweep = |rig: &Rig| Sweep { queue: Arc::new(RecordingQueue::default()), ..rig.pipeline.sweep.clone() };
    let measure = || async {
        let before = counting.calls().snapshot();
        let report = sweep(&rig).run().await.expect("sweep");
        let after = counting.calls().snapshot();
        let calls = (after.0 - before.0, after.1 - before.1, after.2 - before.2, after.3 - before.3);
        (report, calls)
    };
    let (report, open_only) = measure().await;
    assert_eq!(report.batches, 3);

    // Spread over many users (as in life), so no budget object grows to a thousand holds.
    let t = std::time::Instant::now();
    for i in 0..1_000 {
        batch_of(&rig, &format!("artist{}@studio.test", i % 50), true).await;
    }
    eprintln!("made in {:?}", t.elapsed());
    let (report, with_finished) = measure().await;
    eprintln!("swept at {:?}", t.elapsed());
    println!(
        "sweep store calls (gets, puts, lists, deletes): 3 open batches {open_only:?}; 3 open + 1,000 finished {with_finished:?}"
    );
    assert_eq!(report.batches, 3, "only the open batches are read: {report:?}");
    assert_eq!(open_only, with_finished, "finished batches cost the sweep nothing");
    assert_eq!(store.list("open/").await.expect("list").len(), 3, "finished batches left the index");
    assert_reconciles(store.as_ref()).await;
}

#[tokio::test]
async fn batches_from_before_the_index_are_indexed_and_finished_by_the_sweep() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let rig = live_rig(store.clone());
    // Before the index: a batch whose messages were lost, and one that ended but was never settled.
    let lost = batch(&rig, false).await;
    let unsettled = batch(&rig, true).await;
    let day = OffsetDateTime::now_utc().date();
    let user = who("artist@studio.test").user;
    update_json::<BudgetDay, StoreError, _>(store.as_ref(), &format!("budget/{day}/{user}.json"), |d| {
        let mut next = d.clone();
        next.batches.get_mut(&unsettled.to_string()).expect("hold").settled = None;
        Ok(Some(next))
    })
    .await
    .expect("unsettle");
    batch(&rig, true).await;
    for meta in store.list("open/").await.expect("list") {
        store.delete(&meta.name, Precondition::None).await.expect("delete");
    }
    assert!(store.list("sweep/").await.expect("list").is_empty(), "no index yet");

    let queue = Arc::new(RecordingQueue::default());
    let sweep = Sweep { queue: queue.clone(), queued_grace: Duration::ZERO, ..rig.pipeline.sweep.clone() };
    let report = sweep.run().await.expect("sweep");
    assert_eq!(report.migrated, 2, "the lost and the unsettled batch, not the finished one: {report:?}");
    assert_eq!(report.settled, 1, "{report:?}");
    assert_eq!(queue.published().iter().map(|m| m.batch_id.clone()).collect::<Vec<_>>(), vec![lost.clone()]);
    let open: Vec<String> = store.list("open/").await.expect("list").into_iter().map(|m| m.name).collect();
    assert_eq!(open, vec![format!("open/{lost}")], "only the batch still running stays open");

    // Its row runs, and the batch closes.
    for m in queue.published() {
        rig.pipeline.worker.process(&m).await.expect("delivery");
    }
    assert!(store.list("open/").await.expect("list").is_empty());
    let view = rig.pipeline.submitter.budget.view(&user, day).await.expect("view");
    assert!(view.reserved_usd == 0.0 && (view.spent_usd - 3.0 * 0.039).abs() < 1e-9, "{view:?}");
    assert_reconciles(store.as_ref()).await;
}
