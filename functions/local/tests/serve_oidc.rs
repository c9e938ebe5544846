//! `assetgen serve` with `ASSETGEN_AUTH=oidc`: the cloud's checks on one box. ID tokens are minted
//! by the test's own key set (a JWKS on loopback); the dev header counts for nothing; the server's
//! own queue still delivers; image links open with no header; and dev auth stays on loopback.

use assetgen_tests::topology::TestIssuer;
use assetgen_tests::{ApiClient, spawn_serve};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ASSETGEN: &str = env!("CARGO_BIN_EXE_assetgen");
const SHEET_CLIENT: &str = "1234567890-assetgen-sheet.apps.googleusercontent.com";
const OWNER: &str = "owner@studio.test";

#[tokio::test(flavor = "multi_thread")]
async fn serve_with_oidc_checks_tokens_like_the_cloud() {
    let issuer = TestIssuer::start().await.expect("key set");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = spawn_serve(
        Path::new(ASSETGEN),
        dir.path(),
        &[
            ("ASSETGEN_AUTH", "oidc"),
            ("ASSETGEN_OIDC_AUDIENCE", &format!("{SHEET_CLIENT}, https://assetgen.studio.test")),
            ("ASSETGEN_OIDC_JWKS_URL", &issuer.jwks_url),
            ("ASSETGEN_ALLOWED", "@studio.test"),
            // The reference library's links point at this loopback server.
            ("ASSETGEN_ALLOW_PRIVATE_REFS", "true"),
        ],
    )
    .expect("serve");
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let batch = json!({"rows": [{"scene_id": "A", "prompt": "a mug", "variants": 2}]});
    let post = |token: Option<String>| {
        let mut request = client.post(format!("{base}/v1/batches")).json(&batch);
        request = request.header("x-assetgen-user", OWNER);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // The dev header alone is nobody here.
    let refused = post(None).await.expect("post");
    assert_eq!(refused.status(), 401, "a dev header without a token");
    // Tokens for another audience, or without a verified email, are refused too.
    assert_eq!(post(Some(issuer.id_token(OWNER, "https://elsewhere.test"))).await.expect("post").status(), 401);
    let unverified = {
        let token = issuer.id_token(OWNER, SHEET_CLIENT);
        // The same claims with email_verified false, signed by the same key.
        let mut claims: Value = jsonwebtoken::dangerous::insecure_decode::<Value>(&token).expect("claims").claims;
        claims["email_verified"] = json!(false);
        issuer.sign(&claims)
    };
    assert_eq!(post(Some(unverified)).await.expect("post").status(), 403);

    // Both audiences are accepted; the batch is made by the server's own queue, whose pushes
    // carry its secret (the user's token would not do there).
    let owner = issuer.id_token(OWNER, SHEET_CLIENT);
    let accepted = post(Some(issuer.id_token(OWNER, "https://assetgen.studio.test"))).await.expect("post");
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.expect("json");
    let id = accepted["batch_id"].as_str().expect("id").to_owned();
    let as_owner = ApiClient::new(&base).with_token(&owner);
    let started = Instant::now();
    let view = as_owner.ended(&id, Duration::from_secs(30)).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    let push = as_owner
        .post("/pubsub/rows")
        .json(&json!({"message": {"data": "e30=", "messageId": "1"}, "subscription": "s"}))
        .send()
        .await
        .expect("push");
    assert_eq!(push.status(), 401, "a user's token on /pubsub");

    // Another allowed user sees nothing; the page link reads; the image links need no header.
    let other = issuer.id_token("other@studio.test", SHEET_CLIENT);
    let theirs = client.get(format!("{base}/v1/batches/{id}")).bearer_auth(&other).send().await.expect("get");
    assert_eq!(theirs.status(), 404);
    let page = accepted["links"]["events"].as_str().expect("events link").replace("/events", "");
    assert_eq!(client.get(&page).send().await.expect("page link").status(), 200, "{page}");
    for link in view["rows"][0]["images"].as_array().expect("images") {
        let link = link.as_str().expect("link");
        let image = reqwest::get(link).await.expect("image link");
        assert_eq!(image.status(), 200, "{link}");
        assert_eq!(&image.bytes().await.expect("bytes")[..4], b"\x89PNG");
    }

    // A reference link from the library needs no header: the row worker fetches it like any URL.
    let uploaded: Value = as_owner
        .post("/v1/refs")
        .header("content-type", "image/png")
        .body(assetgen_tests::png(7))
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    let ref_link = uploaded["url"].as_str().expect("reference link").to_owned();
    assert!(ref_link.contains("?sig="), "{ref_link}");
    assert_eq!(reqwest::get(&ref_link).await.expect("ref link").status(), 200);
    let unsigned = ref_link.split('?').next().expect("path");
    assert_eq!(reqwest::get(unsigned).await.expect("ref").status(), 401, "no signature, no token");
    let with_ref = json!({"rows": [{"scene_id": "R", "prompt": "a mug in this style", "refs": [ref_link]}]});
    let (ref_batch, _) = as_owner.submit(&with_ref).await;
    let row =
        as_owner.ended(&ref_batch, Duration::from_secs(60).saturating_sub(started.elapsed())).await["rows"][0].clone();
    assert_eq!(row["status"], "succeeded", "{row}");
    assert_eq!(
        (row["refs"][0]["outcome"].as_str(), row["refs"][0]["sha256"].as_str()),
        (Some("used"), uploaded["sha256"].as_str()),
        "{row}"
    );

    // The owner's page link with a control token, from the CLI; nobody else gets one.
    let cli = |token: &str| Command::new(ASSETGEN).args(["--server", &base, "--token", token, "page", &id]).output();
    let page = cli(&owner).expect("cli");
    assert!(page.status.success(), "{}", String::from_utf8_lossy(&page.stderr));
    let link = String::from_utf8_lossy(&page.stdout).trim().to_owned();
    assert!(link.starts_with(&format!("{base}/b/{id}?access_token=")) && link.contains("#control="), "{link}");
    assert!(!cli(&other).expect("cli").status.success(), "another user gets no control token");

    // The reference manager's link, from the CLI: its token works the library and nothing else.
    let refs = Command::new(ASSETGEN).args(["--server", &base, "--token", &owner, "refs"]).output().expect("cli");
    assert!(refs.status.success(), "{}", String::from_utf8_lossy(&refs.stderr));
    let link = String::from_utf8_lossy(&refs.stdout).trim().to_owned();
    let token = link.strip_prefix(&format!("{base}/refs#token=")).unwrap_or_else(|| panic!("{link}")).to_owned();
    let library = client.get(format!("{base}/v1/refs")).bearer_auth(&token).send().await.expect("list");
    assert_eq!(library.status(), 200);
    let library: Value = library.json().await.expect("json");
    assert_eq!(library["refs"][0]["sha256"], uploaded["sha256"], "{library}");
    let cancel =
        client.post(format!("{base}/v1/batches/{id}/cancel")).bearer_auth(&token).send().await.expect("cancel");
    assert_eq!(cancel.status(), 401, "the manager token opens no batch");
    let unsigned = Command::new(ASSETGEN).args(["--server", &base, "refs"]).output().expect("cli");
    assert!(!unsigned.status.success(), "no sign-in, no link");

    // The CLI with --token follows the batch to its end.
    let csv = dir.path().join("rows.csv");
    std::fs::write(&csv, "scene_id,prompt,variants\nB,a lamp,1\n").expect("csv");
    let cli = Command::new(ASSETGEN)
        .args(["--server", &base, "--token", &owner, "submit"])
        .arg(&csv)
        .args(["--follow", "--json"])
        .output()
        .expect("cli");
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    drop(server);
}

#[test]
fn dev_auth_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(ASSETGEN)
        .args(["serve", "--port", "0", "--host", "0.0.0.0"])
        .env("ASSETGEN_STORE", format!("file://{}", dir.path().display()))
        .env("ASSETGEN_AUTH", "dev")
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("loopback") && said.contains("ASSETGEN_AUTH=oidc"), "{said}");
}
