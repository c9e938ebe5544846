//! CSV files as people and spreadsheets write them, through the real CLI against the real `assetgen
//! serve`: Excel's byte order mark, CRLF line ends and quoted line breaks simply work; 10,000
//! columns, text that is not UTF-8, empty and header-only files and ragged rows are refused with
//! one clear, bounded message naming the line, before any request: the server sees none, and not one
//! object in its store changes.

use assetgen_tests::spawn_serve;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ASSETGEN: &str = env!("CARGO_BIN_EXE_assetgen");

/// Every object of the file store, by path, with its bytes.
fn store_objects(data: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut objects = BTreeMap::new();
    let mut dirs = vec![data.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a store directory").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let name = path.strip_prefix(data).expect("under the store").display().to_string();
                objects.insert(name, std::fs::read(&path).expect("read an object"));
            }
        }
    }
    objects
}

/// Requests the server answered, by `METHOD route`, from `/metrics-lite`.
async fn requests(base: &str) -> BTreeMap<String, u64> {
    let lite: Value =
        reqwest::get(format!("{base}/metrics-lite")).await.expect("metrics-lite").json().await.expect("json");
    lite["counters"]
        .as_object()
        .expect("counters")
        .iter()
        .filter(|(name, _)| name.starts_with("assetgen_http_requests_total"))
        .filter(|(name, _)| !name.contains("/metrics-lite"))
        .map(|(name, n)| (name.clone(), n.as_u64().unwrap_or_default()))
        .collect()
}

fn run_cli(base: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(ASSETGEN).args(["--server", base]).args(args).output().expect("run the CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn spreadsheet_csv_files_work_and_bad_ones_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = spawn_serve(Path::new(ASSETGEN), dir.path(), &[]).expect("serve");
    let base = server.base.clone();
    let data = dir.path().join("data");

    // Excel's "CSV UTF-8": a BOM before a quoted first header, CRLF, a prompt with a line break.
    let good = dir.path().join("excel.csv");
    std::fs::write(
        &good,
        b"\xef\xbb\xbf\"scene_id\",prompt,variants\r\nHERO-1,\"a mug\r\non a desk\",2\r\nHERO-2,\"plain, with a comma\",\r\n",
    )
    .expect("csv");
    let good_arg = good.to_string_lossy().into_owned();
    let (code, out, err) = tokio::task::spawn_blocking({
        let base = base.clone();
        move || run_cli(&base, &["submit", &good_arg, "--json"])
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{err}");
    let accepted: Value = serde_json::from_str(out.trim()).expect("the submit answer");
    let batch_id = accepted["batch_id"].as_str().expect("batch id").to_owned();
    assert_eq!(accepted["estimate"]["images"], 3);

    let manifest: Value = serde_json::from_slice(
        &std::fs::read(data.join("batches").join(&batch_id).join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    let rows = manifest["spec"]["rows"].as_array().expect("rows");
    let scenes: Vec<(&str, &str)> =
        rows.iter().map(|r| (r["scene_id"].as_str().unwrap_or("?"), r["prompt"].as_str().unwrap_or("?"))).collect();
    assert_eq!(scenes, vec![("HERO-1", "a mug\r\non a desk"), ("HERO-2", "plain, with a comma")], "{manifest}");

    // Wait for the dry run to end, so that nothing moves in the store by itself.
    let ended = server.api().ended(&batch_id, Duration::from_secs(60)).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let header: Vec<String> =
        ["scene_id".to_owned(), "prompt".to_owned()].into_iter().chain((3..=10_000).map(|i| format!("c{i}"))).collect();
    let wide = format!("{}\nS,p{}\n", header.join(","), ",x".repeat(9_998));
    let named: Vec<String> = (3..=12).map(|i| format!("\"c{i}\" (column {i})")).collect();
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "wide.csv",
            wide.into_bytes(),
            format!(
                "wide.csv, line 1: unknown columns {}, and 9,988 more; the columns are scene_id, prompt, variants, \
                 refs, ref_mode, aspect_ratio",
                named.join(", ")
            ),
        ),
        (
            "latin1.csv",
            b"scene_id,prompt\r\nA,ok\r\nB,caf\xe9 au lait\r\n".to_vec(),
            "latin1.csv, line 3, column 2 (prompt): the text is not UTF-8; save or export the file as CSV (UTF-8)"
                .to_owned(),
        ),
        (
            "empty.csv",
            b"\xef\xbb\xbf".to_vec(),
            "empty.csv: the file is empty; the first line must name the columns \
             (scene_id,prompt,variants,refs,ref_mode,aspect_ratio)"
                .to_owned(),
        ),
        (
            "header.csv",
            b"scene_id,prompt\r\n".to_vec(),
            "header.csv: the file has a header row but no rows; add one row per scene".to_owned(),
        ),
        (
            "ragged.csv",
            b"scene_id,prompt,variants\r\nA,p,1\r\nB,\"q\nr\"\r\n".to_vec(),
            "ragged.csv, line 3: this row has 2 fields but the header row has 3; check for a missing or extra comma"
                .to_owned(),
        ),
    ];

    let before = store_objects(&data);
    let requests_before = requests(&base).await;
    for (name, bytes, expected) in cases {
        std::fs::write(dir.path().join(name), &bytes).expect("csv");
        for command in ["submit", "estimate"] {
            let (code, out, err) = tokio::task::spawn_blocking({
                let (base, dir) = (base.clone(), dir.path().to_path_buf());
                move || {
                    let output = Command::new(ASSETGEN)
                        .current_dir(dir)
                        .args(["--server", &base, command, name])
                        .output()
                        .expect("run the CLI");
                    (
                        output.status.code().unwrap_or(-1),
                        String::from_utf8_lossy(&output.stdout).into_owned(),
                        String::from_utf8_lossy(&output.stderr).into_owned(),
                    )
                }
            })
            .await
            .expect("join");
            assert_eq!((code, out.as_str()), (2, ""), "{command} {name}: {err}");
            assert_eq!(err, format!("error: {expected}\n"), "{command} {name}");
        }
    }
    assert_eq!(requests(&base).await, requests_before, "no request reached the server");
    assert_eq!(store_objects(&data), before, "no object in the store changed");

    // The server is still up and still takes a good file.
    let (code, _, err) = tokio::task::spawn_blocking({
        let (base, good) = (base.clone(), good.to_string_lossy().into_owned());
        move || run_cli(&base, &["estimate", &good])
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{err}");
}
