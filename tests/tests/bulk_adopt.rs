//! Google accepted a bulk job and generate died before recording its name in
//! `batches/{id}/bulk/{seq}.json`: the next attempt finds the job at Google by its display name
//! (`GET /v1beta/batches`, paged) and adopts it. One job at Google, so one bill; the rows finish and
//! the ledger reconciles to the cent. Rows queued while the job sat in preparing are not counted in
//! the adopted job (Google has no requests for them): they go into the next job.

use assetgen_common::api::{BatchRequest, RowStatus};
use assetgen_common::bulk::BulkState;
use assetgen_common::config::Secret;
use assetgen_common::domain::BatchId;
use assetgen_common::model::{GeminiBatchApi, GeminiModel, GeminiTimeouts};
use assetgen_common::reconcile;
use assetgen_common::store::{MemoryStore, ObjectStore, StoreError};
use assetgen_common::testkit::{HookedStore, LiveRig, StoreCall, row, who};
use assetgen_tests::bulk_stub::{BulkOutcome, BulkStub, BulkStubConfig, LIST_PAGE, serve_bulk_gemini};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Half of gemini-2.5-flash-image's $0.039.
const BULK_PRICE_USD: f64 = 0.0195;

/// Gemini's Batch API as the developer backend speaks it, against a stub whose jobs succeed after
/// two polls.
async fn batch_api_on_a_stub() -> (BulkStub, Arc<GeminiBatchApi>) {
    let config = BulkStubConfig {
        polls_before_end: 2,
        outcome: BulkOutcome::Succeed,
        fail_marker: String::new(),
        results_as_file: false,
    };
    let stub = serve_bulk_gemini(config).await.expect("stub");
    let base = url::Url::parse(&stub.base).expect("url");
    let model = GeminiModel::developer(Secret::new("test-key"), Some(base), GeminiTimeouts::default()).expect("model");
    (stub, Arc::new(GeminiBatchApi::new(model).expect("developer api")))
}

/// Passes every call through, except the first write of a bulk job's object once Google holds more
/// than `after` jobs: it fails as if the process had died between Google's answer and recording it.
fn dies_after_google_accepts(inner: Arc<dyn ObjectStore>, stub: BulkStub, after: Arc<AtomicUsize>) -> HookedStore {
    let died = Arc::new(AtomicBool::new(false));
    HookedStore::new(inner).before(move |call, name| {
        let dies = call == StoreCall::Put
            && name.contains("/bulk/")
            && stub.jobs().len() > after.load(Ordering::SeqCst)
            && !died.swap(true, Ordering::SeqCst);
        async move { if dies { Err(StoreError::Unavailable("the process died here".into())) } else { Ok(()) } }
    })
}

#[tokio::test]
async fn a_job_google_accepted_but_we_did_not_record_is_adopted_not_submitted_again() {
    let (stub, api) = batch_api_on_a_stub().await;
    let healthy: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let after = Arc::new(AtomicUsize::new(usize::MAX));
    let store: Arc<dyn ObjectStore> = Arc::new(dies_after_google_accepts(healthy.clone(), stub.clone(), after.clone()));
    let lease = Duration::from_millis(300);
    let rig = LiveRig::on(store)
        .tune(move |p| {
            p.batch_api = Some(api);
            p.lease_ttl = lease;
        })
        .build();

    // Other jobs at Google first, so the one to adopt is past the first page of the list.
    for n in 0..LIST_PAGE {
        let other = BatchRequest {
            rows: vec![row(&format!("OTHER-{n}"), 1)],
            run_mode: Some("bulk".into()),
            ..Default::default()
        };
        rig.submit("artist@studio.test", other).await;
        let message = rig.queue.published().pop().expect("a message");
        rig.pipeline.worker.process(&message).await.expect("another batch's job");
    }
    assert_eq!(stub.jobs().len(), LIST_PAGE);

    let request =
        BatchRequest { rows: vec![row("A", 1), row("B", 2)], run_mode: Some("bulk".into()), ..Default::default() };
    let id = BatchId::parse(&rig.submit("artist@studio.test", request).await.batch_id).expect("id");
    let message = rig.queue.published().pop().expect("a message of the batch");

    // The first delivery reaches Google, then dies before the job's name is stored.
    after.store(LIST_PAGE, Ordering::SeqCst);
    rig.pipeline.worker.process(&message).await.expect_err("died after Google accepted the job");
    assert_eq!(stub.jobs().len(), 1 + LIST_PAGE, "Google holds the job");

    // Once the dead preparer's lease is over, the poller takes the job over and ends it.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let day = OffsetDateTime::now_utc().date();
    let user = who("artist@studio.test").user;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        rig.pipeline.sweep.poll_bulk().await.expect("poll");
        let batch = assetgen_common::batch_view::load(healthy.as_ref(), &id).await.expect("batch");
        let budget = rig.pipeline.submitter.budget.view(&user, day).await.expect("budget");
        if batch.rows.values().all(|(_, s)| s.status.is_terminal()) && budget.reserved_usd == 0.0 {
            assert!(batch.rows.values().all(|(_, s)| s.status == RowStatus::Succeeded), "{:?}", batch.rows);
            break;
        }
        assert!(Instant::now() < deadline, "the batches never ended: {:?} {budget:?}", batch.rows);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ours: Vec<_> = stub.jobs().into_iter().filter(|j| j.display_name.contains(&id.to_string())).collect();
    assert_eq!(ours.len(), 1, "one job at Google for the batch, so one bill: {ours:?}");
    assert_eq!(ours[0].requests.len(), 3);
    assert!(stub.received().iter().any(|r| r.path.contains("pageToken=")), "the list was followed past a page");

    // Every image paid once at the bulk price (ours three, the others' one each), and the ledger
    // reconciles (what `assetgen ledger check` runs).
    let view = rig.pipeline.submitter.budget.view(&user, day).await.expect("budget");
    let images = 3 + LIST_PAGE;
    assert!((view.spent_usd - images as f64 * BULK_PRICE_USD).abs() < 1e-9, "{view:?}");
    let report = reconcile::check(healthy.as_ref(), day).await.expect("check");
    assert!(report.is_clean(), "{:#?}", report.differences);
}

/// Fails the first write of row 2's state (submit dies there, before publishing anything) and,
/// once Google holds a job, the first write of a bulk job's object (its preparer dies between
/// Google's answer and recording it).
fn submit_and_preparer_die(inner: Arc<dyn ObjectStore>, stub: BulkStub) -> HookedStore {
    let row_died = Arc::new(AtomicBool::new(false));
    let job_died = Arc::new(AtomicBool::new(false));
    HookedStore::new(inner).before(move |call, name| {
        let row_dies =
            call == StoreCall::Put && name.ends_with("/rows/0002.json") && !row_died.swap(true, Ordering::SeqCst);
        let job_dies = call == StoreCall::Put
            && name.contains("/bulk/")
            && !stub.jobs().is_empty()
            && !job_died.swap(true, Ordering::SeqCst);
        async move {
            if row_dies || job_dies { Err(StoreError::Unavailable("the process died here".into())) } else { Ok(()) }
        }
    })
}

#[tokio::test]
async fn rows_queued_while_a_job_sat_in_preparing_go_into_the_next_job_when_it_is_taken_over() {
    let (stub, api) = batch_api_on_a_stub().await;
    let healthy: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let store: Arc<dyn ObjectStore> = Arc::new(submit_and_preparer_die(healthy.clone(), stub.clone()));
    let lease = Duration::from_millis(300);
    let rig = LiveRig::on(store)
        .tune(move |p| {
            p.batch_api = Some(api);
            p.lease_ttl = lease;
        })
        .build();
    let user = "artist@studio.test";
    let request = BatchRequest {
        rows: vec![row("A", 1), row("B", 2), row("C", 1)],
        run_mode: Some("bulk".into()),
        ..Default::default()
    };

    // Submit dies writing row 2's state: the batch is held and its first rows are there, nothing is
    // published. The poller starts a job for the rows there are; Google accepts it; its preparer
    // dies before recording it, so the job stays in preparing.
    let submitter = &rig.pipeline.submitter;
    submitter.submit(&who(user), &request, "http://test", Some("sheet-click-1")).await.expect_err("submit died");
    assert!(rig.queue.published().is_empty());
    rig.pipeline.sweep.poll_bulk().await.expect("poll");
    let first = stub.jobs();
    assert_eq!(first.len(), 1, "Google holds the job of rows 0 and 1");
    let keys =
        |job: &assetgen_tests::bulk_stub::StubJob| job.requests.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&first[0]), ["r0000-v1", "r0001-v1", "r0001-v2"]);

    // The client sends the same request again (same key): row 2 is written and every row published.
    let again = submitter.submit(&who(user), &request, "http://test", Some("sheet-click-1")).await.expect("replayed");
    let id = BatchId::parse(&again.batch_id).expect("id");
    let state = assetgen_common::batch_view::load(healthy.as_ref(), &id).await.expect("batch");
    assert_eq!(state.rows.len(), 3);
    assert_eq!(state.bulk.len(), 1);
    assert_eq!(state.bulk[0].state, BulkState::Preparing, "the dead preparer's job: {:?}", state.bulk[0]);

    // Row 2's delivery finds the job in preparing, leased to the dead preparer: busy.
    let message = rig.queue.published().into_iter().find(|m| m.row == 2).expect("row 2's message");
    rig.pipeline.worker.process(&message).await.expect("row 2's delivery is acknowledged");
    assert_eq!(stub.jobs().len(), 1);

    // Once the lease is over, the job is taken over: adopted from Google with its own two rows, and
    // row 2 goes into a job of its own. Every row ends with its images.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let day = OffsetDateTime::now_utc().date();
    let owner = who(user).user;
    let deadline = Instant::now() + Duration::from_secs(30);
    let batch = loop {
        rig.pipeline.sweep.poll_bulk().await.expect("poll");
        let batch = assetgen_common::batch_view::load(healthy.as_ref(), &id).await.expect("batch");
        let budget = rig.pipeline.submitter.budget.view(&owner, day).await.expect("budget");
        if batch.rows.values().all(|(_, s)| s.status.is_terminal()) && budget.reserved_usd == 0.0 {
            break batch;
        }
        assert!(Instant::now() < deadline, "the batch never ended: {:?} {budget:?}", batch.rows);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (_, state) in batch.rows.values() {
        assert_eq!(state.status, RowStatus::Succeeded, "row {} failed needlessly: {:?}", state.row, state.error);
    }
    let jobs: Vec<(u32, Vec<u32>, BulkState)> = batch.bulk.iter().map(|j| (j.seq, j.rows.clone(), j.state)).collect();
    assert_eq!(jobs, [(0, vec![0, 1], BulkState::Succeeded), (1, vec![2], BulkState::Succeeded)]);

    // Two jobs at Google, each asked once: the adopted one was not submitted again, and row 2's
    // image was asked for once, in its own job.
    let ours: Vec<_> = stub.jobs().into_iter().filter(|j| j.display_name.contains(&id.to_string())).collect();
    assert_eq!(
        ours.iter().map(|j| j.display_name.clone()).collect::<Vec<_>>(),
        [format!("assetgen-{id}-0"), format!("assetgen-{id}-1")]
    );
    assert_eq!(keys(&ours[1]), ["r0002-v1"]);

    // Four images paid once each at the bulk price, nothing held, and the ledger reconciles.
    let view = rig.pipeline.submitter.budget.view(&owner, day).await.expect("budget");
    assert!((view.spent_usd - 4.0 * BULK_PRICE_USD).abs() < 1e-9, "{view:?}");
    assert_eq!(view.reserved_usd, 0.0, "{view:?}");
    let report = reconcile::check(healthy.as_ref(), day).await.expect("check");
    assert!(report.is_clean(), "{:#?}", report.differences);
}
