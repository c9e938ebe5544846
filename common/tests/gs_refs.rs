//! What a `gs://` reference may read when a row is generated: the reference library and the images
//! of the submitter's own batches, in the deployment's bucket; never another user's images, and a
//! refusal that reads the same whether the object exists or not (issue 11, "Authorization").

use assetgen_common::api::{BatchRequest, RowRequest, RowStatus};
use assetgen_common::domain::GS_REFUSAL;
use assetgen_common::generation::Delivery;
use assetgen_common::layout;
use assetgen_common::problem::ErrorCode;
use assetgen_common::queue::RowMessage;
use assetgen_common::state::RowState;
use assetgen_common::store::{Precondition, read_json};
use assetgen_common::testkit::{self, row};

const BUCKET: &str = "assets-prod";
const OWNER: &str = "owner@studio.test";
const OTHER: &str = "other@studio.test";

fn rig() -> testkit::Rig {
    testkit::Rig::new(|p| {
        p.fetch.bucket = Some(BUCKET.to_owned());
        p.fetch.retry_delays = vec![];
    })
}

/// Submits one row as `user`, generates it, and returns its message and final state.
async fn run_row(kit: &testkit::Rig, user: &str, row: RowRequest) -> (RowMessage, RowState) {
    let before = kit.queue.published().len();
    kit.submit(user, BatchRequest { rows: vec![row], ..BatchRequest::default() }).await;
    let message = kit.queue.published()[before].clone();
    let delivery = kit.pipeline.worker.process(&message).await.expect("no store error");
    assert!(matches!(delivery, Delivery::Finished(_)), "{delivery:?}");
    let state = read_json(kit.store.as_ref(), &layout::row_state(&message.batch_id, message.row))
        .await
        .expect("row state")
        .value;
    (message, state)
}

fn with_refs(scene: &str, refs: Vec<String>) -> RowRequest {
    RowRequest { refs, ..row(scene, 1) }
}

#[tokio::test]
async fn a_submitter_may_reference_their_own_batches_images_and_nobody_elses() {
    let kit = rig();
    let (first, done) = run_row(&kit, OWNER, row("HERO", 1)).await;
    assert_eq!(done.status, RowStatus::Succeeded);
    let image = format!("gs://{BUCKET}/images/{}/HERO-v1.png", first.batch_id);
    let missing = format!("gs://{BUCKET}/images/{}/NOPE-v1.png", first.batch_id);

    // The owner's next batch may use the image.
    let (_, own) = run_row(&kit, OWNER, with_refs("NEXT", vec![image.clone()])).await;
    assert_eq!(own.status, RowStatus::Succeeded, "{:?}", own.error);
    assert_eq!(own.refs.len(), 1);
    assert_eq!(own.refs[0].url, image);

    // Another user's batch may not, and cannot tell an existing image from a missing one.
    let mut answers = Vec::new();
    for url in [&image, &missing] {
        let (_, theirs) = run_row(&kit, OTHER, with_refs("COPY", vec![url.clone()])).await;
        assert_eq!(theirs.status, RowStatus::Failed);
        let error = theirs.error.expect("an error");
        assert_eq!(error.code, ErrorCode::RefForbiddenObject);
        assert!(error.detail.contains(GS_REFUSAL), "{}", error.detail);
        answers.push(error.detail.replace(url.as_str(), "URL"));
    }
    assert_eq!(answers[0], answers[1], "the refusal does not say whether the image exists");

    // Nor may a batch that names a batch that does not exist, or the right image in another bucket.
    let ghost = format!("gs://{BUCKET}/images/{}/HERO-v1.png", assetgen_common::domain::BatchId::new());
    let elsewhere = format!("gs://other-bucket/images/{}/HERO-v1.png", first.batch_id);
    for url in [ghost, elsewhere] {
        let (_, state) = run_row(&kit, OWNER, with_refs("GHOST", vec![url.clone()])).await;
        let error = state.error.expect("an error");
        assert_eq!(error.code, ErrorCode::RefForbiddenObject, "{url}");
        assert_eq!(error.detail.replace(url.as_str(), "URL"), answers[0], "{url}");
    }
}

#[tokio::test]
async fn the_reference_library_is_open_to_every_batch_but_the_rest_of_the_bucket_is_not() {
    let kit = rig();
    let png = {
        let (m, _) = run_row(&kit, OWNER, row("SEED", 1)).await;
        kit.store.get(&format!("images/{}/SEED-v1.png", m.batch_id)).await.expect("an image").body
    };
    let sha256 = "5e".repeat(32);
    kit.store.put(&layout::reference(&sha256), png, "image/png", Precondition::None).await.expect("seed the library");
    let (_, state) = run_row(&kit, OTHER, with_refs("LIB", vec![format!("gs://{BUCKET}/refs/{sha256}")])).await;
    assert_eq!(state.status, RowStatus::Succeeded, "{:?}", state.error);

    // The ledger, the budgets, the manifests and the library's sets are refused when the batch is
    // submitted, with the same sentence.
    for object in [
        "ledger/2026-11-28/x.json",
        "budget/2026-11-28/owner@studio.test.json",
        "refs/sets/global.json",
        "refs/palette.png",
    ] {
        let request = BatchRequest {
            rows: vec![with_refs("LEAK", vec![format!("gs://{BUCKET}/{object}")])],
            ..BatchRequest::default()
        };
        let problem = kit.pipeline.submitter.validate(&request).expect_err("refused at submit");
        assert_eq!(problem.code, ErrorCode::InvalidRefUrl, "{object}");
        let listed = serde_json::to_string(&problem).expect("json");
        assert!(listed.contains(GS_REFUSAL), "{object}: {listed}");
    }
}
