//! The reference library's endpoints and the pages, through the relay's router.

use assetgen_common::auth::Access;
use assetgen_common::refs::fetch::FetchPolicy;
use assetgen_common::store::{MemoryStore, ObjectStore, Precondition, read_json};
use assetgen_common::testkit::{HookedStore, endless_png, serve_on_loopback};
use assetgen_relay::refs::RefSet;
use assetgen_relay::{RelayConfig, RelayState, router};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const PNG_ONE: &[u8] = b"\x89PNG\r\n\x1a\nassetgen test image one";
/// `sha256sum` of [`PNG_ONE`].
const PNG_ONE_SHA: &str = "b6429ed3a3e8abe48d0f6b106d174ea77edd245df350aa810f9b66b0812c20b6";
const PNG_TWO: &[u8] = b"\x89PNG\r\n\x1a\nassetgen test image two";
const PNG_TWO_SHA: &str = "273c3bf94e873dae1311590d54f07d3ea0a57da2f2f377115a70d831ba00fa44";

struct Rig {
    store: Arc<dyn ObjectStore>,
    app: axum::Router,
}

fn rig_with(fetch: FetchPolicy) -> Rig {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let state = RelayState {
        store: store.clone(),
        access: Access::dev(),
        public_url: None,
        config: RelayConfig::default(),
        ref_fetch: fetch,
    };
    Rig { store, app: router(Arc::new(state)).split_for_parts().0 }
}

fn rig() -> Rig {
    rig_with(FetchPolicy::default())
}

struct Answer {
    status: StatusCode,
    content_type: String,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn call(app: &axum::Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let content_type =
        headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or_default().to_owned()).unwrap_or_default();
    let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    Answer { status, content_type, headers, body }
}

fn upload(body: impl Into<Body>, content_type: &str) -> Request<Body> {
    Request::post("/v1/refs")
        .header(header::HOST, "refs.test:8080")
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).header(header::HOST, "refs.test:8080").body(Body::empty()).expect("request")
}

fn put_set(refs: &[&str]) -> Request<Body> {
    Request::put("/v1/refs/sets/global")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "refs": refs }).to_string()))
        .expect("request")
}

fn multipart(boundary: &str, filename: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nnot the file\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn an_upload_is_named_by_its_sha256_and_stored_content_addressed() {
    let r = rig();
    let a = call(&r.app, upload(PNG_ONE, "application/octet-stream")).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let body = a.json();
    assert_eq!(body["sha256"], PNG_ONE_SHA);
    let url = body["url"].as_str().expect("url").to_owned();
    assert!(url.starts_with(&format!("http://refs.test:8080/v1/refs/{PNG_ONE_SHA}?sig=")), "a signed link: {url}");
    assert_eq!(body["bytes"], PNG_ONE.len());
    assert_eq!(body["mime_type"], "image/png");
    assert_eq!(body["duplicate"], false);
    assert_eq!(a.headers[header::LOCATION], url.as_str());
    let stored = r.store.get(&format!("refs/{PNG_ONE_SHA}")).await.expect("content-addressed object");
    assert_eq!((stored.body.as_ref(), stored.content_type.as_str()), (PNG_ONE, "image/png"));

    // The stable URL serves the bytes, with their type, cacheable for good.
    let served = call(&r.app, get(&format!("/v1/refs/{PNG_ONE_SHA}"))).await;
    assert_eq!(
        (served.status, served.content_type.as_str(), served.body.as_slice()),
        (StatusCode::OK, "image/png", PNG_ONE)
    );
    assert!(served.headers[header::CACHE_CONTROL].to_str().expect("ascii").contains("immutable"));
    assert_eq!(served.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let again = Request::get(format!("/v1/refs/{PNG_ONE_SHA}"))
        .header(header::IF_NONE_MATCH, format!("\"{PNG_ONE_SHA}\""))
        .body(Body::empty())
        .expect("request");
    assert_eq!(call(&r.app, again).await.status, StatusCode::NOT_MODIFIED);
    // Upper-case hex names the same reference; anything else is not one.
    assert_eq!(call(&r.app, get(&format!("/v1/refs/{}", PNG_ONE_SHA.to_uppercase()))).await.status, StatusCode::OK);
    for bad in ["/v1/refs/abc", "/v1/refs/..%2Fbatches", &format!("/v1/refs/{}", "0".repeat(64))] {
        let a = call(&r.app, get(bad)).await;
        assert_eq!((a.status, a.content_type.as_str()), (StatusCode::NOT_FOUND, "application/problem+json"), "{bad}");
    }
}

#[tokio::test]
async fn the_same_bytes_again_are_a_duplicate_whether_raw_or_from_a_form() {
    let r = rig();
    assert_eq!(call(&r.app, upload(PNG_ONE, "image/png")).await.status, StatusCode::CREATED);
    let raw = call(&r.app, upload(PNG_ONE, "image/png")).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text());
    assert_eq!((raw.json()["duplicate"].clone(), raw.json()["sha256"].clone()), (json!(true), json!(PNG_ONE_SHA)));

    let boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
    let form = call(
        &r.app,
        upload(multipart(boundary, "one.png", PNG_ONE), &format!("multipart/form-data; boundary={boundary}")),
    )
    .await;
    assert_eq!((form.status, form.json()["duplicate"].clone()), (StatusCode::OK, json!(true)), "{}", form.text());
    let other = call(
        &r.app,
        upload(multipart(boundary, "two.png", PNG_TWO), &format!("multipart/form-data; boundary=\"{boundary}\"")),
    )
    .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.text());
    assert_eq!((other.json()["sha256"].clone(), other.json()["duplicate"].clone()), (json!(PNG_TWO_SHA), json!(false)));

    // Both are listed, the newest first, with sizes and stable URLs.
    let list = call(&r.app, get("/v1/refs")).await.json();
    let shas: Vec<&str> = list["refs"].as_array().expect("refs").iter().filter_map(|x| x["sha256"].as_str()).collect();
    assert_eq!(shas, vec![PNG_TWO_SHA, PNG_ONE_SHA]);
    assert_eq!(list["refs"][1]["bytes"], PNG_ONE.len());
    let listed = list["refs"][1]["url"].as_str().expect("url");
    assert!(listed.starts_with(&format!("http://refs.test:8080/v1/refs/{PNG_ONE_SHA}?sig=")), "{listed}");
    assert_eq!(list["truncated"], false);
}

#[tokio::test]
async fn anything_but_an_image_is_a_problem_and_nothing_is_stored() {
    let r = rig();
    for (body, content_type) in [
        (&b"<svg xmlns='http://www.w3.org/2000/svg'/>"[..], "image/svg+xml"),
        (&b"%PDF-1.7"[..], "image/png"),
        (&b""[..], "application/octet-stream"),
    ] {
        let a = call(&r.app, upload(body.to_vec(), content_type)).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text());
        assert_eq!(a.content_type, "application/problem+json");
        assert_eq!(a.json()["code"], "REF_NOT_IMAGE");
        assert!(a.json()["advice"].as_str().is_some_and(|s| s.contains("PNG")));
    }
    let no_file = call(
        &r.app,
        upload(
            "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ny\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
        ),
    )
    .await;
    assert_eq!(
        (no_file.status, no_file.json()["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("REF_NOT_IMAGE"))
    );
    assert!(r.store.list("refs/").await.expect("list").is_empty(), "nothing was stored");
}

#[tokio::test]
async fn an_image_over_8_mib_is_refused_raw_or_in_a_form() {
    let r = rig();
    let limit = assetgen_relay::refs::MAX_REF_BYTES;
    let mut big = PNG_ONE.to_vec();
    big.resize(limit + 1, 0);
    let a = call(&r.app, upload(big.clone(), "image/png")).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text());
    assert_eq!(
        (a.content_type.as_str(), a.json()["code"].clone()),
        ("application/problem+json", json!("REF_TOO_LARGE"))
    );
    let form = call(&r.app, upload(multipart("q", "big.png", &big), "multipart/form-data; boundary=q")).await;
    assert_eq!((form.status, form.json()["code"].clone()), (StatusCode::PAYLOAD_TOO_LARGE, json!("REF_TOO_LARGE")));
    assert!(r.store.list("refs/").await.expect("list").is_empty());
    // Exactly at the cap is fine.
    big.truncate(limit);
    assert_eq!(call(&r.app, upload(big, "image/png")).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn the_global_set_is_created_then_replaced_by_compare_and_swap() {
    let r = rig();
    let empty = call(&r.app, get("/v1/refs/sets/global")).await.json();
    assert_eq!((empty["revision"].clone(), empty["refs"].clone()), (json!(0), json!([])));

    let one = format!("https://cdn.example.com/v1/refs/{PNG_ONE_SHA}");
    let two = format!("https://cdn.example.com/v1/refs/{PNG_TWO_SHA}");
    let created = call(&r.app, put_set(&[&one, &two, &one])).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let created = created.json();
    assert_eq!(created["revision"], 1);
    assert_eq!(created["refs"], json!([one, two]), "repeats are dropped, the order kept");
    assert_eq!(created["updated_by"], "dev@localhost");
    let stored = read_json::<RefSet>(r.store.as_ref(), "refs/sets/global.json").await.expect("stored set");
    assert_eq!((stored.value.revision, stored.value.refs.len()), (1, 2));

    // Replaces racing each other all land, one after the other: none is lost.
    let racers: Vec<_> = (0..12)
        .map(|i| {
            let app = r.app.clone();
            let url = format!("https://cdn.example.com/ref-{i}.png");
            tokio::spawn(async move { call(&app, put_set(&[&url])).await })
        })
        .collect();
    let mut revisions = Vec::new();
    for racer in racers {
        let a = racer.await.expect("join");
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        revisions.push(a.json()["revision"].as_u64().expect("revision"));
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (2..=13).collect::<Vec<u64>>(), "every replace saw the one before it");
    let now = call(&r.app, get("/v1/refs/sets/global")).await.json();
    assert_eq!(now["revision"], 13);
    assert_eq!(now["refs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_set_with_bad_urls_or_too_many_is_refused_whole() {
    let r = rig();
    let bad =
        call(&r.app, put_set(&["https://ok.example.com/a.png", "http://127.0.0.1/x.png", "file:///etc/passwd"])).await;
    assert_eq!((bad.status, bad.content_type.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "application/problem+json"));
    let problem = bad.json();
    assert_eq!(problem["code"], "INVALID_REF_URL");
    let fields: Vec<&str> =
        problem["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(fields, vec!["refs[1]", "refs[2]"]);

    let seven: Vec<String> = (0..7).map(|i| format!("https://cdn.example.com/{i}.png")).collect();
    let too_many = call(&r.app, put_set(&seven.iter().map(String::as_str).collect::<Vec<_>>())).await;
    assert_eq!(
        (too_many.status, too_many.json()["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("TOO_MANY_REFS"))
    );

    let junk = Request::put("/v1/refs/sets/global").body(Body::from("{\"refs\": 3}")).expect("request");
    assert_eq!(call(&r.app, junk).await.json()["code"], "INVALID_JSON");
    assert!(r.store.list("refs/sets/").await.expect("list").is_empty(), "nothing was written");
}

/// A loopback image server: `/one.png`, `/text`, anything else 404.
async fn image_server() -> String {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/one.png", get(|| async { ([(header::CONTENT_TYPE, "image/png")], PNG_ONE) }))
        .route("/text", get(|| async { "plain text" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

fn fetch(url: &str) -> Request<Body> {
    Request::post("/v1/refs/fetch")
        .header(header::HOST, "refs.test")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "url": url }).to_string()))
        .expect("request")
}

#[tokio::test]
async fn a_fetched_reference_is_stored_like_an_upload_under_the_same_address_rules() {
    let server = image_server().await;
    let testing = FetchPolicy {
        allow_private: true,
        retry_delays: vec![],
        timeout: Duration::from_secs(5),
        ..FetchPolicy::default()
    };
    let r = rig_with(testing);
    let a = call(&r.app, fetch(&format!("{server}/one.png"))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let body = a.json();
    assert_eq!((body["sha256"].clone(), body["duplicate"].clone()), (json!(PNG_ONE_SHA), json!(false)));
    assert_eq!(body["source_url"], format!("{server}/one.png"));
    assert_eq!(r.store.get(&format!("refs/{PNG_ONE_SHA}")).await.expect("stored").body.as_ref(), PNG_ONE);
    // The same image uploaded afterwards is a duplicate of the fetched one.
    assert_eq!(call(&r.app, upload(PNG_ONE, "image/png")).await.json()["duplicate"], true);

    let missing = call(&r.app, fetch(&format!("{server}/nope.png"))).await;
    assert_eq!(missing.json()["code"], "REF_FETCH_FAILED", "{}", missing.text());
    let text = call(&r.app, fetch(&format!("{server}/text"))).await;
    assert_eq!(text.json()["code"], "REF_NOT_IMAGE", "{}", text.text());
    for local in ["file:///etc/hostname", "gs://bucket/refs/x.png", "not a url"] {
        assert_eq!(call(&r.app, fetch(local)).await.json()["code"], "INVALID_REF_URL", "{local}");
    }

    // Without the test flag, loopback is refused before any request is made.
    let cloud = rig();
    let refused = call(&cloud.app, fetch(&format!("{server}/one.png"))).await;
    assert_eq!(refused.json()["code"], "INVALID_REF_URL", "{}", refused.text());
    // A loopback literal is well-formed, and this deployment's address policy refuses it: 403.
    let refused = call(&cloud.app, fetch("https://127.0.0.1/one.png")).await;
    assert_eq!(refused.json()["code"], "REF_FORBIDDEN_ADDRESS", "{}", refused.text());
    assert!(cloud.store.list("refs/").await.expect("list").is_empty());
}

#[tokio::test]
async fn a_reference_that_streams_forever_is_cut_off_and_the_library_keeps_working() {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/drip.png", get(|| async { endless_png() }))
        .route("/one.png", get(|| async { ([(header::CONTENT_TYPE, "image/png")], PNG_ONE) }));
    let server = serve_on_loopback(app).await;

    let r = rig_with(FetchPolicy {
        allow_private: true,
        retry_delays: vec![Duration::from_millis(10)],
        timeout: Duration::from_millis(300),
        ..FetchPolicy::default()
    });
    // One reference already in the library: it must not change.
    assert_eq!(call(&r.app, upload(PNG_TWO, "image/png")).await.status, StatusCode::CREATED);
    let before = r.store.list("").await.expect("list");

    let cut = call(&r.app, fetch(&format!("{server}/drip.png"))).await;
    assert_eq!(cut.content_type, "application/problem+json", "{}", cut.text());
    let problem = cut.json();
    assert_eq!(problem["code"], "REF_FETCH_FAILED", "{problem}");
    assert_eq!(problem["status"], cut.status.as_u16(), "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("no complete answer within 0.3 s"), "{detail}");
    assert_eq!(r.store.list("").await.expect("list"), before, "no object written or changed");

    // The library still fetches, and stores, a reference that ends.
    let ok = call(&r.app, fetch(&format!("{server}/one.png"))).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text());
    assert_eq!(r.store.get(&format!("refs/{PNG_ONE_SHA}")).await.expect("stored").body.as_ref(), PNG_ONE);
    assert_eq!(r.store.get(&format!("refs/{PNG_TWO_SHA}")).await.expect("kept").body.as_ref(), PNG_TWO);
}

#[tokio::test]
async fn the_pages_and_their_files_are_served_from_the_binary() {
    let r = rig();
    let page = call(&r.app, get("/b/0190b5c6-0000-7000-8000-000000000000")).await;
    assert_eq!((page.status, page.content_type.as_str()), (StatusCode::OK, "text/html; charset=utf-8"));
    assert!(page.text().contains("/web/progress.js"));
    assert!(page.headers[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii").contains("script-src 'self'"));
    let hostile = call(&r.app, get("/b/%0d%0aSet-Cookie:x")).await;
    assert_eq!((hostile.status, hostile.content_type.as_str()), (StatusCode::NOT_FOUND, "application/problem+json"));
    let refs = call(&r.app, get("/refs")).await;
    assert!(refs.status == StatusCode::OK && refs.text().contains("/web/refs.js"));
    for (file, kind) in [
        ("progress.js", "text/javascript"),
        ("connection.js", "text/javascript"),
        ("refs.js", "text/javascript"),
        ("app.css", "text/css"),
    ] {
        let a = call(&r.app, get(&format!("/web/{file}"))).await;
        assert_eq!(a.status, StatusCode::OK, "{file}");
        assert!(a.content_type.starts_with(kind), "{file}: {}", a.content_type);
    }
    assert_eq!(call(&r.app, get("/web/../Cargo.toml")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&r.app, get("/web/nope.js")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_reference_endpoints_are_in_the_openapi_document() {
    let state = RelayState {
        store: Arc::new(MemoryStore::new()),
        access: Access::dev(),
        public_url: None,
        config: RelayConfig::default(),
        ref_fetch: FetchPolicy::default(),
    };
    let api = router(Arc::new(state)).split_for_parts().1;
    let doc = serde_json::to_value(&api).expect("json");
    for (path, method) in [
        ("/v1/refs", "get"),
        ("/v1/refs", "post"),
        ("/v1/refs/fetch", "post"),
        ("/v1/refs/{sha256}", "get"),
        ("/v1/refs/sets/global", "get"),
        ("/v1/refs/sets/global", "put"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is documented");
    }
}

#[tokio::test]
async fn a_reference_link_opens_its_one_reference_with_no_header() {
    use assetgen_common::auth::{AllowList, CapabilityTokens, LinkSigner, OidcAuth};
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let links = LinkSigner::random();
    // OIDC nobody in this test can satisfy: only a link's signature lets a request in.
    let access = Access {
        auth: Arc::new(OidcAuth::new(["https://relay.test"], "http://127.0.0.1:9/certs", Vec::<String>::new())),
        tokens: CapabilityTokens::random(),
        links: links.clone(),
        admins: AllowList::default(),
    };
    let state = |store: Arc<dyn ObjectStore>| RelayState {
        store,
        access: access.clone(),
        public_url: None,
        config: RelayConfig::default(),
        ref_fetch: FetchPolicy::default(),
    };
    let app = router(Arc::new(state(store.clone()))).split_for_parts().0;
    for (png, sha) in [(PNG_ONE, PNG_ONE_SHA), (PNG_TWO, PNG_TWO_SHA)] {
        store
            .put(&format!("refs/{sha}"), bytes::Bytes::from_static(png), "image/png", Precondition::DoesNotExist)
            .await
            .expect("stored");
    }
    let sig = links.sign(&format!("refs/{PNG_ONE_SHA}"));
    let served = call(&app, get(&format!("/v1/refs/{PNG_ONE_SHA}?sig={sig}"))).await;
    assert_eq!((served.status, served.body.as_slice()), (StatusCode::OK, PNG_ONE), "no header needed");
    assert_eq!(call(&app, get(&format!("/v1/refs/{PNG_ONE_SHA}"))).await.status, StatusCode::UNAUTHORIZED);
    let other = call(&app, get(&format!("/v1/refs/{PNG_TWO_SHA}?sig={sig}"))).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "one reference's signature opens no other");
    let foreign = LinkSigner::random().sign(&format!("refs/{PNG_ONE_SHA}"));
    assert_eq!(call(&app, get(&format!("/v1/refs/{PNG_ONE_SHA}?sig={foreign}"))).await.status, StatusCode::NOT_FOUND);

    // Where the store signs URLs, a link is a 302 to a fresh one.
    let signing = router(Arc::new(state(Arc::new(signing_store(store.clone()))))).split_for_parts().0;
    let moved = call(&signing, get(&format!("/v1/refs/{PNG_ONE_SHA}?sig={sig}"))).await;
    assert_eq!(moved.status, StatusCode::FOUND);
    assert_eq!(
        moved.headers[header::LOCATION],
        format!("https://storage.test/bucket/refs/{PNG_ONE_SHA}?X-Goog-Expires=900").as_str()
    );
}

/// A store that signs URLs, as GCS does.
fn signing_store(inner: Arc<dyn ObjectStore>) -> HookedStore {
    HookedStore::new(inner)
        .signing(|name, ttl| format!("https://storage.test/bucket/{name}?X-Goog-Expires={}", ttl.as_secs()))
}

/// The `/refs` page opened from the Sheet or the CLI carries a reference manager token: it acts as
/// its user on the library routes, as long as that user is still allowed, and no other token will do.
#[tokio::test]
async fn a_reference_manager_token_works_the_library_as_its_still_allowed_user() {
    use assetgen_common::auth::{AllowList, CONTROL_TOKEN_TTL, CapabilityTokens, LinkSigner, OidcAuth, Scope};
    use assetgen_common::domain::{BatchId, UserId};
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let tokens = CapabilityTokens::random();
    // OIDC whose keys nobody here can reach: only the tokens below can sign anyone in.
    let access = Access {
        auth: Arc::new(OidcAuth::new(["https://relay.test"], "http://127.0.0.1:9/certs", ["@studio.test"])),
        tokens: tokens.clone(),
        links: LinkSigner::random(),
        admins: AllowList::default(),
    };
    let state = RelayState {
        store: store.clone(),
        access,
        // Links as the cloud makes them: https, on the relay's public URL.
        public_url: Some(url::Url::parse("https://relay.test").expect("url")),
        config: RelayConfig::default(),
        ref_fetch: FetchPolicy::default(),
    };
    let app = router(Arc::new(state)).split_for_parts().0;
    let with = |mut request: Request<Body>, token: &str| {
        request.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {token}").parse().expect("header"));
        request
    };

    assert_eq!(call(&app, get("/v1/refs")).await.status, StatusCode::UNAUTHORIZED, "no sign-in, no token");
    let token = tokens.issue_refs_manager(&UserId::new("artist@studio.test"), Duration::from_secs(3600));
    let stored = call(&app, with(upload(PNG_ONE, "image/png"), &token)).await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.text());
    let listed = call(&app, with(get("/v1/refs"), &token)).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json()["refs"][0]["sha256"], PNG_ONE_SHA);
    let url = stored.json()["url"].as_str().expect("url").to_owned();
    let set = call(&app, with(put_set(&[&url]), &token)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text());
    assert_eq!(set.json()["updated_by"], "artist@studio.test", "the set names the token's user");
    assert_eq!(call(&app, with(get("/v1/refs/sets/global"), &token)).await.json()["refs"], json!([url]));

    // Issued to someone the allow-list does not (or no longer does) hold: refused.
    let outsider = tokens.issue_refs_manager(&UserId::new("someone@elsewhere.test"), Duration::from_secs(3600));
    let refused = call(&app, with(get("/v1/refs"), &outsider)).await;
    assert_eq!((refused.status, refused.json()["code"].clone()), (StatusCode::FORBIDDEN, json!("FORBIDDEN")));
    // Batch tokens are not manager tokens, and another deployment's manager token is nothing here.
    let batch = BatchId::new();
    let control = tokens.issue_scoped(&batch, &UserId::new("artist@studio.test"), Scope::Control, CONTROL_TOKEN_TTL);
    let read = tokens.issue(&batch, &UserId::new("artist@studio.test"), Duration::from_secs(3600));
    let foreign = CapabilityTokens::random().issue_refs_manager(&UserId::new("artist@studio.test"), CONTROL_TOKEN_TTL);
    for other in [control, read, foreign] {
        let refused = call(&app, with(put_set(&[]), other.as_str())).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text());
    }
    let kept = read_json::<RefSet>(store.as_ref(), "refs/sets/global.json").await.expect("set").value;
    assert_eq!(kept.refs, vec![url], "no refused request changed the set");
}
