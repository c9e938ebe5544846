//! Run mode `bulk` end to end through `assetgen serve --live` against the Batch API stub
//! (`assetgen_tests::bulk_stub`): one job per batch, polled until it ends; images stored and paid
//! at the bulk price (half the live one), a per-request error failing only its row, an expired job
//! releasing everything, a cancel cancelling the job at Google; the JSONL file a large job was
//! uploaded with and the results file Google wrote for it deleted at Google once the job ended and
//! its results were stored (succeeded, expired or cancelled); and the
//! ledger reconciling to the cent every time (`assetgen ledger check`).

use assetgen_tests::bulk_stub::{BulkOutcome, BulkStub, BulkStubConfig, serve_bulk_gemini};
use assetgen_tests::money::{assert_ledger_checks, assert_spent_exactly};
use assetgen_tests::{ApiClient, Server, spawn_serve_with_args};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const ASSETGEN: &str = env!("CARGO_BIN_EXE_assetgen");
/// Half of gemini-2.5-flash-image's $0.039.
const BULK_PRICE_USD: f64 = 0.0195;

struct Run {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    _server: Server,
    stub: BulkStub,
    api: ApiClient,
    client: reqwest::Client,
}

async fn start(config: BulkStubConfig, extra_env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let stub = serve_bulk_gemini(config).await.expect("stub");
    let mut env = vec![
        ("GEMINI_API_KEY", "test-key"),
        ("GEMINI_BASE_URL", stub.base.as_str()),
        ("ASSETGEN_BULK_POLL_SECS", "1"),
        // Every message twice: the batch must still become one job.
        ("ASSETGEN_QUEUE_DUPLICATES", "2"),
    ];
    env.extend_from_slice(extra_env);
    let server = spawn_serve_with_args(Path::new(ASSETGEN), dir.path(), &env, &["--live"]).expect("serve --live");
    Run { _dir: dir, data, api: server.api(), _server: server, stub, client: reqwest::Client::new() }
}

/// Four rows, seven images; the second row's prompt carries `marker`.
fn rows(marker: &str) -> Value {
    json!([
        {"scene_id": "CAT-001", "prompt": "a teapot on linen", "variants": 1},
        {"scene_id": "CAT-002", "prompt": format!("a teacup {marker}"), "variants": 2},
        {"scene_id": "CAT-003", "prompt": "a milk jug", "variants": 1, "aspect_ratio": "16:9"},
        {"scene_id": "CAT-004", "prompt": "a sugar bowl", "variants": 3},
    ])
}

impl Run {
    async fn submit(&self, marker: &str) -> String {
        let (id, accepted) = self.api.submit(&json!({"rows": rows(marker), "run_mode": "bulk"})).await;
        let usd = accepted["estimate"]["usd"].as_f64().expect("usd");
        assert!((usd - 7.0 * BULK_PRICE_USD).abs() < 1e-9, "held at the bulk price: {usd}");
        assert!((accepted["budget"]["reserved_usd"].as_f64().expect("reserved") - usd).abs() < 1e-9);
        id
    }

    async fn until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.api.until(id, Duration::from_secs(60), what, done).await
    }

    async fn ended(&self, id: &str) -> Value {
        self.api.ended(id, Duration::from_secs(60)).await
    }

    /// Spent is `images` at the bulk price, nothing stays held, and the ledger reconciles.
    async fn money_reconciles(&self, images: usize) {
        // The hold is settled just after the last row ends (by the same poll): wait for it.
        assert_spent_exactly(&self.api.settled_budget(Duration::from_secs(20)).await, images, BULK_PRICE_USD);
        let store = format!("file://{}", self.data.display());
        assert_ledger_checks(Path::new(ASSETGEN), &[("ASSETGEN_STORE", &store)]);
    }
}

impl Run {
    /// Every file the batch's jobs left at Google — the JSONL input a large job was uploaded with,
    /// the results file Google wrote for it — was deleted once the job ended and its results were
    /// stored (the rows end first, in the same poll: wait for it), one `DELETE /v1beta/files/{id}`
    /// each.
    async fn no_file_left(&self, expect_inputs: bool, expect_results: bool) {
        let jobs = self.stub.jobs();
        let inputs: Vec<String> = jobs.iter().filter_map(|j| j.input_file.clone()).collect();
        let results: Vec<String> = jobs.iter().filter_map(|j| j.results_file.clone()).collect();
        assert_eq!(!inputs.is_empty(), expect_inputs, "jobs that went as an uploaded file: {inputs:?}");
        assert_eq!(!results.is_empty(), expect_results, "jobs whose results came as a file: {results:?}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.stub.files().is_empty() {
            assert!(Instant::now() < deadline, "files left at Google: {:?}", self.stub.files());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut deleted: Vec<String> = self
            .stub
            .received()
            .into_iter()
            .filter(|r| r.method == "DELETE")
            .map(|r| r.path.trim_start_matches("/v1beta/").to_owned())
            .collect();
        deleted.sort();
        let mut expected: Vec<String> = inputs.into_iter().chain(results).collect();
        expected.sort();
        assert_eq!(deleted, expected, "each file deleted once");
    }
}

fn row<'a>(view: &'a Value, scene: &str) -> &'a Value {
    view["rows"].as_array().and_then(|r| r.iter().find(|r| r["scene_id"] == scene)).expect("the row")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_one_failed_request_fails_only_that_row() {
    let run = start(
        BulkStubConfig {
            polls_before_end: 2,
            outcome: BulkOutcome::Succeed,
            fail_marker: "FAIL-ME".into(),
            results_as_file: false,
        },
        &[],
    )
    .await;
    let id = run.submit("FAIL-ME").await;

    // While Google works on it, the batch says so.
    let waiting = run.until(&id, "the job being submitted", |v| v["bulk"]["job"].is_string()).await;
    assert!(waiting["bulk"]["submitted_at"].is_string(), "{}", waiting["bulk"]);

    let view = run.ended(&id).await;
    assert_eq!(view["status"], "completed_with_failures", "{view}");
    for scene in ["CAT-001", "CAT-003", "CAT-004"] {
        let r = row(&view, scene);
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["images"].as_array().map(Vec::len), r["variants"].as_u64().map(|v| v as usize));
        assert!(
            (r["cost_usd"].as_f64().expect("cost") - r["variants"].as_f64().expect("n") * BULK_PRICE_USD).abs() < 1e-9
        );
    }
    let failed = row(&view, "CAT-002");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "MODEL_REJECTED", "{failed}");
    assert!(failed["images"].as_array().is_some_and(Vec::is_empty));
    assert_eq!(view["bulk"]["state"], "succeeded");

    // One job for the batch, although every message came twice; seven requests, keyed by row.
    let jobs = run.stub.jobs();
    assert_eq!(jobs.len(), 1, "one Batch API job per batch");
    let mut keys: Vec<&str> = jobs[0].requests.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["r0000-v1", "r0001-v1", "r0001-v2", "r0002-v1", "r0003-v1", "r0003-v2", "r0003-v3"]);
    assert!(!jobs[0].from_file, "a small batch goes inline");
    assert!(jobs[0].polls >= 3, "polled until it ended: {}", jobs[0].polls);

    // The images are real PNGs, served like live ones.
    let image = row(&view, "CAT-004")["images"][2].as_str().expect("a link").to_owned();
    let bytes = run.client.get(&image).send().await.expect("image").bytes().await.expect("bytes");
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG at {image}");

    // Each image explains itself like a live one: a sidecar naming the bulk run, its price and
    // the spend event that paid it.
    let images = std::fs::read_dir(run.data.join("images").join(&id)).expect("images dir");
    let names: Vec<String> = images.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    let pngs: Vec<&String> = names.iter().filter(|n| n.ends_with(".png")).collect();
    assert_eq!(pngs.len(), 5, "{names:?}");
    assert_eq!(names.len(), 10, "a sidecar beside each image and nothing else: {names:?}");
    let sidecar: Value = serde_json::from_slice(
        &std::fs::read(run.data.join("images").join(&id).join("CAT-004-v3.json")).expect("sidecar"),
    )
    .expect("json");
    let made = &sidecar;
    assert_eq!(made["run_mode"], "bulk", "{sidecar}");
    assert_eq!(made["price"]["micros"], 19_500, "{sidecar}");
    assert!(made["ledger"]["event"].as_str().is_some_and(|e| e.ends_with(".0003.v3.r0.spend")), "{sidecar}");
    assert_eq!(made["prompt"], "a sugar bowl");
    run.money_reconciles(5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_batch_goes_to_google_as_an_uploaded_file() {
    let run = start(
        BulkStubConfig {
            polls_before_end: 2,
            outcome: BulkOutcome::Succeed,
            fail_marker: "FAIL-ME".into(),
            results_as_file: false,
        },
        &[("ASSETGEN_BULK_INLINE_BYTES", "200")],
    )
    .await;
    let id = run.submit("FAIL-ME").await;
    let view = run.ended(&id).await;
    assert_eq!(view["status"], "completed_with_failures", "{view}");
    assert_eq!(row(&view, "CAT-002")["error"]["code"], "MODEL_REJECTED");
    let jobs = run.stub.jobs();
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].from_file, "over the inline limit, the requests go as a JSONL file");
    assert_eq!(jobs[0].requests.len(), 7);
    let received = run.stub.received();
    assert!(received.iter().any(|r| r.path.starts_with("/upload/v1beta/files?upload_id=")), "uploaded");
    assert!(received.iter().any(|r| r.path.contains("-output:download?alt=media")), "results downloaded");
    run.money_reconciles(5).await;
    run.no_file_left(true, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_results_file_is_deleted_at_google_once_its_rows_are_stored() {
    // Sent inline, answered in a file (as Google answers a large job): the results file is the
    // only file at Google, read and then deleted.
    let run = start(
        BulkStubConfig {
            polls_before_end: 2,
            outcome: BulkOutcome::Succeed,
            fail_marker: "FAIL-ME".into(),
            results_as_file: true,
        },
        &[],
    )
    .await;
    let id = run.submit("FAIL-ME").await;
    let view = run.ended(&id).await;
    assert_eq!(view["status"], "completed_with_failures", "{view}");
    for scene in ["CAT-001", "CAT-003", "CAT-004"] {
        let r = row(&view, scene);
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["images"].as_array().map(Vec::len), r["variants"].as_u64().map(|v| v as usize), "{r}");
        assert!(
            (r["cost_usd"].as_f64().expect("cost") - r["variants"].as_f64().expect("n") * BULK_PRICE_USD).abs() < 1e-9
        );
    }
    let failed = row(&view, "CAT-002");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "MODEL_REJECTED", "{failed}");
    assert!(failed["images"].as_array().is_some_and(Vec::is_empty));

    let jobs = run.stub.jobs();
    assert_eq!(jobs.len(), 1);
    assert!(!jobs[0].from_file, "a small batch goes inline");
    let file = jobs[0].results_file.clone().expect("the results came as a file");
    let downloads = run.stub.received().into_iter().filter(|r| r.path.contains(":download")).count();
    assert!(downloads >= 1, "the results were read from {file}");
    // The images are the file's: real PNGs.
    let image = row(&view, "CAT-004")["images"][2].as_str().expect("a link").to_owned();
    let bytes = run.client.get(&image).send().await.expect("image").bytes().await.expect("bytes");
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG at {image}");
    run.money_reconciles(5).await;
    run.no_file_left(false, true).await;

    // The job's object records the file and its delete.
    let object: Value = serde_json::from_slice(
        &std::fs::read(run.data.join("batches").join(&id).join("bulk").join("0000.json")).expect("the job's object"),
    )
    .expect("json");
    assert_eq!(object["results_file"], file.as_str(), "{object}");
    assert_eq!(object["results_deleted"], true, "{object}");
    assert_eq!(object["settled"], true, "{object}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_job_releases_everything() {
    // Over the inline limit, so that the expired job's uploaded file has to go too.
    let run = start(
        BulkStubConfig {
            polls_before_end: 2,
            outcome: BulkOutcome::Expire,
            fail_marker: String::new(),
            results_as_file: false,
        },
        &[("ASSETGEN_BULK_INLINE_BYTES", "200")],
    )
    .await;
    let id = run.submit("").await;
    let view = run.ended(&id).await;
    assert_eq!(view["status"], "failed", "{view}");
    for r in view["rows"].as_array().expect("rows") {
        assert_eq!(r["status"], "failed");
        assert_eq!(r["error"]["code"], "BULK_JOB_EXPIRED", "{r}");
    }
    assert_eq!(view["bulk"]["state"], "expired");
    run.money_reconciles(0).await;
    run.no_file_left(true, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_cancels_the_job_at_google_and_releases_the_money() {
    let run = start(
        BulkStubConfig {
            polls_before_end: 100_000,
            outcome: BulkOutcome::Succeed,
            fail_marker: String::new(),
            results_as_file: false,
        },
        &[("ASSETGEN_BULK_INLINE_BYTES", "200")],
    )
    .await;
    let id = run.submit("").await;
    run.until(&id, "the job being submitted", |v| v["bulk"]["job"].is_string()).await;

    let cancelled: Value =
        run.api.post(&format!("/v1/batches/{id}/cancel")).send().await.expect("cancel").json().await.expect("json");
    assert_eq!(cancelled["rows"], json!([0, 1, 2, 3]), "every row is being cancelled: {cancelled}");

    let view = run.ended(&id).await;
    assert_eq!(view["status"], "cancelled", "{view}");
    assert_eq!(view["bulk"]["state"], "cancelled");
    let jobs = run.stub.jobs();
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].cancelled, "the job was cancelled at Google");
    assert!(run.stub.received().iter().any(|r| r.method == "POST" && r.path.ends_with(":cancel")));
    run.money_reconciles(0).await;
    run.no_file_left(true, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watching_page_is_told_when_google_moves_the_job() {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    // Two polls pending, two running: the job moves while no row changes.
    let run = start(
        BulkStubConfig {
            polls_before_end: 4,
            outcome: BulkOutcome::Succeed,
            fail_marker: String::new(),
            results_as_file: false,
        },
        &[],
    )
    .await;
    let id = run.submit("").await;
    let events =
        run.api.get(&format!("/v1/batches/{id}/events")).send().await.expect("events").bytes_stream().eventsource();
    let mut events = std::pin::pin!(events);
    let mut states = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await {
        let event = event.expect("an SSE event");
        let data: Value = serde_json::from_str(&event.data).expect("json");
        if event.event == "batch"
            && let Some(state) = data["bulk"]["state"].as_str()
            && states.last().map(String::as_str) != Some(state)
        {
            states.push(state.to_owned());
        }
        if event.event == "done" {
            assert_eq!(data["bulk"]["state"], "succeeded", "{data}");
            break;
        }
    }
    assert!(states.iter().any(|s| s == "running"), "the batch events followed the job: {states:?}");
    assert_eq!(states.last().map(String::as_str), Some("succeeded"), "{states:?}");
}
