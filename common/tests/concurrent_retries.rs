//! Retries racing each other hold the money for each failed row once between them, and a retry
//! racing the settlement of the batch's end never leaves the retried rows running unheld.

use assetgen_common::api::{BatchRequest, RowStatus};
use assetgen_common::budget::BudgetDay;
use assetgen_common::domain::{BatchId, Money};
use assetgen_common::idempotent_control::ControlOp;
use assetgen_common::ledger::{self, EventKind};
use assetgen_common::open_index::{self, OpenMarker};
use assetgen_common::problem::ErrorCode;
use assetgen_common::reconcile;
use assetgen_common::store::{MemoryStore, ObjectStore, StoreError, update_json};
use assetgen_common::testkit::{BlockingModel, Gate, HookedStore, LiveRig, Rig, row, who};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

const PRICE: i64 = 39_000;

/// A live batch of rows A (1 image), B (2) and C (3), of which B and C failed; the model now
/// works for every scene.
async fn batch_with_failed_rows() -> (Arc<Rig>, BatchId) {
    // Every call takes a moment, as on a real store, so concurrent requests interleave.
    batch_with_failed_rows_on(Arc::new(
        HookedStore::new(Arc::new(MemoryStore::new())).sluggish(Duration::from_millis(2)),
    ))
    .await
}

async fn batch_with_failed_rows_on(store: Arc<dyn ObjectStore>) -> (Arc<Rig>, BatchId) {
    let model = Arc::new(BlockingModel::default());
    model.block(["B", "C"]);
    let rig = LiveRig::on(store).model(model.clone()).build();
    let request = BatchRequest {
        rows: vec![row("A", 1), row("B", 2), row("C", 3)],
        run_mode: Some("live".into()),
        ..Default::default()
    };
    let id = BatchId::parse(&rig.submit("artist@studio.test", request).await.batch_id).expect("id");
    for m in rig.queue.published() {
        rig.pipeline.worker.process(&m).await.expect("delivery");
    }
    model.unblock_all();
    (Arc::new(rig), id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_hold_the_money_once() {
    let (rig, id) = batch_with_failed_rows().await;
    let published_before = rig.queue.published().len();
    let retries: Vec<_> = (0..8)
        .map(|_| {
            let (rig, id) = (rig.clone(), id.clone());
            tokio::spawn(async move { rig.pipeline.control.retry(&id).await })
        })
        .collect();
    let mut rows = Vec::new();
    let mut held = 0.0;
    for r in retries {
        match r.await.expect("join") {
            Ok(outcome) => {
                rows.extend(outcome.rows);
                held += outcome.reserved_usd;
            }
            Err(p) => assert_eq!(p.code, ErrorCode::NothingToRetry, "{p:?}"),
        }
    }
    rows.sort_unstable();
    assert_eq!(rows, vec![1, 2], "each failed row queued by exactly one retry");
    assert!((held - 0.195).abs() < 1e-9, "5 missing images held once between them, not {held}");
    let day = OffsetDateTime::now_utc().date();
    let events = ledger::events_of_batch(rig.store.as_ref(), day, &id).await.expect("events");
    let reserves: Money = events.iter().filter(|e| e.kind == EventKind::Reserve && e.round > 0).map(|e| e.amount).sum();
    assert_eq!(reserves, Money::from_micros(5 * PRICE), "retry rounds in the ledger: {events:#?}");
    let view = rig.pipeline.submitter.budget.view(&who("artist@studio.test").user, day).await.expect("view");
    assert!((view.reserved_usd - 0.195).abs() < 1e-9, "{view:?}");

    let retried = rig.queue.published()[published_before..].to_vec();
    assert_eq!(retried.len(), 2, "each retried row published once");
    for m in &retried {
        assert!(rig.pipeline.worker.process(m).await.expect("delivery").ack());
    }
    let view = rig.pipeline.submitter.budget.view(&who("artist@studio.test").user, day).await.expect("view");
    assert!(view.reserved_usd == 0.0 && (view.spent_usd - 6.0 * 0.039).abs() < 1e-9, "{view:?}");
    let report = reconcile::check(rig.store.as_ref(), day).await.expect("check");
    assert!(report.is_clean(), "{:#?}", report.differences);
}

/// A late duplicate of an ended row settles the batch (its first settlement had died) just as a
/// retry reopens it: the duplicate saw every row ended, and its budget write lands after the
/// retry's hold. The retried rows must stay held while they run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_racing_the_batch_end_keeps_its_rows_held() {
    let gate = Arc::new(Gate::default());
    // Once armed, the next budget write waits until the test lets it through.
    let store = HookedStore::new(Arc::new(MemoryStore::new())).gate_puts("budget/", gate.clone());
    let (rig, id) = batch_with_failed_rows_on(Arc::new(store)).await;
    let day = OffsetDateTime::now_utc().date();
    let user = who("artist@studio.test").user;
    update_json::<BudgetDay, StoreError, _>(rig.store.as_ref(), &format!("budget/{day}/{user}.json"), |d| {
        let mut next = d.clone();
        next.batches.get_mut(&id.to_string()).expect("hold").settled = None;
        Ok(Some(next))
    })
    .await
    .expect("the first settlement died");
    // …so the batch is still in the index of open batches.
    open_index::open(rig.store.as_ref(), &OpenMarker::new(id.clone(), user.clone(), day)).await.expect("open");

    let let_go = gate.arm();
    let duplicate = {
        let (rig, ended) = (rig.clone(), rig.queue.published()[0].clone());
        tokio::spawn(async move { rig.pipeline.worker.process(&ended).await })
    };
    gate.arrived().await;
    let outcome = rig.pipeline.control.retry(&id).await.expect("retry");
    assert_eq!(outcome.rows, vec![1, 2]);
    let _ = let_go.send(());
    duplicate.await.expect("join").expect("duplicate");

    let view = rig.pipeline.submitter.budget.view(&user, day).await.expect("view");
    // At least the retried rows' 5 images (the first round's unspent part stays held too, until a
    // settlement closes the batch: its first one died).
    assert!(view.reserved_usd >= 0.195 - 1e-9, "the retried rows are held while they run: {view:?}");
    let published = rig.queue.published();
    for m in &published[published.len() - 2..] {
        assert!(rig.pipeline.worker.process(m).await.expect("delivery").ack());
    }
    let state = assetgen_common::batch_view::load(rig.store.as_ref(), &id).await.expect("batch");
    assert!(state.rows.values().all(|(_, s)| s.status == RowStatus::Succeeded));
    let view = rig.pipeline.submitter.budget.view(&user, day).await.expect("view");
    assert!(view.reserved_usd == 0.0 && (view.spent_usd - 6.0 * 0.039).abs() < 1e-9, "{view:?}");
    let report = reconcile::check(rig.store.as_ref(), day).await.expect("check");
    assert!(report.is_clean(), "{:#?}", report.differences);
}

/// With an `Idempotency-Key`, retries sent again — at the same time or later — all get the first
/// one's answer, and hold the money once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_retries_repeated_get_the_first_answer() {
    let (rig, id) = batch_with_failed_rows().await;
    let keyed: Vec<_> = (0..4)
        .map(|_| {
            let (rig, id) = (rig.clone(), id.clone());
            tokio::spawn(async move { rig.pipeline.control.once(ControlOp::Retry, &id, Some("click-7")).await })
        })
        .collect();
    let mut answers = Vec::new();
    for r in keyed {
        answers.push(r.await.expect("join").expect("the keyed retry's answer"));
    }
    assert_eq!(answers[0].rows, vec![1, 2]);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:#?}");
    let later = rig.pipeline.control.once(ControlOp::Retry, &id, Some("click-7")).await.expect("later");
    assert_eq!(later, answers[0]);
    let unkeyed = rig.pipeline.control.once(ControlOp::Retry, &id, None).await.expect_err("nothing failed now");
    assert_eq!(unkeyed.code, ErrorCode::NothingToRetry);
    let day = OffsetDateTime::now_utc().date();
    let view = rig.pipeline.submitter.budget.view(&who("artist@studio.test").user, day).await.expect("view");
    assert!((view.reserved_usd - 0.195).abs() < 1e-9, "held once: {view:?}");
}
