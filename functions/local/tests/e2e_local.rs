//! The acceptance run of the embedded default: the real `assetgen serve` on a free port, a
//! 100-row dry run submitted with the real CLI, followed over SSE to `done`.

use assetgen_tests::{acceptance_csv, serve_refs, spawn_serve};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const ASSETGEN: &str = env!("CARGO_BIN_EXE_assetgen");

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_row_dry_run_travels_the_whole_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refs = serve_refs().await.expect("refs server");
    let server = spawn_serve(
        Path::new(ASSETGEN),
        dir.path(),
        &[("ASSETGEN_MAX_ROWS", "100"), ("ASSETGEN_ALLOW_PRIVATE_REFS", "true")],
    )
    .expect("serve");
    let csv = dir.path().join("rows.csv");
    std::fs::write(&csv, acceptance_csv(100, &refs)).expect("csv");

    let output = tokio::task::spawn_blocking(move || {
        Command::new(ASSETGEN)
            .args(["--server", &server.base, "submit"])
            .arg(&csv)
            .args(["--follow", "--json"])
            .output()
            .map(|o| (o, server))
    })
    .await
    .expect("join")
    .expect("run the CLI");
    let (output, server) = output;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "CLI failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));

    let events: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(names.contains(&"snapshot"), "followed from a snapshot: {names:?}");
    // Every row's success reached the client: in the snapshot if it was done before the client
    // connected, else as a row event.
    let snapshot = &events.iter().find(|e| e["event"] == "snapshot").expect("snapshot")["data"];
    let mut seen: std::collections::BTreeSet<u64> = snapshot["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .filter_map(|r| r["row"].as_u64())
        .collect();
    seen.extend(
        events
            .iter()
            .filter(|e| e["event"] == "row" && e["data"]["status"] == "succeeded")
            .filter_map(|e| e["data"]["row"].as_u64()),
    );
    assert_eq!(seen.len(), 100, "every row's success was streamed");
    let done = events.iter().find(|e| e["event"] == "done").expect("a done event");
    let view = &done["data"];
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["totals"]["succeeded"], 100);
    assert_eq!(view["totals"]["images_done"], 199);
    let batch_id = view["batch_id"].as_str().expect("batch id").to_owned();

    // 199 real PNGs on disk, where the bucket layout says.
    let images = dir.path().join("data/images").join(&batch_id);
    let files: Vec<_> = std::fs::read_dir(&images).expect("images dir").filter_map(Result::ok).collect();
    let (pngs, sidecars): (Vec<_>, Vec<_>) =
        files.into_iter().partition(|f| f.path().extension().is_some_and(|e| e == "png"));
    assert_eq!(pngs.len(), 199);
    assert_eq!(sidecars.len(), 199, "a provenance sidecar beside every image");
    assert!(sidecars.iter().all(|f| f.path().extension().is_some_and(|e| e == "json")));
    assert!(pngs.iter().all(|p| std::fs::read(p.path()).expect("read").starts_with(b"\x89PNG")));
    assert!(images.join("BATCH-003-v3.png").exists(), "i=2 asks for 3 variants");

    // The status endpoint agrees, and content dedup is visible in row state.
    let status = server.api().batch(&batch_id).await;
    let rows = status["rows"].as_array().expect("rows");
    assert!(rows.iter().all(|r| r["status"] == "succeeded"));
    let with_refs = rows.iter().filter(|r| !r["refs"].as_array().expect("refs").is_empty()).count();
    assert_eq!(with_refs, 20);
    let duplicates: Vec<&Value> =
        rows.iter().flat_map(|r| r["refs"].as_array().expect("refs")).filter(|r| r["outcome"] == "duplicate").collect();
    assert!(!duplicates.is_empty(), "some refs repeat another's content");
    assert!(
        duplicates
            .iter()
            .all(|d| d["url"].as_str().is_some_and(|u| u.contains("/copy-")) && d["duplicate_of"].is_string())
    );

    // An image link serves the PNG.
    let link = rows[0]["images"][0].as_str().expect("link");
    let image = reqwest::get(link).await.expect("image");
    assert_eq!(image.headers()["content-type"], "image/png");
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_problem_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = spawn_serve(Path::new(ASSETGEN), dir.path(), &[]).expect("serve");
    let client = reqwest::Client::new();
    let body = serde_json::json!({"rows": [
        {"scene_id": "A", "prompt": "ok"},
        {"scene_id": "A", "prompt": "", "variants": 4, "refs": ["ftp://x/y.png"]}
    ]});
    let response = client.post(format!("{}/v1/batches", server.base)).json(&body).send().await.expect("post");
    assert_eq!(response.status(), 422);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.expect("json");
    let fields: Vec<&str> =
        problem["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(fields, ["rows[1].prompt", "rows[1].variants", "rows[1].refs[0]", "rows[1].scene_id"]);
    assert!(!dir.path().join("data/batches").exists(), "nothing written");

    let openapi: Value =
        client.get(format!("{}/openapi.json", server.base)).send().await.expect("get").json().await.expect("json");
    assert_eq!(openapi["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    for path in [
        "/v1/batches",
        "/v1/estimate",
        "/v1/batches/{id}",
        "/v1/batches/{id}/events",
        "/pubsub/rows",
        "/pubsub/dead-letter",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} is documented");
    }
    // The document states what the server checks, headers included.
    for path in ["/v1/batches", "/v1/batches/{id}/cancel", "/v1/batches/{id}/retry"] {
        let parameters = openapi["paths"][path]["post"]["parameters"].as_array().expect("parameters");
        let key = parameters.iter().find(|p| p["name"] == "Idempotency-Key").expect("Idempotency-Key");
        assert_eq!(key["schema"]["pattern"], assetgen_common::idempotent_control::KEY_PATTERN, "{path}");
    }
    let missing = client.get(format!("{}/nope", server.base)).send().await.expect("get");
    assert_eq!(
        (missing.status().as_u16(), missing.headers()["content-type"].to_str().expect("ct")),
        (404, "application/problem+json")
    );
    assert_eq!(client.get(format!("{}/readyz", server.base)).send().await.expect("get").status(), 200);
    let hostile = client.get(format!("{}/b/%0d%0aSet-Cookie:x", server.base)).send().await.expect("get");
    assert_eq!(hostile.status(), 404, "a hostile page id is a problem, not a crash or a header");
}
