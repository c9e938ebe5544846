//! A batch is charged the price it was accepted at: the price table may change between submit and
//! generation (a new deployment, a new price), and the rows of a batch accepted before still cost
//! what its estimate and its hold said.

use assetgen_common::api::{BatchRequest, RowStatus};
use assetgen_common::budget::{DailyBudget, UserLimits};
use assetgen_common::cost::{DEFAULT_MODEL, PriceTable};
use assetgen_common::domain::{BatchId, Money};
use assetgen_common::generation::Delivery;
use assetgen_common::ledger::{self, EventKind};
use assetgen_common::model::{DryRunModel, GeneratedImage, ImageModel, ImageRequest, ModelError};
use assetgen_common::problem::ErrorCode;
use assetgen_common::reconcile;
use assetgen_common::store::{MemoryStore, ObjectStore};
use assetgen_common::testkit::{Rig, row, who};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// A live model that refuses the scenes it is told to, until told otherwise.
#[derive(Debug, Default)]
struct Live {
    blocked: Mutex<Vec<String>>,
}

#[async_trait]
impl ImageModel for Live {
    fn is_live(&self) -> bool {
        true
    }
    async fn generate(&self, request: &ImageRequest) -> Result<GeneratedImage, ModelError> {
        if self.blocked.lock().expect("lock").contains(&request.scene_id) {
            return Err(ModelError::Permanent { code: ErrorCode::ContentBlocked, detail: "IMAGE_SAFETY".into() });
        }
        DryRunModel.generate(request).await
    }
}

/// A deployment on `store` whose table prices the default model at `per_image` micro-dollars.
fn deployment(store: &Arc<dyn ObjectStore>, model: &Arc<Live>, per_image: i64) -> Rig {
    let budget = Arc::new(DailyBudget {
        store: store.clone(),
        limits: UserLimits { default: Money::from_micros(10_000_000), overrides: HashMap::new() },
    });
    let model = model.clone();
    Rig::on(store.clone(), move |p| {
        p.budget = budget;
        p.live = Some(model);
        p.prices = PriceTable::default().with(DEFAULT_MODEL, Money::from_micros(per_image));
    })
}

#[tokio::test]
async fn rows_and_retries_are_charged_the_price_the_batch_was_accepted_at() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let model = Arc::new(Live::default());
    model.blocked.lock().expect("lock").push("B".into());
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
    model.blocked.lock().expect("lock").clear();
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
