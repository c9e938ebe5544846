//! The Batch API adapter's requests, compared with what Google's own SDK (PyPI `google-genai`)
//! sends for the same calls: `common/tests/fixtures/gemini-batch-*.json`, captured on loopback by
//! `tools/capture-gemini-batch.sh`. The adapter talks to the bulk stub, which records every request.

use assetgen_common::config::Secret;
use assetgen_common::domain::AspectRatio;
use assetgen_common::model::{
    BatchApi, GeminiBatchApi, GeminiModel, GeminiTimeouts, ImageRequest, JobState, KeyedRequest, ModelError, RefImage,
};
use assetgen_tests::bulk_stub::{BulkOutcome, BulkStub, BulkStubConfig, LIST_PAGE, Received, serve_bulk_gemini};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

const CREATE_INLINE: &str = include_str!("../../common/tests/fixtures/gemini-batch-create-inline-request.json");
const UPLOAD: &str = include_str!("../../common/tests/fixtures/gemini-batch-upload-requests.json");
const CREATE_FILE: &str = include_str!("../../common/tests/fixtures/gemini-batch-create-file-request.json");
const GET: &str = include_str!("../../common/tests/fixtures/gemini-batch-get-request.json");
const CANCEL: &str = include_str!("../../common/tests/fixtures/gemini-batch-cancel-request.json");
const DOWNLOAD: &str = include_str!("../../common/tests/fixtures/gemini-batch-download-request.json");
const LIST: &str = include_str!("../../common/tests/fixtures/gemini-batch-list-requests.json");
const DELETE_FILE: &str = include_str!("../../common/tests/fixtures/gemini-batch-delete-file-request.json");
const MODEL: &str = "gemini-2.5-flash-image";
const KEY: &str = "AIzaSy-bulk-test-key";

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture")
}

async fn stub(polls_before_end: u32) -> BulkStub {
    serve_bulk_gemini(BulkStubConfig {
        polls_before_end,
        outcome: BulkOutcome::Succeed,
        fail_marker: "FAIL".into(),
        results_as_file: false,
    })
    .await
    .expect("stub")
}

fn api(stub: &BulkStub, inline_limit: usize) -> GeminiBatchApi {
    let base = url::Url::parse(&stub.base).expect("url");
    let model = GeminiModel::developer(Secret::new(KEY), Some(base), GeminiTimeouts::default()).expect("model");
    GeminiBatchApi::new(model).expect("developer api").with_inline_limit(inline_limit)
}

/// The fixture's three requests (keys, prompts and reference images) as the adapter's requests.
fn requests_of(create: &Value) -> Vec<KeyedRequest> {
    let items = create["body"]["batch"]["inputConfig"]["requests"]["requests"].as_array().expect("requests");
    items
        .iter()
        .map(|item| {
            let parts = item["request"]["contents"][0]["parts"].as_array().expect("parts");
            let refs = parts[1..]
                .iter()
                .map(|p| {
                    let bytes = STANDARD.decode(p["inlineData"]["data"].as_str().expect("data")).expect("base64");
                    RefImage {
                        mime_type: p["inlineData"]["mime_type"].as_str().expect("mime").to_owned(),
                        bytes: bytes.into(),
                        sha256: String::new(),
                        gs_uri: None,
                    }
                })
                .collect();
            let ratio = item["request"]["generationConfig"]["imageConfig"]["aspectRatio"].as_str().expect("ratio");
            KeyedRequest {
                key: item["metadata"]["key"].as_str().expect("key").to_owned(),
                request: ImageRequest {
                    model: MODEL.into(),
                    scene_id: "s".into(),
                    variant: 1,
                    prompt: parts[0]["text"].as_str().expect("text").to_owned(),
                    aspect_ratio: AspectRatio::parse(ratio).expect("ratio"),
                    refs,
                },
            }
        })
        .collect()
}

/// The SDK spells an inline blob's `mimeType` in snake_case; the API takes both and the adapter
/// sends the documented camelCase. Everything else must be equal.
fn camel_blobs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(mime) = map.remove("mime_type")
                && map.contains_key("data")
            {
                map.insert("mimeType".into(), mime);
            }
            map.values_mut().for_each(camel_blobs);
        }
        Value::Array(items) => items.iter_mut().for_each(camel_blobs),
        _ => {}
    }
}

fn header<'a>(r: &'a Received, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Method, path and the headers the SDK sent (the key is ours, not the fixture's).
fn assert_same_call(got: &Received, sdk: &Value, path: &str) {
    assert_eq!(got.method, sdk["method"].as_str().expect("method"), "{path}");
    assert_eq!(got.path, path);
    for (name, value) in sdk["headers"].as_object().expect("headers") {
        match name.as_str() {
            "x-goog-api-key" => {}
            "x-goog-upload-header-content-length" => assert!(header(got, name).is_some(), "{path}: {name}"),
            _ => assert_eq!(header(got, name), value.as_str(), "{path}: header {name}"),
        }
    }
}

#[tokio::test]
async fn an_inline_job_is_created_as_the_sdk_creates_it() {
    let stub = stub(0).await;
    let sdk = fixture(CREATE_INLINE);
    let job = api(&stub, usize::MAX).create(MODEL, "assetgen-capture", &requests_of(&sdk)).await.expect("created");
    assert_eq!(job.name, "batches/stub1");
    assert_eq!(job.state, JobState::Pending);

    let received = stub.received();
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_same_call(got, &sdk, sdk["path"].as_str().expect("path"));
    assert_eq!(header(got, "x-goog-api-key"), Some(KEY), "the key travels in the header");
    let mut expected = sdk["body"].clone();
    camel_blobs(&mut expected);
    assert_eq!(got.body, expected);
}

#[tokio::test]
async fn over_the_inline_limit_the_requests_go_as_an_uploaded_jsonl_file() {
    let stub = stub(0).await;
    let inline = fixture(CREATE_INLINE);
    let requests = requests_of(&inline);
    api(&stub, 10).create(MODEL, "assetgen-capture", &requests).await.expect("created");
    let received = stub.received();
    assert_eq!(received.len(), 3, "start the upload, upload and finalize, create");

    // The resumable upload, as the SDK does it.
    let upload = fixture(UPLOAD);
    assert_same_call(&received[0], &upload[0], "/upload/v1beta/files");
    assert_eq!(received[0].body["file"]["mime_type"], upload[0]["body"]["file"]["mime_type"]);
    assert_eq!(received[0].body["file"]["display_name"], upload[0]["body"]["file"]["display_name"]);
    assert_same_call(&received[1], &upload[1], "/upload/v1beta/files?upload_id=up1");
    let jsonl = received[1].body.as_str().expect("the file's text");
    let size = header(&received[0], "x-goog-upload-header-content-length").expect("size");
    assert_eq!(size, jsonl.len().to_string(), "the announced size is the file's");

    // Each line is `{key, request}`, the request exactly what goes inline.
    let sdk_line: Value = serde_json::from_str(upload[1]["body"].as_str().expect("sdk file").trim()).expect("line");
    let lines: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 3);
    let inline_requests = inline["body"]["batch"]["inputConfig"]["requests"]["requests"].as_array().expect("requests");
    for (line, item) in lines.iter().zip(inline_requests) {
        assert_eq!(
            line.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["key".into(), "request".into()])
        );
        assert_eq!(line["key"], item["metadata"]["key"]);
        let mut request = item["request"].clone();
        camel_blobs(&mut request);
        assert_eq!(line["request"], request);
    }
    // The line format of the capture's file (the SDK uploads a file as given; the docs' format).
    let mut sdk_request = sdk_line["request"].clone();
    sdk_request["contents"][0]["parts"][0]["text"] = lines[2]["request"]["contents"][0]["parts"][0]["text"].clone();
    assert_eq!(lines[2]["request"], sdk_request, "a request without references");

    // The job names the uploaded file.
    let create = fixture(CREATE_FILE);
    assert_same_call(&received[2], &create, create["path"].as_str().expect("path"));
    let mut expected = create["body"].clone();
    expected["batch"]["inputConfig"]["fileName"] = "files/input-up1".into();
    assert_eq!(received[2].body, expected);
}

#[tokio::test]
async fn polling_cancelling_and_downloading_use_the_sdks_paths() {
    let stub = stub(2).await;
    let api = api(&stub, 10);
    let requests = requests_of(&fixture(CREATE_INLINE));
    let job = api.create(MODEL, "assetgen-capture", &requests).await.expect("created");
    let id = job.name.trim_start_matches("batches/").to_owned();

    let first = api.get(&job.name).await.expect("polled");
    assert_eq!(first.state, JobState::Pending);
    assert_eq!(api.get(&job.name).await.expect("polled").state, JobState::Running);
    let done = api.get(&job.name).await.expect("polled");
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.results.len(), 3);
    assert!(done.results.iter().all(|r| r.outcome.as_ref().is_ok_and(|i| i.bytes.starts_with(b"\x89PNG"))));

    let received = stub.received();
    let get = fixture(GET);
    let get_path = get["path"].as_str().expect("path").replace("test-batch-1", &id);
    assert_same_call(&received[3], &get, &get_path);
    let download = fixture(DOWNLOAD);
    let download_path =
        download["path"].as_str().expect("path").replace("batch-test-batch-1-output", &format!("{id}-output"));
    let got = received.iter().find(|r| r.path.contains(":download")).expect("the results were downloaded");
    assert_same_call(got, &download, &download_path);

    api.cancel(&job.name).await.expect("cancelled");
    let cancel = fixture(CANCEL);
    let received = stub.received();
    let got = received.last().expect("cancel");
    assert_same_call(got, &cancel, &cancel["path"].as_str().expect("path").replace("test-batch-1", &id));
    assert!(got.body.is_null(), "cancel has no body");

    // A name that is not Google's shape never reaches a URL.
    assert!(api.get("batches/../../v1beta/files").await.is_err());
    assert!(api.cancel("files/abc").await.is_err());
}

#[tokio::test]
async fn a_job_is_found_by_its_display_name_through_the_sdks_paged_list() {
    let stub = stub(2).await;
    let api = api(&stub, usize::MAX);
    let requests = requests_of(&fixture(CREATE_INLINE));
    for n in 0..=LIST_PAGE {
        api.create(MODEL, &format!("assetgen-job-{n}"), &requests).await.expect("created");
    }
    let before = stub.received().len();
    let found = api.find(&format!("assetgen-job-{LIST_PAGE}")).await.expect("listed").expect("found");
    assert_eq!(found.name, format!("batches/stub{}", LIST_PAGE + 1), "the job past the first page");

    // As the SDK's pager asks: a page size, then the token of the next page.
    let list = fixture(LIST);
    let received = stub.received();
    let calls = &received[before..];
    assert_eq!(calls.len(), 2, "two pages");
    assert_same_call(&calls[0], &list[0], list[0]["path"].as_str().expect("path"));
    assert_same_call(&calls[1], &list[1], &format!("/v1beta/batches?pageSize=100&pageToken={LIST_PAGE}"));

    assert!(api.find("assetgen-never-submitted").await.expect("listed").is_none());
}

#[tokio::test]
async fn an_ended_jobs_input_file_is_deleted_as_the_sdk_deletes_it_and_a_second_delete_is_done_too() {
    let stub = stub(0).await;
    let api = api(&stub, 10);
    let job = api.create(MODEL, "assetgen-capture", &requests_of(&fixture(CREATE_INLINE))).await.expect("created");
    assert_eq!(job.input_file.as_deref(), Some("files/input-up1"), "the job knows the file it was uploaded with");
    assert_eq!(stub.files(), ["files/input-up1"]);
    // Google echoes a file job's input when it is read back, so an adopted job knows it too.
    let polled = api.get(&job.name).await.expect("polled");
    assert_eq!(polled.state, JobState::Succeeded);
    assert_eq!(polled.input_file.as_deref(), Some("files/input-up1"));
    // A file job's results come as a file too (deleted in its own test below).
    let results = polled.results_file.clone().expect("a results file");

    api.delete_file("files/input-up1").await.expect("deleted");
    assert_eq!(stub.files(), [results], "the input is gone at Google");
    let sdk = fixture(DELETE_FILE);
    let received = stub.received();
    let got = received.last().expect("the delete");
    assert_same_call(got, &sdk, &sdk["path"].as_str().expect("path").replace("input-1", "input-up1"));
    assert_eq!(header(got, "x-goog-api-key"), Some(KEY));
    assert!(got.body.is_null(), "a delete has no body");

    // Idempotent: a file already gone (404) counts as deleted.
    api.delete_file("files/input-up1").await.expect("a second delete is done too");
    assert_eq!(stub.received().iter().filter(|r| r.method == "DELETE").count(), 2);
    // A name that is not Google's shape never reaches a URL.
    assert!(api.delete_file("files/../batches/x").await.is_err());
    assert!(api.delete_file("batches/stub1").await.is_err());
}

#[tokio::test]
async fn a_job_google_refuses_for_good_leaves_no_uploaded_file() {
    let stub = stub(0).await;
    let api = api(&stub, 10);
    // The stub refuses (400, for good) a job whose display name carries its fail marker.
    let refused = api.create(MODEL, "assetgen-FAIL", &requests_of(&fixture(CREATE_INLINE))).await;
    assert!(matches!(refused, Err(ModelError::Permanent { .. })), "refused for good: {refused:?}");
    assert!(stub.received().iter().any(|r| r.path.starts_with("/upload/v1beta/files?upload_id=")), "it was uploaded");
    assert!(stub.files().is_empty(), "and deleted again: {:?}", stub.files());
}

#[tokio::test]
async fn a_results_file_is_downloaded_and_then_deleted_as_the_sdk_does_both() {
    // Sent inline, answered in a file, as Google answers a large job (`output.responsesFile`).
    let stub = serve_bulk_gemini(BulkStubConfig {
        polls_before_end: 0,
        outcome: BulkOutcome::Succeed,
        fail_marker: "FAIL".into(),
        results_as_file: true,
    })
    .await
    .expect("stub");
    let api = api(&stub, usize::MAX);
    let job = api.create(MODEL, "assetgen-capture", &requests_of(&fixture(CREATE_INLINE))).await.expect("created");
    assert_eq!(job.input_file, None, "sent inline");
    assert_eq!(job.results_file, None, "no results before the job ends");
    let id = job.name.trim_start_matches("batches/").to_owned();

    let done = api.get(&job.name).await.expect("polled");
    assert_eq!(done.state, JobState::Succeeded);
    let file = format!("files/{id}-output");
    assert_eq!(done.results_file.as_deref(), Some(file.as_str()), "the job names the file its results were read from");
    assert_eq!(done.results.len(), 3);
    assert!(done.results.iter().all(|r| r.outcome.as_ref().is_ok_and(|i| i.bytes.starts_with(b"\x89PNG"))));
    assert_eq!(stub.files(), std::slice::from_ref(&file), "Google keeps the results file until it is deleted");
    let download = fixture(DOWNLOAD);
    let received = stub.received();
    let got = received.iter().find(|r| r.path.contains(":download")).expect("the results were downloaded");
    let path = download["path"].as_str().expect("path").replace("batch-test-batch-1-output", &format!("{id}-output"));
    assert_same_call(got, &download, &path);

    api.delete_file(&file).await.expect("deleted");
    assert!(stub.files().is_empty(), "no file left at Google");
    let sdk = fixture(DELETE_FILE);
    let received = stub.received();
    let got = received.last().expect("the delete");
    assert_same_call(got, &sdk, &sdk["path"].as_str().expect("path").replace("input-1", &format!("{id}-output")));
    assert!(got.body.is_null(), "a delete has no body");
    api.delete_file(&file).await.expect("a second delete is done too");

    // Google still names the file but it is gone, so the results cannot be read again: a job is
    // recorded as settled before its files are deleted, and is never read again after.
    assert!(api.get(&job.name).await.is_err(), "the results file is gone");
}
