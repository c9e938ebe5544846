//! The cloud path on real parts, with OIDC on as in the cloud: submit, generate and relay as three
//! separate processes sharing a fake-gcs-server bucket, rows travelling through the Pub/Sub
//! emulator's push subscription to generate (with the push account's ID token, minted by the
//! test's own key set), and one row whose model call always fails ending dead-lettered, marked
//! failed with its reason — then the money reconciles. Along the way: every token is checked for
//! its audience and its batch's owner, the image links open with no header (a 302 to a signed
//! fake-gcs-server URL), and a cloud binary refuses dev auth. Also measures each function's cold
//! start.

use assetgen_tests::money::{assert_ledger_checks, assert_spent_exactly};
use assetgen_tests::topology::{ADMIN, OTHER, OWNER, PUSH_SERVICE_ACCOUNT, Topology, TopologyOptions};
use assetgen_tests::{ApiClient, serve_gemini_stub, workspace_binary};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn rows_travel_submit_pubsub_generate_relay_and_a_hopeless_row_is_dead_lettered() {
    let (gemini, stub) = serve_gemini_stub(0, "ALWAYS-FAIL").await.expect("stub");
    // A service-account key file (the test key) lets the relay sign URLs for fake-gcs-server as
    // ADC signs them for GCS.
    let key_file = tempfile::NamedTempFile::new().expect("key file");
    let key = json!({
        "type": "service_account",
        "project_id": "assetgen-test",
        "private_key_id": "k1",
        "private_key": include_str!("../../common/tests/fixtures/oidc-test-key.pem"),
        "client_email": "relay@assetgen-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token",
    });
    std::fs::write(key_file.path(), key.to_string()).expect("write key");
    let options = TopologyOptions {
        extra_env: vec![
            ("GEMINI_API_KEY".to_owned(), "test-key".to_owned()),
            ("GEMINI_BASE_URL".to_owned(), gemini.clone()),
            ("GOOGLE_APPLICATION_CREDENTIALS".to_owned(), key_file.path().display().to_string()),
        ],
        ..TopologyOptions::default()
    };
    let topology = Topology::start(options).await.expect("the topology starts");
    let (submit, relay, generate) = (&topology.submit, &topology.relay, &topology.generate);
    let owner = topology.user_token(OWNER);
    let client = reqwest::Client::new();
    let rows = json!([
        {"scene_id": "A", "prompt": "a mug", "variants": 2},
        {"scene_id": "B", "prompt": "a lamp", "variants": 1},
        {"scene_id": "C", "prompt": "ALWAYS-FAIL a chair", "variants": 1},
        {"scene_id": "D", "prompt": "a desk", "variants": 3},
    ]);
    let as_owner = ApiClient::new(&submit.base).with_token(&owner);
    let (id, _) = as_owner.submit(&json!({"rows": rows, "run_mode": "live"})).await;

    // Follow the batch on the relay, a separate process reading the same bucket.
    assert_other_users_and_tokens_are_refused(&client, &topology, &id).await;
    let events =
        client.get(format!("{}/v1/batches/{id}/events", relay.base)).bearer_auth(&owner).send().await.expect("events");
    assert_eq!(events.status(), 200);
    let mut stream = events.bytes_stream().eventsource();
    let started = Instant::now();
    let done: Value = loop {
        let next =
            tokio::time::timeout(Duration::from_secs(120), stream.next()).await.expect("the batch ended in time");
        let event = next.expect("stream open").expect("an event");
        if event.event == "done" {
            break serde_json::from_str(&event.data).expect("done data");
        }
    };
    let took = started.elapsed();
    let rows = done["rows"].as_array().expect("rows");
    let status = |scene: &str| rows.iter().find(|r| r["scene_id"] == scene).expect("row").clone();
    for scene in ["A", "B", "D"] {
        assert_eq!(status(scene)["status"], "succeeded", "{}", status(scene));
    }
    let c = status("C");
    assert_eq!((c["status"].as_str(), c["error"]["code"].as_str()), (Some("failed"), Some("DEAD_LETTERED")), "{c}");
    assert!(c["error"]["detail"].as_str().is_some_and(|d| d.contains("MODEL_UNAVAILABLE")), "says why: {c}");
    assert_eq!(done["totals"]["images_done"], 6);

    // The money settled: six images spent, the blocked row's image released. The row's state says
    // failed a moment before the dead-letter handler has settled the batch: wait for it, bounded.
    assert_spent_exactly(&as_owner.settled_budget(Duration::from_secs(10)).await, 6, 0.039);
    let store = format!("gs://{}", topology.bucket);
    let store_env = [("ASSETGEN_STORE", store.as_str()), ("STORAGE_EMULATOR_HOST", topology.gcs.endpoint.as_str())];
    assert_ledger_checks(&workspace_binary("assetgen").expect("assetgen"), &store_env);

    assert_image_links_open_with_no_header(&as_owner, &topology, &id, &done).await;

    let calls = stub.calls.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "cloud path: batch done in {:.1} s over Pub/Sub push ({calls} model calls, row C dead-lettered); cold start to first /healthz 200: \
         submit {} ms, generate {} ms, relay {} ms",
        took.as_secs_f64(),
        submit.cold_start.as_millis(),
        generate.cold_start.as_millis(),
        relay.cold_start.as_millis()
    );
}

/// Nobody but the owner (and an admin) sees the batch on either process, and each audience is
/// bound to its routes.
async fn assert_other_users_and_tokens_are_refused(client: &reqwest::Client, topology: &Topology, id: &str) {
    let missing = "0190b5c6-0000-7000-8000-000000000000";
    let other = topology.user_token(OTHER);
    for (base, path) in [
        (&topology.submit.base, "/v1/batches/ID"),
        (&topology.relay.base, "/v1/batches/ID/events"),
        (&topology.relay.base, "/v1/images/ID/A/1"),
    ] {
        let get = |batch: &str| client.get(format!("{base}{}", path.replace("ID", batch))).bearer_auth(&other).send();
        let (theirs, nowhere) = (get(id).await.expect("get"), get(missing).await.expect("get"));
        assert_eq!((theirs.status().as_u16(), nowhere.status().as_u16()), (404, 404), "{path}");
        let (theirs, nowhere) = (theirs.text().await.expect("body"), nowhere.text().await.expect("body"));
        assert_eq!(theirs.replace(id, "ID"), nowhere.replace(missing, "ID"), "{path}: the same answer");
    }
    for action in ["cancel", "retry"] {
        let answer = client
            .post(format!("{}/v1/batches/{id}/{action}", topology.submit.base))
            .bearer_auth(&other)
            .send()
            .await
            .expect("post");
        assert_eq!(answer.status(), 404, "{action} by another user");
    }
    let batch_as =
        |token: String| client.get(format!("{}/v1/batches/{id}", topology.submit.base)).bearer_auth(token).send();
    let admin = batch_as(topology.user_token(ADMIN)).await.expect("get");
    assert_eq!(admin.status(), 200, "an admin sees every batch");
    // A push token on the user routes, and a user's token on the push route.
    let push_token = topology.issuer.id_token(PUSH_SERVICE_ACCOUNT, &topology.push_audience);
    let on_users = batch_as(push_token).await.expect("get");
    assert_eq!(on_users.status(), 401, "a push token on /v1");
    let on_push = client
        .post(format!("{}/pubsub/rows", topology.generate.base))
        .bearer_auth(topology.user_token(OWNER))
        .json(&json!({"message": {"data": "e30=", "messageId": "1"}, "subscription": "s"}))
        .send()
        .await
        .expect("post");
    assert_eq!(on_push.status(), 401, "a user's token on /pubsub");
}

/// The `images` of the batch view are links that need no header: each answers 302 to a signed
/// fake-gcs-server URL whose bytes are the PNG; a link with another image's signature is refused.
async fn assert_image_links_open_with_no_header(as_owner: &ApiClient, topology: &Topology, id: &str, done: &Value) {
    let view = as_owner.batch(id).await;
    let links: Vec<String> = view["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|r| r["images"].as_array().cloned().unwrap_or_default())
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect();
    assert_eq!(links.len(), 6, "{view}");
    assert_eq!(done["rows"][0]["images"], view["rows"][0]["images"], "the relay's links are the same links");
    let bare = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    for link in &links {
        assert!(link.starts_with(&format!("{}/v1/images/{id}/", topology.relay.base)) && link.contains("?sig="));
        let answer = bare.get(link).send().await.expect("image link");
        assert_eq!(answer.status(), 302, "{link}");
        let location = answer.headers()["location"].to_str().expect("location").to_owned();
        assert!(location.contains("X-Goog-Signature="), "a V4 signed URL: {location}");
        let image = reqwest::get(&location).await.expect("signed URL");
        assert_eq!(image.status(), 200, "{location}");
        assert_eq!(&image.bytes().await.expect("bytes")[..4], b"\x89PNG");
    }
    let (first, second) = (&links[0], &links[1]);
    let forged =
        format!("{}?sig={}", second.split('?').next().expect("path"), first.split("sig=").nth(1).expect("sig"));
    assert_eq!(bare.get(&forged).send().await.expect("forged").status(), 404, "one image's signature opens no other");
}

#[tokio::test]
async fn the_cloud_functions_refuse_dev_auth_at_start() {
    for name in ["assetgen-submit", "assetgen-generate", "assetgen-relay"] {
        let out = Command::new(workspace_binary(name).expect("binary"))
            .env("ASSETGEN_AUTH", "dev")
            .env("ASSETGEN_STORE", "gs://nowhere")
            .env("PORT", "0")
            .output()
            .expect("run");
        assert!(!out.status.success(), "{name} started with dev auth");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(said.contains("ASSETGEN_AUTH"), "{name} names the variable: {said}");
    }
}
