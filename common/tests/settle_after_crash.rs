//! A row ended and the process died before its batch was settled: the next delivery of the row, or
//! the sweep, settles it, and the ledger reconciles. The "death" is a store that refuses every
//! budget write from the moment it is armed: the settlement is the first write after the row ends.

use assetgen_common::api::{BatchRequest, RowStatus};
use assetgen_common::budget::BudgetDay;
use assetgen_common::domain::{BatchId, Money};
use assetgen_common::generation::Delivery;
use assetgen_common::model::DryRunModel;
use assetgen_common::queue::RowMessage;
use assetgen_common::reconcile;
use assetgen_common::store::{MemoryStore, ObjectStore, StoreError, read_json};
use assetgen_common::testkit::{HookedStore, LiveRig, RecordingQueue, Rig, StoreCall, row, who};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use time::OffsetDateTime;

/// Passes every call through, except budget writes once `armed`: they fail as if the process had
/// died right before them.
fn dies_before_settling(inner: Arc<dyn ObjectStore>, armed: Arc<AtomicBool>) -> HookedStore {
    HookedStore::new(inner).before(move |call, name| {
        let dies = call == StoreCall::Put && armed.load(Ordering::SeqCst) && name.starts_with("budget/");
        async move { if dies { Err(StoreError::Unavailable("the process died here".into())) } else { Ok(()) } }
    })
}

fn deployment(store: Arc<dyn ObjectStore>) -> Rig {
    LiveRig::on(store).model(Arc::new(DryRunModel)).build()
}

/// A live batch of one row whose delivery ended the row and died settling. Returns the healthy
/// store under it, the batch, and its message.
async fn row_ended_unsettled() -> (Arc<dyn ObjectStore>, BatchId, RowMessage) {
    let healthy: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let armed = Arc::new(AtomicBool::new(false));
    let first = deployment(Arc::new(dies_before_settling(healthy.clone(), armed.clone())));
    let request = BatchRequest { rows: vec![row("A", 2)], run_mode: Some("live".into()), ..Default::default() };
    let id = BatchId::parse(&first.submit("artist@studio.test", request).await.batch_id).expect("id");
    let message = first.queue.published()[0].clone();
    armed.store(true, Ordering::SeqCst);
    first.pipeline.worker.process(&message).await.expect_err("died while settling");
    let state = assetgen_common::batch_view::load(healthy.as_ref(), &id).await.expect("batch");
    assert_eq!(state.rows[&0].1.status, RowStatus::Succeeded, "the row had ended");
    (healthy, id, message)
}

async fn assert_settled(store: &Arc<dyn ObjectStore>, rig: &Rig, id: &BatchId) {
    let day = OffsetDateTime::now_utc().date();
    let user = who("artist@studio.test").user;
    let stored: BudgetDay =
        read_json(store.as_ref(), &format!("budget/{day}/{user}.json")).await.expect("budget").value;
    assert_eq!(stored.batches[&id.to_string()].settled, Some(Money::from_micros(78_000)), "the hold is settled");
    let view = rig.pipeline.submitter.budget.view(&who("artist@studio.test").user, day).await.expect("view");
    assert!(view.reserved_usd == 0.0 && (view.spent_usd - 0.078).abs() < 1e-9, "settled: {view:?}");
    assert!(store.list("open/").await.expect("list").is_empty(), "closed");
    let report = reconcile::check(store.as_ref(), day).await.expect("check");
    assert!(report.is_clean(), "{:#?}", report.differences);
}

#[tokio::test]
async fn the_next_delivery_settles_a_batch_whose_settlement_died() {
    let (store, id, message) = row_ended_unsettled().await;
    let fresh = deployment(store.clone());
    assert_eq!(fresh.pipeline.worker.process(&message).await.expect("redelivery"), Delivery::AlreadyHandled);
    assert_settled(&store, &fresh, &id).await;
}

#[tokio::test]
async fn the_sweep_settles_a_batch_whose_settlement_died() {
    let (store, id, _) = row_ended_unsettled().await;
    let fresh = deployment(store.clone());
    let sweep =
        assetgen_common::sweep::Sweep { queue: Arc::new(RecordingQueue::default()), ..fresh.pipeline.sweep.clone() };
    let report = sweep.run().await.expect("sweep");
    assert_eq!(report.settled, 1, "{report:?}");
    assert_settled(&store, &fresh, &id).await;
    let again = sweep.run().await.expect("sweep");
    assert_eq!((again.batches, again.settled), (0, 0), "a closed batch is not read again: {id}");
}
