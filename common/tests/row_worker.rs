//! Generating rows under at-least-once delivery: duplicates, concurrency, retries, crashes.

use assetgen_common::api::{BatchRequest, RowRequest, RowStatus};
use assetgen_common::generation::{Delivery, RowWorker};
use assetgen_common::layout;
use assetgen_common::model::{DryRunModel, GeneratedImage, ImageModel, ImageRequest, ModelError};
use assetgen_common::problem::ErrorCode;
use assetgen_common::queue::RowMessage;
use assetgen_common::state::RowState;
use assetgen_common::store::{ObjectStore, Precondition, read_json};
use assetgen_common::testkit::{self, row};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The dry-run model behind a script: per (scene, variant), errors to return before succeeding,
/// an optional delay, and a count of calls.
#[derive(Debug, Default)]
struct Scripted {
    failures: Mutex<HashMap<(String, u8), Vec<ModelError>>>,
    calls: Mutex<HashMap<(String, u8), usize>>,
    delay: Duration,
}

impl Scripted {
    fn fail(self, scene: &str, variant: u8, errors: Vec<ModelError>) -> Self {
        self.failures.lock().expect("lock").insert((scene.into(), variant), errors);
        self
    }
    fn calls(&self, scene: &str, variant: u8) -> usize {
        self.calls.lock().expect("lock").get(&(scene.to_owned(), variant)).copied().unwrap_or(0)
    }
    fn total_calls(&self) -> usize {
        self.calls.lock().expect("lock").values().sum()
    }
}

#[async_trait]
impl ImageModel for Scripted {
    fn is_live(&self) -> bool {
        false
    }
    async fn generate(&self, request: &ImageRequest) -> Result<GeneratedImage, ModelError> {
        let key = (request.scene_id.clone(), request.variant);
        *self.calls.lock().expect("lock").entry(key.clone()).or_default() += 1;
        tokio::time::sleep(self.delay).await;
        let next_failure =
            self.failures.lock().expect("lock").get_mut(&key).and_then(|f| (!f.is_empty()).then(|| f.remove(0)));
        match next_failure {
            Some(e) => Err(e),
            None => DryRunModel.generate(request).await,
        }
    }
}

struct Rig {
    store: Arc<dyn ObjectStore>,
    model: Arc<Scripted>,
    worker: RowWorker,
    messages: Vec<RowMessage>,
}

async fn rig(rows: Vec<RowRequest>, model: Scripted, run_mode: &str) -> Rig {
    let model = Arc::new(model);
    let kit = testkit::Rig::new(|p| {
        p.dry_run = model.clone();
        // Live batches are accepted, but the worker below has no live model.
        p.live = Some(Arc::new(DryRunModel));
    });
    kit.submit("artist@studio.test", BatchRequest { rows, run_mode: Some(run_mode.into()), ..Default::default() })
        .await;
    let mut worker = kit.pipeline.worker.clone();
    worker.live = None;
    Rig { store: kit.store.clone(), model, worker, messages: kit.queue.published() }
}

impl Rig {
    async fn state(&self, i: usize) -> RowState {
        let m = &self.messages[i];
        read_json(self.store.as_ref(), &layout::row_state(&m.batch_id, m.row)).await.expect("row state").value
    }
    async fn deliver(&self, i: usize) -> Delivery {
        self.worker.process(&self.messages[i]).await.expect("no store error")
    }
}

fn retryable() -> ModelError {
    ModelError::Retryable {
        code: ErrorCode::ModelRateLimited,
        detail: "429".into(),
        retry_after: Some(Duration::from_secs(17)),
    }
}

#[tokio::test]
async fn a_delivery_generates_every_variant_once_and_a_duplicate_is_acked_without_work() {
    let r = rig(vec![row("A", 2), row("B", 3)], Scripted::default(), "dry_run").await;
    assert_eq!(r.messages.len(), 2, "one message per row");
    assert_eq!(r.deliver(0).await, Delivery::Finished(RowStatus::Succeeded));
    assert_eq!(r.deliver(1).await, Delivery::Finished(RowStatus::Succeeded));
    let b = r.state(1).await;
    assert_eq!((b.status, b.attempts, b.variants.len(), b.lease.is_none()), (RowStatus::Succeeded, 1, 3, true));
    for v in &b.variants {
        let image = r.store.get(&v.object).await.expect("image stored");
        assert_eq!(image.body.len() as u64, v.bytes);
        assert!(image.body.starts_with(b"\x89PNG"), "a real PNG");
    }
    assert_eq!(r.deliver(1).await, Delivery::AlreadyHandled, "a duplicate of a finished row is acked");
    assert_eq!(r.model.total_calls(), 5, "2 + 3 variants, each generated once");
    assert_eq!(r.state(1).await.attempts, 1, "the duplicate took no lease");
}

#[tokio::test]
async fn concurrent_duplicates_generate_once() {
    let model = Scripted { delay: Duration::from_millis(50), ..Scripted::default() };
    let r = rig(vec![row("A", 3)], model, "dry_run").await;
    let (a, b) = tokio::join!(r.deliver(0), r.deliver(0));
    let mut outcomes = [a, b];
    outcomes.sort_by_key(|d| format!("{d:?}"));
    assert_eq!(
        outcomes,
        [Delivery::Busy, Delivery::Finished(RowStatus::Succeeded)],
        "one works, the other finds it busy (and is acked)"
    );
    assert_eq!(r.model.total_calls(), 3);
}

/// A row's variants wait for the model side by side: a row of 3 takes one call's time, not three.
/// (One after another, the last rows of a batch leave the quota idle while their chains run out.)
#[tokio::test(start_paused = true)]
async fn a_rows_variants_are_asked_for_at_once() {
    let model = Scripted { delay: Duration::from_secs(10), ..Scripted::default() };
    let r = rig(vec![row("A", 3)], model, "dry_run").await;
    let started = tokio::time::Instant::now();
    assert_eq!(r.deliver(0).await, Delivery::Finished(RowStatus::Succeeded));
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(10) && took < Duration::from_secs(20), "one call's time: {took:?}");
    let s = r.state(0).await;
    let mut made: Vec<u8> = s.variants.iter().map(|v| v.variant).collect();
    made.sort_unstable();
    assert_eq!((made, r.model.total_calls()), (vec![1, 2, 3], 3), "each variant recorded once, made once");
}

#[tokio::test]
async fn a_passing_failure_is_nacked_and_the_next_delivery_resumes_without_regenerating() {
    let model = Scripted::default().fail("A", 2, vec![retryable()]);
    let r = rig(vec![row("A", 3)], model, "dry_run").await;
    let first = r.deliver(0).await;
    assert!(
        matches!(&first, Delivery::Retry { code: ErrorCode::ModelRateLimited, retry_after: Some(d), .. } if d.as_secs() == 17),
        "{first:?}"
    );
    assert!(!first.ack());
    let queued = r.state(0).await;
    let kept: Vec<u8> = queued.variants.iter().map(|v| v.variant).collect();
    assert_eq!((queued.status, kept.len()), (RowStatus::Queued, 2), "variants 1 and 3, made alongside, are kept");
    assert_eq!(queued.error.map(|e| e.code), Some(ErrorCode::ModelRateLimited), "the user sees why it waits");
    assert_eq!(r.deliver(0).await, Delivery::Finished(RowStatus::Succeeded));
    assert_eq!((r.model.calls("A", 1), r.model.calls("A", 2), r.model.calls("A", 3)), (1, 2, 1));
    let done = r.state(0).await;
    assert_eq!((done.attempts, done.error), (2, None));
}

#[tokio::test]
async fn a_permanent_failure_fails_the_row_with_its_code() {
    let blocked = ModelError::Permanent { code: ErrorCode::ContentBlocked, detail: "IMAGE_SAFETY".into() };
    let r = rig(vec![row("A", 2)], Scripted::default().fail("A", 1, vec![blocked]), "dry_run").await;
    assert_eq!(r.deliver(0).await, Delivery::Finished(RowStatus::Failed));
    let s = r.state(0).await;
    assert_eq!((s.status, s.error.map(|e| e.code)), (RowStatus::Failed, Some(ErrorCode::ContentBlocked)));
    // The row's variants are asked for at once: the one made alongside the refusal is kept, and
    // paid once (a retry of the failed row makes only what is missing).
    assert_eq!(r.model.calls("A", 2), 1, "variant 2 was made alongside, once");
    assert_eq!(s.variants.iter().map(|v| v.variant).collect::<Vec<_>>(), vec![2]);
    assert_eq!(r.deliver(0).await, Delivery::AlreadyHandled);
    assert_eq!(r.model.calls("A", 2), 1, "and never again");
}

#[tokio::test]
async fn an_image_stored_before_a_crash_is_adopted_not_generated_again() {
    let r = rig(vec![row("A", 2)], Scripted::default(), "dry_run").await;
    let m = &r.messages[0];
    let scene = assetgen_common::domain::SceneId::parse("A").expect("scene");
    // A delivery that crashed after storing variant 1 and before recording it.
    let object = layout::image(&m.batch_id, &scene, 1);
    r.store
        .put(&object, bytes::Bytes::from_static(b"\x89PNG from the crashed delivery"), "image/png", Precondition::None)
        .await
        .expect("put");
    assert_eq!(r.deliver(0).await, Delivery::Finished(RowStatus::Succeeded));
    assert_eq!((r.model.calls("A", 1), r.model.calls("A", 2)), (0, 1));
    assert_eq!(r.state(0).await.variants.iter().map(|v| v.variant).collect::<Vec<_>>(), vec![1, 2]);
}

#[tokio::test]
async fn dead_letters_fail_open_rows_keep_finished_ones_and_wait_for_live_leases() {
    let model = Scripted::default().fail("A", 1, vec![retryable()]);
    let r = rig(vec![row("A", 1), row("B", 1)], model, "dry_run").await;
    assert!(matches!(r.deliver(0).await, Delivery::Retry { .. }));
    assert_eq!(r.worker.dead_letter(&r.messages[0], Some(5)).await.expect("dl"), Delivery::Finished(RowStatus::Failed));
    let a = r.state(0).await;
    assert_eq!(a.error.as_ref().map(|e| e.code), Some(ErrorCode::DeadLettered));
    assert!(
        a.error
            .as_ref()
            .is_some_and(|e| e.detail.contains("after 5 deliveries") && e.detail.contains("MODEL_RATE_LIMITED")),
        "{a:?}"
    );
    assert_eq!(r.deliver(1).await, Delivery::Finished(RowStatus::Succeeded));
    r.worker.dead_letter(&r.messages[1], Some(5)).await.expect("dl");
    assert_eq!(r.state(1).await.status, RowStatus::Succeeded, "a late dead letter does not undo a success");

    let slow =
        rig(vec![row("C", 1)], Scripted { delay: Duration::from_millis(300), ..Scripted::default() }, "dry_run").await;
    let (working, dead) = tokio::join!(slow.deliver(0), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        slow.worker.dead_letter(&slow.messages[0], Some(5)).await.expect("dl")
    });
    assert_eq!(
        (working, dead),
        (Delivery::Finished(RowStatus::Succeeded), Delivery::Busy),
        "a dead letter waits while a delivery holds the row"
    );
}

#[tokio::test]
async fn unknown_batches_are_dropped_and_live_rows_without_a_model_fail_clearly() {
    let r = rig(vec![row("A", 1)], Scripted::default(), "live").await;
    let stray = RowMessage { batch_id: assetgen_common::domain::BatchId::new(), row: 0 };
    assert!(matches!(r.worker.process(&stray).await.expect("ok"), Delivery::Dropped(_)));
    assert_eq!(r.deliver(0).await, Delivery::Finished(RowStatus::Failed));
    assert_eq!(r.state(0).await.error.map(|e| e.code), Some(ErrorCode::LiveNotConfigured));
    assert_eq!(r.model.total_calls(), 0);
}

#[tokio::test]
async fn a_reference_that_streams_forever_is_cut_off_and_the_row_retried_later() {
    use assetgen_common::domain::RefUrlPolicy;
    use assetgen_common::refs::fetch::FetchPolicy;
    use axum::routing::get;
    let server =
        testkit::serve_on_loopback(axum::Router::new().route("/drip.png", get(|| async { testkit::endless_png() })))
            .await;

    let kit = testkit::Rig::new(|p| {
        p.ref_policy = RefUrlPolicy { allow_private: true, allow_local_files: false };
        p.fetch = FetchPolicy {
            allow_private: true,
            timeout: Duration::from_millis(300),
            retry_delays: vec![Duration::from_millis(10)],
            ..FetchPolicy::default()
        };
    });
    let dripping = RowRequest { refs: vec![format!("{server}/drip.png")], ..row("A", 1) };
    kit.submit("artist@studio.test", BatchRequest { rows: vec![dripping, row("B", 2)], ..Default::default() }).await;
    let messages = kit.queue.published();
    let before = kit.store.list("").await.expect("list");

    let delivery = kit.pipeline.worker.process(&messages[0]).await.expect("no store error");
    let Delivery::Retry { code, detail, .. } = delivery else { panic!("expected a retry, got {delivery:?}") };
    assert_eq!(code, ErrorCode::RefFetchFailed);
    assert!(detail.contains("no complete answer within 0.3 s"), "{detail}");
    // Only row A's own state moved (its attempt and error); no image, no cached reference.
    let after = kit.store.list("").await.expect("list");
    let changed: Vec<&str> = after.iter().filter(|m| !before.contains(m)).map(|m| m.name.as_str()).collect();
    assert_eq!(changed, vec![layout::row_state(&messages[0].batch_id, 0).as_str()], "{after:?}");
    assert_eq!(after.len(), before.len());

    // The worker goes on: row B, without references, is made.
    assert_eq!(
        kit.pipeline.worker.process(&messages[1]).await.expect("no store error"),
        Delivery::Finished(RowStatus::Succeeded)
    );
}
