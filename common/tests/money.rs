//! Money on the local stack: concurrent reservations never exceed the limit, every image is paid
//! once, unmade images are released, retries and cancels settle, and the ledger reconciles.

use assetgen_common::api::{BatchRequest, BudgetView, RowStatus};
use assetgen_common::budget::Budget;
use assetgen_common::domain::{BatchId, Money};
use assetgen_common::generation::Delivery;
use assetgen_common::ledger::{self, EventKind};
use assetgen_common::problem::ErrorCode;
use assetgen_common::queue::RowMessage;
use assetgen_common::reconcile;
use assetgen_common::store::{FileStore, MemoryStore, ObjectStore};
use assetgen_common::testkit::{BlockingModel, LiveRig, Rig, daily_budget, row, who};
use std::sync::Arc;
use time::OffsetDateTime;

const PRICE: i64 = 39_000; // gemini-2.5-flash-image, per image

fn live(rows: Vec<assetgen_common::api::RowRequest>) -> BatchRequest {
    BatchRequest { rows, run_mode: Some("live".into()), ..BatchRequest::default() }
}

async fn deliver_all(rig: &Rig, messages: &[RowMessage]) {
    for m in messages {
        let d = rig.pipeline.worker.process(m).await.expect("no store error");
        assert!(d.ack(), "{d:?}");
    }
}

/// The test user's budget today.
async fn artists_day(rig: &Rig) -> BudgetView {
    rig.pipeline
        .submitter
        .budget
        .view(&who("artist@studio.test").user, OffsetDateTime::now_utc().date())
        .await
        .expect("view")
}

async fn assert_reconciles(store: &dyn ObjectStore) -> reconcile::CheckReport {
    let report = reconcile::check(store, OffsetDateTime::now_utc().date()).await.expect("check");
    assert!(report.is_clean(), "ledger check: {:#?}", report.differences);
    report
}

async fn sixty_concurrent_submits_never_reserve_past_the_limit(store: Arc<dyn ObjectStore>) {
    let rig = Arc::new(LiveRig::on(store.clone()).build());
    // 2 rows × 3 variants = 6 images = $0.234 a batch: 42 fit in $10, 60 do not.
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let rig = rig.clone();
            tokio::spawn(async move {
                let request = live(vec![row("A", 3), row("B", 3)]);
                rig.pipeline.submitter.submit(&who("artist@studio.test"), &request, "http://t", None).await
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(a) => accepted.push(a.batch_id),
            Err(p) => {
                assert_eq!(p.code, ErrorCode::BudgetExceeded, "every refusal is BUDGET_EXCEEDED: {p:?}");
                assert_eq!(p.status, 402);
                assert!(p.resets_at.is_some() && p.budget.is_some(), "says what is left and when it resets");
            }
        }
    }
    assert_eq!(accepted.len(), 42, "exactly as many as fit");
    let view = artists_day(&rig).await;
    assert!((view.reserved_usd - 42.0 * 0.234).abs() < 1e-9 && view.reserved_usd <= 10.0, "{view:?}");
    let manifests =
        store.list("batches/").await.expect("list").iter().filter(|m| m.name.ends_with("manifest.json")).count();
    assert_eq!(manifests, 42, "refused submits wrote nothing");
    assert_eq!(rig.queue.published().len(), 84, "and queued nothing");
    assert_reconciles(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_on_the_memory_store() {
    sixty_concurrent_submits_never_reserve_past_the_limit(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_on_the_file_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    sixty_concurrent_submits_never_reserve_past_the_limit(Arc::new(FileStore::open(dir.path()).expect("open"))).await;
}

#[tokio::test]
async fn stored_images_are_spent_blocked_ones_released_and_the_batch_settles() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let model = Arc::new(BlockingModel::default());
    model.block(["B"]);
    let rig = LiveRig::on(store.clone()).model(model).build();
    let accepted = rig.submit("artist@studio.test", live(vec![row("A", 2), row("B", 3)])).await;
    assert!((accepted.budget.reserved_usd - 0.195).abs() < 1e-9, "5 images held: {:?}", accepted.budget);
    let messages = rig.queue.published();
    deliver_all(&rig, &messages).await;
    // A duplicate delivery of each is absorbed: nothing paid twice.
    deliver_all(&rig, &messages).await;

    let report = assert_reconciles(store.as_ref()).await;
    assert_eq!((report.spent, report.released), (Money::from_micros(2 * PRICE), Money::from_micros(3 * PRICE)));
    let view = artists_day(&rig).await;
    assert!((view.spent_usd - 0.078).abs() < 1e-9 && view.reserved_usd == 0.0, "settled at what was spent: {view:?}");
}

#[tokio::test]
async fn an_idempotent_retry_returns_the_first_batch_and_holds_once() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let rig = Arc::new(LiveRig::on(store.clone()).build());
    let request = live(vec![row("A", 3)]);
    let submit = |key: &'static str, request: BatchRequest| {
        let rig = rig.clone();
        tokio::spawn(async move {
            rig.pipeline.submitter.submit(&who("artist@studio.test"), &request, "http://t", Some(key)).await
        })
    };
    let (a, b) = (submit("k-1", request.clone()), submit("k-1", request.clone()));
    let (a, b) = (a.await.expect("join").expect("first"), b.await.expect("join").expect("second"));
    assert_eq!(a.batch_id, b.batch_id, "the same batch");
    let view = artists_day(&rig).await;
    assert!((view.reserved_usd - 0.117).abs() < 1e-9, "held once: {view:?}");
    let reused = submit("k-1", live(vec![row("Z", 1)])).await.expect("join").expect_err("another request");
    assert_eq!(reused.code, ErrorCode::IdempotencyKeyReused);
    deliver_all(&rig, &rig.queue.published()).await; // duplicates included
    assert_reconciles(store.as_ref()).await;
}

#[tokio::test]
async fn a_retry_holds_again_pays_only_missing_images_and_reconciles() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let model = Arc::new(BlockingModel::default());
    model.block(["B"]);
    let rig = LiveRig::on(store.clone()).model(model.clone()).build();
    let id = BatchId::parse(&rig.submit("artist@studio.test", live(vec![row("A", 1), row("B", 2)])).await.batch_id)
        .expect("id");
    deliver_all(&rig, &rig.queue.published()).await;
    model.unblock_all();

    let outcome = rig.pipeline.control.retry(&id).await.expect("retry");
    assert_eq!(outcome.rows, vec![1]);
    assert!((outcome.reserved_usd - 0.078).abs() < 1e-9, "holds the two missing images");
    let again = rig.pipeline.control.retry(&id).await.expect_err("nothing failed now");
    assert_eq!(again.code, ErrorCode::NothingToRetry);
    let retried: Vec<RowMessage> = rig.queue.published().into_iter().filter(|m| m.row == 1).collect();
    deliver_all(&rig, &retried).await;

    let report = assert_reconciles(store.as_ref()).await;
    assert_eq!(report.spent, Money::from_micros(3 * PRICE), "three images, each paid once");
    let events = ledger::events_of_batch(store.as_ref(), OffsetDateTime::now_utc().date(), &id).await.expect("events");
    assert_eq!(events.iter().filter(|e| e.kind == EventKind::Reserve).count(), 2, "submit and retry rounds");
}

#[tokio::test]
async fn cancel_stops_queued_rows_and_frees_their_money() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let rig = LiveRig::on(store.clone()).build();
    let id = BatchId::parse(
        &rig.submit("artist@studio.test", live(vec![row("A", 2), row("B", 2), row("C", 2)])).await.batch_id,
    )
    .expect("id");
    let messages = rig.queue.published();
    deliver_all(&rig, &messages[..1]).await;
    let outcome = rig.pipeline.control.cancel(&id).await.expect("cancel");
    assert_eq!(outcome.rows, vec![1, 2]);
    // Their messages arrive later and find nothing to do.
    for m in &messages[1..] {
        assert_eq!(rig.pipeline.worker.process(m).await.expect("ok"), Delivery::AlreadyHandled);
    }
    let report = assert_reconciles(store.as_ref()).await;
    assert_eq!((report.spent, report.released), (Money::from_micros(2 * PRICE), Money::from_micros(4 * PRICE)));
    let view = artists_day(&rig).await;
    assert!((view.remaining_usd - (10.0 - 0.078)).abs() < 1e-9, "{view:?}");
}

#[tokio::test]
async fn the_check_finds_an_image_nobody_paid_for_and_a_wrong_settlement() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let rig = LiveRig::on(store.clone()).build();
    let accepted = rig.submit("artist@studio.test", live(vec![row("A", 1)])).await;
    deliver_all(&rig, &rig.queue.published()).await;
    assert_reconciles(store.as_ref()).await;
    let id = BatchId::parse(&accepted.batch_id).expect("id");
    store
        .put(
            &format!("images/{id}/A-v2.png"),
            bytes::Bytes::from_static(b"\x89PNG"),
            "image/png",
            assetgen_common::store::Precondition::None,
        )
        .await
        .expect("put");
    let b = daily_budget(&store, 10);
    b.settle(&who("artist@studio.test").user, OffsetDateTime::now_utc().date(), &id, Money::from_micros(1))
        .await
        .expect("settle");
    let report = reconcile::check(store.as_ref(), OffsetDateTime::now_utc().date()).await.expect("check");
    assert_eq!(report.differences.len(), 2, "{:#?}", report.differences);
    assert!(report.differences.iter().any(|d| d.contains("never paid for")));
    assert!(report.differences.iter().any(|d| d.contains("settled at")));
}

#[tokio::test]
async fn dry_runs_never_touch_money() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let rig = LiveRig::on(store.clone()).build();
    rig.submit_rows(vec![row("A", 3)]).await;
    deliver_all(&rig, &rig.queue.published()).await;
    assert!(store.list("budget/").await.expect("list").is_empty());
    assert!(store.list("ledger/").await.expect("list").is_empty());
    let s = rig.pipeline.worker.process(&rig.queue.published()[0]).await.expect("ok");
    assert_eq!(s, Delivery::AlreadyHandled);
    let _ = RowStatus::Succeeded;
}

#[tokio::test]
async fn a_crash_between_paying_and_recording_is_not_paid_twice() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let rig = LiveRig::on(store.clone()).build();
    let accepted = rig.submit("artist@studio.test", live(vec![row("A", 2)])).await;
    let id = BatchId::parse(&accepted.batch_id).expect("id");
    let manifest = assetgen_common::batch_view::load_manifest(store.as_ref(), &id).await.expect("manifest");
    // A delivery stored variant 1 and wrote its spend event, then died before its state write.
    let scene = assetgen_common::domain::SceneId::parse("A").expect("scene");
    store
        .put(
            &assetgen_common::layout::image(&id, &scene, 1),
            bytes::Bytes::from_static(b"\x89PNG crashed"),
            "image/png",
            assetgen_common::store::Precondition::None,
        )
        .await
        .expect("put");
    let state = assetgen_common::state::RowState::queued(id.clone(), 0, scene, OffsetDateTime::now_utc());
    let settlement = rig.pipeline.control.settlement.clone();
    settlement.spend(&manifest, &state, 1).await.expect("spend");

    deliver_all(&rig, &rig.queue.published()).await;
    let report = assert_reconciles(store.as_ref()).await;
    assert_eq!(report.spent, Money::from_micros(2 * PRICE), "two images, each paid once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_on_fake_gcs_server() {
    let gcs = assetgen_common::testkit::FakeGcs::start().await;
    sixty_concurrent_submits_never_reserve_past_the_limit(Arc::new(gcs.store().await)).await;
}
