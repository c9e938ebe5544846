//! Test support (cargo feature `testkit`): an in-memory pipeline whose queue only records, so a
//! test drives deliveries by hand and sees exactly what was published.

use crate::api::{BatchRequest, RowRequest, SubmitResponse};
use crate::auth::Identity;
use crate::budget::{Budget, Unmetered};
use crate::domain::{BatchId, Money, UserId};
use crate::pipeline::{Parts, Pipeline};
use crate::queue::{QueueError, RowMessage, RowQueue};
use crate::store::{MemoryStore, ObjectStore};
use async_trait::async_trait;

mod fake_gcs;
mod hooked_store;
mod late_writes;
mod live_rig;
mod loopback;
pub use crate::store::StoreCall;
pub use fake_gcs::{FakeGcs, fake_gcs_binary};
pub use hooked_store::{Gate, HookedStore, Hooks};
pub use late_writes::LateWrites;
pub use live_rig::{BlockingModel, LiveRig, daily_budget};
pub use loopback::{endless_png, serve_on_loopback};
mod pubsub_emulator;
pub use pubsub_emulator::{PubSubEmulator, PulledMessage, SubscriptionSpec, pubsub_emulator_binary};
use std::sync::{Arc, Mutex};

/// A queue that records what was published and delivers nothing.
#[derive(Debug, Default)]
pub struct RecordingQueue(Mutex<Vec<RowMessage>>);

impl RecordingQueue {
    /// Every message published so far, in order.
    pub fn published(&self) -> Vec<RowMessage> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

#[async_trait]
impl RowQueue for RecordingQueue {
    async fn publish(&self, messages: &[RowMessage]) -> Result<(), QueueError> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(messages);
        Ok(())
    }
}

/// A pipeline on a memory store with a recording queue.
pub struct Rig {
    pub store: Arc<dyn ObjectStore>,
    pub queue: Arc<RecordingQueue>,
    pub pipeline: Pipeline,
}

impl Rig {
    /// `tune` adjusts the parts (models, budget, limits…) before assembly.
    pub fn new(tune: impl FnOnce(&mut Parts)) -> Self {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        Self::on(store, tune)
    }

    pub fn on(store: Arc<dyn ObjectStore>, tune: impl FnOnce(&mut Parts)) -> Self {
        let queue = Arc::new(RecordingQueue::default());
        let budget: Arc<dyn Budget> = Arc::new(Unmetered { limit: Money::from_micros(10_000_000) });
        let mut parts = Parts::new(store.clone(), queue.clone(), budget);
        tune(&mut parts);
        Self { store, queue, pipeline: Pipeline::assemble(parts) }
    }

    /// Submits `rows` as `user` and returns the answer.
    pub async fn submit(&self, user: &str, request: BatchRequest) -> SubmitResponse {
        self.pipeline.submitter.submit(&who(user), &request, "http://test", None).await.expect("the batch is accepted")
    }

    pub async fn submit_rows(&self, rows: Vec<RowRequest>) -> BatchId {
        let accepted = self.submit("artist@studio.test", BatchRequest { rows, ..BatchRequest::default() }).await;
        BatchId::parse(&accepted.batch_id).expect("a batch id")
    }
}

pub fn who(user: &str) -> Identity {
    Identity { user: UserId::new(user) }
}

/// A row with `variants` images and a prompt naming the scene.
pub fn row(scene: &str, variants: i64) -> RowRequest {
    RowRequest {
        scene_id: scene.into(),
        prompt: format!("prompt of {scene}"),
        variants: Some(variants),
        ..RowRequest::default()
    }
}
