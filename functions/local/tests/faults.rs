//! Faults under load, on the real binary (loopback only, bounded): SIGTERM in the middle of a row,
//! the store answering 503 for a few seconds mid-batch, and a model slower than the queue's push
//! deadline. In each, every row must end succeeded, each image be paid once, and the ledger
//! reconcile with the budget to the cent.

use assetgen_tests::money::{assert_ledger_checks, assert_spent_exactly};
use assetgen_tests::{GeminiStubStats, Server, serve_flaky_gemini, spawn_serve_with_args, wait_until};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const ASSETGEN: &str = env!("CARGO_BIN_EXE_assetgen");
const PRICE_USD: f64 = 0.039;

/// A live batch of `n` rows.
fn batch(n: usize, variants: impl Fn(usize) -> usize) -> Value {
    let rows: Vec<Value> = (0..n)
        .map(|i| json!({"scene_id": format!("F-{i:03}"), "prompt": format!("a chair, angle {i}"), "variants": variants(i), "refs": [], "ref_mode": "style_only"}))
        .collect();
    json!({"rows": rows, "run_mode": "live"})
}

/// Waits for the batch to end and checks the money: every row succeeded, every stored image is
/// recorded and paid once, nothing is held any more, and `assetgen ledger check` passes.
async fn ends_with_exact_money(server: &Server, dir: &Path, id: &str, images: usize) {
    let api = server.api();
    let view = api.ended(id, Duration::from_secs(90)).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    let in_state: usize =
        view["rows"].as_array().expect("rows").iter().map(|r| r["images"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(in_state, images);
    let stored = std::fs::read_dir(dir.join(format!("data/images/{id}")))
        .expect("images")
        .filter_map(Result::ok)
        .filter(|f| f.path().extension().is_some_and(|e| e == "png"))
        .count();
    assert_eq!(stored, images, "every stored image is recorded, nothing else is stored");
    assert_spent_exactly(&api.budget().await, images, PRICE_USD);
    let store = format!("file://{}", dir.join("data").display());
    assert_ledger_checks(Path::new(ASSETGEN), &[("ASSETGEN_STORE", &store)]);
}

fn live_env(gemini: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GEMINI_API_KEY", "test-key".to_owned()),
        ("GEMINI_BASE_URL", gemini.to_owned()),
        ("ASSETGEN_MAX_ROWS", "20".to_owned()),
    ]
}

fn spawn(dir: &Path, env: &[(&'static str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_serve_with_args(Path::new(ASSETGEN), dir, &env, &["--live"]).expect("serve --live")
}

async fn metrics(server: &Server) -> String {
    server.api().get("/metrics").send().await.expect("metrics").text().await.expect("text")
}

/// Sum of the Prometheus samples of `name` whose line has every label given.
fn sample_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn row_state(dir: &Path, id: &str, row: usize) -> Value {
    let path = dir.join(format!("data/batches/{id}/rows/{row:04}.json"));
    serde_json::from_slice(&std::fs::read(&path).expect("row state")).expect("json")
}

fn model_calls(stub: &GeminiStubStats) -> u64 {
    stub.calls.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_row_gives_the_row_back_within_cloud_runs_ten_seconds_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gemini, stub) = serve_flaky_gemini(0).await.expect("stub");
    // Every model call hangs far past Cloud Run's 10 s.
    stub.delay_ms.store(60_000, Ordering::SeqCst);
    let env = live_env(&gemini);
    let mut server = spawn(dir.path(), &env);
    let (id, _) = server.api().submit(&batch(2, |_| 1)).await;
    wait_until(Duration::from_secs(30), "both rows in their model call", || stub.in_flight.load(Ordering::SeqCst) == 2)
        .await;

    let signalled = Instant::now();
    let kill = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().expect("kill -TERM");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(20), "still running 20 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    println!("SIGTERM to exit: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(10), "Cloud Run kills 10 s after SIGTERM; the process took {took:?}");
    assert!(status.success(), "a clean exit: {status:?}");
    for row in 0..2 {
        let state = row_state(dir.path(), &id, row);
        assert_eq!(state["status"], "queued", "the row was given back: {state}");
        assert!(state["lease"].is_null(), "no lease left to wait out: {state}");
    }

    // A new instance takes the rows at once and finishes them; each image is paid once.
    stub.delay_ms.store(0, Ordering::SeqCst);
    server = spawn(dir.path(), &env);
    ends_with_exact_money(&server, dir.path(), &id, 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_mid_batch_only_delays_it_and_money_stays_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outage = dir.path().join("store-outage");
    let (gemini, stub) = serve_flaky_gemini(0).await.expect("stub");
    stub.delay_ms.store(150, Ordering::SeqCst);
    let mut env = live_env(&gemini);
    env.push(("ASSETGEN_FAULT_STORE_OUTAGE_FILE", outage.display().to_string()));
    let server = spawn(dir.path(), &env);
    let (id, _) = server.api().submit(&batch(12, |i| i % 3 + 1)).await;

    wait_until(Duration::from_secs(30), "the batch under way", || stub.succeeded() >= 6).await;
    std::fs::write(&outage, b"503").expect("outage on");
    let down_at = stub.succeeded();
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::remove_file(&outage).expect("outage off");
    println!("store down for 3 s after {down_at} images");

    ends_with_exact_money(&server, dir.path(), &id, 24).await;
    let text = metrics(&server).await;
    assert!(sample_sum(&text, "assetgen_problems_total", &["code=\"STORE_UNAVAILABLE\""]) > 0.0, "the outage was met");
    assert!(sample_sum(&text, "assetgen_rows_total", &["outcome=\"error\""]) > 0.0, "deliveries failed in it");
    println!("model calls: {} for 24 images", model_calls(&stub));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_slower_than_the_push_deadline_finishes_its_rows_and_charges_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gemini, stub) = serve_flaky_gemini(0).await.expect("stub");
    // Each image takes 2.5 s; the queue gives up on a push after 1 s and redelivers.
    stub.delay_ms.store(2_500, Ordering::SeqCst);
    let mut env = live_env(&gemini);
    env.push(("ASSETGEN_QUEUE_ACK_DEADLINE_SECS", "1".to_owned()));
    let server = spawn(dir.path(), &env);
    let (id, _) = server.api().submit(&batch(2, |_| 2)).await;

    ends_with_exact_money(&server, dir.path(), &id, 4).await;
    assert_eq!(model_calls(&stub), 4, "each image was made once, whatever the redeliveries");
    let text = metrics(&server).await;
    assert!(sample_sum(&text, "assetgen_queue_nacks_total", &[]) >= 2.0, "the push deadline was hit:\n{text}");
}
