//! Leases that fence: a row slower than its lease keeps it (renewed in the background), a delivery
//! that lost its lease writes nothing more, and an image is written create-only, so a delivery that
//! outlived its lease adopts the image of the holder after it instead of overwriting it.
//! On the memory store and on fake-gcs-server.

use assetgen_common::api::{BatchRequest, RowStatus};
use assetgen_common::domain::{Money, SceneId};
use assetgen_common::generation::Delivery;
use assetgen_common::layout;
use assetgen_common::ledger::{self, EventKind};
use assetgen_common::model::{DryRunModel, GeneratedImage, ImageModel, ImageRequest, ModelError};
use assetgen_common::queue::RowMessage;
use assetgen_common::reconcile;
use assetgen_common::state::{Lease, RowState};
use assetgen_common::store::{MemoryStore, ObjectStore, StoreError, read_json, update_json};
use assetgen_common::testkit::{FakeGcs, Gate, HookedStore, LiveRig, Rig, row};
use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

/// A live model that takes `delay` per image and makes different bytes on every call, so two
/// images of one variant can be told apart.
#[derive(Debug)]
struct Slow {
    delay: Duration,
    calls: AtomicUsize,
}

impl Slow {
    fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self { delay, calls: AtomicUsize::new(0) })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ImageModel for Slow {
    fn is_live(&self) -> bool {
        true
    }
    async fn generate(&self, request: &ImageRequest) -> Result<GeneratedImage, ModelError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(self.delay).await;
        let mut image = DryRunModel.generate(request).await?;
        let mut bytes = image.bytes.to_vec();
        bytes.extend_from_slice(format!("call {call}").as_bytes());
        image.bytes = Bytes::from(bytes);
        Ok(image)
    }
}

fn live_rig(store: Arc<dyn ObjectStore>, model: Arc<Slow>, ttl: Duration) -> Rig {
    LiveRig::on(store).model(model).tune(move |p| p.lease_ttl = ttl).build()
}

async fn submit_one(rig: &Rig, variants: i64) -> RowMessage {
    let request = BatchRequest { rows: vec![row("A", variants)], run_mode: Some("live".into()), ..Default::default() };
    rig.submit("artist@studio.test", request).await;
    rig.queue.published()[0].clone()
}

async fn state(store: &dyn ObjectStore, m: &RowMessage) -> RowState {
    read_json(store, &layout::row_state(&m.batch_id, m.row)).await.expect("row state").value
}

async fn set_lease(store: &dyn ObjectStore, m: &RowMessage, lease: Lease) {
    update_json::<RowState, StoreError, _>(store, &layout::row_state(&m.batch_id, m.row), |s| {
        let mut next = s.clone();
        next.lease = Some(lease.clone());
        Ok(Some(next))
    })
    .await
    .expect("state write");
}

async fn assert_reconciles(store: &dyn ObjectStore) -> reconcile::CheckReport {
    let report = reconcile::check(store, OffsetDateTime::now_utc().date()).await.expect("check");
    assert!(report.is_clean(), "ledger check: {:#?}", report.differences);
    report
}

/// Every stored image matches the sha256 and size its row state records.
async fn assert_images_match_state(store: &dyn ObjectStore, m: &RowMessage) {
    let s = state(store, m).await;
    assert!(!s.variants.is_empty());
    for v in &s.variants {
        let body = store.get(&v.object).await.expect("image").body;
        assert_eq!(hex::encode(Sha256::digest(&body)), v.sha256, "{}: the state describes the stored bytes", v.object);
        assert_eq!(body.len() as u64, v.bytes);
    }
}

/// The lease is 0.6 s and the model takes 2 s: without renewal a second delivery, 1.2 s in, would
/// find the lease expired, take the row and call the model again.
async fn a_row_slower_than_its_lease_keeps_it(store: Arc<dyn ObjectStore>, ttl: Duration) {
    let model = Slow::new(ttl * 3);
    let rig = live_rig(store.clone(), model.clone(), ttl);
    let message = submit_one(&rig, 1).await;
    let worker = rig.pipeline.worker.clone();
    let first = {
        let (worker, message) = (worker.clone(), message.clone());
        tokio::spawn(async move { worker.process(&message).await })
    };
    tokio::time::sleep(ttl * 2).await;
    let second = worker.process(&message).await.expect("second delivery");
    assert_eq!(second, Delivery::Busy, "the first delivery still holds the row: its lease was renewed");
    let first = first.await.expect("join").expect("first delivery");
    assert_eq!(first, Delivery::Finished(RowStatus::Succeeded));
    assert_eq!(model.calls(), 1, "one model call for one image");
    let s = state(store.as_ref(), &message).await;
    assert_eq!((s.status, s.attempts, s.lease), (RowStatus::Succeeded, 1, None));
    assert_images_match_state(store.as_ref(), &message).await;
    assert_reconciles(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_slower_than_its_lease_keeps_it_on_the_memory_store() {
    a_row_slower_than_its_lease_keeps_it(Arc::new(MemoryStore::new()), Duration::from_millis(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_slower_than_its_lease_keeps_it_on_fake_gcs_server() {
    let gcs = FakeGcs::start().await;
    a_row_slower_than_its_lease_keeps_it(Arc::new(gcs.store().await), Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_delivery_that_lost_its_lease_writes_nothing_more() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    // A long lease (no renewal during the test) and a model call of 0.3 s.
    let model = Slow::new(Duration::from_millis(300));
    let rig = live_rig(store.clone(), model.clone(), Duration::from_secs(60));
    let message = submit_one(&rig, 1).await;
    let worker = rig.pipeline.worker.clone();
    let first = {
        let (worker, message) = (worker.clone(), message.clone());
        tokio::spawn(async move { worker.process(&message).await })
    };
    // While the model works, the row passes to another holder (this one stalled past its lease).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let later = OffsetDateTime::now_utc() + time::Duration::minutes(5);
    set_lease(store.as_ref(), &message, Lease { holder: "the next holder".into(), until: later }).await;

    assert_eq!(first.await.expect("join").expect("delivery"), Delivery::AlreadyHandled);
    assert_eq!(model.calls(), 1);
    let scene = SceneId::parse("A").expect("scene");
    let image = layout::image(&message.batch_id, &scene, 1);
    assert!(matches!(store.get(&image).await, Err(StoreError::NotFound(_))), "no image written without the lease");
    let day = OffsetDateTime::now_utc().date();
    let events = ledger::events_of_batch(store.as_ref(), day, &message.batch_id).await.expect("events");
    assert!(events.iter().all(|e| e.kind != EventKind::Spend), "nothing spent without the lease: {events:?}");
}

/// Delivery 1 checks its lease, starts writing its image, and stalls there past its lease.
/// Delivery 2 takes the row, stores its own image and finishes. Then delivery 1's write lands: it
/// must not replace the image the row state describes.
async fn a_late_image_write_adopts_the_image_stored_first(inner: Arc<dyn ObjectStore>) {
    let gate = Arc::new(Gate::default());
    let let_go = gate.arm();
    // The first image write waits until the test lets it through.
    let store: Arc<dyn ObjectStore> = Arc::new(HookedStore::new(inner).gate_puts("images/", gate.clone()));
    let model = Slow::new(Duration::ZERO);
    let rig = live_rig(store.clone(), model.clone(), Duration::from_secs(60));
    let message = submit_one(&rig, 1).await;
    let worker = rig.pipeline.worker.clone();
    let first = {
        let (worker, message) = (worker.clone(), message.clone());
        tokio::spawn(async move { worker.process(&message).await })
    };
    gate.arrived().await;
    let holder = state(store.as_ref(), &message).await.lease.expect("leased").holder;
    let past = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    set_lease(store.as_ref(), &message, Lease { holder, until: past }).await;

    assert_eq!(worker.process(&message).await.expect("second"), Delivery::Finished(RowStatus::Succeeded));
    let _ = let_go.send(());
    assert_eq!(first.await.expect("join").expect("first"), Delivery::AlreadyHandled);

    assert_eq!(model.calls(), 2, "both deliveries called the model (a model call cannot be taken back)");
    assert_images_match_state(store.as_ref(), &message).await;
    let s = state(store.as_ref(), &message).await;
    let body = store.get(&s.variants[0].object).await.expect("image").body;
    assert!(body.ends_with(b"call 2"), "the image of the holder that recorded it stands");
    let report = assert_reconciles(store.as_ref()).await;
    assert_eq!(report.spent, Money::from_micros(39_000), "paid once");
}

#[tokio::test]
async fn a_late_image_write_adopts_the_image_stored_first_on_the_memory_store() {
    a_late_image_write_adopts_the_image_stored_first(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn a_late_image_write_adopts_the_image_stored_first_on_fake_gcs_server() {
    let gcs = FakeGcs::start().await;
    a_late_image_write_adopts_the_image_stored_first(Arc::new(gcs.store().await)).await;
}
