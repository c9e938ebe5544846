//! A push given up on while its row still runs (it outlived the queue's ack deadline) must not
//! leave the row without a message.
//!
//! The row runs in a task of its own, so it goes on after its push was given up on. The queue
//! redelivers; the copy finds the row held by that task. If the copy were acknowledged, and the
//! task then gave the row back (a passing model failure), its answer would reach nobody: the row
//! would stay queued with no message, and the batch would never end. Forced here, deterministically,
//! through the real local push queue over HTTP: a model slower than the ack deadline, whose first
//! call fails.

use assetgen_common::api::RowStatus;
use assetgen_common::auth::DevAuth;
use assetgen_common::model::{DryRunModel, GeneratedImage, ImageModel, ImageRequest, ModelError};
use assetgen_common::problem::ErrorCode;
use assetgen_common::queue::{LocalPushConfig, LocalPushQueue, RowQueue};
use assetgen_common::state::RowState;
use assetgen_common::testkit::{Rig, row};
use assetgen_common::{layout, store::read_json};
use assetgen_generate::{GenerateState, Redelivery, router};
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Every call takes longer than the push may; the first one then fails as Gemini's 503 does.
#[derive(Debug, Default)]
struct SlowThenFlaky {
    calls: AtomicUsize,
}

#[async_trait]
impl ImageModel for SlowThenFlaky {
    fn is_live(&self) -> bool {
        false
    }
    async fn generate(&self, request: &ImageRequest) -> Result<GeneratedImage, ModelError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(800)).await;
        if n == 0 {
            return Err(ModelError::Retryable {
                code: ErrorCode::ModelUnavailable,
                detail: "HTTP 503 UNAVAILABLE".into(),
                retry_after: None,
            });
        }
        DryRunModel.generate(request).await
    }
}

#[tokio::test]
async fn a_row_whose_push_was_given_up_on_still_ends_when_its_holder_gives_it_back() {
    let model = Arc::new(SlowThenFlaky::default());
    let kit = Rig::new(|p| p.dry_run = model.clone());
    kit.submit_rows(vec![row("A", 1)]).await;
    let message = kit.queue.published().remove(0);

    let state = GenerateState {
        worker: kit.pipeline.worker.clone(),
        auth: Arc::new(DevAuth),
        redelivery: Redelivery::Uncounted429,
    };
    let (app, _) = router(Arc::new(state)).split_for_parts();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = url::Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut config = LocalPushConfig::for_base(&base).expect("config");
    config.ack_deadline = Duration::from_millis(300); // every model call outlives its push
    config.min_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_millis(100);
    let queue = LocalPushQueue::new(config);
    queue.publish(std::slice::from_ref(&message)).await.expect("publish");

    tokio::time::timeout(Duration::from_secs(30), queue.wait_idle()).await.expect("the queue settles");
    // The queue holds no message any more: whatever the row is once its last holder is done, it
    // stays.
    let name = layout::row_state(&message.batch_id, message.row);
    let state = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let state: RowState = read_json(kit.store.as_ref(), &name).await.expect("row state").value;
            if state.status != RowStatus::Running {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the holder is done");
    assert_eq!(
        (state.status, state.variants.len()),
        (RowStatus::Succeeded, 1),
        "the queue let go of its message while the row was {:?} ({:?}); nothing would ever end it",
        state.status,
        state.error
    );
    assert_eq!(queue.stats().dead_lettered.load(Ordering::SeqCst), 0, "waiting is not failing");
    assert_eq!(model.calls.load(Ordering::SeqCst), 2, "one failed call, one image");
}
