//! A batch is charged the price it was accepted at: the price table may change between submit and
//! generation (a new deployment, a new price), and the rows of a batch accepted before still cost
//! what its estimate and its hold said.

use assetgen_common::api::{BatchRequest, RowStatus};
use assetgen_common::cost::{DEFAULT_MODEL, PriceTable};
use assetgen_common::domain::{BatchId, Money};
use assetgen_common::generation::Delivery;
use assetgen_common::ledger::{self, EventKind};
use assetgen_common::reconcile;
use assetgen_common::store::{MemoryStore, ObjectStore};
use assetgen_common::testkit::{BlockingModel, LiveRig, Rig, row, who};
use std::sync::Arc;
use time::OffsetDateTime;

/// A deployment on `store` whose table prices the default model at `per_image` micro-dollars.
fn deployment(store: &Arc<dyn ObjectStore>, model: &Arc<BlockingModel>, per_image: i64) -> Rig {
    LiveRig::on(store.clone())
        .model(model.clone())
        .tune(move |p| p.prices = PriceTable::default().with(DEFAULT_MODEL, Money::from_micros(per_image)))
        .build()
}

#[tokio::test]
async fn rows_and_retries_are_charged_the_price_the_batch_was_accepted_at() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let model = Arc::new(BlockingModel::default());
    model.block(["B"]);
    let before = deployment(&store, &model, 39_000);
    let request =
        BatchRequest { rows: vec![row("A", 2), row("B", 1)], run_mode: Some("live".into()), ..Default::default() };
    let accepted = before.submit("artist@studio.test", request).await;
    assert!((accepted.estimate.usd - 0.117).abs() < 1e-9);
    let id = BatchId::parse(&accepted.batch_id).expect("id");

    // The table changes (a new revision is deployed) before any row is generated.
    let after = deployment(&store, &model, 50_000);
    for m in before.queue.published() {
        assert!(after.pipeline.worker.process(&m).await.expect("delivery").ack());
    }
    model.unblock_all();
    let retry = after.pipeline.control.retry(&id).await.expect("retry");
    assert!((retry.reserved_usd - 0.039).abs() < 1e-9, "the retry holds at the accepted price: {retry:?}");
    let retried = after.queue.published();
    assert_eq!(retried.len(), 1);
    assert_eq!(
        after.pipeline.worker.process(&retried[0]).await.expect("delivery"),
        Delivery::Finished(RowStatus::Succeeded)
    );

    let day = OffsetDateTime::now_utc().date();
    let events = ledger::events_of_batch(store.as_ref(), day, &id).await.expect("events");
    for kind in [EventKind::Spend, EventKind::Release] {
        for e in events.iter().filter(|e| e.kind == kind) {
            assert_eq!(e.amount, Money::from_micros(39_000), "{} at the accepted price", e.id());
        }
    }
    assert_eq!(ledger::total(&events, EventKind::Spend), Money::from_micros(3 * 39_000));
    let view = after.pipeline.submitter.budget.view(&who("artist@studio.test").user, day).await.expect("view");
    assert!((view.spent_usd - 0.117).abs() < 1e-9 && view.reserved_usd == 0.0, "{view:?}");
    let report = reconcile::check(store.as_ref(), day).await.expect("check");
    assert!(report.is_clean(), "{:#?}", report.differences);
}
