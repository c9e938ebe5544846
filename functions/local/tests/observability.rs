//! What an operator sees of a live batch through `assetgen serve`: `/metrics` by route template,
//! `/metrics-lite` with the last hour, `/readyz`, and the request id of the submit in generate's
//! log lines (JSON with timestamps, no colour codes in a file) and in the ledger events.

use assetgen_tests::{ApiClient, serve_flaky_gemini, spawn_serve_logged};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const ASSETGEN: &str = env!("CARGO_BIN_EXE_assetgen");
const REQUEST_ID: &str = "obs-e2e-0001";
const TRACE_ID: &str = "105445aa7843bc8bf206b12000100000";

/// The value of the Prometheus sample whose line starts with `name{` and has every label given.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_batch_shows_in_metrics_logs_and_the_ledger_under_its_request_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("serve.log");
    let (gemini, _stub) = serve_flaky_gemini(0).await.expect("stub");
    let env = [
        ("GEMINI_API_KEY", "test-key"),
        ("GEMINI_BASE_URL", gemini.as_str()),
        ("ASSETGEN_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
        ("GOOGLE_CLOUD_PROJECT", "obs-project"),
    ];
    let server = spawn_serve_logged(Path::new(ASSETGEN), dir.path(), &env, &["--live"], &log).expect("serve");
    let base = &server.base;
    let api = server.api();
    let client = &api.client;

    let rows: Vec<Value> = (1..=3)
        .map(|i| json!({"scene_id": format!("OBS-{i}"), "prompt": format!("a lamp #{i}"), "variants": i, "refs": [], "ref_mode": "style_only"}))
        .collect();
    let (id, _) = ApiClient::accepted(
        api.post("/v1/batches")
            .header("x-request-id", REQUEST_ID)
            .header("x-cloud-trace-context", format!("{TRACE_ID}/1;o=1"))
            .json(&json!({"rows": rows, "run_mode": "live"})),
    )
    .await;
    api.until(&id, Duration::from_secs(60), "the batch succeeding", |view| view["status"] == "succeeded").await;
    assert_eq!(client.get(format!("{base}/no-such-page")).send().await.expect("404").status(), 404);

    // Prometheus: by route template, never the raw path; images, model calls, ledger, money. The
    // row states say done a moment before the last push is answered (and counted) and acked.
    let pushes = ["route=\"/pubsub/rows\"", "status=\"200\""];
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = client.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
        let settled = sample(&text, "assetgen_http_requests_total", &pushes) >= Some(3.0)
            && sample(&text, "assetgen_queue_pending", &[]) == Some(0.0);
        if settled || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let submits = ["route=\"/v1/batches\"", "method=\"POST\"", "status=\"202\""];
    assert_eq!(sample(&text, "assetgen_http_requests_total", &submits), Some(1.0), "{text}");
    assert!(
        sample(&text, "assetgen_http_requests_total", &["route=\"/v1/batches/{id}\"", "status=\"200\""]) >= Some(1.0)
    );
    assert!(sample(&text, "assetgen_http_requests_total", &pushes) >= Some(3.0), "{text}");
    assert!(!text.contains(&id), "no batch id in a label");
    assert_eq!(sample(&text, "assetgen_problems_total", &["code=\"NOT_FOUND\""]), Some(1.0));
    assert_eq!(sample(&text, "assetgen_images_generated_total", &["run_mode=\"live\""]), Some(6.0), "{text}");
    assert_eq!(sample(&text, "assetgen_rows_total", &["outcome=\"succeeded\""]), Some(3.0));
    assert_eq!(sample(&text, "assetgen_ledger_events_total", &["kind=\"spend\"", "written=\"new\""]), Some(6.0));
    assert_eq!(sample(&text, "assetgen_spent_microdollars_total", &[]), Some(6.0 * 39_000.0));
    assert!(sample(&text, "assetgen_model_latency_seconds_count", &["result=\"ok\""]) == Some(6.0), "{text}");
    assert_eq!(sample(&text, "assetgen_queue_pending", &[]), Some(0.0));
    assert!(sample(&text, "assetgen_queue_deliveries_total", &[]) >= Some(3.0));

    // The same counters as JSON, with the last hour minute by minute.
    let lite: Value =
        client.get(format!("{base}/metrics-lite")).send().await.expect("lite").json().await.expect("json");
    assert_eq!(lite["totals"]["assetgen_images_generated_total"], 6);
    let sum = |series: &str| {
        lite["last_hour"][series].as_array().expect("series").iter().filter_map(Value::as_f64).sum::<f64>()
    };
    assert_eq!(sum("images"), 6.0);
    assert!((sum("spent_usd") - 6.0 * 0.039).abs() < 1e-9, "{}", lite["last_hour"]);

    let ready = client.get(format!("{base}/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.expect("json")["status"], "ready");

    // The ledger events name the submit's request.
    let mut events = Vec::new();
    for day in std::fs::read_dir(dir.path().join("data/ledger")).expect("ledger dir").flatten() {
        for file in std::fs::read_dir(day.path()).expect("day").flatten() {
            events.push(serde_json::from_slice::<Value>(&std::fs::read(file.path()).expect("event")).expect("json"));
        }
    }
    assert_eq!(events.iter().filter(|e| e["kind"] == "spend").count(), 6);
    assert!(events.iter().all(|e| e["request_id"] == REQUEST_ID), "every event names the submit: {events:?}");

    // Logs: one JSON object a line, with a timestamp; the rows' lines carry the submit's id.
    drop(server);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains('\u{1b}'), "no ANSI colour codes in a log file");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["severity"].is_string()));
    let delivered: Vec<&Value> = lines.iter().filter(|l| l["message"] == "row delivered").collect();
    assert!(delivered.len() >= 3, "{text}");
    assert!(
        delivered.iter().all(|l| l["request_id"] == REQUEST_ID),
        "generate logs under the submit's id: {delivered:?}"
    );
    let accepted_line = lines.iter().find(|l| l["message"] == "batch accepted").expect("a batch accepted line");
    assert_eq!(accepted_line["request_id"], REQUEST_ID);
    assert_eq!(
        accepted_line["logging.googleapis.com/trace"],
        format!("projects/obs-project/traces/{TRACE_ID}"),
        "{accepted_line}"
    );
}
