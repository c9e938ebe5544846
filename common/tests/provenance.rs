//! Provenance written by generate (issue 13): the PNG carries the record in `iTXt` chunks, the
//! sidecar beside it says the same plus the stored bytes' hash, which is the row state's; the price
//! and the spend event agree with the ledger; an interrupted delivery's image gets its sidecar
//! from its own chunks.

use assetgen_common::api::{BatchRequest, RefOutcome, RowRequest, RowStatus};
use assetgen_common::domain::RunMode;
use assetgen_common::generation::Delivery;
use assetgen_common::layout;
use assetgen_common::ledger::LedgerEvent;
use assetgen_common::provenance::{Sidecar, png_text};
use assetgen_common::queue::RowMessage;
use assetgen_common::state::{Manifest, RowState};
use assetgen_common::store::{ObjectStore, Precondition, read_json, update_json};
use assetgen_common::testkit::{self, row};
use sha2::{Digest, Sha256};

const BUCKET: &str = "assets";
const OWNER: &str = "lead@studio.test";

fn rig() -> testkit::Rig {
    testkit::Rig::new(|p| {
        p.fetch.bucket = Some(BUCKET.to_owned());
        p.fetch.retry_delays = vec![];
        p.live = Some(std::sync::Arc::new(assetgen_common::model::DryRunModel));
    })
}

async fn run(kit: &testkit::Rig, rows: Vec<RowRequest>, mode: &str) -> Vec<RowMessage> {
    let before = kit.queue.published().len();
    let request = BatchRequest { rows, run_mode: Some(mode.into()), ..BatchRequest::default() };
    kit.submit(OWNER, request).await;
    let messages = kit.queue.published()[before..].to_vec();
    for m in &messages {
        let delivery = kit.pipeline.worker.process(m).await.expect("no store error");
        assert_eq!(delivery, Delivery::Finished(RowStatus::Succeeded));
    }
    messages
}

async fn state(store: &dyn ObjectStore, m: &RowMessage) -> RowState {
    read_json(store, &layout::row_state(&m.batch_id, m.row)).await.expect("row state").value
}

/// Every stored image of the row: its sidecar matches its chunks and its bytes, and its hash is
/// the row state's.
async fn check_row(store: &dyn ObjectStore, m: &RowMessage) -> Vec<Sidecar> {
    let state = state(store, m).await;
    let mut out = Vec::new();
    for v in &state.variants {
        let image = store.get(&v.object).await.expect("image");
        let sidecar: Sidecar = read_json(store, &layout::sidecar(&v.object)).await.expect("a sidecar").value;
        let embedded = png_text::read(&image.body).expect("a PNG").expect("with provenance");
        assert_eq!(embedded, sidecar.provenance, "the sidecar says what the PNG says");
        assert_eq!(sidecar.image.sha256, hex::encode(Sha256::digest(&image.body)));
        assert_eq!(sidecar.image.sha256, v.sha256, "the row state's hash is of the stored bytes, chunks included");
        assert_eq!(sidecar.image.bytes, v.bytes);
        assert!(sidecar.image.embedded);
        assert_eq!(sidecar.provenance.object, v.object);
        assert_eq!(sidecar.provenance.variant, v.variant);
        assert_eq!((sidecar.provenance.batch_id.clone(), sidecar.provenance.row), (m.batch_id.clone(), m.row));
        out.push(sidecar);
    }
    // A row's variants are made at once and recorded as they finish: in variant order here.
    out.sort_by_key(|s| s.provenance.variant);
    out
}

#[tokio::test]
async fn a_dry_run_image_carries_every_fact_and_its_sidecar_agrees() {
    let kit = rig();
    let first = run(&kit, vec![row("HERO", 1)], "dry_run").await;
    let seed = format!("gs://{BUCKET}/images/{}/HERO-v1.png", first[0].batch_id);
    // The same bytes again in the reference library, under another URL: a duplicate by content.
    let seed_bytes = kit.store.get(&format!("images/{}/HERO-v1.png", first[0].batch_id)).await.expect("seed").body;
    let seed_sha = hex::encode(Sha256::digest(&seed_bytes));
    kit.store.put(&layout::reference(&seed_sha), seed_bytes, "image/png", Precondition::None).await.expect("put");
    let copy = format!("gs://{BUCKET}/refs/{seed_sha}");
    let with_refs = RowRequest {
        refs: vec![seed.clone(), copy.clone()],
        ref_mode: Some("style_and_composition".into()),
        aspect_ratio: Some("16:9".into()),
        ..row("SHOT-2", 2)
    };
    let messages = run(&kit, vec![with_refs], "dry_run").await;
    let m = &messages[0];
    let manifest: Manifest = read_json(kit.store.as_ref(), &layout::manifest(&m.batch_id)).await.expect("m").value;
    let sidecars = check_row(kit.store.as_ref(), m).await;
    assert_eq!(sidecars.len(), 2);
    let p = &sidecars[1].provenance;
    assert_eq!(p.format, "assetgen.provenance/1");
    assert_eq!(p.scene_id.to_string(), "SHOT-2");
    assert_eq!(p.variant, 2);
    assert!(p.prompt.starts_with("prompt of SHOT-2\n\nFollow the attached reference images"), "{}", p.prompt);
    assert_eq!(p.model, manifest.spec.model);
    assert_eq!(p.model_version.as_deref(), Some("assetgen-dry-run"));
    assert!(p.response_id.as_deref().is_some_and(|id| id.starts_with("dry-run-")), "{:?}", p.response_id);
    assert_ne!(sidecars[0].provenance.response_id, p.response_id, "one answer per variant");
    assert_eq!((p.run_mode, p.aspect_ratio.to_string()), (RunMode::DryRun, "16:9".to_owned()));
    assert_eq!(serde_json::to_value(p.ref_mode).expect("json"), "style_and_composition");
    let outcomes: Vec<_> = p.refs.iter().map(|r| (r.url.as_str(), r.outcome)).collect();
    assert_eq!(outcomes, vec![(seed.as_str(), RefOutcome::Used), (copy.as_str(), RefOutcome::Duplicate)]);
    assert_eq!(p.refs[1].duplicate_of.as_deref(), Some(seed.as_str()));
    assert!(
        p.refs.iter().all(|r| r.sha256.as_deref() == Some(seed_sha.as_str())),
        "the refs' hashes are the bytes used"
    );
    assert_eq!((p.price.micros.micros(), p.ledger.clone()), (0, None), "a dry run costs nothing and spends nothing");
    assert_eq!(p.user.as_str(), OWNER);
    assert_eq!(p.submitted_at, manifest.created_at);
    assert!(p.submitted_at <= p.requested_at && p.requested_at <= p.generated_at);
    assert_eq!((p.attempt, p.round), (1, 0));
    assert!(p.software.starts_with("assetgen "));
}

#[tokio::test]
async fn a_live_images_price_and_spend_event_are_the_ledgers() {
    let kit = rig();
    let messages = run(&kit, vec![row("LIVE", 2)], "live").await;
    let manifest: Manifest =
        read_json(kit.store.as_ref(), &layout::manifest(&messages[0].batch_id)).await.expect("m").value;
    let sidecars = check_row(kit.store.as_ref(), &messages[0]).await;
    assert_eq!(sidecars.len(), 2);
    for s in sidecars {
        let p = s.provenance;
        assert_eq!(p.run_mode, RunMode::Live);
        assert_eq!(p.price.micros, manifest.price_per_image());
        assert!(p.price.micros.micros() > 0);
        let ledger = p.ledger.expect("a spend event");
        let event: LedgerEvent = read_json(kit.store.as_ref(), &ledger.object).await.expect("the event exists").value;
        assert_eq!(event.id(), ledger.event);
        assert_eq!(event.amount, p.price.micros, "price charged = what the ledger spent");
        assert_eq!((event.row, event.variant, event.round), (Some(p.row), Some(p.variant), p.round));
    }
}

#[tokio::test]
async fn an_image_stored_before_a_crash_gets_its_sidecar_from_its_own_chunks() {
    let kit = rig();
    let messages = run(&kit, vec![row("CRASH", 1)], "dry_run").await;
    let m = &messages[0];
    let before = check_row(kit.store.as_ref(), m).await.remove(0);
    // As if the delivery died after storing the image: no sidecar, the state does not know it.
    let sidecar = layout::sidecar(&before.image.object);
    kit.store.delete(&sidecar, Precondition::None).await.expect("delete");
    update_json::<RowState, assetgen_common::store::StoreError, _>(
        kit.store.as_ref(),
        &layout::row_state(&m.batch_id, m.row),
        |s| {
            let mut next = s.clone();
            next.status = RowStatus::Queued;
            next.variants.clear();
            Ok(Some(next))
        },
    )
    .await
    .expect("reset");
    assert_eq!(kit.pipeline.worker.process(m).await.expect("ok"), Delivery::Finished(RowStatus::Succeeded));
    let after = check_row(kit.store.as_ref(), m).await.remove(0);
    assert_eq!(after, before, "the adopted image's sidecar is the one its maker would have written");
    assert_eq!(state(kit.store.as_ref(), m).await.attempts, 2);
    assert_eq!(after.provenance.attempt, 1, "the record says which delivery made the image");
}

/// A model that answers with bytes that are not a PNG (a JPEG's first bytes).
#[derive(Debug)]
struct NotPng;

#[async_trait::async_trait]
impl assetgen_common::model::ImageModel for NotPng {
    fn is_live(&self) -> bool {
        false
    }
    async fn generate(
        &self,
        _: &assetgen_common::model::ImageRequest,
    ) -> Result<assetgen_common::model::GeneratedImage, assetgen_common::model::ModelError> {
        let mut image = assetgen_common::model::GeneratedImage::new(
            "image/jpeg",
            bytes::Bytes::from_static(b"\xff\xd8\xff\xe0 a jpeg"),
        );
        image.response_id = Some("r-1".into());
        Ok(image)
    }
}

#[tokio::test]
async fn an_image_that_cannot_carry_the_record_is_stored_as_made_and_its_sidecar_says_so() {
    let kit = testkit::Rig::new(|p| p.dry_run = std::sync::Arc::new(NotPng));
    let messages = run(&kit, vec![row("JPEG", 1)], "dry_run").await;
    let state = state(kit.store.as_ref(), &messages[0]).await;
    let object = &state.variants[0].object;
    let stored = kit.store.get(object).await.expect("image").body;
    assert_eq!(stored.as_ref(), b"\xff\xd8\xff\xe0 a jpeg", "never rewritten");
    let sidecar: Sidecar = read_json(kit.store.as_ref(), &layout::sidecar(object)).await.expect("a sidecar").value;
    assert!(!sidecar.image.embedded);
    assert_eq!(sidecar.image.sha256, state.variants[0].sha256);
    assert_eq!(sidecar.image.content_type, "image/jpeg");
    assert_eq!(sidecar.provenance.response_id.as_deref(), Some("r-1"));
}
