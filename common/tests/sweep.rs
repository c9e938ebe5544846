//! Nothing stuck: the sweep republishes rows no message will finish, settles what ended unsettled,
//! and frees holds of batches that were never written; the local queue's journal survives a restart.

use assetgen_common::api::RowStatus;
use assetgen_common::budget::{Budget, BudgetDay};
use assetgen_common::domain::{BatchId, Money};
use assetgen_common::generation::Delivery;
use assetgen_common::layout;
use assetgen_common::model::DryRunModel;
use assetgen_common::queue::{LocalPushConfig, LocalPushQueue, PushEnvelope, RowMessage, RowQueue};
use assetgen_common::state::{Lease, RowState};
use assetgen_common::store::{MemoryStore, ObjectStore, StoreError, read_json, update_json};
use assetgen_common::sweep::Sweep;
use assetgen_common::testkit::{RecordingQueue, Rig, daily_budget, row, who};
use axum::body::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

fn sweep_of(rig: &Rig, queue: Arc<RecordingQueue>) -> Sweep {
    Sweep { queue, queued_grace: Duration::ZERO, ..rig.pipeline.sweep.clone() }
}

async fn set_state(store: &dyn ObjectStore, batch: &BatchId, row: u32, change: impl Fn(&mut RowState)) {
    update_json::<RowState, StoreError, _>(store, &layout::row_state(batch, row), |s| {
        let mut next = s.clone();
        change(&mut next);
        Ok(Some(next))
    })
    .await
    .expect("state write");
}

#[tokio::test]
async fn rows_written_but_never_published_or_abandoned_are_published_again() {
    let rig = Rig::new(|_| {});
    let batch = rig.submit_rows(vec![row("A", 1), row("B", 1), row("C", 1), row("D", 1)]).await;
    rig.pipeline.worker.process(&rig.queue.published()[0]).await.expect("row 0 done");
    let past = OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let future = OffsetDateTime::now_utc() + time::Duration::minutes(5);
    // Row 1: a delivery died holding it. Row 2: a delivery is working on it right now.
    set_state(rig.store.as_ref(), &batch, 1, |s| {
        s.status = RowStatus::Running;
        s.lease = Some(Lease { holder: "dead".into(), until: past });
    })
    .await;
    set_state(rig.store.as_ref(), &batch, 2, |s| {
        s.status = RowStatus::Running;
        s.lease = Some(Lease { holder: "alive".into(), until: future });
    })
    .await;
    // Row 3 is queued and (with no grace) counts as forgotten: submit died before publishing.
    let fresh = Arc::new(RecordingQueue::default());
    let report = sweep_of(&rig, fresh.clone()).run().await.expect("sweep");
    let rows: Vec<u32> = fresh.published().iter().map(|m| m.row).collect();
    assert_eq!(rows, vec![1, 3], "the abandoned and the forgotten row, not the done or the live one");
    assert_eq!(report.republished, 2);
    for m in fresh.published() {
        assert!(rig.pipeline.worker.process(&m).await.expect("process").ack());
    }
}

#[tokio::test]
async fn a_queued_row_within_its_grace_is_left_to_its_message() {
    let rig = Rig::new(|_| {});
    rig.submit_rows(vec![row("A", 1)]).await;
    let fresh = Arc::new(RecordingQueue::default());
    let sweep = Sweep { queue: fresh.clone(), queued_grace: Duration::from_secs(600), ..rig.pipeline.sweep.clone() };
    assert_eq!(sweep.run().await.expect("sweep").republished, 0);
}

#[tokio::test]
async fn a_row_state_not_written_yet_is_left_to_its_submit_within_the_grace_and_published_after() {
    let rig = Rig::new(|_| {});
    let batch = rig.submit_rows(vec![row("A", 1), row("B", 1)]).await;
    rig.pipeline.worker.process(&rig.queue.published()[0]).await.expect("row 0 done");
    // As the sweep sees a submit that has written the manifest and row 0's state, not yet row 1's
    // (or one that died there).
    let name = layout::row_state(&batch, 1);
    rig.store.delete(&name, assetgen_common::store::Precondition::None).await.expect("delete");
    let within = Arc::new(RecordingQueue::default());
    let sweep = Sweep { queue: within.clone(), queued_grace: Duration::from_secs(600), ..rig.pipeline.sweep.clone() };
    assert_eq!(sweep.run().await.expect("sweep").republished, 0, "the submit may still write it");
    assert!(within.published().is_empty());
    let after = Arc::new(RecordingQueue::default());
    assert_eq!(sweep_of(&rig, after.clone()).run().await.expect("sweep").republished, 1);
    assert_eq!(after.published().iter().map(|m| m.row).collect::<Vec<_>>(), vec![1], "its submit died: published");
}

#[tokio::test]
async fn ended_batches_are_settled_and_orphan_holds_freed() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let budget = daily_budget(&store, 10);
    let b = budget.clone();
    let rig = Rig::on(store.clone(), move |p| {
        p.budget = b;
        p.live = Some(Arc::new(DryRunModel));
    });
    let request = assetgen_common::api::BatchRequest {
        rows: vec![row("A", 2)],
        run_mode: Some("live".into()),
        ..Default::default()
    };
    let accepted = rig.submit("artist@studio.test", request).await;
    let batch = BatchId::parse(&accepted.batch_id).expect("id");
    let day = OffsetDateTime::now_utc().date();
    let user = who("artist@studio.test").user;
    // A hold for a batch whose submit died before writing anything else.
    let orphan = BatchId::new();
    budget.reserve(&user, day, &orphan, Money::from_micros(39_000)).await.expect("reserve");
    // The row finished, but the process died before settling the batch.
    for m in rig.queue.published() {
        rig.pipeline.worker.process(&m).await.expect("process");
    }
    let name = format!("budget/{day}/{user}.json");
    update_json::<BudgetDay, StoreError, _>(store.as_ref(), &name, |d| {
        let mut next = d.clone();
        next.batches.get_mut(&batch.to_string()).expect("hold").settled = None;
        Ok(Some(next))
    })
    .await
    .expect("unsettle");

    let report = sweep_of(&rig, Arc::new(RecordingQueue::default())).run().await.expect("sweep");
    assert_eq!((report.settled, report.orphan_holds_freed), (1, 1));
    let stored: BudgetDay = read_json(store.as_ref(), &name).await.expect("budget").value;
    assert_eq!(stored.batches[&batch.to_string()].settled, Some(Money::from_micros(78_000)));
    assert_eq!(stored.batches[&orphan.to_string()].settled, Some(Money::ZERO));
    let view = budget.view(&user, day).await.expect("view");
    assert!((view.remaining_usd - (10.0 - 0.078)).abs() < 1e-9, "{view:?}");
}

#[tokio::test]
async fn journaled_messages_are_delivered_after_a_restart() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    // The first process publishes into a push endpoint that never answers, then "dies".
    let dead = url::Url::parse("http://127.0.0.1:9/").expect("url");
    let mut config = LocalPushConfig::for_base(&dead).expect("config");
    config.min_backoff = Duration::from_secs(3600);
    let first = LocalPushQueue::journaled(config, store.clone());
    let batch = BatchId::new();
    let messages: Vec<RowMessage> = (0..3).map(|row| RowMessage { batch_id: batch.clone(), row }).collect();
    first.publish(&messages).await.expect("publish");
    assert_eq!(store.list("queue/local/").await.expect("list").len(), 3, "journaled before delivery");

    // The restarted process has a working endpoint and resumes the journal.
    let got: Arc<Mutex<Vec<u32>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/pubsub/rows",
        axum::routing::post(move |body: Bytes| {
            let seen = seen.clone();
            async move {
                let row = PushEnvelope::parse(&body).expect("envelope").row_message().expect("row").row;
                seen.lock().expect("lock").push(row);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = url::Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let second = LocalPushQueue::journaled(LocalPushConfig::for_base(&base).expect("config"), store.clone());
    assert_eq!(second.resume().await.expect("resume"), 3);
    tokio::time::timeout(Duration::from_secs(10), second.wait_idle()).await.expect("delivered");
    let mut rows = got.lock().expect("lock").clone();
    rows.sort_unstable();
    assert_eq!(rows, vec![0, 1, 2]);
    assert!(store.list("queue/local/").await.expect("list").is_empty(), "acked messages leave the journal");
}

#[tokio::test]
async fn a_row_whose_holder_died_after_its_duplicate_was_acked_is_finished_by_the_sweep() {
    let rig = Rig::new(|p| p.lease_ttl = Duration::from_millis(300));
    let batch = rig.submit_rows(vec![row("A", 2)]).await;
    let message = rig.queue.published()[0].clone();
    // A delivery took the row and died (its lease runs out on its own).
    set_state(rig.store.as_ref(), &batch, 0, |s| {
        s.status = RowStatus::Running;
        s.lease =
            Some(Lease { holder: "dies".into(), until: OffsetDateTime::now_utc() + time::Duration::milliseconds(300) });
    })
    .await;
    // Its duplicate found the row busy and was acknowledged: no message is left for the row.
    let busy = rig.pipeline.worker.process(&message).await.expect("process");
    assert_eq!(busy, Delivery::Busy);
    assert!(busy.ack());
    let fresh = Arc::new(RecordingQueue::default());
    let sweep = sweep_of(&rig, fresh.clone());
    assert_eq!(sweep.republish_abandoned().await.expect("sweep"), 0, "the lease still holds");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sweep.republish_abandoned().await.expect("sweep"), 1, "the lease expired");
    assert_eq!(fresh.published(), vec![message.clone()]);
    let done = rig.pipeline.worker.process(&fresh.published()[0]).await.expect("process");
    assert_eq!(done, Delivery::Finished(RowStatus::Succeeded));
    let state: RowState = read_json(rig.store.as_ref(), &layout::row_state(&batch, 0)).await.expect("state").value;
    assert_eq!(state.variants.len(), 2);
    assert_eq!(sweep.republish_abandoned().await.expect("sweep"), 0, "nothing left");
}
