//! Provenance end to end (issue 13): images made by the real `assetgen serve` carry their record,
//! `assetgen provenance` reads it back from a file, an image link and a `gs://` object, checks every
//! field against what was asked and what the pipeline stored, and says so when a file was changed
//! or carries no provenance. The live run's price is the ledger's.

use assetgen_common::testkit::{FakeGcs, Rig, row};
use assetgen_tests::{Server, png, serve_flaky_gemini, serve_refs, spawn_serve, spawn_serve_with_args};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ASSETGEN: &str = env!("CARGO_BIN_EXE_assetgen");

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Runs the CLI (in a blocking task: it may call back into this test's servers).
async fn cli(args: Vec<String>, env: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(ASSETGEN).args(&args).envs(env).output().expect("run the CLI"))
        .await
        .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn json_of(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr)))
}

/// Submits `csv` with the CLI, follows it to the end and returns the final batch view.
async fn submit(server: &Server, dir: &Path, csv: &str, live: bool) -> Value {
    let file = dir.join("rows.csv");
    std::fs::write(&file, csv).expect("csv");
    let mut list = args(&["--server", &server.base, "submit", file.to_str().expect("path"), "--follow", "--json"]);
    if live {
        list.extend(args(&["--live", "--yes"]));
    }
    let output = cli(list, vec![]).await;
    assert!(output.status.success(), "submit failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let done = stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|e| e["event"] == "done");
    let view = done.expect("a done event")["data"].clone();
    assert_eq!(view["status"], "succeeded", "{view}");
    view
}

/// The stored row state of `scene` (read from the server's data directory).
fn row_state(data: &Path, batch: &str, scene: &str) -> Value {
    let rows = data.join("batches").join(batch).join("rows");
    std::fs::read_dir(rows)
        .expect("rows")
        .filter_map(Result::ok)
        .map(|f| serde_json::from_slice::<Value>(&std::fs::read(f.path()).expect("read")).expect("json"))
        .find(|s| s["scene_id"] == scene)
        .expect("the row's state")
}

fn image_file(data: &Path, batch: &str, scene: &str, variant: u8) -> PathBuf {
    data.join("images").join(batch).join(format!("{scene}-v{variant}.png"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_images_provenance_reads_back_from_a_file_and_its_link_with_every_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refs = serve_refs().await.expect("refs server");
    let server =
        spawn_serve(Path::new(ASSETGEN), dir.path(), &[("ASSETGEN_ALLOW_PRIVATE_REFS", "true")]).expect("serve");
    let (r1, r1_copy, r2) =
        (format!("{refs}/refs/1.png"), format!("{refs}/refs/copy-1.png"), format!("{refs}/refs/2.png"));
    let csv = format!(
        "scene_id,prompt,variants,refs,ref_mode,aspect_ratio\n\
         HERO-001,a ceramic mug on walnut,2,{r1}|{r1_copy}|{r2},style_and_composition,16:9\n\
         PLAIN-002,a plain scene,1,,style_only,\n"
    );
    let view = submit(&server, dir.path(), &csv, false).await;
    let batch = view["batch_id"].as_str().expect("id").to_owned();
    let data = dir.path().join("data");
    let state = row_state(&data, &batch, "HERO-001");
    let file = image_file(&data, &batch, "HERO-001", 2);
    let stored = std::fs::read(&file).expect("the PNG");

    let output =
        cli(args(&["--server", &server.base, "provenance", file.to_str().expect("path"), "--json"]), vec![]).await;
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json_of(&output);
    let p = &report["provenance"];
    assert_eq!(report["sha256"], sha(&stored));
    assert_eq!(report["bytes"], stored.len());
    assert_eq!(report["check"]["matches"], true, "{report}");
    let v2 = state["variants"].as_array().expect("variants").iter().find(|v| v["variant"] == 2).expect("v2");
    assert_eq!(report["recorded"]["recorded"]["sha256"], v2["sha256"], "the row state's hash");
    assert_eq!(v2["sha256"], sha(&stored), "which is the hash of the stored file, chunks included");
    assert_eq!(report["recorded"]["sidecar"]["image"]["sha256"], v2["sha256"]);

    assert_eq!(p["format"], "assetgen.provenance/1");
    assert_eq!(p["batch_id"], batch);
    assert_eq!(p["row"], state["row"]);
    assert_eq!(p["scene_id"], "HERO-001");
    assert_eq!(p["variant"], 2);
    assert_eq!(p["object"], format!("images/{batch}/HERO-001-v2.png"));
    let prompt = p["prompt"].as_str().expect("prompt");
    assert!(prompt.starts_with("a ceramic mug on walnut\n\nFollow the attached reference images"), "as sent: {prompt}");
    assert_eq!(p["model"], "gemini-2.5-flash-image");
    assert_eq!(p["model_version"], "assetgen-dry-run");
    assert!(p["response_id"].as_str().is_some_and(|id| id.starts_with("dry-run-")), "{p}");
    assert_eq!(p["run_mode"], "dry_run");
    assert_eq!(p["aspect_ratio"], "16:9");
    assert_eq!(p["ref_mode"], "style_and_composition");
    let refs: Vec<(String, String, String)> = p["refs"]
        .as_array()
        .expect("refs")
        .iter()
        .map(|r| {
            (
                r["url"].as_str().unwrap_or("").into(),
                r["outcome"].as_str().unwrap_or("").into(),
                r["sha256"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        refs,
        vec![
            (r1.clone(), "used".into(), sha(&png(1))),
            (r1_copy, "duplicate".into(), sha(&png(1))),
            (r2, "used".into(), sha(&png(2))),
        ],
        "every reference as given, with the hash of its bytes and what became of it"
    );
    assert_eq!(p["refs"][1]["duplicate_of"], r1.as_str());
    assert_eq!((p["price"]["micros"].as_i64(), p["price"]["usd"].as_f64()), (Some(0), Some(0.0)), "a dry run is free");
    assert!(p.get("ledger").is_none(), "and spends nothing: {p}");
    assert_eq!(p["user"], "dev@localhost");
    let times: Vec<time::OffsetDateTime> = ["submitted_at", "requested_at", "generated_at"]
        .iter()
        .map(|k| {
            time::OffsetDateTime::parse(p[k].as_str().expect(k), &time::format_description::well_known::Rfc3339)
                .expect(k)
        })
        .collect();
    assert!(times[0] <= times[1] && times[1] <= times[2], "{times:?}");
    assert_eq!(p["submitted_at"], view["created_at"]);
    assert_eq!((p["attempt"].as_u64(), p["round"].as_u64()), (Some(1), Some(0)));
    assert!(p["software"].as_str().is_some_and(|s| s.starts_with("assetgen ")));
    // The sidecar on disk says the same.
    let sidecar: Value =
        serde_json::from_slice(&std::fs::read(file.with_extension("json")).expect("sidecar")).expect("json");
    assert_eq!(sidecar, report["recorded"]["sidecar"]);

    // Readable text, with the verdict.
    let text = cli(args(&["--server", &server.base, "provenance", file.to_str().expect("path")]), vec![]).await;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    for expected in
        ["response    dry-run-", "aspect      16:9, refs style_and_composition", "  duplicate", "check       OK"]
    {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }

    // The image link from the status (signed) opens the provenance for anyone holding it, and its
    // signature opens nothing else.
    let status: Value =
        reqwest::get(format!("{}/v1/batches/{batch}", server.base)).await.expect("get").json().await.expect("json");
    let hero =
        status["rows"].as_array().expect("rows").iter().find(|r| r["scene_id"] == "HERO-001").expect("hero").clone();
    let link = hero["images"][1].as_str().expect("image link").to_owned();
    let stranger = vec![("ASSETGEN_USER".to_owned(), "stranger@elsewhere.test".to_owned())];
    let by_link = cli(args(&["--server", &server.base, "provenance", &link, "--json"]), stranger.clone()).await;
    assert_eq!(by_link.status.code(), Some(0), "{}", String::from_utf8_lossy(&by_link.stderr));
    assert_eq!(json_of(&by_link)["provenance"], report["provenance"]);
    let client = reqwest::Client::new();
    let as_stranger = |url: String| client.get(url).header("x-assetgen-user", "stranger@elsewhere.test").send();
    let provenance_link = hero["provenance"][1].as_str().expect("a provenance link").to_owned();
    assert_eq!(
        as_stranger(provenance_link.clone()).await.expect("get").status(),
        200,
        "the image's signature opens it"
    );
    let unsigned = format!("{}/v1/provenance/{batch}/HERO-001/2", server.base);
    assert_eq!(as_stranger(unsigned.clone()).await.expect("get").status(), 404, "not the stranger's batch");
    assert_eq!(client.get(&unsigned).send().await.expect("get").status(), 200, "the owner's");
    let sig = provenance_link.split_once("?sig=").expect("signed").1;
    let other = format!("{}/v1/provenance/{batch}/HERO-001/1?sig={sig}", server.base);
    assert_eq!(as_stranger(other).await.expect("get").status(), 404, "a signature opens its own image only");

    // A changed file no longer matches (bytes after IEND: still a valid PNG with the same record).
    let changed = dir.path().join("changed.png");
    std::fs::write(&changed, [stored.as_slice(), b"edited"].concat()).expect("write");
    let output = cli(args(&["--server", &server.base, "provenance", changed.to_str().expect("path")]), vec![]).await;
    assert_eq!(output.status.code(), Some(1), "a mismatch exits 1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not the row state's") && stderr.contains("changed after it was stored"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("check       MISMATCH"));

    // A PNG without provenance says so.
    let plain = dir.path().join("plain.png");
    std::fs::write(&plain, png(3)).expect("write");
    let output = cli(args(&["--server", &server.base, "provenance", plain.to_str().expect("path")]), vec![]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("a PNG without provenance"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_images_provenance_names_the_models_answer_and_the_ledgers_spend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gemini, _stub) = serve_flaky_gemini(0).await.expect("gemini stub");
    let env = [("GEMINI_API_KEY", "test-key"), ("GEMINI_BASE_URL", gemini.as_str())];
    let server = spawn_serve_with_args(Path::new(ASSETGEN), dir.path(), &env, &["--live"]).expect("serve");
    let view = submit(&server, dir.path(), "scene_id,prompt,variants\nLIVE-001,a live mug,1\n", true).await;
    let batch = view["batch_id"].as_str().expect("id").to_owned();
    let data = dir.path().join("data");
    let file = image_file(&data, &batch, "LIVE-001", 1);
    let output =
        cli(args(&["--server", &server.base, "provenance", file.to_str().expect("path"), "--json"]), vec![]).await;
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let p = json_of(&output)["provenance"].clone();
    assert_eq!(p["run_mode"], "live");
    assert_eq!(p["model_version"], "gemini-2.5-flash-image", "the answer's modelVersion");
    assert!(
        p["response_id"].as_str().is_some_and(|id| id.starts_with("stub-response-")),
        "the answer's responseId: {p}"
    );
    assert_eq!(p["price"]["micros"], 39_000);
    let event_object = p["ledger"]["object"].as_str().expect("the spend event");
    let event: Value =
        serde_json::from_slice(&std::fs::read(data.join(event_object)).expect("the event is in the ledger"))
            .expect("json");
    assert_eq!(event["kind"], "spend");
    assert_eq!(event["amount"], p["price"]["micros"], "price charged = what the ledger spent");
    assert_eq!(view["cost_usd"].as_f64(), p["price"]["usd"].as_f64(), "and what the batch cost");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gs_image_is_read_and_checked_in_its_bucket() {
    let gcs = FakeGcs::start().await;
    let store = gcs.store().await;
    let bucket = store.bucket().trim_start_matches("projects/_/buckets/").to_owned();
    let store: std::sync::Arc<dyn assetgen_common::store::ObjectStore> = std::sync::Arc::new(store);
    let rig = Rig::on(store.clone(), |_| {});
    let batch = rig.submit_rows(vec![row("GS-001", 1)]).await;
    for message in rig.queue.published() {
        rig.pipeline.worker.process(&message).await.expect("generated");
    }
    let object = format!("images/{batch}/GS-001-v1.png");
    let url = format!("gs://{bucket}/{object}");
    let env = vec![("STORAGE_EMULATOR_HOST".to_owned(), gcs.endpoint.clone())];
    let output = cli(args(&["--server", "http://127.0.0.1:9", "provenance", &url, "--json"]), env.clone()).await;
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json_of(&output);
    assert_eq!(report["check"]["matches"], true);
    assert_eq!(report["provenance"]["object"], object);
    assert_eq!(report["provenance"]["user"], "artist@studio.test");
    let stored = store.get(&object).await.expect("image").body;
    assert_eq!(report["sha256"], sha(&stored));

    // The object replaced behind the pipeline's back: its hash is no longer the row state's.
    let replaced = bytes::Bytes::from([stored.as_ref(), b"swapped"].concat());
    store.put(&object, replaced, "image/png", assetgen_common::store::Precondition::None).await.expect("put");
    let output = cli(args(&["--server", "http://127.0.0.1:9", "provenance", &url]), env).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not the row state's"));
}
